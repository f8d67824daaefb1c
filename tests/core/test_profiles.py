"""The profile file: its location, its format and mode, safe rewrites; URLs' canonical form."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from minerva_ai.core.errors import ConfigError
from minerva_ai.core.profiles import config_dir, config_path, load_config, save_profile
from minerva_ai.core.urls import normalize_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("HTTP://LocalHost:8765/", "http://localhost:8765"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:443/", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("https://Example.com/Minerva/", "https://example.com/Minerva"),
        ("http://[::1]:8765", "http://[::1]:8765"),
        ("http://0.0.0.0:8765", "http://0.0.0.0:8765"),
        ("  http://a.example ", "http://a.example"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("localhost:8765", "http:// or https://"),
        ("ftp://example.com", "http:// or https://"),
        ("http:/example.com", "http:// or https://"),
        ("http://", "no host"),
        ("http://example.com:99999", "port"),
        ("http://example.com:abc", "port"),
        ("http://example.com/?a=1", "query"),
        ("http://user:pw@example.com", "credentials"),
    ],
)
def test_bad_urls_are_config_errors_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        normalize_url(url)
    assert caught.value.exit_code == 2


def test_config_dir_follows_minerva_config_dir_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MINERVA_CONFIG_DIR", str(tmp_path / "explicit"))
    assert config_dir() == tmp_path / "explicit"
    assert config_path() == tmp_path / "explicit" / "config.yaml"
    monkeypatch.delenv("MINERVA_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "minerva-ai"


def test_save_profile_writes_0600_in_a_0700_dir_in_the_documented_format() -> None:
    path = save_profile(
        "local", url="HTTP://127.0.0.1:8765/", token="mnv_a", home="/h", org="default"
    )
    assert path == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    document = yaml.safe_load(path.read_text())
    assert document == {
        "current_profile": "local",
        "profiles": {
            "local": {
                "url": "http://127.0.0.1:8765",
                "token": "mnv_a",
                "home": "/h",
                "org": "default",
            }
        },
    }
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_make_current_none_only_sets_the_current_profile_when_there_is_none() -> None:
    save_profile("first", url="http://127.0.0.1:1", token="mnv_1")
    save_profile("second", url="http://127.0.0.1:2", token="mnv_2")
    assert load_config().current_profile == "first"
    save_profile("second", url="http://127.0.0.1:2", token=None, make_current=True)
    assert load_config().current_profile == "second"
    save_profile("third", url="http://127.0.0.1:3", token=None, make_current=False)
    assert load_config().current_profile == "second"


def test_none_keeps_stored_fields_but_a_new_url_drops_the_token() -> None:
    save_profile("p", url="http://127.0.0.1:1", token="mnv_1", home="/h", org="acme")
    save_profile("p", url="http://127.0.0.1:1/", token=None)
    kept = load_config().profiles["p"]
    assert (kept.token, kept.home, kept.org) == ("mnv_1", "/h", "acme")
    save_profile("p", url="http://127.0.0.1:2", token=None)
    moved = load_config().profiles["p"]
    assert moved.url == "http://127.0.0.1:2"
    assert moved.token is None
    assert moved.home == "/h"


def test_missing_file_is_an_empty_config() -> None:
    config = load_config()
    assert config.profiles == {}
    assert config.current_profile is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("profiles: [", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("profiles:\n  x: {token: t}\n", "has no url"),
        ("profiles:\n  x: {url: 5}\n", "url must be a string"),
        ("current_profile: [a]\n", "current_profile must be a string"),
    ],
)
def test_malformed_config_files_are_config_errors(text: str, reason: str) -> None:
    config_path().parent.mkdir(parents=True)
    config_path().write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_config()


def test_save_profile_keeps_other_profiles_and_the_file_private_when_rewritten() -> None:
    save_profile("a", url="http://127.0.0.1:1", token="mnv_a")
    os.chmod(config_path(), 0o644)
    save_profile("b", url="http://127.0.0.1:2", token="mnv_b")
    assert sorted(load_config().profiles) == ["a", "b"]
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600
