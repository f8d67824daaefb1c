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
