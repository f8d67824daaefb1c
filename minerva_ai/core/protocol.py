"""The wire protocol's names and numbers, shared by the client, the service and the load test.

Standard library only and cheap to import: Click options use these tuples too. The
documents they come from: docs/api/README.md and docs/api/websocket.md.
"""

from __future__ import annotations

from typing import Literal, get_args

API_PREFIX = "/api/platform/ai-management"
HEALTH_PATH = "/api/health"
WEBSOCKET_PATH = f"{API_PREFIX}/websocket"

# Every answer of the service names the process that sent it; an answer without it came
# from something in front (a proxy's 502 when no instance answered).
INSTANCE_HEADER = "X-Minerva-Instance"

# WebSocket close codes: the service restarts (reconnect); not authenticated; policy
# (a message over the size limit).
CLOSE_RESTARTING = 1012
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008

# The WebSocket channels of the protocol (docs/api/websocket.md); a service answers
# `unknown_channel` for one whose capability it does not have yet (metrics, alerts).
CHANNELS = ("settings", "logs", "metrics", "alerts")

# The filters of `GET /logs`; a follower (WebSocket, SSE, polling) takes the subset that
# does not bound time, since it starts from a cursor.
LOG_FILTERS = ("feature", "level", "source", "since", "until", "q", "request_id")
FOLLOW_FILTERS = ("level", "source", "q", "request_id")

ExportFormat = Literal["json", "jsonl", "csv"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)

# How a follower reads the live log: `auto` tries the WebSocket, then SSE, then polling.
TRANSPORTS = ("auto", "ws", "sse", "poll")
