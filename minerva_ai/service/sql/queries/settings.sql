-- name: insert_settings_version
INSERT INTO feature_settings
    (feature_id, version, settings, diff, author_token_id, author_name, rollback_of)
VALUES (%(feature_id)s, %(version)s, %(settings)s, %(diff)s, %(author_token_id)s,
        %(author_name)s, %(rollback_of)s)
RETURNING feature_id, version, settings, created_at, author_token_id, author_name;

-- name: bump_settings_version
UPDATE features SET settings_version = settings_version + 1, updated_at = now()
WHERE id = %(feature_id)s AND settings_version = %(base_version)s
RETURNING settings_version;

-- name: get_settings_version
SELECT feature_id, version, settings, created_at, author_token_id, author_name
FROM feature_settings
WHERE feature_id = %(feature_id)s AND version = %(version)s;

-- name: settings_history
SELECT version, created_at, author_token_id, author_name, diff, rollback_of
FROM feature_settings
WHERE feature_id = %(feature_id)s
  AND (%(before_version)s::bigint IS NULL OR version < %(before_version)s)
ORDER BY version DESC
LIMIT %(limit)s;
