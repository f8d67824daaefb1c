-- Logs: partitioned by day on the entry's timestamp, idempotent by client id, with a
-- commit-ordered cursor (seq) assigned under one advisory lock at insert.

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
