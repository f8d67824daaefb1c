-- name: list_features
SELECT id, name, display_name, description, status, settings_version, created_at, updated_at
FROM features
WHERE organization_id = %(organization_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(search)s::text IS NULL
       OR strpos(lower(name || ' ' || display_name || ' ' || description), lower(%(search)s)) > 0)
  AND (%(after_name)s::text IS NULL OR name > %(after_name)s)
ORDER BY name
LIMIT %(limit)s;

-- name: get_feature
SELECT id, name, display_name, description, status, settings_version, created_at, updated_at
FROM features
WHERE organization_id = %(organization_id)s
  AND (name = %(ref)s OR (%(ref_id)s::uuid IS NOT NULL AND id = %(ref_id)s::uuid));

-- name: create_feature
INSERT INTO features (organization_id, name, display_name, description, status)
VALUES (%(organization_id)s, %(name)s, %(display_name)s, %(description)s, %(status)s)
ON CONFLICT (organization_id, name) DO NOTHING
RETURNING id, name, display_name, description, status, settings_version, created_at, updated_at;

-- name: update_feature
UPDATE features SET
    display_name = coalesce(%(display_name)s, display_name),
    description = coalesce(%(description)s, description),
    status = coalesce(%(status)s, status),
    updated_at = now()
WHERE id = %(id)s AND organization_id = %(organization_id)s
RETURNING id, name, display_name, description, status, settings_version, created_at, updated_at;

-- name: delete_feature
DELETE FROM features WHERE id = %(id)s AND organization_id = %(organization_id)s
RETURNING id, name;
