-- name: log_columns
SELECT l.seq, l.client_id AS id, l."timestamp", l.level, l.message, l.source,
       f.name AS feature, l.feature_id, l.request_id, l.model, l.latency_ms, l.tokens_in,
       l.tokens_out, l.cost, l.status, l.attributes, l.committed_at
FROM logs l LEFT JOIN features f ON f.id = l.feature_id

-- name: export_columns
-- Times as GET /logs writes them: UTC, a fraction of a second only when there is one.
SELECT l.client_id AS id,
       to_char(l."timestamp" AT TIME ZONE 'UTC',
               CASE WHEN date_trunc('second', l."timestamp") = l."timestamp"
                    THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
                    ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END) AS "timestamp",
       l.level, l.message, l.source, f.name AS feature, l.request_id, l.model, l.latency_ms,
       l.tokens_in, l.tokens_out, l.cost, l.status, l.attributes, l.seq::text AS cursor,
       to_char(l.committed_at AT TIME ZONE 'UTC',
               CASE WHEN date_trunc('second', l.committed_at) = l.committed_at
                    THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
                    ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END) AS committed_at
FROM logs l LEFT JOIN features f ON f.id = l.feature_id

-- name: create_log_staging
CREATE TEMP TABLE IF NOT EXISTS log_staging (
    ord integer NOT NULL,
    organization_id uuid NOT NULL,
    feature_id uuid NOT NULL,
    client_id text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    level text NOT NULL,
    message text NOT NULL,
    source text NOT NULL,
    request_id text,
    model text,
    latency_ms double precision,
    tokens_in integer,
    tokens_out integer,
    cost double precision,
    status text,
    attributes jsonb
)

-- name: copy_log_staging
COPY log_staging (ord, organization_id, feature_id, client_id, "timestamp", level, message,
                  source, request_id, model, latency_ms, tokens_in, tokens_out, cost, status,
                  attributes) FROM STDIN

-- name: lock_org_log_commits
SELECT pg_advisory_xact_lock(%(lock)s, hashtext(%(organization_id)s::text))

