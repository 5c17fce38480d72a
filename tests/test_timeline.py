"""Frames over time, the self-contained page (driven in headless Chromium), the command line."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser
from helpers import run_module

from arenas import Allocator, frames
from arenas import timeline as tl
from arenas.inspect import bin_name
from arenas.slab import CLASS_SIZES
from arenas.trace import Call, parse, write_calls

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "stress" / "traces" / "python-producer-consumer.trace.gz"


# ====================================================================== helpers
def small_threaded_trace(path: Path) -> Path:
    """Three threads: 0 makes chunks, 1 makes small blocks, 2 frees half of 1's (cross-thread
    frees) and makes its own; then 1 makes a chunk and frees the rest of its blocks."""
    calls: list[Call] = []
    addresses = iter(range(0x10_0000, 0x100_0000, 0x1000))  # the traced program's, all distinct
    chunks = [next(addresses) for _ in range(3)]
    calls += [Call(0, "m", (100_000, a)) for a in chunks]
    made = [next(addresses) for _ in range(40)]
    calls += [Call(1, "m", (48, a)) for a in made]
    calls += [Call(2, "f", (a,)) for a in made[:20]]
    own = [next(addresses) for _ in range(30)]
    calls += [Call(2, "m", (100, a)) for a in own]
    big = next(addresses)
    calls += [Call(1, "m", (80_000, big))]
    calls += [Call(1, "f", (a,)) for a in made[20:30]]
    calls += [Call(0, "f", (chunks[1],))]
    calls += [Call(2, "f", (a,)) for a in own[::2]]
    write_calls(path, calls)
    return path


def decode(
    data: dict[str, Any], run: int
) -> list[dict[tuple[int, str], list[tuple[int, int, int]]]]:
    """The page's format read back independently: per frame, (arena, base) -> (offset, code,
    event) of every piece, from the full records and the splices."""
    frames = []
    before: dict[tuple[int, str], list[tuple[int, int, int]]] = {}
    for f in data["runs"][run]["frames"]:
        now = {}
        for a in f["arenas"]:
            for h in a["heaps"]:
                key = (a["index"], h["base"])
                if "p" in h:
                    records = read_records(h["p"], f["event"])
                else:
                    records, old, flat, at = [], before[key], h["d"], 0
                    while flat:
                        kept, removed, added = flat[:3]
                        records += old[at : at + kept]
                        at += kept + removed
                        flat = flat[3:]
                        new = read_records(flat, f["event"], added)
                        records += new
                        flat = flat[sum(4 if tag & 1 else 2 for _, tag, _ in new) :]
                    records += old[at:]
                now[key] = records
        before = now
        frames.append({key: with_offsets(records) for key, records in now.items()})
    return frames


def read_records(
    flat: list[int], event: int, count: int | None = None
) -> list[tuple[int, int, int]]:
    """(length, tag, event) of ``count`` records (all if None) of a flat list."""
    out: list[tuple[int, int, int]] = []
    at = 0
    while at < len(flat) and (count is None or len(out) < count):
        length, tag = flat[at], flat[at + 1]
        out.append((length * 16, tag, event - flat[at + 2] if tag & 1 else 0))
        at += 4 if tag & 1 else 2
    return out


def with_offsets(records: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(offset, code, event) of each record, offsets added up from the heap's base."""
    out: list[tuple[int, int, int]] = []
    offset = 0
    for length, tag, event in records:
        out.append((offset, tag >> 1, event))
        offset += length
    return out


def python_pieces(frame: dict[str, Any]) -> dict[tuple[int, str], list[tuple[int, int, int]]]:
    return {
        (a["index"], f"{h['base']:#x}"): [(p.offset, p.code, p.event) for p in h["pieces"]]
        for a in frame["arenas"]
        for h in a["heaps"]
    }


# ====================================================================== capture
def test_live_capture_and_page(tmp_path: Path) -> None:
    alloc = Allocator()
    timeline = tl.Timeline(alloc, max_frames=8)
    timeline.enter(0)
    for k in range(20):
        timeline.note(0, "m", None, alloc.malloc(100_000 + k))
        timeline.capture(f"step {k}")
    # thinned to stay under max_frames: a ninth frame drops every other one but the first
    kept = [0, 8, 12, 14, 16, 17, 18, 19]
    assert [f["label"] for f in timeline.frames] == [f"step {k}" for k in kept]
    page = timeline.write_html(tmp_path / "page.html", title="a <b> & c").read_text()
    # Nothing from the network (the SVG namespace is a name, not a fetch).
    remote = r"(src|href)=[\"']?(https?:)?//|url\([\"']?(https?:)?//|@import|fetch\(|XMLHttpRequest"
    assert not re.search(remote, page)
    assert "<title>a &lt;b&gt; &amp; c</title>" in page
    alloc.close()


