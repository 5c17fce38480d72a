"""Issue 6: statistics that add up, glibc's reports, trimming, tunables and mallopt."""

from __future__ import annotations

import ctypes
import os
import random
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from helpers import cached_after_churn

import arenas
from arenas import Allocator, OutOfMemory
from arenas.chunk import CHUNK_HDR_SZ, MINSIZE, request2size
from arenas.memory import PAGE_SIZE, page_align
from arenas.tunables import (
    M_ARENA_MAX,
    M_MMAP_MAX,
    M_MMAP_THRESHOLD,
    M_MXFAST,
    M_PERTURB,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
    TUNABLES,
    parse_tunables,
)


def random_work(alloc: Allocator, seed: int, steps: int = 400) -> list[int]:
    rng = random.Random(seed)
    live: list[int] = []
    for _ in range(steps):
        if live and rng.random() < 0.4:
            alloc.free(live.pop(rng.randrange(len(live))))
        else:
            size = rng.choice([rng.randint(0, 512), rng.randint(512, 70_000), 200_000])
            live.append(alloc.malloc(size))
    return live


def in_threads(n: int, fn: object) -> None:
    """Run ``fn(k)`` in ``n`` threads that all live at once (barriers at both ends)."""
    assert callable(fn)
    errors: list[BaseException] = []
    start, finish = threading.Barrier(n), threading.Barrier(n)

    def run(k: int) -> None:
        try:
            start.wait()
            fn(k)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            finish.wait()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ------------------------------------------------------------------ stats
def test_stats_add_up_after_work_in_threads() -> None:
    with Allocator(arena_max=4, mmap_threshold=150_000) as alloc:
        kept: list[list[int]] = [[] for _ in range(8)]
        in_threads(8, lambda k: kept[k].extend(random_work(alloc, k)))
        alloc.check()
        st = alloc.stats()
        assert 1 < len(st.arenas) <= 4
        for arena in st.arenas:
            assert arena.in_use_bytes + arena.free_bytes == arena.system_bytes
            assert arena.max_system_bytes >= arena.system_bytes
            assert arena.heaps >= 1
        assert st.arena == sum(a.system_bytes for a in st.arenas)
        assert st.uordblks + st.fordblks == st.arena
        assert st.uordblks == sum(a.in_use_bytes for a in st.arenas)
        assert st.ordblks == sum(a.free_chunks for a in st.arenas)
        assert st.system_bytes == st.arena + st.hblkhd == alloc.system_bytes()
        assert st.hblks >= 1 and st.hblkhd >= st.hblks * 200_000
        assert st.smblks == st.fsmblks == st.usmblks == 0
        assert st.keepcost == st.arenas[0].top_bytes
        for blocks in kept:
            for addr in blocks:
                alloc.free(addr)
        alloc.check()
        after = alloc.stats()
        assert after.hblks == 0 and after.hblkhd == 0
        assert after.system_bytes == alloc.system_bytes()
        assert after.slab_blocks_live == 0


def test_stats_is_immutable() -> None:
    with Allocator() as alloc:
        st = alloc.stats()
        with pytest.raises(AttributeError):
            st.arena = 1  # type: ignore[misc]


def test_malloc_stats_prints_glibc_layout() -> None:
    import io

    with Allocator() as alloc:
        blocks = [alloc.malloc(n) for n in (10, 2000, 90_000, 300_000)]
        thread_block: list[int] = []
        in_threads(1, lambda k: thread_block.append(alloc.malloc(5000)))
        out = io.StringIO()
        alloc.malloc_stats(out)
        st = alloc.stats()
        text = out.getvalue()
        lines = text.splitlines()
        expected: list[str] = []
        for arena in st.arenas:
            expected += [
                f"Arena {arena.index}:",
                f"system bytes     = {arena.system_bytes:10d}",
                f"in use bytes     = {arena.in_use_bytes:10d}",
            ]
        expected += [
            "Total (incl. mmap):",
            f"system bytes     = {st.system_bytes:10d}",
            f"in use bytes     = {st.in_use_bytes:10d}",
            f"max mmap regions = {st.max_mmapped_chunks:10d}",
            f"max mmap bytes   = {st.max_mmapped_bytes:10d}",
        ]
        assert lines == expected
        assert st.max_mmapped_chunks == 1  # the 300,000-byte block's mapping:
        assert st.max_mmapped_bytes == page_align(request2size(300_000) + CHUNK_HDR_SZ)
        for addr in blocks + thread_block:
            alloc.free(addr)


