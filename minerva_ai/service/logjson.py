"""`server start --log-format json`: one JSON object a line on stderr, secrets masked.

Access lines carry the client (after ``--proxy-headers``), method, path, protocol and
status; every line carries time (UTC), level, logger and message. Bearer tokens, URL
passwords and secret-looking query parameters are replaced by ``***`` wherever they
appear, exceptions included.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

_SECRETS = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"']+"), r"\1***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), r"\1***@"),
    (
        re.compile(
            r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|password)=)[^&\s\"']+"
        ),
        r"\1***",
    ),
)


def scrub(text: str) -> str:
    """``text`` with tokens, URL passwords and secret query values masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            line.update(
                message="request",
                client=str(client),
                method=str(method),
                path=scrub(str(path)),
                http_version=str(version),
                status=int(str(status)),
            )
        else:
            line["message"] = scrub(record.getMessage())
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def message_line(message: str, level: str = "info") -> str:
    """The supervisor's own messages in the same shape as the log's."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = {"time": now, "level": level, "logger": "minerva_ai.supervisor"}
    line["message"] = scrub(message)
    return json.dumps(line, ensure_ascii=False)


def log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``--log-format``: None keeps uvicorn's text logging."""
    if log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "minerva_ai.service.logjson.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "loggers": {"uvicorn": quiet, "uvicorn.access": quiet, "minerva_ai": quiet},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
