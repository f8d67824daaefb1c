"""A check as configured (``CheckSpec``), the options a check type takes (``Opt``), and what
a running check may use (``Context``: the base directory, the service, its processes)."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minerva_ai.readiness.model import CheckError

if TYPE_CHECKING:
    from minerva_ai.client import Client


@dataclass(frozen=True)
class Opt:
    """One option of a check type: its kind (how the YAML value is read), whether it is
    required, its default, and a line for the docs."""

    kind: str
    required: bool = False
    default: Any = None
    help: str = ""


@dataclass
class CheckSpec:
    id: str
    name: str
    type: str
    severity: str  # fail | warn: what a failure of this check counts as
    timeout_s: float
    options: dict[str, Any]
    line: int = 0

    def __getitem__(self, key: str) -> Any:
        return self.options[key]


@dataclass
class Context:
    """Shared by the checks of one run. ``client()`` is built on first use (the checks that
    need no service never import httpx); processes started through ``popen`` are killed
    with their process group when the run is interrupted."""

    base_dir: Path
    url: str | None = None
    token: str | None = None
    interrupted: threading.Event = field(default_factory=threading.Event)
    _client: Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # per check (the name of the thread running it): how to stop what it started
    _stoppers: dict[str, list[Callable[[], None]]] = field(default_factory=dict)

    def path(self, value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.base_dir / path

    def client(self) -> Client:
        if not self.url:
            raise CheckError(
                "no service URL: give --url, MINERVA_URL or a profile",
                "set MINERVA_URL and MINERVA_TOKEN in the CI job's environment",
            )
        with self._lock:
            if self._client is None:
                from minerva_ai.client import Client

                self._client = Client(self.url, self.token, timeout=30.0, retry_for=2.0)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @contextlib.contextmanager
    def popen(
        self,
        argv: list[str] | str,
        *,
        shell: bool = False,
        env: dict[str, str] | None = None,
        split: bool = False,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Start a process in a session of its own (its group is killed on timeout or
        Ctrl-C); stdout and stderr merged into one pipe, or two with ``split``."""
        try:
            process = subprocess.Popen(
                argv,
                shell=shell,
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if split else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            shown = argv if isinstance(argv, str) else " ".join(argv)
            raise CheckError(f"cannot start {shown!r}: {exc.strerror or exc}") from None
        with self.cancel_with(lambda: kill_group(process)):
            try:
                yield process
            finally:
                kill_group(process)

    @contextlib.contextmanager
    def cancel_with(self, cancel: Callable[[], None]) -> Iterator[None]:
        """Call ``cancel`` (from another thread) if the run is interrupted, or this check
        (the one the calling thread runs) outlives its timeout."""
        check = threading.current_thread().name
        with self._lock:
            self._stoppers.setdefault(check, []).append(cancel)
        try:
            yield
        finally:
            with self._lock:
                self._stoppers[check].remove(cancel)

    def stop(self, check: str | None = None) -> None:
        """Stop what a check started (its thread's name), or with None every check's:
        kill process groups, cancel load tests."""
        if check is None:
            self.interrupted.set()
        with self._lock:
            found = [
                cancel
                for name, cancels in self._stoppers.items()
                if check is None or name == check
                for cancel in cancels
            ]
        for cancel in found:
            with contextlib.suppress(Exception):
                cancel()


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group (its children too), then reap it."""
    # The group may outlive its leader (a shell's background child): kill it either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def expand(ctx: Context, patterns: list[str]) -> tuple[list[Path], list[str]]:
    """The files the patterns name (globs expanded, sorted), and the patterns matching none."""
    found: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        absolute = str(ctx.path(pattern))
        matches = (
            sorted(glob.glob(absolute, recursive=True))
            if glob.has_magic(pattern)
            else ([absolute] if Path(absolute).exists() else [])
        )
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            missing.append(pattern)
        found.extend(files)
    return found, missing


def shown(ctx: Context, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.base_dir))
    except ValueError:
        return str(path)
