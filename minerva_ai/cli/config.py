"""The CLI's connection settings and their precedence: flag > environment > profile > default.

A stored token is only ever sent to the URL it was stored with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from minerva_ai.core.errors import ConfigError
from minerva_ai.core.profiles import ConfigFile, Profile, load_config, same_url
from minerva_ai.core.urls import is_loopback, normalize_url

DEFAULT_URL = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class Resolved:
    """The effective connection settings and where each one came from (for ``-v``)."""

    url: str
    url_source: str
    token: str | None
    token_source: str
    org: str | None
    org_source: str
    profile: str | None
    insecure: bool = False

    def describe(self) -> str:
        """One line for ``-v``: never the token itself."""
        org = f"; org {self.org} (from {self.org_source})" if self.org else ""
        return f"url {self.url} (from {self.url_source}); token from {self.token_source}{org}"


def _pick(
    flag: str | None, env_name: str, env: Mapping[str, str], profile_value: str | None, what: str
) -> tuple[str | None, str]:
    if flag:
        return flag, f"--{what}"
    if env.get(env_name):
        return env[env_name], env_name
    if profile_value:
        return profile_value, "profile"
    return None, "default"


def resolve(
    url_flag: str | None,
    org_flag: str | None,
    profile_flag: str | None,
    *,
    insecure: bool = False,
    env: Mapping[str, str] | None = None,
    config: ConfigFile | None = None,
    require_profile: bool = True,
) -> Resolved:
    """The effective URL, token and organization, and where each came from.

    The token is ``MINERVA_TOKEN`` if set, else the token of a profile whose URL equals the
    effective URL (the selected profile first; with an org, one of that org); never the
    token stored for another URL. A token is refused over plain http to a non-loopback
    host unless ``insecure``. With ``require_profile`` False, naming a profile that does not
    exist yet is allowed (``auth login`` creates it).
    """
    env = os.environ if env is None else env
    config = config if config is not None else load_config()
    profile_name = profile_flag or env.get("MINERVA_PROFILE") or config.current_profile
    selected = config.profiles.get(profile_name) if profile_name else None
    named = profile_flag or env.get("MINERVA_PROFILE")
    if require_profile and named and selected is None:
        known = ", ".join(sorted(config.profiles)) or "none"
        raise ConfigError(f"no profile named {profile_name!r} in {config.path} (known: {known})")

    url_raw, url_source = _pick(
        url_flag, "MINERVA_URL", env, selected.url if selected else None, "url"
    )
    if url_source == "profile" and selected:
        url_source = f"profile {selected.name!r}"
    url = normalize_url(url_raw or DEFAULT_URL)

    org, org_source = _pick(org_flag, "MINERVA_ORG", env, None, "org")
    token, token_source, token_profile = _token_for(url, org, selected, config, env)
    if token is not None and not _TOKEN_CHARS.fullmatch(token):
        # Never echo it: say where it came from, not what it is.
        raise ConfigError(
            f"the token from {token_source} contains characters a token cannot have "
            "(whitespace or control characters?): set it again"
        )
    same_url_selected = selected if selected and same_url(selected, url) else None
    org_profile = token_profile or same_url_selected
    if org is None and org_profile is not None and org_profile.org:
        org, org_source = org_profile.org, f"profile {org_profile.name!r}"
    profile = token_profile.name if token_profile else (selected.name if selected else None)

    if token:
        check_token_transport(url, insecure=insecure)
    return Resolved(url, url_source, token, token_source, org, org_source, profile, insecure)


def check_token_transport(url: str, *, insecure: bool) -> None:
    """Refuse to send a bearer token over plain http to a host that is not loopback."""
    if url.startswith("http://") and not insecure and not is_loopback(url):
        raise ConfigError(
            f"refusing to send a token over plain http to {url}: use https, "
            "or pass --insecure if this network is trusted"
        )


def profile_name_for(url: str, config: ConfigFile, explicit: str | None = None) -> str:
    """The profile a login to ``url`` is stored in: ``explicit``, else the current profile or
    another one already bound to ``url``, else a new one named after the host."""
    if explicit:
        return explicit
    current = config.profiles.get(config.current_profile or "")
    if current is not None and same_url(current, url):
        return current.name
    for name in sorted(config.profiles):
        if same_url(config.profiles[name], url):
            return name
    parts = urlsplit(url)
    base = (parts.hostname or "default").replace(":", "-") + (
        f"-{parts.port}" if parts.port else ""
    )
    name, suffix = base, 2
    while name in config.profiles:
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name


_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _token_for(
    url: str,
    org: str | None,
    selected: Profile | None,
    config: ConfigFile,
    env: Mapping[str, str],
) -> tuple[str | None, str, Profile | None]:
    if env.get("MINERVA_TOKEN"):
        return env["MINERVA_TOKEN"], "MINERVA_TOKEN", None
    ordered = [selected] if selected else []
    ordered += [
        config.profiles[n] for n in sorted(config.profiles) if config.profiles[n] != selected
    ]
    for profile in ordered:
        if profile.token and (not org or profile.org == org) and same_url(profile, url):
            return profile.token, f"profile {profile.name!r}", profile
    return None, f"nowhere (no token stored for {url}; sending no token)", None
