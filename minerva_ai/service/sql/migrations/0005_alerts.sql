-- Alerts: each rule's state, the alerts it opens, every transition (commit-ordered, so the
-- `alerts` channel resumes by cursor as the logs channel does), the notifications they
-- cause (the outbox the webhook deliveries read) and silences. docs/alerts.md.

CREATE SEQUENCE alert_transition_seq AS bigint;

-- A rule's state: one row per feature and rule name, written only by the evaluator's
-- leader (fenced) and by acknowledge/resolve.
CREATE TABLE alert_rule_states (
    feature_id         uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    rule               text NOT NULL,
    organization_id    uuid NOT NULL,
    state              text NOT NULL
        CHECK (state IN ('ok', 'pending', 'firing', 'no_data', 'error')),
    severity           text CHECK (severity IN ('info', 'warning', 'critical')),
    since              timestamptz NOT NULL,   -- in this state since
    breaching_since    timestamptz,            -- the breach `for` counts from
    recovered_since    timestamptz,            -- the recovery `keep_firing_for` counts from
    value              double precision,
    reason             text NOT NULL DEFAULT '',
    evaluated_at       timestamptz NOT NULL,
    settings_version   integer NOT NULL,
    definition         jsonb NOT NULL,         -- the rule as last evaluated
    alert_id           uuid,                   -- the open alert, if any
    PRIMARY KEY (feature_id, rule)
);

CREATE TABLE alerts (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL,
    feature_id         uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    rule               text NOT NULL,
    metric             text NOT NULL,
    state              text NOT NULL CHECK (state IN ('open', 'resolved')),
    severity           text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    value              double precision,
    threshold          double precision,
    labels             jsonb NOT NULL DEFAULT '{}',
    runbook_url        text,
    settings_version   integer NOT NULL,
    opened_at          timestamptz NOT NULL,
    last_notified_at   timestamptz,
    acknowledged_at    timestamptz,
    acknowledged_by    text,
    acknowledge_note   text,
    resolved_at        timestamptz,
    resolved_by        text,
    resolve_note       text
);
-- At most one open alert per rule.
CREATE UNIQUE INDEX alerts_open_idx ON alerts (feature_id, rule) WHERE state = 'open';
CREATE INDEX alerts_organization_idx ON alerts (organization_id, opened_at DESC, id DESC);

-- Every transition: of a rule's state, or of an alert (acknowledged, resolved by hand).
CREATE TABLE alert_transitions (
    seq                bigint PRIMARY KEY,     -- commit order within an organization
    id                 uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL,
    feature_id         uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    rule               text NOT NULL,
    alert_id           uuid REFERENCES alerts (id) ON DELETE CASCADE,
    at                 timestamptz NOT NULL,
    event              text NOT NULL,
    from_state         text NOT NULL,
    to_state           text NOT NULL,
    severity           text,
    value              double precision,
    threshold          double precision,
    reason             text NOT NULL DEFAULT '',
    actor              text NOT NULL,          -- `evaluator`, or the token's name and id
    settings_version   integer NOT NULL
);
CREATE INDEX alert_transitions_follow_idx ON alert_transitions (organization_id, seq);
CREATE INDEX alert_transitions_alert_idx ON alert_transitions (alert_id, seq);

-- The outbox: a notification per transition that notifies (and per renotification),
-- written in the transition's transaction. Its id is the webhook-id of every delivery.
CREATE TABLE alert_notifications (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL,
    alert_id           uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    transition_seq     bigint,                 -- null: a renotification
    event              text NOT NULL,
    created_at         timestamptz NOT NULL,
    severity           text NOT NULL,
    payload            jsonb NOT NULL,         -- the body sent
    silenced_by        uuid,                   -- a silence, or
    silenced_reason    text,                   -- why it is not sent (maintenance...)
    dispatched         boolean NOT NULL DEFAULT false  -- fanned out to the webhooks
);
CREATE INDEX alert_notifications_pending_idx ON alert_notifications (created_at)
    WHERE NOT dispatched;

CREATE TABLE silences (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature_id         uuid REFERENCES features (id) ON DELETE CASCADE,  -- null: all
    rule               text,
    severity           text CHECK (severity IN ('info', 'warning', 'critical')),
    labels             jsonb NOT NULL DEFAULT '{}',
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL CHECK (ends_at > starts_at),
    comment            text NOT NULL,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX silences_organization_idx ON silences (organization_id, ends_at);
