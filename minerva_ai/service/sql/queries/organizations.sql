-- name: insert_organization
-- Nothing (no row) when the name is taken.
INSERT INTO organizations (name) VALUES (%(name)s)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: lock_bootstrap
-- Serialises the default organization's creation between instances starting at once.
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: get_organization
SELECT id, name, created_at FROM organizations WHERE id = %(id)s;

-- name: get_organization_by_name
SELECT id, name, created_at FROM organizations WHERE name = %(name)s;