def test_malloc_info_is_glibc_xml() -> None:
    with Allocator() as alloc:
        blocks = [alloc.malloc(n) for n in (70_000, 80_000, 90_000, 100_000, 300_000)]
        alloc.free(blocks[1])
        alloc.free(blocks[3])
        root = ET.fromstring(alloc.malloc_info())
        st = alloc.stats()
        assert root.tag == "malloc" and root.get("version") == "1"
        heaps = root.findall("heap")
        assert [int(h.get("nr", "-1")) for h in heaps] == [a.index for a in st.arenas]
        for heap, arena in zip(heaps, st.arenas, strict=True):
            current = heap.find("system[@type='current']")
            assert current is not None and int(current.get("size", "0")) == arena.system_bytes
            rest = heap.find("total[@type='rest']")
            assert rest is not None and int(rest.get("size", "0")) == arena.free_bytes
            sizes = heap.find("sizes")
            assert sizes is not None
            binned = sum(int(e.get("count", "0")) for e in sizes)
            assert binned == arena.free_chunks
        mmap_total = root.find("total[@type='mmap']")
        assert mmap_total is not None
        assert int(mmap_total.get("count", "0")) == st.hblks == 1
        assert int(mmap_total.get("size", "0")) == st.hblkhd
        system = root.find("system[@type='current']")
        assert system is not None and int(system.get("size", "0")) == st.system_bytes
        for addr in (blocks[0], blocks[2], blocks[4]):
            alloc.free(addr)


# ------------------------------------------------------------------- trim
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_trim_gives_resident_memory_back() -> None:
    """Allocate about 256 MiB in 4 threads, touch it, free it, trim: RSS comes back."""
    with Allocator() as alloc:
        random_work(alloc, 99, steps=50)  # warm up: arenas, slabs, dicts
        before = _rss()
        per_thread = 64 << 20
        blocks: list[list[int]] = [[] for _ in range(4)]

        def fill(k: int) -> None:
            rng = random.Random(k)
            total = 0
            while total < per_thread:
                size = rng.choice([rng.randint(1024, 65536), rng.randint(65536, 120_000)])
                addr = alloc.malloc(size)
                ctypes.memset(addr, 0x5A, size)
                blocks[k].append(addr)
                total += size

        in_threads(4, fill)
        peak = _rss()
        assert peak - before > 200 << 20, "the test did not make 200 MiB resident"
        for mine in blocks:
            for addr in mine:
                alloc.free(addr)
        alloc.trim()  # (much went back on its own already: slabs, trimmed tops)
        after = _rss()
        alloc.check()
        assert after <= before * 1.10, (before >> 20, peak >> 20, after >> 20)
        assert alloc.trim() == 0  # the first trim gave back all there was


def test_trim_reports_what_it_released() -> None:
    # No automatic trimming, so everything freed waits for trim().
    with Allocator(trim_threshold=1 << 40, top_pad=0, mmap_threshold=1 << 20) as alloc:
        blocks = [alloc.malloc(200_000) for _ in range(20)]
        for addr in blocks:
            ctypes.memset(addr, 1, 200_000)
        for addr in blocks:
            alloc.free(addr)
        grown = alloc.stats().arena
        released = alloc.trim()
        # Everything merged into the top: it is cut down to the one page that holds its
        # header (no whole page is left inside it to advise away).
        assert released == grown - PAGE_SIZE
        assert alloc.stats().arena == PAGE_SIZE
        assert alloc.trim() == 0  # nothing left to give
        alloc.check()


