-- name: create_token
INSERT INTO api_tokens (organization_id, name, token_hash, scopes)
VALUES (%(organization_id)s, %(name)s, %(token_hash)s, %(scopes)s)
RETURNING id, name, scopes, created_at, last_used_at, revoked_at;

-- name: authenticate_token
-- touch_due: the use is recorded (touch_token) only when the last one is a minute old, so
-- most requests make this one round trip.
SELECT t.id, t.name, t.scopes, t.last_used_at, t.created_at,
       t.organization_id, o.name AS organization_name,
       (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute') AS touch_due
FROM api_tokens t JOIN organizations o ON o.id = t.organization_id
WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL;

-- name: touch_token
UPDATE api_tokens SET last_used_at = now()
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: list_tokens
SELECT id, name, scopes, created_at, last_used_at, revoked_at
FROM api_tokens WHERE organization_id = %(organization_id)s
ORDER BY created_at, id;

-- name: revoke_token
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
WHERE id = %(id)s AND organization_id = %(organization_id)s
RETURNING id, revoked_at;

-- name: revoked_among
-- Which of these tokens are revoked now: their live streams end.
SELECT id FROM api_tokens WHERE id = ANY(%(ids)s) AND revoked_at IS NOT NULL;
