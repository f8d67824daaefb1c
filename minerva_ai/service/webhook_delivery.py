"""One webhook delivery attempt: the SSRF rule, Standard Webhooks signatures, the Slack
rendering of a payload, the retry schedule, and the HTTP request itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from minerva_ai.service.config import Resolver

SECRET_PREFIX = "whsec_"  # noqa: S105 (the form's prefix, not a secret)
MAX_RETRY_DELAY = timedelta(hours=1)
USER_AGENT = "minerva-ai-webhooks"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The target may not be called: not http(s), or an address the SSRF rule refuses."""


# ---------------------------------------------------------------- secrets and signatures


def new_secret() -> str:
    """A signing secret in Standard Webhooks form: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` with the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets_: list[str], event_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: one signature per active secret, space-separated."""
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, event_id, timestamp, body) for s in secrets_),
    }


def retry_delay(attempt: int, base_s: float) -> timedelta:
    """The wait after failed attempt ``attempt`` (1-based): base * 2^(attempt-1), capped."""
    return min(timedelta(seconds=base_s * 2 ** (attempt - 1)), MAX_RETRY_DELAY)


# ---------------------------------------------------------------- SSRF


def _why_refused(address: IPAddress) -> str | None:
    """Why an address may not be called, or None when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if str(address) in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254"):
        return "a cloud metadata address"
    for kind, flag in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a private", address.is_private),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{kind} address"
    if not address.is_global:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class Target:
    """Where a webhook's URL points: its parts, and the addresses it resolves to now."""

    url: str
    host: str
    port: int
    addresses: list[str]


def parse_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL (``Refused`` naming what is wrong)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise Refused("has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry credentials (user:password@)")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Guard:
    """The SSRF rule: a target must resolve only to public addresses, unless its host
    name or the addresses are allowed (MINERVA_WEBHOOK_ALLOW)."""

    def __init__(self, allow: tuple[str, ...], resolver: Resolver | None = None) -> None:
        self.hosts = {a for a in allow if not _is_network(a)}
        self.networks = [ipaddress.ip_network(a) for a in allow if _is_network(a)]
        self.resolve = resolver or system_resolver

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    async def check(self, url: str) -> Target:
        """The target of ``url`` if it may be called now (``Refused`` saying why not)."""
        _, host, port = parse_url(url)
        literal = _ip(host.strip("[]"))
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolve(host, port)
            except OSError as exc:
                raise Refused(f"{host} does not resolve ({exc.strerror or exc})") from None
            if not addresses:
                raise Refused(f"{host} does not resolve")
        if host not in self.hosts:
            for raw in addresses:
                address = _ip(raw)
                if address is None:
                    raise Refused(f"{host} resolves to {raw!r}, which is not an IP address")
                reason = _why_refused(address)
                if reason is not None and not self._allowed(address):
                    shown = host if literal is not None else f"{host} resolves to {address}"
                    raise Refused(
                        f"{shown}, {reason} (allow it with MINERVA_WEBHOOK_ALLOW)"
                        if literal is None
                        else f"{shown} is {reason} (allow it with MINERVA_WEBHOOK_ALLOW)"
                    )
        return Target(url, host, port, addresses)


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry)
    except ValueError:
        return False
    return True


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def pinned(target: Target) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to connect to the address just checked (not a second lookup, which DNS
    rebinding could answer differently), the Host header, and TLS's server name."""
    parts = urlsplit(target.url)
    address = target.addresses[0]
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{target.port}"
    url = urlunsplit(parts._replace(netloc=netloc))
    default_port = 443 if parts.scheme == "https" else 80
    host = parts.hostname or target.host
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if target.port == default_port else f"[{host}]:{target.port}"
    extensions = {"sni_hostname": target.host} if parts.scheme == "https" else {}
    return url, {"host": host_header}, extensions


# ---------------------------------------------------------------- bodies

_ICONS = {
    "firing": ":red_circle:",
    "escalated": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "acknowledged": ":eyes:",
    "renotify": ":bell:",
}
_FACTS = (
    ("metric", "metric"),
    ("value", "value"),
    ("threshold", "threshold"),
    ("state", "state"),
    ("opened", "opened_at"),
)


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message for an event's payload."""
    kind = str(payload.get("type", "event"))
    data = payload.get("data") or {}
    alert = data.get("alert") if isinstance(data, dict) else None
    if not isinstance(alert, dict):
        webhook = data.get("webhook", {}) if isinstance(data, dict) else {}
        text = f"minerva-ai: test event for webhook {webhook.get('name', '')}".strip()
        return {"text": text}
    what = kind.removeprefix("alert.")
    icon = _ICONS.get(what, ":bell:")
    feature = alert.get("feature") or alert.get("feature_id")
    severity = str(alert.get("severity", "")).upper()
    title = f"{icon} [{severity}] {feature} / {alert.get('rule')}: {what}"
    facts = [f"*{name}*: {alert[key]}" for name, key in _FACTS if alert.get(key) is not None]
    labels = alert.get("labels") or {}
    if labels:
        facts.append("*labels*: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if alert.get("runbook_url"):
        facts.append(f"<{alert['runbook_url']}|runbook>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
    ]
    if facts:
        context = {"type": "mrkdwn", "text": " · ".join(facts)}
        blocks.append({"type": "context", "elements": [context]})
    return {"text": title, "blocks": blocks}


def body_of(payload: dict[str, Any], format: str) -> bytes:
    return orjson.dumps(slack_message(payload) if format == "slack" else payload)


# ---------------------------------------------------------------- an attempt


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code, or an error; how long it took."""

    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def attempt(
    guard: Guard,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
) -> Outcome:
    """POST ``body`` to ``url`` once, within ``timeout_s`` from lookup to last byte."""
    started = time.perf_counter()

    def took() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        async with asyncio.timeout(timeout_s):
            target = await guard.check(url)
            connect_url, host, extensions = pinned(target)
            # httpx's own limit is looser: the overall bound above is the one that fires.
            async with httpx.AsyncClient(
                timeout=timeout_s + 1, follow_redirects=False, trust_env=False
            ) as http:
                response = await http.post(
                    connect_url, content=body, headers={**headers, **host}, extensions=extensions
                )
    except Refused as exc:
        return Outcome(None, f"refused: {exc}", took())
    except TimeoutError:
        return Outcome(None, f"timed out after {timeout_s:g} s", took())
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome(None, detail, took())
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(response.status_code, error, took())
