"""CLI profiles and the precedence rules: flag > environment > profile file > default.

A stored token is bound to its profile's URL and is only ever sent to that URL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from minerva_ai.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8765"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PROFILE_KEYS = ("url", "token", "home", "org")


@dataclass
class Profile:
    """One named set of connection settings."""

    name: str
    url: str
    token: str | None = None
    home: str | None = None
    org: str | None = None


@dataclass
class ConfigFile:
    """The parsed config file; an absent file is an empty one."""

    path: Path
    current_profile: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)


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


def config_dir() -> Path:
    """``$MINERVA_CONFIG_DIR``, else the XDG user config dir for minerva-ai."""
    override = os.environ.get("MINERVA_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("minerva-ai", appauthor=False))


def config_path() -> Path:
    """The config file: ``<config dir>/config.yaml``."""
    return config_dir() / "config.yaml"


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


def _profile_from(name: str, raw: Any, path: Path) -> Profile:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: profile {name!r} must be a mapping")
    values: dict[str, str | None] = {}
    for key in _PROFILE_KEYS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: profile {name!r}: {key} must be a string")
        values[key] = value
    if not values["url"]:
        raise ConfigError(f"{path}: profile {name!r} has no url")
    return Profile(
        name=name,
        url=values["url"] or "",
        token=values["token"],
        home=values["home"],
        org=values["org"],
    )


def load_config(path: Path | None = None) -> ConfigFile:
    """Read the config file; a missing file is an empty config, a malformed one a ConfigError."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ConfigFile(path=path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    current = raw.get("current_profile")
    if current is not None and not isinstance(current, str):
        raise ConfigError(f"{path}: current_profile must be a string")
    profiles_raw = raw.get("profiles") or {}
    if not isinstance(profiles_raw, Mapping):
        raise ConfigError(f"{path}: profiles must be a mapping")
    profiles = {str(n): _profile_from(str(n), p, path) for n, p in profiles_raw.items()}
    return ConfigFile(path=path, current_profile=current, profiles=profiles)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the config file between processes."""
    import fcntl

    with open(directory / ".config.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _dump(config: ConfigFile) -> str:
    profiles = {
        p.name: {k: getattr(p, k) for k in _PROFILE_KEYS if getattr(p, k) is not None}
        for p in config.profiles.values()
    }
    document = {"current_profile": config.current_profile, "profiles": profiles}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def save_profile(
    name: str,
    *,
    url: str,
    token: str | None,
    home: str | None = None,
    org: str | None = None,
    make_current: bool | None = None,
) -> Path:
    """Create or update profile ``name``; returns the config file's path.

    ``None`` keeps a field's stored value, except that a stored token is dropped when the
    profile moves to another URL (a token is bound to its URL). ``make_current`` None makes
    the profile current only when no current profile is set. The file is written
    atomically with mode 0600, in a directory created 0700.
    """
    if not name:
        raise ConfigError("a profile needs a name")
    normalized = normalize_url(url)
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(path.parent):
        config = load_config(path)
        existing = config.profiles.get(name)
        kept_token = existing.token if existing and _same_url(existing, normalized) else None
        config.profiles[name] = Profile(
            name=name,
            url=normalized,
            token=token if token is not None else kept_token,
            home=home if home is not None else (existing.home if existing else None),
            org=org if org is not None else (existing.org if existing else None),
        )
        if make_current or (make_current is None and not config.current_profile):
            config.current_profile = name
        _write_atomically(path, _dump(config))
    return path


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
    same_url_selected = selected if selected and _same_url(selected, url) else None
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
    if current is not None and _same_url(current, url):
        return current.name
    for name in sorted(config.profiles):
        if _same_url(config.profiles[name], url):
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
        if profile.token and (not org or profile.org == org) and _same_url(profile, url):
            return profile.token, f"profile {profile.name!r}", profile
    return None, f"nowhere (no token stored for {url}; sending no token)", None


def _same_url(profile: Profile, url: str) -> bool:
    try:
        return normalize_url(profile.url) == url
    except ConfigError:
        return False
