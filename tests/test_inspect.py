"""Issue 8: the inspection views against heap states we build and know."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

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


# ------------------------------------------------------------------ the glibc policy
def glibc_heap() -> tuple[Allocator, int, dict[str, int]]:
    """A glibc-policy heap with something in every kind of bin, and its base.

    0x20 blocks: seven freed into the tcache, the eighth into the fastbin; 0x90
    blocks: seven into the tcache, the eighth into the unsorted bin, which a
    2000-byte request sorts into its small bin, with a freed 0x420 chunk that
    goes to its large bin; then another 0x420 chunk freed into the unsorted bin.
    Guards keep the free chunks apart.  Offsets as glibc 2.36 gives them.
    """
    a = Allocator(policy="glibc")
    base = a.arena(0).heaps[0].base
    small = [a.malloc(24) for _ in range(8)]  # chunks 0x290 .. 0x370
    mid = [a.malloc(136) for _ in range(8)]  # chunks 0x390 .. 0x780
    guards = [a.malloc(24)]  # 0x810
    large = a.malloc(1048)  # chunk 0x830 (0x420)
    guards.append(a.malloc(24))  # 0xc50
    unsorted = a.malloc(1048)  # chunk 0xc70
    guards.append(a.malloc(24))  # 0x1090
    for addr in mid:
        a.free(addr)
    a.free(large)
    a.malloc(2000)  # 0x10b0: sorts mid[7] into small bin 0x90, large into bin 64
    a.free(unsorted)
    for addr in small:
        a.free(addr)
    return a, base, {"small7": small[7], "mid7": mid[7], "large": large, "unsorted": unsorted}


def test_glibc_bins_view_is_pwndbgs() -> None:
    a, base, _ = glibc_heap()
    tcache = " —▸ ".join(f"{base + off:#x}" for off in range(0x360, 0x29F, -0x20))
    mid = " —▸ ".join(f"{base + off:#x}" for off in (0x700, 0x670, 0x5E0, 0x550, 0x4C0, 0x430))
    assert inspect.bins(a, color=False).splitlines() == [
        "tcachebins",
        f"0x20 [  7]: {tcache} ◂— 0x0",
        f"0x90 [  7]: {mid} —▸ {base + 0x3A0:#x} ◂— 0x0",
        "fastbins",
        f"0x20: {base + 0x370:#x} ◂— 0x0",
        "unsortedbin",
        f"all: {base + 0xC70:#x} —▸ main_arena+96 ◂— {base + 0xC70:#x}",
        "smallbins",
        f"0x90: {base + 0x780:#x} —▸ main_arena+224 ◂— {base + 0x780:#x}",
        "largebins",
        f"0x400-0x430 (bin 64): {base + 0x830:#x} —▸ main_arena+1104 ◂— {base + 0x830:#x}",
    ]
    assert "\x1b[" in inspect.bins(a, color=True)


def test_glibc_bins_view_of_empty_bins_and_long_chains() -> None:
    a = Allocator(policy="glibc", tcache_count=0)  # every 0x20 chunk goes to the fastbin
    base = a.arena(0).heaps[0].base
    blocks = [a.malloc(24) for _ in range(10)]
    assert inspect.bins(a, color=False).splitlines()[1:] == [
        "empty",
        "fastbins",
        "empty",
        "unsortedbin",
        "empty",
        "smallbins",
        "empty",
        "largebins",
        "empty",
    ]
    for addr in blocks:
        a.free(addr)
    # pwndbg's heap-dereference-limit: the head and 7 more links, then "..."
    shown = " —▸ ".join(f"{addr - 16:#x}" for addr in reversed(blocks[2:]))
    assert f"0x20: {shown} ◂— ..." in inspect.bins(a, color=False).splitlines()
    assert blocks[0] - base == 0x2A0


def test_glibc_bins_view_of_another_threads_tcache() -> None:
    a = Allocator(policy="glibc")
    with ThreadPoolExecutor(1) as worker:
        block = worker.submit(a.malloc, 24).result()
        worker.submit(a.free, block).result()
        ident = worker.submit(threading.get_ident).result()
        theirs = inspect.bins(a, thread=ident, color=False).splitlines()  # (the main arena's)
        assert theirs[:2] == ["tcachebins", f"0x20 [  1]: {block:#x} ◂— 0x0"]
        mine = inspect.bins(a, color=False).splitlines()
        assert mine[1].startswith("No tcache bins found for thread ")
        with pytest.raises(ValueError, match="has no tcache in this allocator"):
            inspect.bins(a, thread=ident + 1)
        worker.submit(a.thread_exit).result()  # (shut down now: see the next test)


def test_glibc_heap_view_is_pwndbgs() -> None:
    a, base, _ = glibc_heap()
    chunks = inspect.heap(a, color=False).split("\n\n")
    assert chunks[0].splitlines() == [
        "Allocated chunk | PREV_INUSE",
        f"Addr: {base:#x}",
        "Size: 0x290 (with flag bits: 0x291)",
        "tcache_perthread_struct (MainThread)",
    ]
    assert chunks[1].splitlines() == [
        "Free chunk (tcachebins) | PREV_INUSE",
        f"Addr: {base + 0x290:#x}",
        "Size: 0x20 (with flag bits: 0x21)",
        "fd: 0x00",
    ]
    assert chunks[2].splitlines()[-1] == f"fd: {base + 0x2A0:#x}"
    by_addr = {c.splitlines()[1]: c.splitlines() for c in chunks}
    assert by_addr[f"Addr: {base + 0x370:#x}"] == [
        "Free chunk (fastbins) | PREV_INUSE",
        f"Addr: {base + 0x370:#x}",
        "Size: 0x20 (with flag bits: 0x21)",
        "fd: 0x00",
    ]
    assert by_addr[f"Addr: {base + 0x780:#x}"] == [
        "Free chunk (smallbins) | PREV_INUSE",
        f"Addr: {base + 0x780:#x}",
        "Size: 0x90 (with flag bits: 0x91)",
        "fd: main_arena+224",
        "bk: main_arena+224",
    ]
    assert by_addr[f"Addr: {base + 0x810:#x}"] == [
        "Allocated chunk",  # (its neighbour before is free)
        f"Addr: {base + 0x810:#x}",
        "Size: 0x20 (with flag bits: 0x20)",
    ]
    assert by_addr[f"Addr: {base + 0x830:#x}"] == [
        "Free chunk (largebins) | PREV_INUSE",
        f"Addr: {base + 0x830:#x}",
        "Size: 0x420 (with flag bits: 0x421)",
        "fd: main_arena+1104",
        "bk: main_arena+1104",
        f"fd_nextsize: {base + 0x830:#x}",
        f"bk_nextsize: {base + 0x830:#x}",
    ]
    assert by_addr[f"Addr: {base + 0xC70:#x}"] == [
        "Free chunk (unsortedbin) | PREV_INUSE",
        f"Addr: {base + 0xC70:#x}",
        "Size: 0x420 (with flag bits: 0x421)",
        "fd: main_arena+96",
        "bk: main_arena+96",
    ]
    assert chunks[-1].splitlines() == [
        "Top chunk | PREV_INUSE",
        f"Addr: {base + 0x1890:#x}",
        "Size: 0x1f770 (with flag bits: 0x1f771)",
    ]


def test_glibc_heap_view_of_a_large_bin_and_a_non_main_arena() -> None:
    a = Allocator(policy="glibc")
    a.malloc(24)  # the main thread takes the main arena; the worker gets arena 1
    with ThreadPoolExecutor(1, thread_name_prefix="worker") as worker:
        # three chunks of two sizes in large bin 64, each kept apart by a guard
        sizes = (1048, 1064, 1048)  # chunks 0x420, 0x430, 0x420
        blocks = [worker.submit(a.malloc, n).result() for n in sizes for n in (n, 24)][::2]
        for addr in blocks:
            worker.submit(a.free, addr).result()
        worker.submit(a.malloc, 2000).result()  # sorts them into their large bin
        base = a.arena(1).heaps[0].base
        first, second, third = (addr - 16 for addr in blocks)
        bins = inspect.bins(a, arena=1, color=False).splitlines()
        header = f"{base + 0x30 + 1104:#x}"  # malloc_state after heap_info; bin 64's header
        # glibc's fd order: the larger size first; of equal sizes the first filed (the
        # skip list's entry), then the later ones, each filed in second place
        assert bins[-1] == (
            f"0x400-0x430 (bin 64): {second:#x} —▸ {first:#x} —▸ {third:#x} —▸ {header}"
            f" ◂— {second:#x}"
        )
        chunks = {c.splitlines()[1]: c.splitlines() for c in inspect.heap(a, arena=1).split("\n\n")}
        assert chunks[f"Addr: {base + 0x8D0:#x}"] == [
            "Allocated chunk | PREV_INUSE | NON_MAIN_ARENA",
            f"Addr: {base + 0x8D0:#x}",
            "Size: 0x290 (with flag bits: 0x295)",
            "tcache_perthread_struct (worker_0)",
        ]
        assert chunks[f"Addr: {first:#x}"][3:] == [
            f"fd: {third:#x}",
            f"bk: {second:#x}",
            f"fd_nextsize: {second:#x}",
            f"bk_nextsize: {second:#x}",
        ]
        assert chunks[f"Addr: {third:#x}"][3:] == [f"fd: {header}", f"bk: {first:#x}"]
        assert chunks[f"Addr: {second:#x}"][3:] == [
            f"fd: {first:#x}",
            f"bk: {header}",
            f"fd_nextsize: {first:#x}",
            f"bk_nextsize: {first:#x}",
        ]
        # A thread that ends is shut down at once: check() (run after each test) would
        # otherwise do it, under the registry's lock, which the shutdown takes too.
        worker.submit(a.thread_exit).result()


def test_glibc_vis_heap_chunks_labels_bins_and_the_tcache_struct() -> None:
    a, base, _ = glibc_heap()
    rows = inspect.vis_heap_chunks(a, count=9, color=False, max_rows=2).splitlines()
    notes = [row.split("<- ", 1)[1] for row in rows if "<- prev_size" in row]
    assert notes == [
        "prev_size | size 0x290 P--: tcache_perthread_struct (MainThread)",
        *(f"prev_size | size 0x20 P--: tcachebins[0x20][{i}/7]" for i in range(6, -1, -1)),
        "prev_size | size 0x20 P--: fastbins[0x20][0]",
    ]
    assert rows[1].endswith("<- counts, then entries, in glibc; here the Tcache keeps them")
    assert rows[4] == (
        f"{base + 0x2A0:#014x}  {0:#018x}  {0:#018x}"
        "  <- next | key in glibc; here the tcache keeps the links, so: old bytes"
    )
    text = inspect.vis_heap_chunks(a, addr=base + 0x780, count=4, color=False)
    assert "size 0x90 P--: smallbins[0x90][0]" in text
    assert "size 0x420 P--: largebins[0x400-0x430][0]" in text
    assert "size 0x20 ---: in use" in text
    text = inspect.vis_heap_chunks(a, addr=base + 0xC70, count=1, color=False)
    assert "size 0x420 P--: unsortedbin[all][0]" in text.splitlines()[0]
