-- The readiness check (routes/health.py): which migrations the database has.

-- name: applied_migrations
SELECT version FROM schema_migrations
