"""The root command: help, version, lazy loading, completion, errors -> exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from minerva_ai import __version__
from minerva_ai.commands import main
from tests.commands.conftest import MINERVA_AI, Run, invoke, run_process
from tests.conftest import LiveService, loaded_by


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_help_lists_the_groups_global_options_and_exit_codes() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    for text in (
        "auth",
        "features",
        "server",
        "completion",
        "--url",
        "--org",
        "--profile",
        "-o, --format",
        "--no-color",
        "--insecure",
        "--utc",
        "-q, --quiet",
        "-v, --verbose",
    ):
        assert text in result.stdout
    assert "Exit codes:" in result.stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert f"  {code}" in result.stdout


def test_version() -> None:
    result = invoke(["--version"])
    assert (result.exit_code, result.stdout) == (0, f"minerva-ai, version {__version__}\n")


def test_help_and_version_import_neither_httpx_nor_orjson_nor_the_service() -> None:
    code = (
        "from minerva_ai.commands.main import cli\n"
        "for args in (['--help'], ['--version']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='minerva-ai')\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    heavy = ("httpx", "orjson", "fastapi", "yaml", "tabulate", "websockets", "platformdirs")
    assert loaded_by(code, heavy) == []


def test_the_client_and_the_cli_import_nothing_of_the_server_stack() -> None:
    """The base install (no `[server]` extra) is the client and the CLI: every module of
    them, and `--help`, must work without FastAPI, psycopg, Redis or uvicorn."""
    code = (
        "import importlib, pkgutil\n"
        "import minerva_ai.cli, minerva_ai.client, minerva_ai.commands\n"
        "from minerva_ai.client import AsyncClient, Client\n"
        "for package in (minerva_ai.cli, minerva_ai.client, minerva_ai.commands):\n"
        "    for module in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "from minerva_ai.commands.main import cli\n"
        "try:\n"
        "    cli.main(['--help'], prog_name='minerva-ai')\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    server = ("fastapi", "starlette", "uvicorn", "psycopg", "psycopg_pool", "redis")
    assert loaded_by(code, server) == []


def test_lazy_help_matches_the_commands_own_help() -> None:
    for name in main.LAZY_COMMANDS:
        command = main.cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None
        assert main.LAZY_COMMANDS[name][1] == command.get_short_help_str(limit=200)


def test_groups_run_bare_show_their_help_and_succeed() -> None:
    for args in ([], ["features"], ["features", "settings"], ["auth"], ["auth", "token"]):
        result = invoke(args)
        assert result.exit_code == 0, args
        assert result.stdout.startswith("Usage: ")
        assert "Commands:" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["features", "nope"],
        ["--format", "xml", "features"],
        ["features", "list", "-o", "xml"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert "Usage:" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(shell: str) -> None:
    result = invoke(["completion", shell])
    assert result.exit_code == 0
    assert "_MINERVA_AI_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_completion_completes_group_and_command_names() -> None:
    env = {
        "_MINERVA_AI_COMPLETE": "bash_complete",
        "COMP_WORDS": "minerva-ai features se",
        "COMP_CWORD": "2",
    }
    done = run_process([], **env)
    assert done.returncode == 0
    assert "plain,settings" in done.stdout.split()


def test_bad_url_exits_2_with_the_reason() -> None:
    result = invoke(["--url", "localhost:8765", "features", "list"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: invalid URL 'localhost:8765': it must start with http:// or https://\n"
    )


def test_a_dead_service_exits_4_in_a_real_subprocess() -> None:
    port = closed_port()
    done = run_process(["features", "list"], MINERVA_URL=f"http://127.0.0.1:{port}")
    assert done.returncode == 4
    assert done.stderr.startswith(
        f"error: cannot reach http://127.0.0.1:{port}: is `minerva-ai server start` running?"
    )
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_service_refusing_exits_3_with_its_message(run: Run) -> None:
    result = run("features", "show", "no-such-feature")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ")
    assert "no-such-feature" in result.stderr
    assert "Traceback" not in result.stderr


def test_401_exits_3_with_a_login_hint(run: Run) -> None:
    result = run("features", "list", MINERVA_TOKEN=None)
    assert result.exit_code == 3
    assert "minerva-ai auth login" in result.stderr


def test_verbose_says_where_settings_came_from_and_shows_tracebacks(run: Run) -> None:
    result = run("-v", "features", "show", "nope")
    assert result.exit_code == 3
    assert "url http" in result.stderr and "(from MINERVA_URL)" in result.stderr
    assert "token from MINERVA_TOKEN" in result.stderr
    assert "Traceback" in result.stderr
    assert "-> 404" in result.stderr


def test_format_after_the_command_wins_over_the_global_one(run: Run) -> None:
    run("features", "create", "photo-tagging")
    result = run("-o", "csv", "features", "list", "-o", "json")
    assert result.stdout.lstrip().startswith("[")
    result = run("-o", "csv", "features", "list")
    assert result.stdout.startswith("name,status,display_name")


def test_a_closed_pipe_ends_quietly() -> None:
    """`minerva-ai ... | head`: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [MINERVA_AI, "completion", "bash"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, b"")