def test_bad_input_is_a_typed_error(tmp_path: Path) -> None:
    alloc = Allocator()
    with pytest.raises(ValueError, match="max_frames must be at least 2"):
        tl.Timeline(alloc, max_frames=1)
    with pytest.raises(TypeError, match="must be an int"):
        tl.Timeline(alloc, max_frames=2.5)  # type: ignore[arg-type]
    timeline = tl.Timeline(alloc)
    with pytest.raises(ValueError, match=r"before Timeline\.enter"):
        timeline.note(7, "m", None, 0x1000)
    with pytest.raises(ValueError, match="no frames to draw"):
        timeline.write_html(tmp_path / "empty.html")
    with pytest.raises(ValueError, match="cannot be negative"):
        timeline.enter(-1)
    timeline.enter(0)
    with pytest.raises(ValueError, match="op must be one of m, c, r, f, a"):
        timeline.note(0, "x", None, 0x1000)
    timeline.capture()
    with pytest.raises(IndexError, match="no frame 5: there are 1"):
        timeline.write_png(tmp_path / "x.png", frame=5)
    alloc.close()


@pytest.fixture(scope="module")
def producer_consumer() -> tl.Timeline:
    return tl.from_trace(TRACE, max_frames=40)


def test_every_thread_owns_what_it_allocated(producer_consumer: tl.Timeline) -> None:
    timeline = producer_consumer
    assert len(timeline.frames) <= 40
    # the consumer frees what the producers made: every free or realloc, in the trace,
    # of a block another thread allocated
    plan = parse(TRACE)
    events = [ev for evs in plan.threads.values() for ev in evs]
    maker = {ev.alloc: ev.tid for ev in events if ev.alloc >= 0}
    crossing = sum(1 for ev in events if ev.frees >= 0 and maker[ev.frees] != ev.tid)
    assert timeline.cross_frees == crossing > 0
    assert sorted(timeline.thread_ids()) == [0, 1, 2, 3]
    last = timeline.frames[-1]["threads"]
    assert {info.state for info in last.values()} == {2}  # every thread done at the end
    assert sorted(info.arena for info in last.values()) == [0, 1, 2, 3]  # an arena each

    def threads_of(kind: int) -> set[int]:
        """The threads whose colour pieces of ``kind`` carry, in any frame."""
        return {
            p.detail - 1
            for f in timeline.frames
            for a in f["arenas"]
            for h in a["heaps"]
            for p in h["pieces"]
            if p.kind == kind
        }

    # Slab blocks carry their threads: the producers' blocks are theirs, not thread 0's.
    assert {0, 1, 2} <= threads_of(frames.LIVE)
    assert 3 in threads_of(frames.CACHED)  # the consumer's cache holds what it freed


def test_pieces_tile_every_heap(producer_consumer: tl.Timeline) -> None:
    for frame in producer_consumer.frames:
        for a in frame["arenas"]:
            for h in a["heaps"]:
                offsets = [p.offset for p in h["pieces"]]
                assert offsets == sorted(set(offsets))
                assert not offsets or offsets[0] == 0
                assert all(o % frames.GRAIN == 0 and o < h["size"] for o in offsets)
                kinds = [p.kind for p in h["pieces"]]
                for k, kind in enumerate(kinds):
                    if kind == frames.SLAB_HEADER:  # a slab: its header, then its blocks
                        size = CLASS_SIZES[h["pieces"][k].detail]
                        after = h["pieces"][k + 1].offset - h["pieces"][k].offset
                        assert after == 16 and kinds[k + 1] in frames.BLOCK_KINDS, size


def test_the_page_data_decodes_to_the_frames(producer_consumer: tl.Timeline) -> None:
    data = json.loads(producer_consumer.to_json())
    assert data["kinds"] == list(frames.KINDS) and data["threads"] == [0, 1, 2, 3]
    decoded = decode(data, 0)
    assert len(decoded) == len(producer_consumer.frames)
    for frame, pieces in zip(producer_consumer.frames, decoded, strict=True):
        assert pieces == python_pieces(frame)
    assert any("d" in h for f in data["runs"][0]["frames"] for a in f["arenas"] for h in a["heaps"])


