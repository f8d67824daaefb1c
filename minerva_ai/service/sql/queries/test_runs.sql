-- name: count_feature_tests
-- How many of the given test ids are tests of this feature (of this organization).
SELECT count(*) AS found
FROM model_tests
WHERE organization_id = %(organization_id)s
  AND feature_id = %(feature_id)s
  AND id = ANY(%(ids)s::uuid[]);

-- name: insert_test_run
INSERT INTO test_runs
    (id, organization_id, feature_id, created_at, suite_hash, fingerprint, status, pass_rate,
     required_pass_rate, run)
VALUES (%(id)s, %(organization_id)s, %(feature_id)s, %(created_at)s, %(suite_hash)s,
        %(fingerprint)s, %(status)s, %(pass_rate)s, %(required_pass_rate)s, %(run)s);

-- name: get_test_run
SELECT r.id, r.feature_id, r.created_at, r.suite_hash, r.fingerprint, r.status, r.pass_rate,
       r.required_pass_rate, r.run, f.name AS feature,
       s.settings -> 'models' AS models, s.settings -> 'prompts' AS prompts
FROM test_runs r
JOIN features f ON f.id = r.feature_id
JOIN feature_settings s ON s.feature_id = f.id AND s.version = f.settings_version
WHERE r.organization_id = %(organization_id)s AND r.id = %(id)s;

-- name: list_test_runs
SELECT r.id, r.feature_id, r.created_at, r.suite_hash, r.fingerprint, r.status, r.pass_rate,
       r.required_pass_rate, r.run - 'cases' AS run, f.name AS feature,
       s.settings -> 'models' AS models, s.settings -> 'prompts' AS prompts
FROM test_runs r
JOIN features f ON f.id = r.feature_id
JOIN feature_settings s ON s.feature_id = f.id AND s.version = f.settings_version
WHERE r.organization_id = %(organization_id)s
  AND (%(feature_id)s::uuid IS NULL OR r.feature_id = %(feature_id)s)
  AND (%(suite_hash)s::text IS NULL OR r.suite_hash = %(suite_hash)s)
  AND (%(status)s::text IS NULL OR r.status = %(status)s)
  AND (%(fingerprint)s::text IS NULL OR r.fingerprint = %(fingerprint)s)
  AND (%(before_at)s::timestamptz IS NULL
       OR (r.created_at, r.id) < (%(before_at)s, %(before_id)s::uuid))
ORDER BY r.created_at DESC, r.id DESC
LIMIT %(limit)s;