-- name: insert_logs_from_staging
-- The new entries (a re-sent id is skipped), and in the same statement the calls among
-- them (entries with a status) added to their minute's rollup: counted once, never missed.
-- A template composed in Python (hence the doubled braces): the entries come, in order,
-- from log_rows_staged or log_rows_given.
WITH inserted AS (
    INSERT INTO logs (organization_id, feature_id, seq, client_id, "timestamp", committed_at,
                      level, message, source, request_id, model, latency_ms, tokens_in,
                      tokens_out, cost, status, attributes)
    SELECT s.organization_id, s.feature_id, nextval('log_seq'), s.client_id, s."timestamp",
           clock_timestamp(), s.level, s.message, s.source, s.request_id, s.model,
           s.latency_ms, s.tokens_in, s.tokens_out, s.cost, s.status, s.attributes
    FROM {rows} s
    ON CONFLICT DO NOTHING
    RETURNING seq, organization_id, feature_id, "timestamp", source, model, latency_ms,
              tokens_in, tokens_out, cost, status
), calls AS (
    SELECT organization_id, feature_id, coalesce(model, '') AS model, source = 'test' AS test,
           date_bin('1 minute', "timestamp", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS minute,
           status, latency_ms, tokens_in, tokens_out, cost,
           width_bucket(latency_ms, %(latency_bounds)s::float8[]) AS bucket
    FROM inserted
    WHERE status IS NOT NULL
), histograms AS (
    SELECT feature_id, minute, model, test, jsonb_object_agg(bucket, n) AS latency_hist
    FROM (SELECT feature_id, minute, model, test, bucket, count(*) AS n
          FROM calls WHERE bucket IS NOT NULL
          GROUP BY feature_id, minute, model, test, bucket) b
    GROUP BY feature_id, minute, model, test
), rolled_up AS (
    INSERT INTO metric_minutes AS m (organization_id, feature_id, minute, model, test,
                                     requests, successes, errors, timeouts, latency_count,
                                     latency_sum, latency_hist, tokens_in, tokens_out, cost)
    SELECT c.organization_id, c.feature_id, c.minute, c.model, c.test, count(*),
           count(*) FILTER (WHERE c.status = 'success'),
           count(*) FILTER (WHERE c.status = 'error'),
           count(*) FILTER (WHERE c.status = 'timeout'),
           count(c.latency_ms), coalesce(sum(c.latency_ms::numeric), 0),
           coalesce(h.latency_hist, '{{}}'), coalesce(sum(c.tokens_in), 0),
           coalesce(sum(c.tokens_out), 0), coalesce(sum(c.cost::numeric), 0)
    FROM calls c
    LEFT JOIN histograms h USING (feature_id, minute, model, test)
    GROUP BY c.organization_id, c.feature_id, c.minute, c.model, c.test, h.latency_hist
    ON CONFLICT (feature_id, minute, model, test) DO UPDATE SET
        requests = m.requests + excluded.requests,
        successes = m.successes + excluded.successes,
        errors = m.errors + excluded.errors,
        timeouts = m.timeouts + excluded.timeouts,
        latency_count = m.latency_count + excluded.latency_count,
        latency_sum = m.latency_sum + excluded.latency_sum,
        latency_hist = minerva_hist_merge(m.latency_hist, excluded.latency_hist),
        tokens_in = m.tokens_in + excluded.tokens_in,
        tokens_out = m.tokens_out + excluded.tokens_out,
        cost = m.cost + excluded.cost
)
SELECT seq FROM inserted

-- name: log_rows_staged
-- A large batch: the rows COPY put in the session's staging table.
(SELECT * FROM log_staging ORDER BY ord)

-- name: log_rows_given
-- A small batch: the rows as parameters, one array per column of log_staging, no COPY.
(SELECT * FROM unnest(%(ord)s::integer[], %(organization_id)s::uuid[], %(feature_id)s::uuid[],
                      %(client_id)s::text[], %(timestamp)s::timestamptz[], %(level)s::text[],
                      %(message)s::text[], %(source)s::text[], %(request_id)s::text[],
                      %(model)s::text[], %(latency_ms)s::float8[], %(tokens_in)s::integer[],
                      %(tokens_out)s::integer[], %(cost)s::float8[], %(status)s::text[],
                      %(attributes)s::jsonb[])
     AS u(ord, organization_id, feature_id, client_id, "timestamp", level, message, source,
          request_id, model, latency_ms, tokens_in, tokens_out, cost, status, attributes)
 ORDER BY ord)

-- name: ensure_log_partition
SELECT minerva_log_partition(%(day)s::date)

-- name: existing_log_partitions
SELECT day FROM unnest(%(days)s::date[]) AS day
WHERE to_regclass(format('logs_p%%s', to_char(day, 'YYYYMMDD'))) IS NOT NULL

-- name: lock_log_partitions
SELECT pg_advisory_xact_lock(%(lock)s)

-- name: list_log_partitions
SELECT c.relname AS name
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'logs'::regclass
ORDER BY c.relname

-- name: features_by_ref
SELECT id, name FROM features
WHERE organization_id = %(organization_id)s
  AND (name = ANY(%(names)s) OR id = ANY(%(ids)s::uuid[]))

-- name: max_log_seq
-- What "now" is for a follower: past the newest entry, and past any that expired.
SELECT greatest(
    (SELECT coalesce(max(seq), 0) FROM logs WHERE organization_id = %(organization_id)s),
    (SELECT coalesce(max(max_seq), 0) FROM log_expired
     WHERE organization_id = %(organization_id)s)) AS seq

-- name: expired_log_seq
SELECT max_seq, before FROM log_expired WHERE organization_id = %(organization_id)s

-- name: truncate_log_staging
TRUNCATE log_staging

-- name: partition_lock_timeout
-- Creating a partition waits at most this long for its lock (an export may hold it).
SET LOCAL lock_timeout = '10s'

-- name: expire_log_partition
-- Before a partition is dropped: per organization, the newest cursor it held and when its
-- day ended, so that a follower behind it is told of the gap. The partition's name is an
-- identifier composed in Python (psycopg.sql.Identifier).
INSERT INTO log_expired (organization_id, max_seq, before)
SELECT organization_id, max(seq), %(before)s::timestamptz
FROM {partition}
GROUP BY organization_id
ON CONFLICT (organization_id) DO UPDATE SET
    max_seq = greatest(log_expired.max_seq, excluded.max_seq),
    before = greatest(log_expired.before, excluded.before)

-- name: drop_log_partition
DROP TABLE {partition}

-- name: neutralised_column
-- A CSV cell that a spreadsheet would run as a formula gets a leading quote. Quotes before
-- a formula character count too ('=x becomes ''=x), so dropping one leading quote wherever
-- quotes precede such a character undoes it exactly.
CASE WHEN {column} ~ E'^''*[=+@\t\r-]' THEN '''' || {column} ELSE {column} END AS {column}

-- name: export_csv
COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER)

-- name: export_json
-- One JSON object per line. CSV format with quote and delimiter bytes that JSON always
-- escapes turns off COPY's own escaping, so each line is exactly row_to_json's text.
COPY (SELECT row_to_json(t) FROM ({select}) t) TO STDOUT
WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
