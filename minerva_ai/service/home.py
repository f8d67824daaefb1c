"""A home (``MINERVA_HOME``) and its one owner: the lock, ``run.json``, and finding the owner.

The owner holds an exclusive flock on ``home/lock`` (the kernel drops it when the owner
dies, however it dies) and writes its pid into that file; ``run.json`` (0600) records the
URLs of the databases it runs. Both are trusted only while the lock is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minerva_ai.core.errors import ConfigError, MinervaError

_LOCK_WAIT_S = 1.0  # `server info` probes the lock for an instant; do not mistake that for an owner


class HomeInUseError(MinervaError):
    """Another live supervisor owns this home."""

    exit_code = 3

    def __init__(self, home: Path, pid: int | None) -> None:
        owner = f"pid {pid}" if pid else "a server that is still starting"
        super().__init__(
            f"home {home} is in use by a running minerva-ai server ({owner}): stop it with "
            "`minerva-ai server stop`, use another MINERVA_HOME, or run a second instance "
            "with the DATABASE_URL and REDIS_URL that `minerva-ai server info` prints and "
            "another --port"
        )
        self.home = home
        self.pid = pid


class NotRunningError(MinervaError):
    """No live supervisor owns this home (or it has not recorded its URLs yet)."""

    exit_code = 4


class StopTimeoutError(MinervaError):
    """The owner did not exit in time after SIGTERM."""

    exit_code = 3


def resolve_home() -> Path:
    """``$MINERVA_HOME``, else the user data dir of minerva-ai; always absolute."""
    raw = os.environ.get("MINERVA_HOME")
    if raw:
        return Path(raw).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("minerva-ai", appauthor=False)).resolve()


class HomeLock:
    """The exclusive flock on ``home/lock``; the file also names the owner's pid."""

    def __init__(self, home: Path, fd: int) -> None:
        self.home = home
        self._fd = fd

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        """Take the lock, or raise HomeInUseError naming the owner, within about a second."""
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _unusable(home, exc) from None
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise HomeInUseError(home, _holder_pid(home)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(home, fd)

    def release(self) -> None:
        os.close(self._fd)


def _holder_pid(home: Path) -> int | None:
    try:
        return int((home / "lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _unusable(home: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot use home {home} ({exc.strerror}): set MINERVA_HOME to a directory of yours"
    )


def _lock_held(home: Path) -> bool:
    try:
        fd = os.open(home / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _unusable(home, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False


def owner_pid(home: Path) -> int | None:
    """The pid of the live supervisor that owns ``home``, or None."""
    deadline = time.monotonic() + _LOCK_WAIT_S
    while _lock_held(home):
        pid = _holder_pid(home)
        if pid is not None or time.monotonic() > deadline:
            return pid  # None only if an owner never wrote its pid: it is not ours to stop
        time.sleep(0.05)  # the owner has just taken the lock and is writing its pid
    return None


def run_file(home: Path) -> Path:
    return home / "run.json"


def read_run_file(home: Path) -> dict[str, Any] | None:
    """The recorded ``run.json`` (maybe a dead owner's), or None."""
    try:
        data = json.loads(run_file(home).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run_file(home: Path, info: Mapping[str, Any]) -> None:
    """Replace ``run.json`` atomically, readable by its owner only (it holds passwords)."""
    path = run_file(home)
    tmp = path.with_name(f".run.json.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def running_server(home: Path) -> dict[str, Any]:
    """``run.json`` of ``home`` while its owner is alive; NotRunningError otherwise."""
    pid = owner_pid(home)
    info = read_run_file(home) if pid else None
    if info is None or info.get("pid") != pid:
        if pid:
            raise NotRunningError(
                f"the server of home {home} (pid {pid}) is still starting: try again in a moment"
            )
        raise NotRunningError(
            f"no minerva-ai server is running for home {home}: start one with "
            "`minerva-ai server start` (or set MINERVA_HOME to the home of the one you mean)"
        )
    return info


def server_info(home: Path) -> dict[str, Any]:
    """What a second instance needs to join: ``{home, pid, database_url, redis_url}``."""
    info = running_server(home)
    return {key: info.get(key) for key in ("home", "pid", "database_url", "redis_url")}


def admin_database_url() -> str:
    """``DATABASE_URL``, else the database of the server running for this home."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    home = resolve_home()
    try:
        return str(running_server(home)["database_url"])
    except NotRunningError as exc:
        raise NotRunningError(f"{exc}; or set DATABASE_URL to reach a database directly") from None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_server(home: Path, timeout: float = 60.0) -> int | None:
    """SIGTERM the owner of ``home`` and wait until it has exited; its pid, or None."""
    pid = owner_pid(home)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _lock_held(home) or alive(pid):
        if time.monotonic() > deadline:
            raise StopTimeoutError(
                f"the server of home {home} (pid {pid}) has not stopped after {timeout:.0f} s: "
                f"see its output; `kill -9 {pid}` is safe, the next start cleans up after it"
            )
        time.sleep(0.05)
    return pid


def stop_processes(pids: list[int], timeout: float) -> None:
    """SIGTERM each process; SIGKILL those still running after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped process could not act on SIGTERM
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
