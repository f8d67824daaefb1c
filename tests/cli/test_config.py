"""Precedence (flag > env > profile > default) and tokens bound to their URL."""

from __future__ import annotations

import pytest
import yaml

from minerva_ai.cli.config import DEFAULT_URL, profile_name_for, resolve
from minerva_ai.core.errors import ConfigError
from minerva_ai.core.profiles import config_path, load_config


def _config(**profiles: dict[str, str]) -> None:
    current = next(iter(profiles), None)
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(yaml.safe_dump({"current_profile": current, "profiles": profiles}))


def test_precedence_flag_over_env_over_profile_over_default() -> None:
    assert resolve(None, None, None, env={}).url == DEFAULT_URL
    _config(local={"url": "http://127.0.0.1:1111", "token": "mnv_local"})
    assert resolve(None, None, None, env={}).url_source == "profile 'local'"
    assert resolve(None, None, None, env={}).url == "http://127.0.0.1:1111"
    env = {"MINERVA_URL": "http://127.0.0.1:2222"}
    assert resolve(None, None, None, env=env).url == "http://127.0.0.1:2222"
    assert resolve(None, None, None, env=env).url_source == "MINERVA_URL"
    flagged = resolve("http://127.0.0.1:3333", None, None, env=env)
    assert (flagged.url, flagged.url_source) == ("http://127.0.0.1:3333", "--url")


def test_a_stored_token_is_only_sent_to_its_own_url() -> None:
    _config(
        local={"url": "http://127.0.0.1:1111", "token": "mnv_local"},
        other={"url": "http://localhost:2222/", "token": "mnv_other"},
    )
    assert resolve(None, None, None, env={}).token == "mnv_local"
    elsewhere = resolve("http://127.0.0.1:9999", None, None, env={})
    assert elsewhere.token is None
    assert "no token stored for http://127.0.0.1:9999" in elsewhere.token_source
    # another profile bound to that URL lends its token, found after normalisation
    matched = resolve("HTTP://LOCALHOST:2222", None, None, env={})
    assert (matched.token, matched.token_source) == ("mnv_other", "profile 'other'")
    # MINERVA_TOKEN wins wherever the URL points
    env = {"MINERVA_TOKEN": "mnv_env"}
    via_env = resolve("http://127.0.0.1:9999", None, None, env=env)
    assert (via_env.token, via_env.token_source) == ("mnv_env", "MINERVA_TOKEN")


def test_selected_profile_and_org_choose_among_tokens_for_the_same_url() -> None:
    _config(
        alpha={"url": "http://127.0.0.1:1111", "token": "mnv_a", "org": "acme"},
        beta={"url": "http://127.0.0.1:1111", "token": "mnv_b", "org": "globex"},
    )
    assert resolve(None, None, "beta", env={}).token == "mnv_b"
    assert resolve(None, None, None, env={"MINERVA_PROFILE": "beta"}).token == "mnv_b"
    by_org = resolve(None, "globex", None, env={})
    assert (by_org.token, by_org.org, by_org.profile) == ("mnv_b", "globex", "beta")
    assert resolve(None, None, None, env={"MINERVA_ORG": "globex"}).token == "mnv_b"
    assert resolve(None, "initech", None, env={}).token is None


def test_an_unknown_profile_name_is_a_config_error_listing_the_known_ones() -> None:
    _config(local={"url": "http://127.0.0.1:1111"})
    with pytest.raises(ConfigError, match=r"no profile named 'nope'.*known: local"):
        resolve(None, None, "nope", env={})
    assert resolve(None, None, "nope", env={}, require_profile=False).url == DEFAULT_URL


def test_a_token_is_never_sent_over_plain_http_to_a_remote_host() -> None:
    env = {"MINERVA_TOKEN": "mnv_env"}
    with pytest.raises(ConfigError, match=r"plain http.*--insecure"):
        resolve("http://minerva.example.com", None, None, env=env)
    assert resolve("http://minerva.example.com", None, None, env=env, insecure=True).token
    assert resolve("https://minerva.example.com", None, None, env=env).token == "mnv_env"
    for loopback in ("http://localhost:1", "http://127.0.0.2:1", "http://[::1]:1"):
        assert resolve(loopback, None, None, env=env).token == "mnv_env"
    # without a token there is nothing to protect
    assert resolve("http://minerva.example.com", None, None, env={}).token is None


def test_bad_url_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid URL 'localhost'"):
        resolve("localhost", None, None, env={})


def test_login_profile_name_reuses_the_profile_bound_to_the_url() -> None:
    _config(
        local={"url": "http://127.0.0.1:8765"},
        prod={"url": "https://minerva.example.com"},
    )
    config = load_config()
    assert profile_name_for("http://127.0.0.1:8765", config) == "local"
    assert profile_name_for("https://minerva.example.com", config) == "prod"
    assert profile_name_for("https://minerva.example.com", config, "mine") == "mine"
    assert profile_name_for("http://staging.example.com:8080", config) == "staging.example.com-8080"