def test_compare_replays_frame_for_frame(tmp_path: Path) -> None:
    trace = small_threaded_trace(tmp_path / "small.trace")
    timeline = tl.from_trace(trace, max_frames=12, compare={"arena_max=1": {"arena_max": 1}})
    (other,) = timeline.compared
    assert other.name == "arena_max=1"
    assert [f["event"] for f in other.frames] == [f["event"] for f in timeline.frames]
    assert max(len(f["arenas"]) for f in timeline.frames) == 3
    assert all(len(f["arenas"]) == 1 for f in other.frames)
    data = timeline.page_data()
    assert [run["name"] for run in data["runs"]] == ["default", "arena_max=1"]
    for run in (0, 1):
        for frame, pieces in zip(timeline.runs()[run].frames, decode(data, run), strict=True):
            assert pieces == python_pieces(frame)


def test_compare_checks_every_tunable_before_any_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replay(*_: object) -> None:
        raise AssertionError("replayed before the tunables were checked")

    monkeypatch.setattr(tl, "parse", no_replay)
    with pytest.raises(ValueError, match="arena_max=0 is out of range"):
        tl.from_trace(TRACE, compare={"none": {"arena_max": 0}})
    with pytest.raises(ValueError, match="unknown tunable"):
        tl.from_trace(TRACE, compare={"typo": {"arena_mux": 1}})
    with pytest.raises(ValueError, match="max_frames must be at least 2"):
        tl.from_trace(TRACE, max_frames=0)
    with pytest.raises(ValueError, match="named 'default' too"):
        tl.from_trace(TRACE, compare={"default": {"arena_max": 1}})


def test_runs_that_are_not_frame_locked_are_refused(tmp_path: Path) -> None:
    trace = small_threaded_trace(tmp_path / "small.trace")
    one, two = tl.from_trace(trace, max_frames=10), tl.from_trace(trace, max_frames=20)
    with pytest.raises(ValueError, match="not frame-locked"):
        one.compare_with(two)


