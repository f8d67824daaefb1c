-- The full schema: what the numbered migrations in migrations/ produce, in one file.
-- tests/service/test_migrations.py fails when the two disagree.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    token_hash       bytea NOT NULL UNIQUE,
    scopes           text[] NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'ingest', 'write', 'admin']),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX api_tokens_organization_idx ON api_tokens (organization_id, created_at);

CREATE TABLE features (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              text NOT NULL,
    display_name      text NOT NULL,
    description       text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'inactive', 'maintenance')),
    settings_version  integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

CREATE TABLE feature_settings (
    feature_id       uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    version          integer NOT NULL CHECK (version > 0),
    settings         json NOT NULL,  -- json, not jsonb: keeps the order keys were written in
    diff             json NOT NULL DEFAULT '[]',
    author_token_id  uuid REFERENCES api_tokens (id) ON DELETE SET NULL,
    author_name      text NOT NULL,
    rollback_of      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_id, version)
);


CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE SEQUENCE log_seq AS bigint;

CREATE TABLE logs (
    organization_id  uuid NOT NULL,
    feature_id       uuid NOT NULL,
    seq              bigint NOT NULL,
    client_id        text NOT NULL,
    "timestamp"      timestamptz NOT NULL,
    committed_at     timestamptz NOT NULL,
    level            text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error', 'critical')),
    message          text NOT NULL,
    source           text NOT NULL DEFAULT '',
    request_id       text,
    model            text,
    latency_ms       double precision,
    tokens_in        integer,
    tokens_out       integer,
    cost             double precision,
    status           text CHECK (status IN ('success', 'error', 'timeout')),
    attributes       jsonb
) PARTITION BY RANGE ("timestamp");

-- Idempotency: the partition key must be in every unique index, so a retried entry is
-- recognised by (organization, id, timestamp); a retry resends the same entry.
CREATE UNIQUE INDEX logs_idempotency_idx ON logs (organization_id, client_id, "timestamp");
CREATE INDEX logs_follow_idx ON logs (organization_id, seq);
CREATE INDEX logs_feature_time_idx ON logs (feature_id, "timestamp" DESC);
CREATE INDEX logs_feature_level_time_idx ON logs (feature_id, level, "timestamp" DESC);
CREATE INDEX logs_message_trgm_idx ON logs USING gin (message gin_trgm_ops);

-- What retention dropped, per organization: a follower's cursor below this is a gap.
CREATE TABLE log_expired (
    organization_id  uuid PRIMARY KEY,
    max_seq          bigint NOT NULL,
    before           timestamptz NOT NULL
);

CREATE FUNCTION minerva_log_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := format('logs_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF logs FOR VALUES FROM (%L) TO (%L)',
            name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
    RETURN name;
END;
$$;

-- The leases of the background jobs (service/jobs.py): who leads each job, since when,
-- until when, and how its last run went.
CREATE TABLE job_leases (
    name              text PRIMARY KEY,
    holder            text NOT NULL,
    epoch             bigint NOT NULL,
    acquired_at       timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    last_run_at       timestamptz,
    last_duration_ms  double precision,
    last_error        text
);

-- Metrics: per-minute rollups of the calls applications report as log entries (those with
-- a status), kept current by the ingest transaction that stores the entries (logs.ingest).
-- docs/metrics.md defines every column and the latency histogram's buckets.

CREATE TABLE metric_minutes (
    organization_id  uuid NOT NULL,
    feature_id       uuid NOT NULL,  -- as logs: no foreign key, an ingest never waits
    minute           timestamptz NOT NULL,
    model            text NOT NULL,     -- '' when the entries named none
    test             boolean NOT NULL,  -- entries with source `test`, kept apart
    requests         integer NOT NULL,
    successes        integer NOT NULL,
    errors           integer NOT NULL,
    timeouts         integer NOT NULL,
    latency_count    integer NOT NULL,  -- requests that reported latency_ms
    latency_sum      numeric NOT NULL,  -- numeric: sums exact whatever the order of adding
    -- {"bucket index": count}: the bucket bounds are fixed (service/metrics.py), so
    -- histograms of any minutes, models and instances add up.
    latency_hist     jsonb NOT NULL,
    tokens_in        bigint NOT NULL,
    tokens_out       bigint NOT NULL,
    cost             numeric NOT NULL,
    PRIMARY KEY (feature_id, minute, model, test)
);
CREATE INDEX metric_minutes_org_minute_idx ON metric_minutes (organization_id, minute);

-- Two histograms as one: the counts of each bucket added.
CREATE FUNCTION minerva_hist_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (SELECT key, sum(value::bigint) AS total
          FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) e
          GROUP BY key) s
$$;

-- Each feature's service-level objective, from its current settings (defaults otherwise).
CREATE VIEW feature_slo AS
SELECT f.id AS feature_id, f.organization_id, f.name,
       coalesce((s.settings -> 'monitoring' -> 'slo' ->> 'success_rate')::float8, 99.5)
           AS success_rate,
       coalesce((s.settings -> 'monitoring' -> 'slo' ->> 'response_time_ms')::float8, 1000)
           AS response_time_ms
FROM features f
LEFT JOIN feature_settings s ON s.feature_id = f.id AND s.version = f.settings_version;

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

-- Webhooks (0006): endpoints, encrypted signing secrets, deliveries and their attempts.
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

-- Model and prompt tests (POST /features/{id}/test): one row per call, its whole result
-- as JSON and the fields that history filters on as columns. Each attempt is also a log
-- entry with source 'test'.
CREATE TABLE model_tests (
    id                uuid PRIMARY KEY,
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature_id        uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL CHECK (status IN ('success', 'error', 'timeout')),
    model             text NOT NULL,
    prompt            text,
    request_id        text NOT NULL,
    result            jsonb NOT NULL
);
CREATE INDEX model_tests_feature_idx ON model_tests (feature_id, created_at DESC, id DESC);

-- Suite runs (POST /test-runs): one row per `minerva-ai test suite` run, keyed by the suite
-- file's hash and the fingerprint of the feature's models and prompts it ran against. The
-- whole run (its cases and their test ids) is kept as JSON.
CREATE TABLE test_runs (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature_id          uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    suite_hash          text NOT NULL,
    fingerprint         text NOT NULL,
    status              text NOT NULL CHECK (status IN ('passed', 'failed', 'error')),
    pass_rate           float8 NOT NULL,
    required_pass_rate  float8 NOT NULL,
    run                 jsonb NOT NULL
);
CREATE INDEX test_runs_org_idx ON test_runs (organization_id, created_at DESC, id DESC);
CREATE INDEX test_runs_feature_idx ON test_runs (feature_id, fingerprint, created_at DESC);
