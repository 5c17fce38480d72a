"""Issue 4: size classes, slabs and the per-thread cache."""

from __future__ import annotations

import itertools
import threading

import pytest

from arenas import Allocator, DoubleFree, InvalidPointer
from arenas.slab import CLASS_OF, CLASS_SIZES, CLASS_SPANS, NCLASSES, SLAB_MAX


def run_thread(fn: object) -> None:
    assert callable(fn)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert not errors, errors


# ------------------------------------------------------------ size classes
def test_classes_include_ballocs_powers_of_two() -> None:
    assert {16 << k for k in range(13)} <= set(CLASS_SIZES)
    assert CLASS_SIZES[-1] == SLAB_MAX == 65536
    assert list(CLASS_SIZES) == sorted(set(CLASS_SIZES))
    assert all(size % 16 == 0 for size in CLASS_SIZES)


def test_class_of_is_the_smallest_class_that_fits() -> None:
    for size in (0, 1, 16, 17, 128, 129, 1000, 1024, 1025, 40000, 65535, 65536):
        cls = CLASS_OF[size]
        assert CLASS_SIZES[cls] >= size
        assert cls == 0 or CLASS_SIZES[cls - 1] < max(size, 1)


def test_waste_is_bounded_above_the_tiny_classes() -> None:
    for cls in range(4, NCLASSES):
        below = CLASS_SIZES[cls - 1]
        assert (CLASS_SIZES[cls] - below - 1) / CLASS_SIZES[cls] <= 0.20


def test_usable_size_is_the_class_size() -> None:
    with Allocator() as alloc:
        for size in (1, 100, 1000, 5000, 65536):
            assert alloc.usable_size(alloc.malloc(size)) == CLASS_SIZES[CLASS_OF[size]]


# ------------------------------------------------------------------- slabs
def test_a_blocks_slab_is_found_by_masking() -> None:
    with Allocator() as alloc:
        for size in (16, 200, 3000, 40000):
            addr = alloc.malloc(size)
            cls = CLASS_OF[size]
            base = addr & -CLASS_SPANS[cls]
            slab = alloc._slab_table.slabs[base]
            assert slab.cls == cls and slab.is_block(addr)
            # the slab is one chunk of its arena, span bytes, span-aligned
            arena = alloc._registry.arenas[alloc.arena_for(addr) or 0]
            assert arena.in_use[base + 16] == CLASS_SPANS[cls]
            assert base % CLASS_SPANS[cls] == 0
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


def test_an_empty_slab_goes_back_to_its_arena() -> None:
    with Allocator(tcache_count=0) as alloc:
        alloc.free(alloc.malloc(32))
        baseline = alloc.stats()
        burst = [alloc.malloc(32) for _ in range(4000)]  # about 32 slabs of 4 KiB
        assert alloc.stats().slabs > baseline.slabs + 25
        for addr in burst:
            alloc.free(addr)
        after = alloc.stats()
        assert after.slabs <= baseline.slabs + 1  # one spare per class may stay
        # and the memory serves another size at once, without growing the heap
        other = [alloc.malloc(2000) for _ in range(8)]  # two 16 KiB slabs
        assert alloc.stats().arena == after.arena
        for addr in other:
            alloc.free(addr)
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
        assert 8 <= alloc.stats().tcache_blocks <= 16
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

        def churn() -> None:
            blocks = [alloc.malloc(n) for n in range(1, 2000, 7)]
            for addr in blocks:
                alloc.free(addr)
            assert alloc.stats().tcache_blocks > 0

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
        for slab in owning.slabs.values():  # whatever is left is wholly free
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
        slab_base = b & -CLASS_SPANS[CLASS_OF[64]]
        with pytest.raises(InvalidPointer):
            alloc.free(slab_base + 16 - 16)  # the slab's chunk, not a block
        # the slab chunk's user address is its first block: a, already freed
        assert slab_base + 16 == min(a, b) or alloc.usable_size(slab_base + 16) == 64
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
    with Allocator(tcache_count=32, tcache_max_bytes=8192) as alloc:
        for size, expected in ((64, 32), (1024, 8), (4096, 2), (16384, 0)):
            blocks = [alloc.malloc(size) for _ in range(40)]
            for addr in blocks:
                alloc.free(addr)
            held = len(alloc._tls.tcache[CLASS_OF[size]])  # this thread's cache of the class
            assert expected // 2 <= held <= expected, (size, held)
        alloc.check()
    with Allocator() as alloc:  # the default: nothing above 32 KiB is cached
        alloc.free(alloc.malloc(40_000))
        assert alloc.stats().tcache_blocks == 0
        alloc.check()


def test_every_slab_holds_a_few_blocks_and_a_small_tail() -> None:
    # The chunk header and the leftover after the last block are a slab's
    # overhead: at most a quarter of the span (12.5% up to 16 KiB blocks).
    for size, span in zip(CLASS_SIZES, CLASS_SPANS, strict=True):
        blocks = (span - 16) // size
        tail = span - blocks * size
        assert blocks >= 3, (size, span)
        assert tail * (8 if size <= 16384 else 4) <= span, (size, span)


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
            mine = [alloc.malloc(3000) for _ in range(1000)]  # about 3 MiB
            placed.extend((alloc.arena_for(addr), addr) for addr in mine)
            assert alloc.thread_arena() != 0

        run_thread(worker)
        arenas_used = {arena for arena, _ in placed}
        in_main = sum(1 for arena, _ in placed if arena == 0)
        assert 0 in arenas_used and in_main > 800  # its own heap's first top, then main's holes
        st = alloc.stats()
        assert st.arenas[0].system_bytes == main_system  # main did not grow for it
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
    with Allocator(tcache_count=0) as alloc:
        alloc.free(alloc.malloc(16))  # the main arena, with its top chunk
        assert alloc.stats().arenas[0].top_bytes > 64 * 1024
        placed: list[int | None] = []

        def worker() -> None:
            mine = [alloc.malloc(3000) for _ in range(1000)]
            placed.extend(alloc.arena_for(addr) for addr in mine)
            for addr in mine:
                alloc.free(addr)

        run_thread(worker)
        assert placed and 0 not in placed
        alloc.check()
