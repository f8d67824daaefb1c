"""The CLI's profile file: named connection settings, read and written safely.

The CLI resolves its settings from it (``minerva_ai.cli.config``); the service's
supervisor writes the ``local`` profile into it. A stored token is bound to its profile's URL.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from minerva_ai.core.errors import ConfigError
from minerva_ai.core.urls import normalize_url

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
        kept_token = existing.token if existing and same_url(existing, normalized) else None
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


def same_url(profile: Profile, url: str) -> bool:
    """Whether ``profile`` is bound to the (normalized) ``url``."""
    try:
        return normalize_url(profile.url) == url
    except ConfigError:
        return False
