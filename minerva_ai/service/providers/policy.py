"""What the service lets a model definition reach: the environment variables it may read
as keys (MINERVA_PROVIDER_KEYS) and the private addresses it may call (MINERVA_PROVIDER_ALLOW).

A ``write`` token chooses ``api_key_env`` and ``base_url``: without these rules it could
point a provider at ``DATABASE_URL`` and send its value to a server of its choosing, or
make the service call an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
KEY_PREFIX = "MINERVA_PROVIDER_KEY_"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A value of MINERVA_PROVIDER_KEYS or MINERVA_PROVIDER_ALLOW that makes no sense."""


def _items(raw: str | None) -> list[str]:
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


@dataclass(frozen=True)
class KeyPolicy:
    """The names of the environment variables a model definition may name as its key."""

    names: frozenset[str] = frozenset(DEFAULT_KEYS)

    @classmethod
    def parse(cls, raw: str | None) -> KeyPolicy:
        names = _items(raw) if raw else list(DEFAULT_KEYS)
        return cls(frozenset(names))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyPolicy:
        return cls.parse((os.environ if environ is None else environ).get("MINERVA_PROVIDER_KEYS"))

    def allows(self, name: str) -> bool:
        return name in self.names or (name.startswith(KEY_PREFIX) and name != KEY_PREFIX)

    def refusal(self, name: str) -> str:
        allowed = ", ".join(sorted(self.names))
        return (
            f"{name} is not an allowed key variable: use one of {allowed}, or a name "
            f"starting with {KEY_PREFIX} (the service's MINERVA_PROVIDER_KEYS)"
        )


@dataclass(frozen=True)
class AddressPolicy:
    """Loopback, private and link-local addresses are refused unless listed here."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, raw: str | None) -> AddressPolicy:
        hosts: set[str] = set()
        networks: list[Network] = []
        for item in _items(raw):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if "/" in item or not all(part for part in item.split(".")):
                raise PolicyError(
                    f"MINERVA_PROVIDER_ALLOW: {item!r} is neither a host name nor a CIDR"
                )
            hosts.add(item.lower())
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AddressPolicy:
        return cls.parse((os.environ if environ is None else environ).get("MINERVA_PROVIDER_ALLOW"))

    def _allowed(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return host.lower() in self.hosts or any(address in net for net in self.networks)

    async def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be called (its host resolves to an internal address), or None.

        Raises OSError when the host does not resolve."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:  # an address needs no lookup (getaddrinfo runs in a thread: ~0.3 ms)
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            kind = _internal(address)
            if kind and not self._allowed(host, address):
                return (
                    f"base_url host {host!r} resolves to {address}, a {kind} address: "
                    "the service calls such addresses only when MINERVA_PROVIDER_ALLOW "
                    "lists the host or its network"
                )
        return None


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    return None
