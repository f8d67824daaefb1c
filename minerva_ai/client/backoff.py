"""Delays between attempts: shared by requests, WebSocket connects and log following."""

from __future__ import annotations

import time


class Backoff:
    """Delays between attempts, doubling, until ``retry_for`` seconds have passed."""

    def __init__(self, retry_for: float, initial: float = 0.1, ceiling: float = 1.0) -> None:
        self._deadline = time.monotonic() + retry_for
        self._delay = initial
        self._ceiling = ceiling

    def next_delay(self, at_least: float = 0.0) -> float | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return None
        delay = min(max(self._delay, at_least), remaining)
        self._delay = min(self._delay * 2, self._ceiling)
        return delay