def test_trim_counts_only_pages_that_were_resident() -> None:
    with Allocator(trim_threshold=1 << 40, top_pad=0, mmap_threshold=1 << 20) as alloc:
        hole = alloc.malloc(400_000)
        pin = alloc.malloc(100_000)  # keeps the heap from shrinking past the hole
        ctypes.memset(hole, 1, 400_000)
        assert hole == alloc.heap_for_ptr(hole) + CHUNK_HDR_SZ  # the heap's first chunk
        alloc.free(hole)
        # Every whole page inside it is advised away, all of them written (not the first:
        # it holds the chunk's header).  The top holds no whole page.
        assert alloc.trim() == (request2size(400_000) & -PAGE_SIZE) - PAGE_SIZE
        assert alloc.trim() == 0  # the same pages, already given back
        again = alloc.malloc(400_000)
        assert again == hole
        ctypes.memset(again, 2, 200_000)  # touch half of it
        alloc.free(again)
        # only the pages written since count: whole ones from the second page on
        assert alloc.trim() == page_align(CHUNK_HDR_SZ + 200_000) - PAGE_SIZE
        alloc.free(pin)
        alloc.check()


def test_trim_drops_an_emptied_heap_in_the_middle() -> None:
    with Allocator(heap_max_size=1 << 20, top_pad=0) as alloc:
        alloc.free(alloc.malloc(1))  # this thread takes the main arena
        got: list[int] = []

        def grow(_: int) -> None:
            got.extend(alloc.malloc(70_000) for _ in range(40))  # > 2 heaps' worth

        in_threads(1, grow)
        arena = alloc.arena_for(got[0])
        assert arena == 1  # the first arena made after the main one
        heaps_before = alloc.stats().arenas[arena].heaps
        assert heaps_before >= 3
        # free what lives in the first heap only; later heaps stay busy
        first = alloc.heap_for_ptr(got[0])
        for addr in got:
            if alloc.heap_for_ptr(addr) == first:
                alloc.free(addr)
        alloc.trim()
        alloc.check()
        assert alloc.stats().arenas[arena].heaps == heaps_before - 1


def test_automatic_trim_of_the_top() -> None:
    threshold = 256 << 10
    with Allocator(trim_threshold=threshold, top_pad=0) as alloc:
        big = [alloc.malloc(100_000) for _ in range(30)]  # ~3 MiB in the main heap
        grown = alloc.stats().arenas[0].system_bytes
        assert grown > 2 << 20
        chunk = request2size(100_000)
        top = grown - 30 * chunk  # the chunks tile the heap from its start, then the top
        for addr in reversed(big):
            alloc.free(addr)
            # each one merges into the top; a top of trim_threshold bytes or more gives
            # back its whole pages beyond top_pad (0) and MINSIZE (Arena.trim_top)
            top += chunk
            if top >= threshold:
                top -= (top - MINSIZE - 1) & -PAGE_SIZE
        shrunk = alloc.stats().arenas[0].system_bytes
        assert shrunk == top < threshold


# --------------------------------------------------------------- tunables
def test_arena_max_one_gives_one_arena_for_eight_threads() -> None:
    with Allocator(arena_max=1) as alloc:
        seen: set[int | None] = set()
        in_threads(
            8, lambda k: seen.update(alloc.arena_for(alloc.malloc(70_000)) for _ in range(5))
        )
        assert seen == {0}
        assert len(alloc.stats().arenas) == 1


def test_mmap_threshold_and_mmap_max() -> None:
    with Allocator(mmap_threshold=65536) as alloc:
        assert alloc.arena_for(alloc.malloc(70_000)) is None
        assert alloc.arena_for(alloc.malloc(65_000)) == 0  # a heap chunk, below the threshold
    with Allocator(mmap_max=0) as alloc:
        assert alloc.arena_for(alloc.malloc(1 << 20)) == 0  # a chunk of the main heap
        assert alloc.stats().hblks == 0


