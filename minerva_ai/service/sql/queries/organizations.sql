-- name: create_organization
INSERT INTO organizations (name) VALUES (%(name)s)
RETURNING id, name, created_at;

-- name: get_organization_by_name
SELECT id, name, created_at FROM organizations WHERE name = %(name)s;
