"""Issue 4: size classes, slabs and the per-thread cache."""

from __future__ import annotations

import collections
import ctypes
import itertools
import queue
import random
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from helpers import assert_disjoint, cached_after_churn, run_threads

from arenas import Allocator, DoubleFree, InvalidPointer
from arenas.chunk import CHUNK_HDR_SZ
from arenas.memory import PAGE_SIZE
from arenas.slab import (
    CLASS_BLOCKS,
    CLASS_OF,
    CLASS_SIZES,
    CLASS_SLAB_BYTES,
    CLASS_WINDOWS,
    NCLASSES,
    SLAB_MAX,
)


def run_thread(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a thread of its own; re-raise its error."""

    def body(_: int) -> None:
        fn()

    run_threads(1, body)


# ------------------------------------------------------------ size classes
def test_classes_include_ballocs_powers_of_two() -> None:
    # balloc's power-of-two classes, as far as slabs go (1 KiB): 16 .. 1024
    assert {16 << k for k in range(7)} <= set(CLASS_SIZES)
    assert CLASS_SIZES[-1] == SLAB_MAX == 1024
    # 16-byte steps up to 256, then four classes per doubling
    assert CLASS_SIZES[:16] == tuple(range(16, 257, 16))
    assert CLASS_SIZES[16:] == (320, 384, 448, 512, 640, 768, 896, 1024)
    assert list(CLASS_SIZES) == sorted(set(CLASS_SIZES))
    assert all(size % 16 == 0 for size in CLASS_SIZES)


def test_class_of_is_the_smallest_class_that_fits() -> None:
    for size in (0, 1, 16, 17, 128, 129, 255, 256, 257, 321, 1000, 1023, 1024):
        cls = CLASS_OF[size]
        assert CLASS_SIZES[cls] >= size
        assert cls == 0 or CLASS_SIZES[cls - 1] < max(size, 1)


def test_waste_is_bounded_above_the_tiny_classes() -> None:
    for cls in range(4, NCLASSES):
        below = CLASS_SIZES[cls - 1]
        assert (CLASS_SIZES[cls] - below - 1) / CLASS_SIZES[cls] <= 0.20


def test_usable_size_is_the_class_size() -> None:
    with Allocator() as alloc:
        for size in (1, 100, 250, 300, 1000, 1024):
            assert alloc.usable_size(alloc.malloc(size)) == CLASS_SIZES[CLASS_OF[size]]


# ------------------------------------------------------------------- slabs
def test_a_blocks_slab_is_found_by_masking() -> None:
    with Allocator() as alloc:
        for size in (16, 200, 700, 1024):
            addr = alloc.malloc(size)
            cls = CLASS_OF[size]
            table = alloc._slab_table
            found = table.slabs[addr & -CLASS_WINDOWS[cls]]
            (slab,) = [s for s in found if s.base <= addr < s.end]
            assert slab.cls == cls and slab.is_block(addr)
            # the slab is one chunk of its arena: its header and its blocks
            arena = alloc._registry.arenas[alloc.arena_for(addr) or 0]
            assert arena.in_use[slab.base + 16] == CLASS_SLAB_BYTES[cls] == slab.end - slab.base
            # every block of the slab masks to a window that lists it
            for block in range(slab.base + 16, slab.end, slab.size):
                assert slab in table.slabs[block & -CLASS_WINDOWS[cls]]
                assert table.slab_of(block, cls) is table.find(block) is slab
            assert table.owners([addr], cls) == [slab]
        alloc.check()


def test_blocks_of_one_class_do_not_overlap_and_keep_their_bytes() -> None:
    with Allocator() as alloc:
        blocks = [alloc.malloc(48) for _ in range(500)]
        assert len(set(blocks)) == 500
        ordered = sorted(blocks)
        assert all(b - a >= 48 for a, b in itertools.pairwise(ordered))
        for k, addr in enumerate(blocks):
            alloc.view(addr, 48)[:] = bytes([k & 255]) * 48
        for k, addr in enumerate(blocks):
            assert bytes(alloc.view(addr, 48)) == bytes([k & 255]) * 48
        alloc.check()


def test_an_empty_slab_is_kept_until_the_heap_would_grow_or_trim() -> None:
    # top_pad=0: the heap grows by what it needs, so its top stays small
    with Allocator(tcache_count=0, top_pad=0) as alloc:
        alloc.free(alloc.malloc(32))
        assert alloc.stats().slabs == 1  # wholly free: kept as its class's spare
        burst = [alloc.malloc(32) for _ in range(4000)]  # 250 slabs of 16 blocks
        # the spare is filled first, then new slabs
        slabs = -(-4000 // CLASS_BLOCKS[CLASS_OF[32]])
        assert alloc.stats().slabs == slabs
        for addr in burst:
            alloc.free(addr)
        after = alloc.stats()
        assert after.slabs == slabs  # all kept: the next burst carves none
        again = [alloc.malloc(32) for _ in range(4000)]
        assert alloc.stats().slabs == slabs and alloc.stats().arena == after.arena
        for addr in again:
            alloc.free(addr)
        # Rather than cut the top or grow the heap, the arena takes spares back, as
        # many as it needs: their memory serves another size.
        other = [alloc.malloc(1000) for _ in range(8)]  # two slabs of four 1 KiB blocks
        assert CLASS_BLOCKS[CLASS_OF[1000]] == 4
        assert alloc.stats().arena == after.arena
        assert 2 < alloc.stats().slabs < slabs + 2  # some spares went back, not all
        for addr in other:
            alloc.free(addr)
        assert alloc.trim() > 0
        assert alloc.stats().slabs == 0  # trim() gives every spare back
        alloc.check()


# ------------------------------------------------------------ thread cache
def test_a_freed_block_is_reused_by_the_same_thread_first() -> None:
    with Allocator() as alloc:
        a = alloc.malloc(40)
        b = alloc.malloc(40)
        alloc.free(a)
        assert alloc.malloc(40) == a  # LIFO, like glibc's tcache
        alloc.free(b)
        assert alloc.malloc(33) == b  # same class
        alloc.check()


def test_the_cache_holds_at_most_tcache_count_blocks_per_class() -> None:
    with Allocator(tcache_count=16) as alloc:
        blocks = [alloc.malloc(64) for _ in range(200)]
        for addr in blocks:
            alloc.free(addr)
        # refills of 1, 2, 4, 8, then 9 (half the cache, plus one) leave 4 cached; the
        # frees fill the bin to 16, and each free into a full bin halves it: 15 at the end
        assert alloc.stats().tcache_blocks == cached_after_churn(200, 16) == 15
        alloc.check()


def test_refills_start_with_one_block_and_double_with_each_miss() -> None:
    with Allocator(tcache_count=32) as alloc:
        first = alloc.malloc(1000)
        assert alloc.stats().tcache_blocks == 0  # a class used once pulls one block
        more = [alloc.malloc(1000) for _ in range(40)]
        # The misses took 1, 2, 4, 8, 16, then 17 (half the cache, plus one):
        # 48 blocks for 41 mallocs, 7 of them still cached.
        assert alloc.stats().tcache_blocks == 7
        for addr in [first, *more]:
            alloc.free(addr)
        alloc.check()


def test_a_threads_cache_is_flushed_when_it_exits() -> None:
    with Allocator() as alloc:
        sizes = range(1, SLAB_MAX + 1, 3)
        count, max_bytes = alloc.params["tcache_count"], alloc.params["tcache_max_bytes"]
        per_class = collections.Counter(CLASS_OF[n] for n in sizes)
        cached = sum(
            cached_after_churn(n, min(count, max_bytes // CLASS_SIZES[cls]))
            for cls, n in per_class.items()
        )

        def churn() -> None:
            blocks = [alloc.malloc(n) for n in sizes]
            for addr in blocks:
                alloc.free(addr)
            assert alloc.stats().tcache_blocks == cached  # held by this thread's cache

        run_thread(churn)
        st = alloc.stats()
        assert st.tcache_blocks == 0
        assert st.slab_blocks_live == 0
        alloc.check()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_dies_by_an_exception_is_flushed_too() -> None:
    with Allocator() as alloc:
        started = threading.Event()

        def crash() -> None:
            for addr in [alloc.malloc(100) for _ in range(50)]:
                alloc.free(addr)
            started.set()
            raise RuntimeError("boom")

        t = threading.Thread(target=crash)
        t.start()
        t.join()
        assert started.is_set()
        assert alloc.stats().tcache_blocks == 0
        alloc.check()


def test_cross_thread_frees_end_up_back_in_their_slab() -> None:
    with Allocator(arena_max=4) as alloc:
        alloc.free(alloc.malloc(1))  # this thread takes arena 0
        made: list[int] = []

        def producer() -> None:
            made.extend(alloc.malloc(200) for _ in range(300))

        run_thread(producer)
        owner = alloc.arena_for(made[0])
        assert owner is not None and owner != 0
        assert all(alloc.arena_for(a) == owner for a in made)
        owning = alloc._registry.arenas[owner]

        def consumer() -> None:
            for addr in made:
                alloc.free(addr)

        cached_before = alloc.stats().tcache_blocks  # this thread's own cache
        run_thread(consumer)  # its cache is flushed home when it exits
        st = alloc.stats()
        assert st.tcache_blocks == cached_before and st.slab_blocks_live == 0
        for slab in owning.slab_pool.slabs.values():  # whatever is left is wholly free
            assert slab.nfree == slab.capacity
        alloc.check()


@pytest.mark.parametrize("tcache_count", [0, 1, 32])
def test_errors_stay_exact_on_the_fast_path(tcache_count: int) -> None:
    with Allocator(tcache_count=tcache_count) as alloc:
        a = alloc.malloc(64)
        b = alloc.malloc(64)
        alloc.free(a)
        with pytest.raises(DoubleFree):
            alloc.free(a)
        with pytest.raises(InvalidPointer, match="inside a 64-byte slab block"):
            alloc.free(b + 8)
        slab_base = alloc._slab_table.owners([b], CLASS_OF[64])[0].base
        with pytest.raises(InvalidPointer):
            alloc.free(slab_base + 16 - 16)  # the slab's chunk, not a block
        # the slab chunk's user address is its first block: a, already freed
        assert slab_base + 16 == a
        with pytest.raises(TypeError):
            alloc.free(float(b))  # type: ignore[arg-type]
        assert alloc.usable_size(b) == 64  # b survived all of that
        alloc.free(b)
        alloc.check()


def test_double_free_in_another_threads_cache_is_caught() -> None:
    with Allocator() as alloc:
        addr = alloc.malloc(24)
        run_thread(lambda: alloc.free(addr))
        with pytest.raises(DoubleFree):
            alloc.free(addr)
        alloc.check()


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Let the interpreter switch threads every few bytecodes, so that races happen."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.parametrize("tcache_count", [0, 32])
@pytest.mark.usefixtures("switch_often")
def test_of_two_threads_freeing_a_block_at_once_exactly_one_wins(tcache_count: int) -> None:
    # Every block is freed by two threads at the same moment.  No thread
    # allocates while the frees race, so a loser can only meet the block it
    # raced for, never a block reused by someone else.
    n_threads, per, rounds = 16, 40, 4
    sizes = (16, 24, 200, 1000, 5000, 70_000, 300_000)  # slabs, chunks, a mapping
    wins = [0] * n_threads
    losses = [0] * n_threads
    kept: dict[int, bytes] = {}
    published: list[list[int]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    with Allocator(tcache_count=tcache_count, arena_max=4) as alloc:

        def work(k: int) -> None:
            try:
                race(k)
            except BaseException:
                barrier.abort()  # the others fail at once rather than wait forever
                raise

        def race(k: int) -> None:
            rng = random.Random(k)
            for r in range(rounds):
                published[k] = [alloc.malloc(rng.choice(sizes)) for _ in range(per)]
                pattern = bytes([k, r]) * 50
                addr = alloc.malloc(len(pattern))
                alloc.view(addr)[: len(pattern)] = pattern
                kept[addr] = pattern
                barrier.wait()
                for blocks in (published[k], published[(k + 1) % n_threads]):
                    for addr in blocks:
                        try:
                            alloc.free(addr)
                            wins[k] += 1
                        except (DoubleFree, InvalidPointer):
                            losses[k] += 1
                barrier.wait()

        run_threads(n_threads, work)
        assert sum(wins) == sum(losses) == n_threads * per * rounds
        assert_disjoint(alloc, kept)
        alloc.check()
        for addr in kept:
            alloc.free(addr)
        alloc.check()


def test_requests_above_the_slab_range_take_the_chunk_path() -> None:
    with Allocator() as alloc:
        chunk = alloc.malloc(SLAB_MAX + 1)
        assert alloc.usable_size(chunk) == ((SLAB_MAX + 1 + 8 + 15) & ~15) - 8
        mapped = alloc.malloc(1 << 20)
        assert alloc.arena_for(mapped) is None
        alloc.free(chunk)
        alloc.free(mapped)
        alloc.check()


def test_slab_blocks_resize_through_realloc() -> None:
    with Allocator() as alloc:
        addr = alloc.malloc(100)
        alloc.view(addr, 100)[:] = bytes(range(100))
        assert alloc.realloc(addr, 110) == addr  # still fits its 112-byte class
        grown = alloc.realloc(addr, 5000)
        assert bytes(alloc.view(grown, 100)) == bytes(range(100))
        shrunk = alloc.realloc(grown, 10)
        assert bytes(alloc.view(shrunk, 10)) == bytes(range(10))
        alloc.free(shrunk)
        alloc.check()


def test_the_cache_is_bounded_in_bytes_per_class() -> None:
    with Allocator(tcache_count=32, tcache_max_bytes=1000) as alloc:
        for size, expected in ((16, 32), (256, 3), (512, 1), (1024, 0)):
            blocks = [alloc.malloc(size) for _ in range(40)]
            for addr in blocks:
                alloc.free(addr)
            bins = alloc.caches.current_bins()
            assert bins is not None
            held = len(bins[CLASS_OF[size]])  # this thread's cache of the class
            assert held == cached_after_churn(40, expected), (size, held)
        alloc.check()
    with Allocator() as alloc:  # the default (32 KiB): every class, up to tcache_count blocks
        blocks = [alloc.malloc(SLAB_MAX) for _ in range(40)]
        for addr in blocks:
            alloc.free(addr)
        assert alloc.stats().tcache_blocks == cached_after_churn(40, 32)
        alloc.free(alloc.malloc(SLAB_MAX + 1))  # a chunk: never cached
        assert alloc.stats().tcache_blocks == cached_after_churn(40, 32)
        alloc.check()


def test_every_slab_is_a_few_blocks_and_its_header() -> None:
    for cls, size in enumerate(CLASS_SIZES):
        length, window, blocks = CLASS_SLAB_BYTES[cls], CLASS_WINDOWS[cls], CLASS_BLOCKS[cls]
        assert length == 16 + blocks * size  # no tail
        # at least 4 blocks and 512 bytes of them, and no more blocks than that needs
        assert blocks >= 4 and blocks * size >= 512, size
        assert blocks == 4 or (blocks - 1) * size < 512, size
        # a window is a power of two; a slab, wherever it starts, is in one or two
        assert window & (window - 1) == 0 and length <= window, size


def test_slabs_cut_from_the_top_leave_no_gaps() -> None:
    # A slab needs no alignment (the window table finds it), so slabs of
    # different classes cut one after another tile the heap exactly.
    with Allocator(tcache_count=0) as alloc:
        sizes = [1024, 48, 640, 16, 320, 200, 896]
        blocks = [alloc.malloc(size) for size in sizes]
        table = alloc._slab_table
        slabs = [
            table.owners([addr], CLASS_OF[size])[0]
            for addr, size in zip(blocks, sizes, strict=True)
        ]
        for before, after in itertools.pairwise(slabs):
            assert before.end == after.base
        arena = alloc._registry.main
        assert not arena.bins.free  # nothing was skipped to align a slab
        alloc.check()


def test_slab_chunks_fill_a_hole_then_come_from_the_top_in_one_go() -> None:
    with Allocator(tcache_count=0) as alloc:
        arena = alloc._registry.main
        length = 1040
        with arena.lock:
            first = arena.lend_slab_chunks(length, 3)
            assert [b - a for a, b in itertools.pairwise(first)] == [length, length]
            fence = arena.lend_slab_chunks(length, 1)  # keeps the hole off the top
            for mem in first[:2]:  # a hole of two slabs, and one slab still in use
                arena.take_back_slab_chunk(mem)
            top_before = arena.top
            again = arena.lend_slab_chunks(length, 4)
            assert again[:2] == first[:2]  # the hole gives both slabs it holds
            assert again[2] == top_before + 16  # the rest, cut from the top
            assert again[3] == again[2] + length
            # with neither the top nor growth allowed, only freed memory serves
            arena.take_back_slab_chunk(again[0])
            assert arena.lend_slab_chunks(length, 2, top=False, grow=False) == [again[0]]
            for mem in [*again, *fence, first[2]]:
                arena.take_back_slab_chunk(mem)
        alloc.check()


def test_slabs_carved_in_one_go_from_holes_in_two_heaps_know_their_own_heap() -> None:
    # A non-main arena that has grown a second heap holds free chunks in
    # both; one refill can carve slabs from each, and every slab must record
    # the heap it lies in (its release merges it with that heap's chunks).
    with Allocator(arena_max=2, heap_max_size=1 << 20, tcache_count=0) as alloc:
        alloc.free(alloc.malloc(1))  # this thread takes the main arena
        cls = CLASS_OF[SLAB_MAX]
        length = CLASS_SLAB_BYTES[cls]  # one slab per 6,000-byte hole, not two
        assert length <= 6_016 < 2 * length

        def carve() -> None:
            chunks = [alloc.malloc(6_000)]
            arena = alloc._registry.arenas[alloc.thread_arena()]
            while arena.heap.prev is None:
                chunks.append(alloc.malloc(6_000))
            chunks += [alloc.malloc(6_000) for _ in range(2)]
            first_heap = arena.heap.prev
            holes = [
                next(c for c in chunks[1:] if arena.heap_of(c) is first_heap),
                chunks[-2],  # in the new heap, fenced from its top by chunks[-1]
            ]
            for hole in holes:
                alloc.free(hole)
            with arena.lock:
                blocks = arena.slab_pool.take(cls, 2 * CLASS_BLOCKS[cls])
            alloc.check(quiet=False)  # (the blocks are neither live nor cached yet)
            slabs = {alloc._slab_table.owners([b], cls)[0] for b in blocks}
            assert {arena.heap_of(slab.base) for slab in slabs} == {first_heap, arena.heap}
            for slab in slabs:
                assert slab.region is arena.heap_of(slab.base).region
            cache = alloc.caches.current()
            for addr in blocks:  # handed out, as a refill does
                alloc.caches.unclaim(cache, addr, cls)
            for addr in blocks + [c for c in chunks if c not in holes]:
                alloc.free(addr)
            alloc.check()

        run_thread(carve)
        alloc.check()


def test_slab_chunks_take_what_fits_under_a_cap() -> None:
    # A run too big for max_heap_bytes still gives slabs: the heap grows for
    # one when it cannot grow for all, until the cap itself is reached.
    cap = 1 << 20
    with Allocator(max_heap_bytes=cap, tcache_count=0) as alloc:
        arena = alloc._registry.main
        taken: list[int] = []
        with arena.lock:
            while True:
                got = arena.lend_slab_chunks(1040, 10**6)
                if not got:
                    break
                taken += got
            assert 0 < len(taken) * 1040 <= cap
            assert arena.system_mem <= cap
            for mem in taken:
                arena.take_back_slab_chunk(mem)
        alloc.check()


def test_a_window_shared_by_slabs_finds_each_blocks_own() -> None:
    with Allocator(tcache_count=0) as alloc:
        table = alloc._slab_table
        blocks = [(alloc.malloc(size), CLASS_OF[size]) for size in (100, 300, 20, 700) * 40]
        shared = [found for found in table.slabs.values() if len(found) > 1]
        assert shared  # the case under test happened
        for addr, cls in blocks:
            (slab,) = table.owners([addr], cls)
            assert slab.base < addr < slab.end and slab.cls == cls and slab.is_block(addr)
            assert table.find(addr) is slab
        for addr, _ in blocks:
            alloc.free(addr)
        alloc.check()


def test_a_released_slab_is_reused_by_another_class() -> None:
    # top_pad=0: the heap grows by what it needs, so its top stays small
    with Allocator(tcache_count=0, top_pad=0) as alloc:
        table = alloc._slab_table
        main = alloc._registry.main
        fence = alloc.malloc(2000)  # keeps the freed slab off the top chunk
        cls = CLASS_OF[256]
        big = alloc.malloc(256)
        old = table.owners([big], cls)[0]
        alloc.malloc(16)  # a slab after it, so that it does not merge into the top
        alloc.free(big)
        assert main.slab_pool.loose[cls] == [big]  # back, not yet sorted into its slab
        with main.lock:
            main.slab_pool.settle()
        assert old in main.slab_pool.spares[cls]  # wholly free: kept as its class's spare
        # Neither the slab nor the top holds a whole page (none resident to advise
        # away), and the top has no page to cut: trim() gives back the slab alone.
        assert CLASS_SLAB_BYTES[cls] - CHUNK_HDR_SZ < PAGE_SIZE
        assert main.top_size() - CHUNK_HDR_SZ < PAGE_SIZE
        assert alloc.trim() == CLASS_SLAB_BYTES[cls]
        assert old.base not in main.slab_pool.slabs
        assert main.bins.free[old.base] == CLASS_SLAB_BYTES[cls]  # a free chunk now
        small = alloc.malloc(128)  # a smaller slab fits where the big one was
        assert table.owners([small], CLASS_OF[128])[0].base == old.base
        alloc.free(fence)
        alloc.check()


def test_a_miss_refills_its_own_class_and_never_takes_a_bigger_block() -> None:
    with Allocator() as alloc:
        cls = CLASS_OF[600]
        bigger = alloc.malloc(CLASS_SIZES[cls + 1])
        alloc.free(bigger)  # now cached in the next class
        addr = alloc.malloc(600)  # its own class has nothing cached: a refill
        assert addr != bigger and alloc.usable_size(addr) == CLASS_SIZES[cls]
        bins = alloc.caches.current_bins()
        assert bins is not None and bins[cls + 1] == [bigger]  # still cached, untouched
        alloc.free(addr)
        alloc.check()


def test_a_thread_fills_the_main_arenas_holes_before_growing_its_heap() -> None:
    with Allocator(tcache_count=0, top_pad=0) as alloc:
        # A finished burst in the main arena: 8 MiB of 2 KiB blocks, all freed
        # but one per MiB, which pins the memory between them (no trim).
        burst = [alloc.malloc(2048) for _ in range(4096)]
        keep = burst[::512]
        for addr in burst:
            if addr not in keep:
                alloc.free(addr)
        main_system = alloc.stats().arenas[0].system_bytes
        placed: list[tuple[int | None, int]] = []

        def worker() -> None:
            mine = [alloc.malloc(500) for _ in range(6000)]  # about 3 MiB of slab blocks
            placed.extend((alloc.arena_for(addr), addr) for addr in mine)
            assert alloc.thread_arena() != 0

        run_thread(worker)
        arenas_used = {arena for arena, _ in placed}
        in_main = sum(1 for arena, _ in placed if arena == 0)
        # its own heap's first top, then main's holes
        assert len(arenas_used) == 2 and 0 in arenas_used and in_main > 4800
        st = alloc.stats()
        assert st.arenas[0].system_bytes <= main_system  # main did not grow for it
        own = [a for a in st.arenas if a.index != 0]
        assert sum(a.system_bytes for a in own) < 1 << 20
        alloc.check()
        for _, addr in placed:
            alloc.free(addr)
        for addr in keep:
            alloc.free(addr)
        alloc.check()


def test_threads_stay_off_the_main_arenas_top() -> None:
    # With nothing freed in the main arena, a thread that outgrows its
    # arena's first heap grows it: the main arena's unused top is not taken.
    # top_pad 128 KiB (glibc's): the main arena's top has room for many slabs
    with Allocator(tcache_count=0, top_pad=128 * 1024) as alloc:
        alloc.free(alloc.malloc(16))  # the main arena, with its top chunk
        assert alloc.stats().arenas[0].top_bytes > 64 * 1024
        placed: list[int | None] = []

        def worker() -> None:
            mine = [alloc.malloc(500) for _ in range(6000)]  # about 3 MiB of slab blocks
            placed.extend(alloc.arena_for(addr) for addr in mine)
            for addr in mine:
                alloc.free(addr)

        run_thread(worker)
        assert placed and 0 not in placed
        alloc.check()


@pytest.mark.parametrize("tcache_count", [1, 4])
def test_slab_table_stays_exact_while_threads_carve_and_release_slabs(tcache_count: int) -> None:
    # A tiny cache makes every few mallocs a refill and every few frees a
    # flush: slabs are carved and released all the time, the table's
    # windows are rewritten under its lock, and flushes read it without one.
    # Half of each thread's blocks are freed by the next thread.
    threads = 12
    with Allocator(tcache_count=tcache_count, arena_max=4) as alloc:
        inbox: list[queue.Queue[tuple[int, bytes]]] = [queue.Queue() for _ in range(threads)]
        kept: dict[int, bytes] = {}
        kept_lock = threading.Lock()
        start = threading.Barrier(threads)

        def work(k: int) -> None:
            rng = random.Random(k)
            live: list[tuple[int, bytes]] = []
            start.wait()
            for step in range(600):
                size = rng.choice((16, 48, 100, 300, 700, 1000, 2500))
                addr = alloc.malloc(size)
                pattern = bytes([(k * 31 + step) & 0xFF]) * size
                ctypes.memmove(addr, pattern, size)
                live.append((addr, pattern))
                if len(live) > 40:
                    addr, pattern = live.pop(rng.randrange(len(live)))
                    assert ctypes.string_at(addr, len(pattern)) == pattern
                    if rng.random() < 0.5:
                        inbox[(k + 1) % threads].put((addr, pattern))
                    else:
                        alloc.free(addr)
                while not inbox[k].empty():
                    addr, pattern = inbox[k].get()
                    assert ctypes.string_at(addr, len(pattern)) == pattern
                    alloc.free(addr)
            with kept_lock:
                kept.update(live)

        run_threads(threads, work)
        for box in inbox:  # what the last thread to run left for others
            while not box.empty():
                addr, pattern = box.get()
                kept[addr] = pattern
        assert_disjoint(alloc, kept)
        alloc.check()  # every slab in the table under each of its windows, and only those
        for addr in kept:
            alloc.free(addr)
        alloc.check()


def test_a_hole_too_small_for_a_whole_slab_holds_a_smaller_one() -> None:
    with Allocator(tcache_count=0, top_pad=0) as alloc:
        main = alloc._registry.main
        hole = alloc.malloc(2000)  # a chunk of 2016 bytes
        fence = alloc.malloc(2000)  # keeps it off the top chunk
        alloc.free(hole)
        cls = CLASS_OF[896]
        assert CLASS_SLAB_BYTES[cls] > 2016  # the class's whole slab does not fit there
        block = alloc.malloc(896)
        slab = alloc._slab_table.owners([block], cls)[0]
        # two blocks fit: a slab of two, cut to 16 + 2 * 896 bytes; the rest stays free
        assert (slab.base, slab.capacity, slab.length) == (hole - CHUNK_HDR_SZ, 2, 1808)
        assert block == hole
        assert main.bins.free[slab.base + 1808] == 2016 - 1808
        second = alloc.malloc(896)
        assert second == hole + 896  # the hole slab's other block
        alloc.free(block)
        alloc.free(second)
        alloc.free(fence)
        alloc.check()


def test_a_flush_into_its_own_arena_is_loose_until_settled() -> None:
    with Allocator(tcache_count=0) as alloc:
        pool = alloc._registry.main.slab_pool
        cls = CLASS_OF[100]
        a, b = alloc.malloc(100), alloc.malloc(100)
        alloc.free(a)  # no cache: straight home, onto the class's loose list
        assert pool.loose[cls] == [a]
        with pytest.raises(DoubleFree, match="already free"):
            alloc.free(a)  # a loose block is free: freeing it again is caught
        assert pool.loose[cls] == [a]  # and nothing changed
        alloc.check()  # settles it into its slab, and checks the slab
        assert pool.loose[cls] == []
        alloc.free(b)
        assert alloc.malloc(100) == b  # a refill takes the loose block first
        slab = alloc._slab_table.owners([a], cls)[0]
        assert a in slab.free and alloc.stats().slab_blocks_free >= 1
        alloc.free(b)
        alloc.check()


@pytest.mark.corrupts_heap
def test_the_checker_refuses_a_loose_list_that_lies() -> None:
    from arenas import HeapCorruption

    with Allocator(tcache_count=0) as alloc:
        pool = alloc._registry.main.slab_pool
        cls = CLASS_OF[100]
        a = alloc.malloc(100)
        alloc.free(a)
        pool.loose[cls].append(a)  # the same block twice
        with pytest.raises(HeapCorruption, match="listed twice"):
            alloc.check()
        pool.loose[cls][:] = [0x10]  # an address no slab holds
        with pytest.raises(HeapCorruption, match="no slab here"):
            alloc.check()