def test_top_pad_sets_how_much_a_heap_grows() -> None:
    with Allocator(top_pad=0) as lean, Allocator(top_pad=1 << 20) as padded:
        lean.malloc(70_000)
        padded.malloc(70_000)
        # the main heap grows from nothing: the chunk, a top of MINSIZE, and top_pad
        need = request2size(70_000) + MINSIZE
        assert lean.stats().arena == page_align(need)
        assert padded.stats().arena == page_align(need + (1 << 20))


def test_tcache_count_zero_caches_nothing() -> None:
    with Allocator(tcache_count=0) as alloc:
        blocks = [alloc.malloc(64) for _ in range(50)]
        for addr in blocks:
            alloc.free(addr)
        assert alloc.stats().tcache_blocks == 0
        alloc.check()
    with Allocator(tcache_count=8) as alloc:
        blocks = [alloc.malloc(64) for _ in range(50)]
        for addr in blocks:
            alloc.free(addr)
        # a full cache sends half of itself home: refills of 1, 2, 4, 5, 5, ... leave 2
        # cached, the frees fill the bin to 8 and halve it when full: 7 at the end
        assert alloc.stats().tcache_blocks == cached_after_churn(50, 8) == 7
        alloc.check()


def test_perturb_fills_new_and_freed_bytes() -> None:
    with Allocator(perturb=0x5A, tcache_count=4) as alloc:
        addr = alloc.malloc(48)
        assert ctypes.string_at(addr, 48) == bytes([0x5A ^ 0xFF]) * 48
        alloc.free(addr)  # into the cache, so the bytes stay readable
        assert ctypes.string_at(addr, 48) == bytes([0x5A]) * 48
        assert ctypes.string_at(alloc.calloc(6, 8), 48) == bytes(48)
        # calloc is never perturbed, fresh mappings included
        assert ctypes.string_at(alloc.calloc(1, 300_000), 300_000) == bytes(300_000)


def test_heap_max_size_sets_heap_alignment() -> None:
    with Allocator(heap_max_size=4 << 20) as alloc:
        alloc.free(alloc.malloc(1))  # this thread takes the main arena
        got: list[int] = []
        in_threads(1, lambda k: got.append(alloc.malloc(70_000)))
        assert alloc.heap_for_ptr(got[0]) == got[0] & ~((4 << 20) - 1)


def test_max_heap_bytes_caps_everything() -> None:
    with Allocator(max_heap_bytes=4 << 20, arena_max=1) as alloc:
        got = []
        with pytest.raises(OutOfMemory):
            while True:
                got.append(alloc.malloc(100_000))
        assert alloc.stats().max_system_bytes <= 4 << 20
        for addr in got:
            alloc.free(addr)
        alloc.malloc(100_000)
        alloc.check()


def test_main_heap_size_bounds_the_main_arena() -> None:
    with Allocator(main_heap_size=1 << 20, arena_max=1, mmap_max=0) as alloc:
        with pytest.raises(OutOfMemory):
            for _ in range(20):
                alloc.malloc(100_000)
        alloc.check()


def test_arena_test_only_counts_without_arena_max() -> None:
    default = TUNABLES["arena_max"].default()
    with Allocator(arena_test=default + 3) as alloc:
        assert alloc._registry.arena_max == default + 3
    with Allocator(arena_test=default + 3, arena_max=2) as alloc:
        assert alloc._registry.arena_max == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"arena_max": 0}, ValueError, "arena_max=0 is out of range: valid values are 1..1024"),
        ({"heap_max_size": 3 << 20}, ValueError, "a power of two"),
        ({"tcache_count": -1}, ValueError, "tcache_count"),
        ({"nonsense": 1}, ValueError, "unknown tunable 'nonsense'"),
        ({"top_pad": 1.5}, TypeError, "top_pad must be an int"),
        ({"perturb": True}, TypeError, "perturb must be an int"),
    ],
)
def test_bad_tunables_name_the_tunable_and_its_range(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=re.escape(needle)):
        Allocator(**kwargs)


