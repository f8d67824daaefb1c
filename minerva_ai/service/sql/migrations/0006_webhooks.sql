-- Webhooks: an organization's endpoints, their signing secrets (encrypted with
-- MINERVA_SECRET_KEY), one delivery per notification and endpoint, and every attempt of
-- it. docs/webhooks.md.

CREATE TABLE webhooks (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name               text NOT NULL,
    url                text NOT NULL,
    format             text NOT NULL CHECK (format IN ('json', 'slack')),
    feature_ids        uuid[] NOT NULL DEFAULT '{}',   -- empty: every feature
    min_severity       text NOT NULL DEFAULT 'info'
        CHECK (min_severity IN ('info', 'warning', 'critical')),
    labels             jsonb NOT NULL DEFAULT '{}',    -- the alert's labels must hold these
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL,
    UNIQUE (organization_id, name)
);

-- Signing secrets, encrypted. The current one has no expiry; a rotation gives the previous
-- one an expiry (the overlap), during which both sign.
CREATE TABLE webhook_secrets (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id         uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    encrypted          bytea NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz
);
CREATE INDEX webhook_secrets_webhook_idx ON webhook_secrets (webhook_id, created_at);

-- A notification (or a test event) to send to one webhook. Its history outlives the
-- webhook (webhook_name is kept); a deleted webhook's pending deliveries are not sent.
CREATE TABLE webhook_deliveries (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    webhook_id         uuid REFERENCES webhooks (id) ON DELETE SET NULL,
    webhook_name       text NOT NULL,
    notification_id    uuid REFERENCES alert_notifications (id) ON DELETE CASCADE,
    alert_id           uuid REFERENCES alerts (id) ON DELETE CASCADE,
    event_id           uuid NOT NULL,                  -- the webhook-id header, every attempt
    event              text NOT NULL,
    payload            jsonb NOT NULL,
    state              text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,                    -- pending: due then (or claimed until)
    created_at         timestamptz NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_alert_idx ON webhook_deliveries (alert_id);

CREATE TABLE webhook_attempts (
    delivery_id        uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt            integer NOT NULL,
    at                 timestamptz NOT NULL,
    duration_ms        double precision NOT NULL,
    status_code        integer,                        -- null: no answer (error says why)
    error              text,
    next_retry_at      timestamptz,                    -- null: delivered, or given up
    PRIMARY KEY (delivery_id, attempt)
);
