"""How fast is `minerva-ai load-test` as a generator, next to wrk on the same target?

Two targets, each on CPU 0, with wrk (-t1 -c50) and load-test (--users 50, --think-time 0)
taking turns on CPU 1:

- the service's ``GET /features`` (embedded PostgreSQL and Redis; --features of them);
  goal: load-test's req/s >= 0.9x wrk's, i.e. the generator never limits a test of our
  service;
- a static JSON file: Debian's nginx when it is installed, else a minimal asyncio HTTP
  server (reported as such); goal >= 10,000 req/s on one core, ratio to wrk reported.

Loopback only; bounded; stops what it started. Run:

    .venv/bin/python bench/load_test_engine.py [--duration 10] [--skip-service]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    FEATURES_PATH,
    WRK_MISSING,
    Service,
    embedded_databases,
    print_machine,
    run_wrk,
    taskset,
)

MINERVA_AI = str(Path(sys.executable).parent / "minerva-ai")
BODY = b'{"success": true, "data": [{"name": "photo-tagging"}], "count": 1}'
MINIMAL_SERVER = f"""
import asyncio
BODY = {BODY!r}
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
RESP = HEAD + b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY)
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\\r\\n\\r\\n" in self.buf:
            _, self.buf = self.buf.split(b"\\r\\n\\r\\n", 1)
            self.t.write(RESP)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", {{port}})
    print("ready", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""
NGINX_CONF = """
worker_processes 1; daemon off; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; root {root};
    location / {{ default_type application/json; }} }} }}
"""


def free_port() -> int:
    from minerva_ai.service.embedded import free_port as pick

    return pick()


def load_test(url: str, path: str, token: str | None, duration: int) -> dict[str, Any]:
    env = {**os.environ, "MINERVA_URL": url}
    if token:
        env["MINERVA_TOKEN"] = token
    command = [
        *taskset(1),
        MINERVA_AI,
        "-q",
        "load-test",
        "--get",
        path,
        "--users",
        "50",
        "--think-time",
        "0",
        "--duration",
        f"{duration}s",
        "--threshold",
        "http_req_failed:rate<0.01",
        "-o",
        "json",
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"load-test failed ({done.returncode}): {done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def compare(name: str, url: str, path: str, token: str, duration: int) -> dict[str, Any]:
    wrk = run_wrk(url + path, token, cpu=1, duration_s=duration)
    report = load_test(url, path, token or None, duration)
    ours = report["http_reqs"]["rate"]
    result = {
        "wrk_rps": wrk.requests_per_s,
        "load_test_rps": ours,
        "ratio": round(ours / wrk.requests_per_s, 3),
        "wrk_errors": wrk.errors,
        "load_test_failed": report["http_req_failed"]["count"],
        "load_test_p99_ms": report["http_req_duration"]["p99"],
        "generator": report["generator"],
    }
    if wrk.errors != "none" or result["load_test_failed"]:
        # A ratio of two floods of errors says nothing about the generator.
        raise RuntimeError(
            f"{name}: requests failed (wrk: {wrk.errors}; load-test: "
            f"{result['load_test_failed']} failed)"
        )
    print(
        f"{name}: wrk {wrk.requests_per_s:,.0f} req/s, load-test {ours:,.0f} req/s "
        f"(ratio {result['ratio']}), generator cpu {report['generator']['cpu_percent']}%"
    )
    return result


def static_target(root: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    root.chmod(0o755)  # nginx's workers run as another user: they must read the file
    (root / "features.json").write_bytes(BODY)
    if shutil.which("nginx"):
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=port))
        process = subprocess.Popen([*taskset(0), "nginx", "-c", str(conf), "-p", str(root)])
        kind = "nginx"
    else:
        process = subprocess.Popen(
            [*taskset(0), sys.executable, "-c", MINIMAL_SERVER.replace("{port}", str(port))],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.readline()
        kind = "minimal asyncio server (nginx is not installed)"
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}", kind


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--skip-service", action="store_true", help="the static target only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print(WRK_MISSING, file=sys.stderr)
        return 2
    print_machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="minerva-bench-static-") as tmp:
        process, url, kind = static_target(Path(tmp))
        try:
            results["static"] = {
                "target": kind,
                **compare(kind, url, "/features.json", "", args.duration),
            }
        finally:
            process.terminate()
            process.wait(10)
    results["static"]["goal_10k"] = results["static"]["load_test_rps"] >= 10_000
    if not args.skip_service:
        with embedded_databases(args.features) as dbs, Service("minerva", dbs, cpu=0) as service:
            results["service"] = compare(
                "service GET /features", service.url, FEATURES_PATH, dbs.token, args.duration
            )
        results["service"]["goal_0.9x"] = results["service"]["ratio"] >= 0.9
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
