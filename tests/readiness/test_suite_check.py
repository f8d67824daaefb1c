"""The test-suite check on a live service with simulator models: a suite run now (`minerva-ai
test suite` in a subprocess) passing, failing, erroring; and a stored passed run on the
live models and prompts, found, missing, and no longer live after a prompt edit."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minerva_ai.readiness.model import Status
from tests.commands.test_main import closed_port
from tests.commands.test_suite import SECTIONS
from tests.conftest import LiveService
from tests.readiness.support import results
from tests.service.conftest import client, create_feature, put_settings

SUITES = {
    "passing.yaml": """\
        feature: support
        cases:
          - {name: refund, input: "order 1234", assert: [{type: icontains, value: REFUND}]}
          - {name: order, input: "order 1234", assert: [{type: contains, value: "1234"}]}
        """,
    "failing.yaml": """\
        feature: support
        cases:
          - {name: refund, input: "order 1234", assert: [{type: icontains, value: REFUND}]}
          - {name: wrong, input: "order 1234", assert: [{type: contains, value: "Sorry"}]}
        """,
    "erroring.yaml": """\
        feature: support
        cases:
          - {name: broken, input: "a", model: broken, assert: [{type: contains, value: a}]}
        """,
    "bad.yaml": """\
        feature: support
        cases:
          - {name: x, input: "a", assert: [{type: no-such-assertion}]}
        """,
}


@pytest.fixture
def support(live_service: LiveService, tmp_path: Path) -> Iterator[httpx.Client]:
    for name, body in SUITES.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    with client(live_service) as http:
        create_feature(http, "support")
        assert put_settings(http, "support", 1, SECTIONS).status_code == 200
        yield http


def test_a_suite_run_now(live_service: LiveService, support: httpx.Client, tmp_path: Path) -> None:
    found = results(
        tmp_path,
        """
        checks:
          - {name: passing, type: test-suite, file: passing.yaml}
          - {name: failing, type: test-suite, file: failing.yaml}
          - {name: soft, type: test-suite, file: failing.yaml, severity: warn}
          - {name: erroring, type: test-suite, file: erroring.yaml}
          - {name: bad, type: test-suite, file: bad.yaml}
        """,
        live_service.url,
        live_service.token,
    )
    passing = found["passing"]
    assert passing.status is Status.PASS, passing.message
    assert (passing.observed, passing.threshold) == (100, 100)
    assert passing.message == "2/2 cases passed (pass rate 100.0%)"
    assert len(passing.details["suite_hash"]) == 64 and passing.details["id"]
    failing = found["failing"]
    assert (failing.status, failing.observed) == (Status.FAIL, 50)
    assert failing.message == "1/2 cases passed: pass rate 50.0% below 100.0%"
    assert found["soft"].status is Status.WARN
    assert found["erroring"].status is Status.ERROR
    assert "every non-passing case is an error" in found["erroring"].message
    assert found["bad"].status is Status.ERROR
    assert "bad suite file or flag" in found["bad"].message
    gone = results(
        tmp_path,
        "checks: [{name: passing, type: test-suite, file: passing.yaml}]",
        f"http://127.0.0.1:{closed_port()}",
    )["passing"]
    assert gone.status is Status.ERROR and "could not be reached" in gone.message


def test_a_stored_run_on_the_live_models_and_prompts(
    live_service: LiveService, support: httpx.Client, tmp_path: Path
) -> None:
    text = "checks: [{name: stored, type: test-suite, file: passing.yaml, stored: true}]"
    missing = results(tmp_path, text, live_service.url, live_service.token)["stored"]
    assert missing.status is Status.FAIL
    assert missing.message.startswith("no passed run of passing.yaml on support's live")
    ran = results(
        tmp_path,
        "checks: [{name: run, type: test-suite, file: passing.yaml}]",
        live_service.url,
        live_service.token,
    )["run"]
    assert ran.status is Status.PASS  # and stored by `test suite`
    stored = results(tmp_path, text, live_service.url, live_service.token)["stored"]
    assert stored.status is Status.PASS, stored.message
    assert stored.details["run"] == ran.details["id"]
    prompts = {"prompts": {"summarize": {"template": "Sum up {{ ticket }}"}}}
    assert put_settings(support, "support", 2, prompts).status_code == 200
    stale = results(tmp_path, text, live_service.url, live_service.token)["stored"]
    assert stale.status is Status.FAIL  # that run was on the prompts of before
    bad = results(
        tmp_path,
        "checks: [{name: stored, type: test-suite, file: bad.yaml, stored: true}]",
        live_service.url,
        live_service.token,
    )["stored"]
    assert bad.status is Status.ERROR and "bad.yaml" in bad.message
