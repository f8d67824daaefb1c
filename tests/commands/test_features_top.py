"""`minerva-ai features top`: the live view in a pseudo-terminal (pexpect), its keys, how it
leaves the terminal, one snapshot when piped, colour rules, and rich loaded only there."""

from __future__ import annotations

import ast
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest

from minerva_ai.client import Client
from tests.commands.conftest import Run
from tests.commands.test_features_metrics import report
from tests.conftest import MINERVA_AI, REPO, WAIT, LiveService, loaded_by

ALT_SCREEN_OFF = "\x1b[?1049l"
CURSOR_SHOWN = "\x1b[?25h"
TOP = ["features", "top"]
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or text style


@pytest.fixture
def features(live_service: LiveService) -> LiveService:
    with Client(live_service.url, live_service.token) as client:
        for name in ("tagger", "mod"):
            client.features.create(name)
    return live_service


def spawn(live: LiveService, *args: str, command: str | None = None, **env: str) -> Any:
    """`minerva-ai ARGS` on a terminal of 30 x 150 (or ``command`` in sh)."""
    environment = {
        **os.environ,
        "MINERVA_URL": live.url,
        "MINERVA_TOKEN": live.token,
        "TERM": "xterm-256color",
        **env,
    }
    argv = [MINERVA_AI, *args]
    program, arguments = ("/bin/sh", ["-c", command]) if command else (argv[0], argv[1:])
    return pexpect.spawn(
        program,
        arguments,
        env=environment,
        dimensions=(30, 150),
        encoding="utf-8",
        timeout=WAIT,
        # As on a terminal: a runner started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture
def terminals() -> Iterator[list[Any]]:
    spawned: list[Any] = []
    yield spawned
    for child in spawned:
        child.close(force=True)


def test_numbers_change_as_traffic_comes_and_keys_sort(
    features: LiveService, terminals: list[Any]
) -> None:
    top = spawn(features, "--no-color", *TOP)
    terminals.append(top)
    top.expect(r"tagger +no_data")
    top.expect("sort status")

    report(features, "tagger", ["success", "success", "error", "timeout"])
    # half of the calls failed: the error rate says so, and the status in words
    top.expect(r"tagger +error +[0-9.]+ +50\.0")

    top.send("n")
    top.expect("sort name")
    top.expect(r"mod .*\n.*tagger")
    top.send("n")
    top.expect(r"sort name \(reversed\)")
    top.expect(r"tagger .*\n.*mod")
    top.send("q")
    top.expect(pexpect.EOF)
    top.close()
    assert top.exitstatus == 0
    assert ALT_SCREEN_OFF in top.before and CURSOR_SHOWN in top.before


def test_q_restores_the_terminal_modes(features: LiveService, terminals: list[Any]) -> None:
    shell = spawn(
        features, command=f"{MINERVA_AI} features top; echo top=$?; stty -a", NO_COLOR="1"
    )
    terminals.append(shell)
    shell.expect(r"tagger +no_data")
    shell.send("q")
    shell.expect(r"top=(\d+)")
    assert shell.match[1] == "0"
    shell.expect(pexpect.EOF)
    modes = shell.before.split()
    assert "icanon" in modes and "echo" in modes  # not -icanon, -echo: cbreak undone


def test_ctrl_c_exits_130_and_restores_the_screen(
    features: LiveService, terminals: list[Any]
) -> None:
    top = spawn(features, *TOP)
    terminals.append(top)
    top.expect(r"tagger")
    top.sendintr()
    top.expect(pexpect.EOF)
    top.close()
    assert top.exitstatus == 130
    assert ALT_SCREEN_OFF in top.before and CURSOR_SHOWN in top.before


@pytest.mark.parametrize(("args", "env"), [(["--no-color", *TOP], {}), (TOP, {"NO_COLOR": "1"})])
def test_no_color_means_no_colour_and_the_status_stays_a_word(
    features: LiveService, terminals: list[Any], args: list[str], env: dict[str, str]
) -> None:
    top = spawn(features, *args, **env)
    terminals.append(top)
    top.expect(r"tagger +no_data")
    top.send("q")
    top.expect(pexpect.EOF)
    seen = top.before
    assert not SGR.search(seen), repr(SGR.search(seen))


def test_colour_on_a_terminal_by_default(features: LiveService, terminals: list[Any]) -> None:
    top = spawn(features, *TOP)
    terminals.append(top)
    top.expect(r"no_data")
    assert SGR.search(top.before + top.after)
    top.send("q")
    top.expect(pexpect.EOF)


def test_piped_it_prints_one_snapshot_and_exits_0(run: Run, features: LiveService) -> None:
    report(features, "mod", ["error"] * 3)
    report(features, "tagger", ["success"] * 6)

    result = run("features", "top")
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == ["mod", "tagger"]  # the worst status first, no header
    assert (rows[0][1], rows[0][3]) == ("error", "100.0")
    assert float(rows[1][2]) > float(rows[0][2]) > 0  # REQ/MIN

    by_rpm = run("features", "top", "--sort", "rpm")
    assert [line.split("\t")[0] for line in by_rpm.stdout.splitlines()] == ["tagger", "mod"]
    assert run("features", "top", "--window", "5s").exit_code == 2

    import json

    as_json = json.loads(run("features", "top", "-o", "json").stdout)
    assert [(m["feature"], m["requests"]) for m in as_json] == [("mod", 3), ("tagger", 6)]


def test_a_dumb_terminal_gets_one_snapshot(features: LiveService, terminals: list[Any]) -> None:
    top = spawn(features, *TOP, TERM="dumb")
    terminals.append(top)
    top.expect(pexpect.EOF)
    top.close()
    assert top.exitstatus == 0
    assert re.search(r"FEATURE +STATUS", top.before) and "no_data" in top.before
    assert "\x1b[?1049h" not in top.before and not SGR.search(top.before)


def test_help_loads_neither_rich_nor_httpx() -> None:
    code = (
        "from minerva_ai.commands.main import cli\n"
        "for args in (['--help'], ['features', '--help'], ['features', 'top', '--help'],\n"
        "             ['features', 'metrics', '--help'], ['features', 'list', '--help']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='minerva-ai')\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    assert loaded_by(code, ("rich", "httpx", "pexpect")) == []


def test_only_the_live_view_imports_rich() -> None:
    """httpx loads rich for its own command line whenever rich is installed, so a run
    cannot tell who imported it: our modules are read instead."""
    importers = []
    for path in sorted([*(REPO / "minerva_ai").rglob("*.py"), *(REPO / "commands").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "rich" or name.startswith("rich.") for name in names):
                importers.append(str(path.relative_to(REPO)))
    assert sorted(set(importers)) == ["minerva_ai/cli/top.py"]