# ---------------------------------------------------------------- mallopt
def test_mallopt_takes_glibc_numbers_and_names() -> None:
    with Allocator() as alloc:
        alloc.mallopt(M_MMAP_THRESHOLD, 1 << 16)
        alloc.mallopt(M_TRIM_THRESHOLD, 1 << 20)
        alloc.mallopt(M_TOP_PAD, 0)
        alloc.mallopt(M_ARENA_MAX, 3)
        alloc.mallopt(M_MMAP_MAX, 7)
        alloc.mallopt("tcache_count", 5)
        params = alloc.params
        assert params["mmap_threshold"] == 1 << 16
        assert params["trim_threshold"] == 1 << 20
        assert params["top_pad"] == 0 and params["arena_max"] == 3
        assert params["mmap_max"] == 7 and params["tcache_count"] == 5
        assert alloc.arena_for(alloc.malloc(70_000)) is None  # the new threshold holds
        blocks = [alloc.malloc(32) for _ in range(20)]
        for addr in blocks:
            alloc.free(addr)
        assert alloc.stats().tcache_blocks == 5
        alloc.mallopt(M_PERTURB, 0x11)
        addr = alloc.malloc(32)
        assert ctypes.string_at(addr, 4) == bytes([0x11 ^ 0xFF]) * 4
        alloc.check()


def test_mallopt_refuses_bad_input_and_changes_nothing() -> None:
    with Allocator() as alloc:
        before = alloc.params
        with pytest.raises(ValueError, match="mmap_threshold=-5 is out of range"):
            alloc.mallopt(M_MMAP_THRESHOLD, -5)
        with pytest.raises(ValueError, match="no fastbins"):
            alloc.mallopt(M_MXFAST, 64)
        with pytest.raises(ValueError, match="unknown mallopt parameter"):
            alloc.mallopt(-99, 1)
        with pytest.raises(ValueError, match="only be set when the allocator is created"):
            alloc.mallopt("heap_max_size", 1 << 20)
        with pytest.raises(TypeError):
            alloc.mallopt(M_TOP_PAD, "big")  # type: ignore[arg-type]
        assert alloc.params == before
        alloc.free(alloc.malloc(10))
        alloc.check()


# ------------------------------------------------------ ARENAS_TUNABLES
def test_parse_tunables_is_glibc_syntax() -> None:
    assert parse_tunables("arena_max=2:tcache_count=0:mmap_threshold=0x10000") == {
        "arena_max": 2,
        "tcache_count": 0,
        "mmap_threshold": 65536,
    }
    assert parse_tunables("") == {}
    with pytest.raises(ValueError, match="tunable arena_max: 'x' is not an integer"):
        parse_tunables("arena_max=x")
    with pytest.raises(ValueError, match="must look like name=value"):
        parse_tunables("arena_max")
    with pytest.raises(ValueError, match="tcache_count=-1 is out of range"):
        parse_tunables("arena_max=2:tcache_count=-1")


def test_environment_reaches_the_default_allocator() -> None:
    code = (
        "import arenas; a = arenas.default_allocator(); p = a.params;"
        "print(p['arena_max'], p['tcache_count'], p['mmap_threshold'])"
    )
    env = {**os.environ, "ARENAS_TUNABLES": "arena_max=2:tcache_count=0:mmap_threshold=65536"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["2", "0", "65536"]
    env["ARENAS_TUNABLES"] = "arena_max=0"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "arena_max=0 is out of range" in bad.stderr


def test_module_level_stats() -> None:
    live = arenas.stats().slab_blocks_live
    addr = arenas.malloc(100)
    assert arenas.stats().slab_blocks_live == live + 1
    arenas.free(addr)
    assert arenas.stats().slab_blocks_live == live
