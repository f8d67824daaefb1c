"""The wheel: every module of the source tree is in it, with the SQL and the examples, and
every module imports from a fresh venv where minerva_ai is the wheel and nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each folder of the source tree lands in the wheel (pyproject.toml's package-dir).
INSTALLED_AS = {"minerva_ai": "minerva_ai", "commands": "minerva_ai/commands"}
SOURCE_FILES = ("pyproject.toml", "setup.cfg", "README.md")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, minerva_ai
names = sorted(m.name for m in pkgutil.walk_packages(minerva_ai.__path__, "minerva_ai."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"file": minerva_ai.__file__, "modules": names}))
"""


def _files(folder: Path, suffix: str = "") -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob(f"*{suffix}")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info."""
    source = tmp_path / "source"
    for folder in ("minerva_ai", "commands", "examples"):
        shutil.copytree(ROOT / folder, source / folder, ignore=SKIP)
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
    build = [*pip, "--no-build-isolation", "-w", str(dist), str(source)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = dist.glob("minerva_ai-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; this venv's site-packages come after its own, for
    the third-party packages (a .pth line: never scanned for this venv's editable install)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", query], check=True, capture_output=True, text=True)
    third_party = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "zz-third-party.pth").write_text(third_party + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_holds_every_module_the_sql_and_the_examples(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, installed in INSTALLED_AS.items():
        for module in _files(ROOT / folder, ".py"):
            assert f"{installed}/{module}" in names, f"{folder}/{module} is not in the wheel"
    sql = _files(ROOT / "minerva_ai" / "service" / "sql", ".sql")
    assert {"schema.sql", "queries/logs.sql", "migrations/0001_init.sql"} <= sql
    for name in sql:
        assert f"minerva_ai/service/sql/{name}" in names
    for name in _files(ROOT / "examples"):
        assert f"minerva_ai/examples/{name}" in names
    assert "minerva_ai/py.typed" in names

    python = _fresh_venv(tmp_path, wheel)
    done = subprocess.run(
        [python, "-c", IMPORT_EVERY_MODULE], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    assert Path(imported["file"]).is_relative_to(tmp_path / "venv")
    expected = {
        f"{installed}/{module}".removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for folder, installed in INSTALLED_AS.items()
        for module in _files(ROOT / folder, ".py")
    }
    assert expected <= {"minerva_ai", *imported["modules"]}
