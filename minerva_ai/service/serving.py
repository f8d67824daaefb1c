"""How every uvicorn that serves the app is configured (supervisor, workers, tests).

Apart from app.py so that the supervisor of ``--workers N`` reads it without loading the
app (and its metrics) into a process that serves nothing.
"""

from __future__ import annotations

UVICORN_OPTIONS: dict[str, object] = {
    "http": "httptools",
    "ws": "websockets-sansio",
    # Compression cost a third of the service's CPU when fanning logs out (1,000 clients:
    # lag p99 669 ms with it, 128 ms without; docs/performance.md).
    "ws_per_message_deflate": False,
    "loop": "uvloop",
    "timeout_graceful_shutdown": 10,
    "log_level": "warning",
    "proxy_headers": False,
}