def test_ctrl_c_while_waiting_exits_130() -> None:
    """SIGINT to `auth login --with-token` blocked reading stdin."""
    process = subprocess.Popen(
        [MINERVA_AI, "-v", "auth", "login", "--with-token"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As on a terminal: a test runner started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # wait until it says it is reading stdin
            if "reading the token" in line:
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr


def run_on_a_terminal(
    args: list[str], env: dict[str, str], answer: str | None = None
) -> tuple[int, str, str]:
    """Run `minerva-ai` with stdin and stdout on a pseudo-terminal; stderr piped.

    With ``answer``, it is typed once the process asks (its prompt appears on stderr).
    """
    import pty

    master, slave = pty.openpty()
    stderr = ""
    output = b""
    with subprocess.Popen(
        [MINERVA_AI, *args],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**os.environ, "TERM": "xterm", **env},
        text=True,
    ) as process:
        os.close(slave)
        try:
            assert process.stderr is not None
            if answer is not None:
                while "[y/N]" not in stderr:
                    chunk = process.stderr.read(1)
                    assert chunk, stderr
                    stderr += chunk
                os.write(master, answer.encode())
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed
                    break
                if not data:
                    break
                output += data
            stderr += process.stderr.read()
            process.wait(timeout=60)
        finally:
            process.kill()
            os.close(master)
    text = output.decode().replace("\r\n", "\n")
    if answer is not None:
        text = text.replace(answer.strip() + "\n", "", 1)  # the terminal echoes the answer
    return process.returncode, text, stderr


def test_a_terminal_gets_a_coloured_table_of_30_unless_told_otherwise(
    live_service: LiveService,
) -> None:
    from minerva_ai.client import Client

    with Client(live_service.url, live_service.token) as client:
        for n in range(31):
            client.features.create(f"feature-{n:02d}", status="maintenance" if n else "active")
    env = {"MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token}
    code, out, err = run_on_a_terminal(["features", "list"], env)
    assert code == 0, err
    lines = out.splitlines()
    assert "NAME" in lines[0] and "\x1b[1m" in lines[0]  # a header, in bold
    assert len(lines) == 31  # the header and the first 30
    assert "\x1b[32mactive\x1b[0m" in lines[1]
    assert "\t" not in out
    assert "showing the first 30" in err
    for flags, extra in (["--no-color"], {}), ([], {"NO_COLOR": "1"}), ([], {"TERM": "dumb"}):
        code, out, _ = run_on_a_terminal(
            [*flags, "features", "list", "--limit", "0"], {**env, **extra}
        )
        assert code == 0
        assert "\x1b[" not in out
        assert len(out.splitlines()) == 32


def test_delete_asks_on_a_terminal(live_service: LiveService) -> None:
    from minerva_ai.client import Client

    env = {"MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token}
    with Client(live_service.url, live_service.token) as client:
        client.features.create("photo-tagging")
        code, _, err = run_on_a_terminal(["features", "delete", "photo-tagging"], env, "n\n")
        assert code == 0
        assert "nothing deleted" in err
        assert client.features.get("photo-tagging")["name"] == "photo-tagging"
        code, _, err = run_on_a_terminal(["features", "delete", "photo-tagging"], env, "y\n")
        assert code == 0, err
        assert "deleted feature photo-tagging" in err
        assert client.features.list() == []


def test_a_terminal_shows_local_times_unless_utc(live_service: LiveService) -> None:
    from minerva_ai.client import Client

    with Client(live_service.url, live_service.token) as client:
        created = client.features.create("photo-tagging")["created_at"]
    env = {"MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token, "TZ": "Asia/Tokyo"}
    _, local, _ = run_on_a_terminal(["features", "show", "photo-tagging"], env)
    _, utc, _ = run_on_a_terminal(["--utc", "features", "show", "photo-tagging"], env)
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(created)

    def shown(text: str) -> str:
        line = next(line for line in text.splitlines() if line.startswith("created_at"))
        return line.split(None, 1)[1]

    assert shown(local) == (moment + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    assert shown(utc).startswith(moment.strftime("%Y-%m-%dT%H:%M:%S"))
    assert shown(utc).endswith("Z")
