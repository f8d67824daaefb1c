"""Service URLs: their canonical form, and whether one points at this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from minerva_ai.core.errors import ConfigError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """Canonical form used to compare URLs: lowercase scheme and host, no default port,
    no trailing slash. Raises ``ConfigError`` with the reason when the URL is unusable."""
    text = url.strip()
    if not text:
        raise ConfigError("invalid URL '': it is empty")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not text.lower().startswith(f"{scheme}://"):
        raise ConfigError(f"invalid URL {url!r}: it must start with http:// or https://")
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid URL {url!r}: a query or fragment is not allowed")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"invalid URL {url!r}: credentials in the URL are not allowed")
    host = (parts.hostname or "").lower()
    if not host:
        raise ConfigError(f"invalid URL {url!r}: it has no host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"invalid URL {url!r}: the port is not a number from 0 to 65535"
        ) from None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def is_loopback(url: str) -> bool:
    """Whether a (normalized) URL points at this machine."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
