"""Check types that need no service: ``command``, ``coverage``, ``size``, ``files``,
``openapi`` (the file, and what a command or the service says it should be) and
``dependency-audit``."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from minerva_ai.readiness.model import CheckError, Outcome, Status
from minerva_ai.readiness.spec import CheckSpec, Context, expand, kill_group, shown

TAIL_LINES = 20


def run_process(
    ctx: Context,
    argv: list[str] | str,
    timeout_s: float,
    env: dict[str, str] | None = None,
    *,
    split: bool = False,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` (a string: through the shell) in its own process group: its exit code,
    its output and, with ``split``, its stderr apart (else stderr is in the output).
    ``CheckError`` when it cannot start or outlives ``timeout_s`` (its group is killed)."""
    with ctx.popen(argv, shell=isinstance(argv, str), env=env, split=split) as process:
        try:
            output, errors = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.communicate()
            raise CheckError(
                f"timed out after {timeout_s:g} s (its process group was killed)",
                f"raise this check's timeout (now {timeout_s:g} s) or make it faster",
            ) from None
    return process.returncode, output, errors or b""


def tail(output: bytes, lines: int = TAIL_LINES) -> str:
    text = output.decode("utf-8", "replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])


def check_command(spec: CheckSpec, ctx: Context) -> Outcome:
    argv = spec["run"]
    code, output, _ = run_process(ctx, argv, spec.timeout_s)
    shown = argv.strip() if isinstance(argv, str) else shlex.join(argv)
    if "\n" in shown:  # a script (`run: |`): its first line names it
        shown = shown.splitlines()[0] + " ..."
    details = {"command": shown, "exit_code": code, "output_tail": tail(output)}
    if code == 0:
        return Outcome(Status.PASS, f"`{shown}` exited 0", code, 0, details=details)
    return Outcome(
        Status.FAIL,
        f"`{shown}` exited {code}",
        code,
        0,
        remediation=f"run `{shown}` and fix what its output says",
        details=details,
    )


# ---------------------------------------------------------------- coverage


def _coverage_json(data: Any, path: Path) -> dict[str, float | None]:
    try:
        totals = data["totals"]
        statements, covered = totals["num_statements"], totals["covered_lines"]
        branches = totals.get("num_branches", 0)
        covered_branches = totals.get("covered_branches", 0)
    except (KeyError, TypeError):
        raise CheckError(f"{path}: not a coverage.py JSON report (no totals)") from None
    return _rates(statements, covered, branches, covered_branches)


def _coverage_xml(text: bytes, path: Path) -> dict[str, float | None]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise CheckError(f"{path}: not XML ({exc})") from None
    if root.tag != "coverage":
        raise CheckError(f"{path}: not a Cobertura report (root <{root.tag}>)")
    try:
        lines = int(root.get("lines-valid", "0"))
        covered = int(root.get("lines-covered", "0"))
        branches = int(root.get("branches-valid", "0"))
        covered_branches = int(root.get("branches-covered", "0"))
    except ValueError as exc:
        raise CheckError(f"{path}: a count that is not a number ({exc})") from None
    if not lines and root.get("line-rate") is not None:
        rate = float(root.get("line-rate") or 0) * 100
        return {"total": rate, "line": rate, "branch": None}
    return _rates(lines, covered, branches, covered_branches)


def _rates(statements: int, covered: int, branches: int, covered_branches: int) -> dict[str, Any]:
    def pct(part: int, whole: int) -> float | None:
        return round(part / whole * 100, 2) if whole else None

    return {
        # coverage.py's own figure: lines and branches together
        "total": pct(covered + covered_branches, statements + branches),
        "line": pct(covered, statements),
        "branch": pct(covered_branches, branches),
    }


def check_coverage(spec: CheckSpec, ctx: Context) -> Outcome:
    path = ctx.path(spec["file"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckError(
            f"cannot read {path}: {exc.strerror or exc}",
            "run the tests with coverage first (e.g. pytest --cov --cov-report=xml)",
        ) from None
    if raw.lstrip().startswith(b"<"):
        rates = _coverage_xml(raw, path)
    else:
        try:
            rates = _coverage_json(json.loads(raw), path)
        except ValueError as exc:
            raise CheckError(f"{path}: neither JSON nor XML ({exc})") from None
    metric = spec["metric"]
    observed = rates[metric]
    if observed is None:
        raise CheckError(f"{path}: no {metric} coverage in this report (nothing measured)")
    details = {"file": str(path), **{k: v for k, v in rates.items() if v is not None}}
    threshold, warn_at = spec["pass"], spec["warn"]
    label = f"{metric} coverage {observed:g}%"
    if observed >= threshold:
        return Outcome(
            Status.PASS, f"{label} (>= {threshold:g}%)", observed, threshold, None, details
        )
    remediation = f"add tests for the code not covered ({threshold - observed:.2f} points short)"
    if warn_at is not None and observed >= warn_at:
        message = f"{label}: below {threshold:g}%, at least {warn_at:g}%"
        return Outcome(Status.WARN, message, observed, threshold, remediation, details)
    floor = warn_at if warn_at is not None else threshold
    return Outcome(
        Status.FAIL, f"{label}: below {floor:g}%", observed, threshold, remediation, details
    )


# ---------------------------------------------------------------- files and sizes


def check_size(spec: CheckSpec, ctx: Context) -> Outcome:
    files, missing = expand(ctx, spec["paths"])
    if missing:
        raise CheckError(
            f"nothing matches {', '.join(missing)}", "build the artifact before this check"
        )
    limit, warn_at, zipped = spec["max"], spec["warn"], spec["gzip"]
    sizes: dict[str, int] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckError(f"cannot read {path}: {exc.strerror or exc}") from None
        sizes[shown(ctx, path)] = len(gzip.compress(data, mtime=0)) if zipped else len(data)
    largest = max(sizes, key=lambda name: sizes[name])
    observed = sizes[largest]
    kind = "gzipped " if zipped else ""
    details: dict[str, Any] = {"sizes": sizes, "gzip": zipped}
    text = f"{largest}: {_human(observed)} {kind}"
    if observed > limit:
        over = [name for name, size in sizes.items() if size > limit]
        return Outcome(
            Status.FAIL,
            f"{text}over the {_human(limit)} budget ({len(over)} file(s) over)",
            observed,
            limit,
            "make the artifact smaller (or raise the budget, on purpose)",
            details,
        )
    if warn_at is not None and observed > warn_at:
        message = f"{text}within {_human(limit)}, over the warning mark {_human(warn_at)}"
        return Outcome(Status.WARN, message, observed, limit, None, details)
    return Outcome(Status.PASS, f"{text}within {_human(limit)}", observed, limit, None, details)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def check_files(spec: CheckSpec, ctx: Context) -> Outcome:
    files, missing = expand(ctx, spec["paths"])
    pattern = re.compile(spec["contains"], re.MULTILINE) if spec["contains"] else None
    empty, lacking = [], []
    for path in files:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CheckError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not text.strip():
            empty.append(shown(ctx, path))
        elif pattern and not pattern.search(text.decode("utf-8", "replace")):
            lacking.append(shown(ctx, path))
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"empty: {', '.join(empty)}"] if empty else []
    problems += [f"without /{spec['contains']}/: {', '.join(lacking)}"] if lacking else []
    details = {"files": [shown(ctx, p) for p in files], "missing": missing, "empty": empty}
    if lacking:
        details["lacking"] = lacking
    observed = len(files) - len(empty) - len(lacking)
    expected = len(files) + len(missing)
    if problems:
        return Outcome(
            Status.FAIL,
            "; ".join(problems),
            observed,
            expected,
            "write what is missing, empty or lacking",
            details,
        )
    return Outcome(Status.PASS, f"{len(files)} file(s) present", observed, expected, None, details)


# ---------------------------------------------------------------- openapi


def _document(text: bytes | str, where: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster on a big spec
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise CheckError(f"{where}: not YAML or JSON ({exc})") from None
    if not isinstance(document, dict) or "openapi" not in document or "paths" not in document:
        raise CheckError(f"{where}: not an OpenAPI document (no `openapi` and `paths`)")
    return document


def check_openapi(spec: CheckSpec, ctx: Context) -> Outcome:
    path = ctx.path(spec["file"])
    try:
        committed = _document(path.read_bytes(), str(path))
    except OSError as exc:
        raise CheckError(f"cannot read {path}: {exc.strerror or exc}") from None
    operations = sum(len(item) for item in committed["paths"].values())
    details: dict[str, Any] = {"file": str(path), "operations": operations}
    source, expected = None, None
    if spec["command"]:
        code, output, errors = run_process(ctx, spec["command"], spec.timeout_s, split=True)
        if code != 0:
            raise CheckError(f"the command exited {code}: {tail(errors or output, 5)}")
        source, expected = "the command's output", _document(output, "the command's output")
    elif spec["url"]:
        url = spec["url"] if isinstance(spec["url"], str) else "/openapi.json"
        source = f"{url} served"
        expected = _document(_fetch(ctx, url), source)
    if expected is None:
        return Outcome(
            Status.PASS,
            f"{shown(ctx, path)} parses: {operations} operations",
            operations,
            None,
            None,
            details,
        )
    from minerva_ai.core.settings_diff import diff_settings

    changes = diff_settings(expected, committed)
    details["differences"] = [c["path"] for c in changes[:50]]
    if changes:
        return Outcome(
            Status.FAIL,
            f"{shown(ctx, path)} differs from {source} in {len(changes)} place(s), "
            f"first {changes[0]['path']}",
            len(changes),
            0,
            "regenerate the committed document (make docs)",
            details,
        )
    return Outcome(
        Status.PASS,
        f"{shown(ctx, path)} equals {source} ({operations} operations)",
        0,
        0,
        None,
        details,
    )


def _fetch(ctx: Context, url: str) -> bytes:
    from minerva_ai.readiness.service import get

    response = get(ctx, url)
    if response.status_code != 200:
        raise CheckError(f"GET {url} answered {response.status_code}")
    return response.content


# ---------------------------------------------------------------- dependency audit


def check_dependency_audit(spec: CheckSpec, ctx: Context) -> Outcome:
    if spec["report"]:
        path = ctx.path(spec["report"])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CheckError(f"cannot read {path}: {exc.strerror or exc}") from None
        where = str(path)
    else:
        argv = [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"]
        code, raw, errors = run_process(ctx, argv + list(spec["args"]), spec.timeout_s, split=True)
        where = "pip-audit"
        start = raw.find(b"{")
        if code not in (0, 1) or start < 0:
            raise CheckError(
                f"pip-audit did not run (exit {code}): {tail(errors or raw, 3)}",
                "install it (pip install pip-audit) or give a JSON report as `report`",
            )
        raw = raw[start:]
    try:
        data = json.loads(raw)
        dependencies = data["dependencies"] if isinstance(data, dict) else data
        found = [
            (dep["name"], dep.get("version", "?"), vuln)
            for dep in dependencies
            for vuln in dep.get("vulns") or []
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckError(f"{where}: not a pip-audit JSON report ({exc})") from None
    today = datetime.now(UTC).date()
    ignored, expired, open_ = [], [], []
    rules = {entry["id"]: entry for entry in spec["ignore"]}
    for name, version, vuln in found:
        ids = {vuln.get("id"), *(vuln.get("aliases") or [])}
        rule = next((rules[i] for i in ids if i in rules), None)
        item = {
            "package": name,
            "version": version,
            "id": vuln.get("id"),
            "fix_versions": vuln.get("fix_versions") or [],
        }
        if rule is not None and rule["expires"] >= today:
            ignored.append({**item, "reason": rule["reason"], "expires": str(rule["expires"])})
        elif rule is not None:
            expired.append(item["id"])
            open_.append(item)
        else:
            open_.append(item)
    details: dict[str, Any] = {"vulnerabilities": open_, "ignored": ignored, "source": where}
    if expired:
        details["expired_ignores"] = expired
    if open_:
        listed = ", ".join(f"{v['id']} ({v['package']} {v['version']})" for v in open_[:5])
        fixable = [v for v in open_ if v["fix_versions"]]
        return Outcome(
            Status.FAIL,
            f"{len(open_)} known vulnerabilit{'y' if len(open_) == 1 else 'ies'}: {listed}"
            + (f"; ignore expired for {', '.join(expired)}" if expired else ""),
            len(open_),
            0,
            f"upgrade ({len(fixable)} have a fixed version) or add an `ignore` entry "
            "with a reason and an expiry date",
            details,
        )
    note = f" ({len(ignored)} ignored until their expiry)" if ignored else ""
    return Outcome(Status.PASS, f"no known vulnerabilities{note}", 0, 0, None, details)


def ignore_entry(value: Any) -> dict[str, Any]:
    """One ``ignore`` entry: ``{id, expires: YYYY-MM-DD, reason}``, all three required."""
    if not isinstance(value, dict):
        raise ValueError("each entry is {id, expires, reason}")
    missing = [key for key in ("id", "expires", "reason") if not value.get(key)]
    if missing:
        raise ValueError(
            f"an entry lacks {', '.join(missing)} (id, expires and reason are required)"
        )
    unknown = sorted(set(value) - {"id", "expires", "reason"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in an entry (id, expires, reason)")
    expires = value["expires"]
    if not isinstance(expires, date):
        try:
            expires = date.fromisoformat(str(expires))
        except ValueError:
            raise ValueError(f"expires {expires!r}: a date, YYYY-MM-DD") from None
    return {"id": str(value["id"]), "expires": expires, "reason": str(value["reason"])}
