"""The package stands alone: built as a wheel and installed, not editable, into a fresh
virtual environment that cannot see this repository, its command line replays a
shipped trace (``python -m arenas.timeline``), and the stress suite is nowhere."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from arenas.trace import parse

ROOT = Path(__file__).resolve().parent.parent
# The smallest shipped trace: what is tested is the installation, not the replay.
TRACE = ROOT / "stress" / "traces" / "sort-numbers.trace.gz"
# What building, testing and the environments leave in a checkout, none of it source.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "results"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd``, with no PYTHON* variable that could lead back to the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _require_pip_and_venv() -> None:
    if importlib.util.find_spec("venv") is None:
        pytest.skip("this interpreter has no venv module: no fresh environment to install into")
    if importlib.util.find_spec("pip") is None:
        pytest.skip("this environment has no pip: the wheel can be neither built nor installed")
    major, minor = (int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    if (major, minor) < (22, 3):
        pytest.skip("pip older than 22.3 has no --python, to install into a venv without pip")


def test_the_installed_wheel_replays_a_shipped_trace_without_the_repository(
    tmp_path: Path,
) -> None:
    _require_pip_and_venv()
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside the sources,
    # and the test runs of two interpreters may build at the same moment.  The build
    # backend (setuptools>=77) and the dependencies' wheels come through pip's usual
    # index and cache, so only the package registry is needed; the install is offline.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    wheels = tmp_path / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(source)],
        tmp_path,
    )
    assert built.returncode == 0, f"building the wheel failed:\n{built.stderr[-3000:]}"
    (wheel,) = wheels.glob("arenas-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packaged = set(zf.namelist())
    modules = {f"arenas/{p.name}" for p in (ROOT / "arenas").glob("*.py")}
    assert modules - packaged == set(), "modules of arenas/ that the wheel leaves out"
    assert not [name for name in packaged if name.startswith("stress/")]

    venv = tmp_path / "venv"
    # Without pip (the running pip installs into it with --python): ten times faster to make.
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    if made.returncode:
        pytest.skip(f"cannot make a virtual environment: {made.stderr.strip()[-500:]}")
    python = str(venv / "bin" / "python")
    pip_install = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    installed = _run([*pip_install, "--no-index", "--find-links", str(wheels), "arenas"], tmp_path)
    assert installed.returncode == 0, f"installing the wheel failed:\n{installed.stderr[-3000:]}"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _run([python, "-c", "import arenas; print(arenas.__file__)"], elsewhere)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(venv)  # not the repository's editable copy
    stress = _run([python, "-c", "import stress"], elsewhere)
    assert stress.returncode != 0 and "No module named 'stress'" in stress.stderr

    page = tmp_path / "page.html"
    shown = _run([python, "-m", "arenas.timeline", str(TRACE), "--html", str(page)], elsewhere)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == str(page)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and f"<title>arenas: {TRACE.name}</title>" in html
    data = re.search(r"const DATA = (.*);\n", html)
    assert data is not None, "the page carries no frames"
    frames = json.loads(data.group(1))["runs"][0]["frames"]
    plan = parse(TRACE)
    assert frames[0]["label"] == "start" and frames[-1]["label"] == "end"
    assert frames[-1]["event"] == sum(len(events) for events in plan.threads.values())
    assert all(frame["arenas"] for frame in frames)
