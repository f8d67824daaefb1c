-- Leases of the background jobs (service/jobs.py). Times are the database's clock
-- (clock_timestamp(): a statement may wait for a lock, and now() is its transaction's start).

-- name: job_lock_timeout
SELECT set_config('lock_timeout', %(timeout)s, true)

-- name: job_transaction_timeout
-- A job's transaction whose process froze is ended by the server, releasing the lease row.
SELECT set_config('idle_in_transaction_session_timeout', %(timeout)s, true)

-- name: take_lease
-- The lease, when it is free, expired or already ours; the epoch rises with each new
-- holder. FOR UPDATE waits for a fenced transaction of the current holder to end.
WITH current AS (
    SELECT name, holder, epoch, expires_at FROM job_leases WHERE name = %(name)s FOR UPDATE
), taken AS (
    UPDATE job_leases l
    SET holder = %(holder)s,
        epoch = CASE WHEN c.holder = %(holder)s THEN c.epoch ELSE c.epoch + 1 END,
        acquired_at = CASE WHEN c.holder = %(holder)s THEN l.acquired_at
                           ELSE clock_timestamp() END,
        expires_at = clock_timestamp() + %(ttl)s
    FROM current c
    WHERE l.name = c.name AND (c.expires_at <= clock_timestamp() OR c.holder = %(holder)s)
    RETURNING l.epoch
), created AS (
    INSERT INTO job_leases (name, holder, epoch, acquired_at, expires_at)
    SELECT %(name)s, %(holder)s, 1, clock_timestamp(), clock_timestamp() + %(ttl)s
    WHERE NOT EXISTS (SELECT 1 FROM current)
    ON CONFLICT (name) DO NOTHING
    RETURNING epoch
)
SELECT epoch FROM taken UNION ALL SELECT epoch FROM created

-- name: renew_lease
UPDATE job_leases SET expires_at = clock_timestamp() + %(ttl)s
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
  AND expires_at > clock_timestamp()
RETURNING expires_at

-- name: fence_lease
SELECT epoch FROM job_leases
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
  AND expires_at > clock_timestamp()
FOR KEY SHARE

-- name: release_lease
UPDATE job_leases SET expires_at = clock_timestamp()
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s

-- name: record_job_run
UPDATE job_leases
SET last_run_at = clock_timestamp() - make_interval(secs => %(duration_ms)s / 1000.0),
    last_duration_ms = %(duration_ms)s, last_error = %(error)s
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s

-- name: job_status
SELECT name, holder, epoch, acquired_at, expires_at, expires_at > clock_timestamp() AS held,
       last_run_at, round(last_duration_ms::numeric, 1)::float8 AS last_duration_ms, last_error
FROM job_leases ORDER BY name
