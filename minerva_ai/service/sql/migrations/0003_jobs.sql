-- The leases of the background jobs (service/jobs.py): who leads each job, since when,
-- until when, and how its last run went.
CREATE TABLE job_leases (
    name              text PRIMARY KEY,
    holder            text NOT NULL,
    epoch             bigint NOT NULL,
    acquired_at       timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    last_run_at       timestamptz,
    last_duration_ms  double precision,
    last_error        text
);
