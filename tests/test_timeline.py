"""Issue 8: frames over time, the self-contained page (checked in headless Chromium)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arenas import Allocator
from arenas.timeline import Timeline, from_trace
from arenas.trace import parse

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "stress" / "traces" / "python-producer-consumer.trace.gz"


def test_live_capture_and_page(tmp_path: Path) -> None:
    alloc = Allocator()
    timeline = Timeline(alloc, max_frames=8)
    blocks = []
    for k in range(20):
        blocks.append(alloc.malloc(100_000 + k))
        timeline.capture(f"step {k}")
    # thinned to stay under max_frames: a ninth frame drops every other one but the first
    kept = [0, 8, 12, 14, 16, 17, 18, 19]
    assert [f["label"] for f in timeline.frames] == [f"step {k}" for k in kept]
    page = timeline.write_html(tmp_path / "page.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert '"frames":' in page


def test_from_trace_records_threads_arenas_and_cross_frees() -> None:
    timeline = from_trace(TRACE, max_frames=50)
    assert len(timeline.frames) <= 50
    # the consumer frees what the producers made: every free or realloc, in the trace,
    # of a block another thread allocated
    plan = parse(TRACE)
    events = [ev for evs in plan.threads.values() for ev in evs]
    maker = {ev.alloc: ev.tid for ev in events if ev.alloc >= 0}
    crossing = sum(1 for ev in events if ev.frees >= 0 and maker[ev.frees] != ev.tid)
    assert timeline.cross_frees == crossing > 0
    assert sorted(timeline.thread_arena) == [0, 1, 2, 3]
    frame = timeline.frames[timeline.busiest_frame()]
    states = {run[1] for a in frame["arenas"] for h in a["heaps"] for run in h["runs"]}
    assert 3 in states  # slabs are drawn


def test_png_snapshot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    timeline = from_trace(TRACE, max_frames=10)
    path = timeline.write_png(tmp_path / "shot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _chromium() -> str | None:
    """Debian's chromium; installed here when missing, if this is CI running as root."""
    found = shutil.which("chromium")
    if found or os.environ.get("CI") != "true" or os.geteuid() != 0:
        return found
    with open("/tmp/arenas-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker installs, the others wait
        if not shutil.which("chromium"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "chromium"],
                env=env,
                capture_output=True,
                timeout=900,
            )
    return shutil.which("chromium")


def test_page_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (outside CI it is not installed for you)")
    timeline = from_trace(TRACE, max_frames=40)
    page = timeline.write_html(tmp_path / "page.html")
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))
    assert attrs.get("errors") == "0"  # no script error while rendering
    expected = max(len(f["arenas"]) for f in timeline.frames)
    assert attrs.get("arenas") == str(expected) == "4"
    assert int(attrs["frames"]) == len(timeline.frames)


def test_tutorial_pictures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from arenas.timeline import tutorial_pictures

    written = tutorial_pictures(tmp_path)
    assert [p.name for p in written] == [
        "tutorial-classes.png",
        "tutorial-chunks.png",
        "tutorial-arenas.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


@pytest.mark.parametrize("option", ["--html", "--png"])
def test_an_unwritable_output_stops_before_the_replay(option: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "arenas.timeline", str(TRACE), option, "README.md/x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"argument {option}: cannot write 'README.md/x'" in proc.stderr
    assert "Traceback" not in proc.stderr
