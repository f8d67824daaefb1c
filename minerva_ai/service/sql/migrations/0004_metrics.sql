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

-- `optimized` is now a reserved name (GET /features/optimized): say so if one exists.
DO $$
DECLARE
    found record;
BEGIN
    FOR found IN SELECT o.name AS organization, f.id
                 FROM features f JOIN organizations o ON o.id = f.organization_id
                 WHERE f.name = 'optimized' LOOP
        RAISE WARNING 'organization % has a feature named "optimized", a name now reserved '
                      '(GET /features/optimized lists features with metrics): reach it by its '
                      'id %', found.organization, found.id;
    END LOOP;
END;
$$;