def test_png_labels_each_heap_by_its_arena_and_base(
    producer_consumer: tl.Timeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    drawn: list[list[str]] = []
    draw = frames.draw_heaps

    def spy(rows: list[tuple[str, dict[str, Any]]], *args: Any) -> Path:
        drawn.append([label for label, _ in rows])
        return draw(rows, *args)

    monkeypatch.setattr(tl, "draw_heaps", spy)
    path = producer_consumer.write_png(tmp_path / "shot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (labels,) = drawn
    frame = producer_consumer.frames[producer_consumer.busiest_frame()]
    heaps = [(a["index"], h["base"]) for a in frame["arenas"] for h in a["heaps"]]
    assert len(labels) == len(set(labels)) == len(heaps) == 4
    for label, (index, base) in zip(labels, heaps, strict=True):
        assert label.startswith(f"arena {index}, heap {base:#x} (")


def test_tutorial_pictures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = tl.tutorial_pictures(tmp_path)
    assert [p.name for p in written] == [
        "tutorial-classes.png",
        "tutorial-chunks.png",
        "tutorial-arenas.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_colours_are_legible() -> None:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    def contrast(a: str, b: str) -> float:
        high, low = sorted((luminance(a), luminance(b)), reverse=True)
        return (high + 0.05) / (low + 0.05)

    # WCAG 2.1: graphics 3:1 against their background, text 4.5:1.
    assert all(contrast(c, "#ffffff") >= 3 for c in frames.THREAD_COLOURS)
    ink = re.findall(
        r"--(ink|muted|line): (#[0-9a-f]{6})", (ROOT / "arenas" / "timeline.html").read_text()
    )
    assert {name for name, _ in ink} == {"ink", "muted", "line"}
    for name, colour in ink:
        assert contrast(colour, "#ffffff") >= (4.5 if name != "line" else 3), name


# ====================================================================== the command line
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("arenas.timeline", *args, timeout=60)


@pytest.mark.parametrize("option", ["--html", "--png"])
def test_an_unwritable_output_stops_before_the_replay(option: str) -> None:
    proc = run_cli(str(TRACE), option, "README.md/x")
    assert proc.returncode == 2
    assert f"argument {option}: cannot write 'README.md/x'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "nothing to write: give --html OUT and/or --png OUT"),
        (["--frames", "0", "--html", "x.html"], "argument --frames: must be at least 2"),
        (["--frames", "many", "--html", "x.html"], "argument --frames: 'many' is not a whole"),
        (["--compare", "arena_max=0", "--html", "x.html"], "argument --compare: tunable arena_max"),
        (["--tunables", "arena_mux=1", "--html", "x.html"], "argument --tunables: unknown tunable"),
    ],
)
def test_a_bad_command_line_is_one_line_before_any_work(args: list[str], says: str) -> None:
    # The trace does not exist: had anything been read or replayed, the answer would say so.
    began = time.monotonic()
    proc = run_cli("no-such.trace.gz", *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert proc.stdout == "" and not Path(ROOT / "x.html").exists()
    assert time.monotonic() - began < 30


def test_png_without_matplotlib_says_so_before_the_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (as if it were not installed)
    monkeypatch.setattr(tl, "parse", lambda *_: pytest.fail("replayed"))
    with pytest.raises(SystemExit) as stop:
        tl.main([str(TRACE), "--png", str(tmp_path / "x.png")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--png needs matplotlib" in err


def test_frames_has_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert re.search(r"--frames N\s+keep at most N frames", proc.stdout)
    assert "--compare TUNABLES" in proc.stdout


# ====================================================================== the page, in Chromium
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (outside CI it is not installed for you)")
    with Browser(chromium, width=1280, height=900, timeout=30) as b:
        yield b


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small threaded trace's page, alone and beside arena_max=1."""
    where = tmp_path_factory.mktemp("pages")
    trace = small_threaded_trace(where / "small.trace")
    single = tl.from_trace(trace, max_frames=30)
    both = tl.from_trace(trace, max_frames=30, compare={"arena_max=1": {"arena_max": 1}})
    return {
        "single": single,
        "single_url": single.write_html(where / "single.html").as_uri(),
        "both": both,
        "both_url": both.write_html(where / "both.html").as_uri(),
    }


def opened(browser: Browser, url: str) -> Browser:
    browser.events.clear()
    browser.open(url)
    return browser


def test_the_page_loads_offline_with_no_console_error(
    browser: Browser, pages: dict[str, Any]
) -> None:
    page = opened(browser, pages["single_url"])
    assert page.problems() == []
    assert all(url.startswith(("file:", "data:")) for url in page.requests()), page.requests()
    assert page.evaluate("document.body.dataset.errors") == "0"
    assert page.evaluate("timeline.frames") == len(pages["single"].frames)
    assert page.evaluate("timeline.frame()") == 0  # it opens at the first frame
    assert page.evaluate("document.getElementById('play').textContent").endswith("play")


def test_play_advances_frames_and_pause_stops(browser: Browser, pages: dict[str, Any]) -> None:
    page = opened(browser, pages["single_url"])

    def press(button: str) -> None:
        box = page.evaluate(f"document.getElementById('{button}').getBoundingClientRect().toJSON()")
        page.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    press("play")
    page.wait_for("timeline.frame() >= 2", timeout=10)
    assert page.evaluate("document.getElementById('play').textContent").endswith("pause")
    press("play")
    assert page.evaluate("timeline.playing()") is False
    stopped = page.evaluate("timeline.frame()")
    time.sleep(0.4)
    assert page.evaluate("timeline.frame()") == stopped
    assert page.evaluate("document.getElementById('play').textContent").endswith("play")
    assert page.problems() == []


def test_keys_step_and_jump(browser: Browser, pages: dict[str, Any]) -> None:
    page = opened(browser, pages["single_url"])
    last = page.evaluate("timeline.frames") - 1
    for key, code, frame in (("ArrowRight", 39, 1), ("End", 35, last), ("ArrowLeft", 37, last - 1)):
        page.press(key, code)
        assert page.evaluate("timeline.frame()") == frame, key


def test_decoded_frames_are_the_captured_frames(browser: Browser, pages: dict[str, Any]) -> None:
    timeline = pages["both"]
    page = opened(browser, pages["both_url"])
    for k in (0, len(timeline.frames) // 2, len(timeline.frames) - 1):
        page.evaluate(f"timeline.go({k})")
        for run, captured in enumerate(timeline.runs()):
            for key, pieces in python_pieces(captured.frames[k]).items():
                shown = page.evaluate(f"timeline.pieces({run}, {key[0]}, '{key[1]}')")
                assert [(p["offset"], p["kind"]) for p in shown] == [
                    (offset, frames.KINDS[code & 15]) for offset, code, _ in pieces
                ], (k, run, key)


def test_hovering_a_block_shows_its_address_and_thread(
    browser: Browser, pages: dict[str, Any]
) -> None:
    timeline = pages["single"]
    page = opened(browser, pages["single_url"])
    last = len(timeline.frames) - 1
    arena, heap, piece = next(
        (a["index"], h, p)
        for a in timeline.frames[last]["arenas"]
        for h in a["heaps"]
        for p in h["pieces"]
        if p.kind == frames.LIVE and p.detail - 1 == 2
    )
    page.evaluate(f"timeline.go({last})")
    point = page.evaluate(f"timeline.reveal(0, {arena}, '{heap['base']:#x}', {piece.offset})")
    page.mouse("mouseMoved", point["x"], point["y"])
    text = page.wait_for(
        "!document.getElementById('tip').hidden && document.getElementById('tip').innerText"
    )
    assert f"{heap['base'] + piece.offset:#x}" in text
    assert "allocated by thread 2" in text and "live block" in text
    assert "last call here: call" in text
    # A free chunk: where it is binned, and the free that made it.
    arena, heap, piece = next(
        (a["index"], h, p)
        for a in timeline.frames[last]["arenas"]
        for h in a["heaps"]
        for p in h["pieces"]
        if p.kind == frames.FREE
    )
    point = page.evaluate(f"timeline.reveal(0, {arena}, '{heap['base']:#x}', {piece.offset})")
    page.mouse("mouseMoved", point["x"], point["y"])
    address = f"{heap['base'] + piece.offset:#x}"
    text = page.wait_for(
        f"(t => t.includes('{address}') && t)(document.getElementById('tip').innerText)"
    )
    assert "free chunk" in text and f"in the {bin_name(piece.detail)}" in text
    assert "free by thread 0" in text


def test_heaps_are_drawn_to_one_scale(browser: Browser, pages: dict[str, Any]) -> None:
    page = opened(browser, pages["single_url"])
    page.evaluate(f"timeline.go({len(pages['single'].frames) - 1})")
    # The drawn extent of each heap, read from its canvas: the last column of its outline.
    drawn = page.evaluate(
        """timeline.heaps().map(h => {
             const canvas = [...document.querySelectorAll('.heap canvas')].find(c => {
               const box = c.getBoundingClientRect();
               return box.top === h.canvas.top && box.left === h.canvas.left;
             });
             const ctx = canvas.getContext('2d'), y = Math.round(canvas.height / 2);
             const row = ctx.getImageData(0, y, canvas.width, 1).data;
             let last = -1;
             for (let x = 0; x < canvas.width; x++) if (row[4 * x + 3] > 0) last = x;
             const px = (last + 1) / (window.devicePixelRatio || 1);
             return {size: h.size, px, width: canvas.clientWidth};
           })"""
    )
    assert len(drawn) >= 3
    sizes = {h["size"] for h in drawn}
    assert len(sizes) >= 2, "the heaps all have one size: nothing to compare"
    widest = max(drawn, key=lambda h: h["size"])
    assert widest["px"] >= widest["width"] - 4  # the largest heap fills its canvas at fit
    per_byte = widest["px"] / widest["size"]
    for h in drawn:
        assert abs(h["px"] - h["size"] * per_byte) <= 2, drawn


def test_side_by_side_shows_a_heap_per_run_for_each_arena(
    browser: Browser, pages: dict[str, Any]
) -> None:
    page = opened(browser, pages["both_url"])
    assert page.evaluate("timeline.runs") == ["default", "arena_max=1"]
    page.evaluate("timeline.go(timeline.frames - 1)")
    heaps = page.evaluate("timeline.heaps()")
    assert sorted(h["run"] for h in heaps if h["arena"] == 0) == [0, 1]
    assert {h["arena"] for h in heaps if h["run"] == 1} == {0}  # arena_max=1: one arena
    assert {h["arena"] for h in heaps if h["run"] == 0} == {0, 1, 2}
    titles = page.evaluate("[...document.querySelectorAll('.run-title')].map(t => t.textContent)")
    assert titles == ["default", "arena_max=1"]
    assert page.problems() == []


def test_cross_thread_frees_are_wired_to_their_arena(
    browser: Browser, pages: dict[str, Any]
) -> None:
    timeline = pages["single"]
    page = opened(browser, pages["single_url"])

    def cross(k: int) -> dict[int, int]:
        thread = timeline.frames[k]["threads"].get(2)
        return thread.cross if thread else {}

    k = next(k for k in range(1, len(timeline.frames)) if cross(k) != cross(k - 1))
    home = next(iter(cross(k)))
    page.evaluate(f"timeline.go({k})")
    wires = page.evaluate(
        "[...document.querySelectorAll('#links path[data-thread]')].map(p => ({...p.dataset}))"
    )
    assert {"thread": "2", "arena": str(home), "run": "0"}.items() <= next(
        w for w in wires if w["frees"] != "0"
    ).items()
    inbound = page.evaluate("[...document.querySelectorAll('.inbound')].map(d => d.textContent)")
    assert any("by thread 2" in text for text in inbound)
