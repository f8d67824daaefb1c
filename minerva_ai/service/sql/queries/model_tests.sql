-- name: insert_model_test
INSERT INTO model_tests
    (id, organization_id, feature_id, created_at, status, model, prompt, request_id, result)
VALUES (%(id)s, %(organization_id)s, %(feature_id)s, %(created_at)s, %(status)s, %(model)s,
        %(prompt)s, %(request_id)s, %(result)s);

-- name: get_model_test
SELECT t.result, t.created_at, f.name AS feature
FROM model_tests t JOIN features f ON f.id = t.feature_id
WHERE t.organization_id = %(organization_id)s AND t.id = %(id)s;

-- name: list_model_tests
SELECT t.result, t.created_at, f.name AS feature
FROM model_tests t JOIN features f ON f.id = t.feature_id
WHERE t.organization_id = %(organization_id)s
  AND t.feature_id = %(feature_id)s
  AND (%(status)s::text IS NULL OR t.status = %(status)s)
  AND (%(model)s::text IS NULL OR t.model = %(model)s)
  AND (%(prompt)s::text IS NULL OR t.prompt = %(prompt)s OR split_part(t.prompt, '@', 1) = %(prompt)s)
  AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s)
  AND (%(before_at)s::timestamptz IS NULL OR (t.created_at, t.id) < (%(before_at)s, %(before_id)s::uuid))
ORDER BY t.created_at DESC, t.id DESC
LIMIT %(limit)s;

-- name: provider_usage
-- What rate limits count, rebuilt from the attempts logged: calls in the last minute,
-- tokens this minute, cost today (UTC).
SELECT
    count(DISTINCT request_id) FILTER (WHERE "timestamp" > %(minute_ago)s) AS requests,
    coalesce(sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0))
             FILTER (WHERE "timestamp" >= %(minute_start)s), 0)::bigint AS tokens,
    coalesce(sum(cost) FILTER (WHERE "timestamp" >= %(day_start)s), 0)::float8 AS cost
FROM logs
WHERE organization_id = %(organization_id)s
  AND feature_id = %(feature_id)s
  AND source = ANY(%(sources)s)
  AND "timestamp" >= least(%(minute_ago)s, %(day_start)s)
  AND "timestamp" <= %(now)s + interval '5 minutes';

-- name: feature_for_test
-- The feature and its current settings, in one round trip.
SELECT f.id, f.name, f.settings_version, s.settings
FROM features f
JOIN feature_settings s ON s.feature_id = f.id AND s.version = f.settings_version
WHERE f.organization_id = %(organization_id)s
  AND (f.name = %(ref)s OR (%(ref_id)s::uuid IS NOT NULL AND f.id = %(ref_id)s::uuid));
