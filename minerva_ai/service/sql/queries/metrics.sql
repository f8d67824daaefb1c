-- name: metric_rollup
-- The calls of some features (all of the organization's when feature_ids is NULL) in steps
-- of `step` from `since`, per feature (and per model when by_model): sums, the minutes that
-- had calls and those that met the feature's SLO success rate, and (when `histograms`) the
-- merged latency histogram, which costs most of the query.
WITH minutes AS (
    SELECT m.feature_id, CASE WHEN %(by_model)s THEN m.model END AS model, m.minute,
           sum(m.requests) AS requests, sum(m.successes) AS successes,
           sum(m.errors) AS errors, sum(m.timeouts) AS timeouts,
           sum(m.latency_count) AS latency_count, sum(m.latency_sum) AS latency_sum,
           sum(m.tokens_in) AS tokens_in, sum(m.tokens_out) AS tokens_out,
           sum(m.cost) AS cost,
           jsonb_agg(m.latency_hist) FILTER (WHERE %(histograms)s) AS hists
    FROM metric_minutes m
    WHERE m.organization_id = %(organization_id)s
      AND (%(feature_ids)s::uuid[] IS NULL OR m.feature_id = ANY(%(feature_ids)s::uuid[]))
      AND m.minute >= %(since)s AND m.minute < %(until)s
      AND (%(include_tests)s OR NOT m.test)
    GROUP BY 1, 2, 3
), steps AS (
    SELECT mi.feature_id, mi.model, date_bin(%(step)s, mi.minute, %(since)s) AS start,
           sum(mi.requests)::bigint AS requests, sum(mi.successes)::bigint AS successes,
           sum(mi.errors)::bigint AS errors, sum(mi.timeouts)::bigint AS timeouts,
           sum(mi.latency_count)::bigint AS latency_count, sum(mi.latency_sum) AS latency_sum,
           sum(mi.tokens_in)::bigint AS tokens_in, sum(mi.tokens_out)::bigint AS tokens_out,
           sum(mi.cost) AS cost, count(*) AS minutes,
           count(*) FILTER (WHERE mi.successes * 100.0 >= slo.success_rate * mi.requests)
               AS minutes_met,
           jsonb_agg(mi.hists) FILTER (WHERE %(histograms)s) AS hists
    FROM minutes mi JOIN feature_slo slo ON slo.feature_id = mi.feature_id
    GROUP BY 1, 2, 3
)
SELECT s.feature_id, s.model, s.start, s.requests, s.successes, s.errors, s.timeouts,
       s.latency_count, s.latency_sum::float8 AS latency_sum, s.tokens_in, s.tokens_out,
       s.cost::float8 AS cost, s.minutes, s.minutes_met,
       CASE WHEN %(histograms)s THEN
           (SELECT coalesce(jsonb_object_agg(e.key, e.n), '{}')
            FROM (SELECT h.key, sum(h.value::bigint) AS n
                  FROM jsonb_array_elements(s.hists) AS per_minute,
                       jsonb_array_elements(per_minute) AS hist,
                       jsonb_each_text(hist) AS h
                  GROUP BY h.key) e)
       ELSE '{}'::jsonb END AS latency_hist
FROM steps s

-- name: feature_slos
-- The features whose metrics are asked for, with their SLO, by name.
SELECT feature_id AS id, name, success_rate, response_time_ms
FROM feature_slo
WHERE organization_id = %(organization_id)s
  AND (%(feature_ids)s::uuid[] IS NULL OR feature_id = ANY(%(feature_ids)s::uuid[]))
ORDER BY name

-- name: expire_metric_minutes
-- Retention, an organization and a batch at a time (the job repeats until none is left).
DELETE FROM metric_minutes
WHERE ctid = ANY(ARRAY(SELECT ctid FROM metric_minutes
                       WHERE organization_id = %(organization_id)s AND minute < %(before)s
                       LIMIT %(batch)s))

-- name: organization_ids
SELECT id FROM organizations ORDER BY id

-- name: open_alerts_by_feature
-- Open alerts per feature, and the worst severity among them (status takes it).
SELECT feature_id, count(*) AS open_alerts,
       max(CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS rank
FROM alerts
WHERE organization_id = %(organization_id)s AND state = 'open'
  AND (%(feature_ids)s::uuid[] IS NULL OR feature_id = ANY(%(feature_ids)s::uuid[]))
GROUP BY feature_id

-- name: evaluation_timeout
-- The evaluator's reads may take longer than an interactive request's (this transaction).
SELECT set_config('statement_timeout', %(timeout)s, true)
