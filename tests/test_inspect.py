"""Issue 8: the inspection views against heap states we build and know."""

from __future__ import annotations

import re
import threading

import pytest

from arenas import Allocator, AllocatorError, inspect


@pytest.fixture
def alloc() -> Allocator:
    """A fresh allocator (tests/conftest.py checks and closes it after the test)."""
    return Allocator(top_pad=0)


def test_chunks_of_a_known_heap(alloc: Allocator) -> None:
    blocks = [alloc.malloc(100_000) for _ in range(3)]
    alloc.free(blocks[1])
    (heap,) = inspect.chunks(alloc)
    assert [c.state for c in heap] == ["in use", "free", "in use", "top"]
    assert [c.size for c in heap[:3]] == [100_016] * 3
    assert heap[1].detail == "unsorted bin"
    assert heap[2].flag_text == "---"  # its neighbour before is free
    assert heap[0].flag_text == "P--"
    assert heap[0].addr == blocks[0] - 16


def test_heap_view(alloc: Allocator) -> None:
    a = alloc.malloc(100_000)
    alloc.malloc(24)  # a slab
    text = inspect.heap(alloc, color=False)
    assert text.startswith("Arena 0 (main arena): 1 heap(s)")
    assert f"{a - 16:#x}  size  0x186b0  P--  in use" in text
    assert re.search(r"slab \(\d+ x 32 B, \d+ free\)", text)
    assert text.splitlines()[-1].split()[-1] == "top"
    assert "\x1b[" not in text
    assert "\x1b[" in inspect.heap(alloc, color=True)


def test_bins_view(alloc: Allocator) -> None:
    blocks = [alloc.malloc(100_000) for _ in range(3)]
    alloc.free(blocks[1])
    assert f"unsorted: {blocks[1] - 16:#x} (0x186b0)" in inspect.bins(alloc, color=False)
    alloc.malloc(110_000)  # sorts the unsorted bin: the chunk moves to its large bin
    text = inspect.bins(alloc, color=False)
    assert "unsorted: empty" in text
    assert re.search(rf"large bin \d+: {blocks[1] - 16:#x} \(0x186b0\)", text)
    small = alloc.malloc(40)
    alloc.free(small)
    text = inspect.bins(alloc, color=False)
    assert f"tcache (this thread):\ntcache  48 B x 1: {small:#x}" in text


def test_bins_view_of_another_threads_cache(alloc: Allocator) -> None:
    cached: list[int] = []
    ready = threading.Event()
    done = threading.Event()

    def other() -> None:
        blocks = [alloc.malloc(200) for _ in range(3)]
        for addr in blocks:
            alloc.free(addr)
        cached.extend(blocks)
        ready.set()
        done.wait(10)

    worker = threading.Thread(target=other)
    worker.start()
    try:
        assert ready.wait(10)
        assert worker.ident is not None
        text = inspect.bins(alloc, color=False, thread=worker.ident)
        listed = ", ".join(f"{addr:#x}" for addr in cached)
        assert f"tcache (thread {worker.ident}):\ntcache  208 B x 3: {listed}" in text
        with pytest.raises(ValueError, match="has no cache in this allocator"):
            inspect.bins(alloc, thread=worker.ident + 1)
    finally:
        done.set()
        worker.join()


def test_arenas_view(alloc: Allocator) -> None:
    alloc.malloc(10)
    done = threading.Event()
    started = threading.Event()

    def worker() -> None:
        alloc.malloc(100_000)
        started.set()
        done.wait()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    lines = inspect.arenas(alloc, color=False).splitlines()
    assert lines[0].split() == ["arena", "threads", "heaps", "system", "in", "use", "top"]
    assert lines[1].split()[:3] == ["0", "1", "1"]
    assert lines[2].split()[:3] == ["1", "1", "1"]
    done.set()
    t.join()


def test_vis_heap_chunks(alloc: Allocator) -> None:
    a = alloc.malloc(100_000)
    b = alloc.malloc(40_000 + 70_000)
    text = inspect.vis_heap_chunks(alloc, addr=b, count=2, color=False)
    first = text.splitlines()[0]
    assert first.startswith(f"{b - 16:#014x}")
    assert f"<- prev_size | size {110_016:#x} P--: in use" in first
    assert "more rows of this chunk" in text
    assert "top" in text.splitlines()[-1] or "top" in text
    colored = inspect.vis_heap_chunks(alloc, count=2, color=True)
    assert "\x1b[" in colored
    assert f"{a - 16:#014x}" in colored


def test_bad_arena_index(alloc: Allocator) -> None:
    with pytest.raises(ValueError, match="no arena 5"):
        inspect.heap(alloc, arena=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"arena": True}, TypeError, "arena must be an int"),
        ({"arena": "0"}, TypeError, "arena must be an int"),
        ({"arena": -1}, ValueError, "arena must be >= 0"),
        ({"addr": "0x10"}, TypeError, "address must be an int"),
        ({"count": -1}, ValueError, "count must be >= 0"),
        ({"max_rows": 1.5}, TypeError, "max_rows must be an int"),
    ],
)
def test_bad_view_arguments_are_typed_errors(
    alloc: Allocator, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        inspect.vis_heap_chunks(alloc, **kwargs)  # type: ignore[arg-type]
    if "arena" in kwargs:
        with pytest.raises(error, match=match):
            inspect.heap(alloc, arena=kwargs["arena"])  # type: ignore[arg-type]


def test_views_need_an_allocator(alloc: Allocator) -> None:
    for view in (inspect.heap, inspect.bins, inspect.arenas, inspect.chunks):
        with pytest.raises(TypeError, match="expected an Allocator"):
            view(1)  # type: ignore[arg-type]
    alloc.close()
    for view in (inspect.heap, inspect.bins, inspect.arenas, inspect.chunks):
        with pytest.raises(AllocatorError, match="closed"):
            view(alloc)


def test_command_line() -> None:
    import subprocess
    import sys

    for view in ("heap", "bins", "arenas", "vis"):
        out = subprocess.run(
            [sys.executable, "-m", "arenas.inspect", view],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "arenas.inspect", "nope"], capture_output=True)
    assert bad.returncode == 2
