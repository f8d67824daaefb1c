"""Every PostgreSQL advisory lock and job lease the service takes, named once.

Advisory locks serialise short critical sections between instances (a transaction holds
them and PostgreSQL drops them at its end). Work that must run once across instances is
a job whose leader holds a lease row instead (``jobs.py``): a lock alone cannot tell a
frozen holder from a live one.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Lock(IntEnum):
    """Advisory lock keys, passed to the named queries as ``%(lock)s``."""

    MIGRATIONS = 0x6D696E657276  # db.migrate(): one migrator at a time
    BOOTSTRAP = 120299591135863  # admin.bootstrap(): the default organization, once
    LOG_COMMITS = 1835626101  # with hashtext(organization): log seq drawn in commit order
    LOG_PARTITIONS = 1835626102  # creating a day's log partition
    ALERT_COMMITS = 1835626103  # with hashtext(organization): alert transition seq order


class JobName(StrEnum):
    """Leases of the background jobs (``job_leases.name``)."""

    LOG_MAINTENANCE = "log-maintenance"
    METRICS_RETENTION = "metrics-retention"
    WEBHOOK_DELIVERY = "webhook-delivery"
    ALERT_EVALUATION = "alert-evaluation"
