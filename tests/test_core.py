"""Issue 2: the public API, glibc's semantics, the typed errors, and the in-band layout."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable

import pytest
from helpers import usable_for

import arenas
from arenas import (
    Allocator,
    AllocatorError,
    Block,
    DoubleFree,
    HeapCorruption,
    InvalidPointer,
    OutOfMemory,
)
from arenas.chunk import (
    CHUNK_HDR_SZ,
    IS_MMAPPED,
    MINSIZE,
    NON_MAIN_ARENA,
    PREV_INUSE,
    request2size,
)
from arenas.memory import page_align
from arenas.slab import CLASS_OF, CLASS_SIZES


@pytest.fixture
def alloc() -> Allocator:
    """A fresh allocator (tests/conftest.py checks and closes it after the test)."""
    return Allocator()


def header(addr: int) -> tuple[int, int]:
    """The chunk header (prev_size, size|flags) in front of user address ``addr``."""
    words = (ctypes.c_uint64 * 2).from_address(addr - 16)
    return words[0], words[1]


# ------------------------------------------------------------------ memory
def test_addresses_are_real_memory(alloc: Allocator) -> None:
    addr = alloc.malloc(100)
    alloc.view(addr, 5)[:] = b"hello"
    assert ctypes.string_at(addr, 5) == b"hello"
    ctypes.memmove(addr + 10, b"world", 5)
    assert bytes(alloc.view(addr)[10:15]) == b"world"
    assert addr % 16 == 0


def test_malloc_zero_gives_unique_minimum_blocks(alloc: Allocator) -> None:
    blocks = {alloc.malloc(0) for _ in range(100)}
    assert len(blocks) == 100 and 0 not in blocks
    assert {alloc.usable_size(b) for b in blocks} == {CLASS_SIZES[CLASS_OF[0]]}  # 16 bytes
    for addr in blocks:
        alloc.free(addr)


def test_free_zero_does_nothing(alloc: Allocator) -> None:
    alloc.free(0)
    arenas.free(0)


def test_calloc_reads_zero_even_over_dirty_memory(alloc: Allocator) -> None:
    for size in (24, 5000, 70_000, 300_000):
        dirty = alloc.malloc(size)
        ctypes.memset(dirty, 0xAB, size)
        alloc.free(dirty)
        zero = alloc.calloc(size, 1)
        assert ctypes.string_at(zero, size) == bytes(size)
        assert ctypes.string_at(zero, alloc.usable_size(zero)) == bytes(alloc.usable_size(zero))
        alloc.free(zero)


@pytest.mark.parametrize(("old", "new"), [(10, 100), (100, 10), (5000, 90_000), (90_000, 100)])
def test_realloc_keeps_contents(alloc: Allocator, old: int, new: int) -> None:
    addr = alloc.malloc(old)
    data = bytes(i % 251 for i in range(old))
    ctypes.memmove(addr, data, old)
    moved = alloc.realloc(addr, new)
    assert ctypes.string_at(moved, min(old, new)) == data[: min(old, new)]
    alloc.free(moved)


def test_realloc_grows_in_place_into_the_top(alloc: Allocator) -> None:
    addr = alloc.malloc(70_000)  # the last chunk before the top
    assert alloc.realloc(addr, 90_000) == addr
    alloc.free(addr)


def test_realloc_grows_in_place_into_a_free_neighbour(alloc: Allocator) -> None:
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    keep = alloc.malloc(70_000)
    alloc.free(b)
    assert alloc.realloc(a, 130_000) == a
    for addr in (a, keep):
        alloc.free(addr)


def test_realloc_zero_and_null(alloc: Allocator) -> None:
    addr = alloc.realloc(0, 50)
    assert alloc.usable_size(addr) == CLASS_SIZES[CLASS_OF[50]]  # malloc(50): a slab block
    assert alloc.realloc(addr, 0) == 0
    with pytest.raises(DoubleFree):
        alloc.free(addr)


def test_failed_realloc_leaves_the_old_block(alloc: Allocator) -> None:
    with Allocator(max_heap_bytes=2 << 20, arena_max=1) as capped:
        addr = capped.malloc(70_000)
        ctypes.memset(addr, 0x5A, 70_000)
        with pytest.raises(OutOfMemory):
            capped.realloc(addr, 8 << 20)
        assert ctypes.string_at(addr, 70_000) == b"\x5a" * 70_000
        capped.free(addr)
        capped.check()


@pytest.mark.parametrize("alignment", [16, 32, 64, 256, 4096, 65536, 1 << 20])
def test_memalign(alloc: Allocator, alignment: int) -> None:
    for size in (1, 100, 5000, 200_000):
        addr = alloc.memalign(alignment, size)
        assert addr % alignment == 0
        assert alloc.usable_size(addr) == usable_for(alloc, addr, size, alignment)
        ctypes.memset(addr, 1, size)
        alloc.free(addr)


def test_strdup(alloc: Allocator) -> None:
    for data in (b"abc", bytearray(b"xyz"), memoryview(b"mv"), b""):
        addr = alloc.strdup(data)
        n = len(bytes(data))
        assert ctypes.string_at(addr, n + 1) == bytes(data) + b"\0"
        alloc.free(addr)
    with pytest.raises(TypeError, match="encode"):
        alloc.strdup("text")  # type: ignore[arg-type]


def test_view_is_bounded_to_the_block(alloc: Allocator) -> None:
    addr = alloc.malloc(100)
    usable = alloc.usable_size(addr)
    assert len(alloc.view(addr)) == usable
    assert len(alloc.view(addr, 10)) == 10
    with pytest.raises(ValueError, match="exceeds"):
        alloc.view(addr, usable + 1)
    with pytest.raises(ValueError):
        alloc.view(addr, -1)
    view = alloc.view(addr, 4)
    with pytest.raises(IndexError):
        view[4] = 1


def test_block_api(alloc: Allocator) -> None:
    block = alloc.alloc(32)
    assert isinstance(block, Block) and block.size == 32 and len(block.view) == 32
    block.view[:] = b"x" * 32
    assert ctypes.string_at(block.addr, 32) == b"x" * 32
    block.free()
    assert block.freed
    with pytest.raises(ValueError):  # the view was released
        block.view[0] = 1
    with pytest.raises(InvalidPointer):
        block.free()
    with alloc.alloc(8) as b2:
        b2.view[:] = b"12345678"
    assert b2.freed
    assert "freed" in repr(b2)


@pytest.mark.parametrize(
    "derive",
    [
        lambda view: view[0:8],
        lambda view: memoryview(view),
        lambda view: view.cast("Q"),
        lambda view: view.toreadonly(),
    ],
)
def test_a_block_is_not_freed_while_views_made_from_it_live(
    alloc: Allocator, derive: Callable[[memoryview], memoryview]
) -> None:
    """Slices share their parent's buffer and outlive its release(): a slice kept
    across free() wrote into whatever block came next.  Now free() refuses."""
    block = alloc.alloc(16)
    block.view[:] = b"0123456789abcdef"
    derived = derive(block.view)
    with pytest.raises(BufferError, match="slices or copies of its view are still alive"):
        block.free()
    assert not block.freed
    assert bytes(block.view) == b"0123456789abcdef"  # the Block is whole and usable
    assert alloc.malloc(16) != block.addr  # and its block was not handed out again
    del derived
    block.free()
    assert block.freed


def test_a_raw_view_outlives_free_but_the_memory_stays_mapped() -> None:
    """Allocator.view is the raw API: a view kept past free() is a use-after-free,
    as in C, but the mapping cannot go away under it, even at close()."""
    alloc = Allocator()
    keep = alloc.malloc(16)  # keeps the slab busy
    addr = alloc.malloc(16)
    raw = alloc.view(addr, 8)
    alloc.free(addr)
    raw[0] = 1  # no crash: the region is still mapped
    alloc.free(keep)
    alloc.close()
    raw[0] = 2  # still mapped: the unmap waits for the view


def test_large_requests_get_their_own_mapping(alloc: Allocator) -> None:
    before = alloc.stats().hblks
    addr = alloc.malloc(1 << 20)
    assert alloc.arena_for(addr) is None
    assert header(addr)[1] & IS_MMAPPED
    assert alloc.stats().hblks == before + 1
    alloc.free(addr)
    assert alloc.stats().hblks == before


def test_the_mmap_threshold_rises_after_a_mapped_chunk_is_freed(alloc: Allocator) -> None:
    assert alloc.params["mmap_threshold"] == 128 << 10
    alloc.free(alloc.malloc(1 << 20))
    # glibc's dynamic threshold: the size of the freed mapped chunk, trim at twice that
    freed = page_align(request2size(1 << 20) + CHUNK_HDR_SZ)
    assert alloc.params["mmap_threshold"] == freed
    assert alloc.params["trim_threshold"] == 2 * freed
    assert alloc.arena_for(alloc.malloc(600_000)) == 0  # now from a heap


def test_module_level_api() -> None:
    addr = arenas.malloc(64)
    arenas.view(addr, 3)[:] = b"abc"
    addr = arenas.realloc(addr, 128)
    assert ctypes.string_at(addr, 3) == b"abc"
    assert arenas.usable_size(addr) == CLASS_SIZES[CLASS_OF[128]]  # moved to a 128-byte block
    arenas.free(addr)
    z = arenas.calloc(4, 4)
    assert ctypes.string_at(z, 16) == bytes(16)
    arenas.free(z)
    m = arenas.memalign(256, 10)
    assert m % 256 == 0
    arenas.free(m)
    s = arenas.strdup(b"hi")
    assert ctypes.string_at(s, 3) == b"hi\0"
    arenas.free(s)
    assert arenas.default_allocator() is arenas.default_allocator()
    arenas.default_allocator().check()


def test_close_then_every_call_raises() -> None:
    alloc = Allocator()
    addr = alloc.malloc(10)
    alloc.close()
    alloc.close()  # twice is fine
    for call in (
        lambda: alloc.malloc(10),
        lambda: alloc.malloc(100_000),
        lambda: alloc.free(addr),
        lambda: alloc.calloc(1, 1),
        lambda: alloc.memalign(64, 1),
        # Reports and checks too: a closed allocator's arenas are empty shells,
        # whose stats were nonsense and whose check() cried corruption.
        alloc.stats,
        alloc.check,
        alloc.trim,
        alloc.malloc_info,
        lambda: alloc.mallopt("tcache_count", 4),
    ):
        with pytest.raises(AllocatorError, match="closed"):
            call()
    assert alloc.closed and "closed" in repr(alloc)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("size", [1.5, "10", None, True, [1]])
def test_non_int_sizes_are_type_errors(alloc: Allocator, size: object) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        alloc.malloc(size)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        alloc.calloc(size, 1)  # type: ignore[arg-type]


def test_negative_sizes_are_value_errors(alloc: Allocator) -> None:
    calls: list[Callable[[], object]] = [
        lambda: alloc.malloc(-1),
        lambda: alloc.calloc(-1, 4),
        lambda: alloc.realloc(0, -5),
        lambda: alloc.memalign(16, -1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=">= 0"):
            call()


@pytest.mark.parametrize("size", [2**64 - 1, 2**64, 2**63, 2**64 - 4096, 2**100])
def test_huge_sizes_are_out_of_memory(alloc: Allocator, size: int) -> None:
    """glibc's tst-malloc-too-large: sizes near SIZE_MAX fail cleanly."""
    with pytest.raises(OutOfMemory) as info:
        alloc.malloc(size)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(OutOfMemory):
        alloc.memalign(64, size)
    addr = alloc.malloc(10)
    with pytest.raises(OutOfMemory):
        alloc.realloc(addr, size)
    assert alloc.usable_size(addr) == CLASS_SIZES[CLASS_OF[10]]  # untouched
    alloc.free(addr)


def test_calloc_overflow_is_out_of_memory(alloc: Allocator) -> None:
    for n, size in ((2**32, 2**32), (2**40, 2**40), (2**62, 4)):
        with pytest.raises(OutOfMemory, match="overflows"):
            alloc.calloc(n, size)
    with pytest.raises(OutOfMemory):  # n alone is already too large
        alloc.calloc(2**64 - 1, 2**64 - 1)


@pytest.mark.parametrize("alignment", [0, 3, 24, 100, -16])
def test_memalign_needs_a_power_of_two(alloc: Allocator, alignment: int) -> None:
    with pytest.raises(ValueError):
        alloc.memalign(alignment, 10)


def test_foreign_interior_and_misaligned_pointers(alloc: Allocator) -> None:
    chunk = alloc.malloc(70_000)
    foreign = ctypes.create_string_buffer(64)
    cases = [
        (ctypes.addressof(foreign), "not allocated by this allocator"),
        (chunk + 16, "invalid pointer"),
        (chunk + 3, "misaligned|invalid pointer"),
        (0x10, "not allocated"),
    ]
    for addr, message in cases:
        with pytest.raises(InvalidPointer, match=message) as info:
            alloc.free(addr)
        assert isinstance(info.value, ValueError)
        assert not isinstance(info.value, DoubleFree)
    with pytest.raises(TypeError):
        alloc.free("0x10")  # type: ignore[arg-type]
    with Allocator() as other:
        theirs = other.malloc(70_000)
        with pytest.raises(InvalidPointer):
            alloc.free(theirs)
        other.free(theirs)
    alloc.free(chunk)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("size", [24, 5000, 70_000])
def test_errors_name_the_call_that_met_a_freed_or_interior_pointer(size: int, debug: bool) -> None:
    """view(p) of a freed block said "free(): double free detected": a use after
    free is now named so, by the call that met it."""
    with Allocator(debug=debug) as alloc:
        keep = alloc.malloc(size)
        gone = alloc.malloc(size)
        alloc.free(gone)
        for name, call in (("view", alloc.view), ("usable_size", alloc.usable_size)):
            with pytest.raises(InvalidPointer, match=rf"^{name}\(\): use after free") as info:
                call(gone)
            assert not isinstance(info.value, DoubleFree)
            with pytest.raises(InvalidPointer, match=rf"^{name}\(\): invalid pointer"):
                call(keep + 16)
        with pytest.raises(DoubleFree, match=r"^realloc\(\): double free"):
            alloc.realloc(gone, size + 1)
        with pytest.raises(DoubleFree, match=r"^free\(\): double free"):
            alloc.free(gone)
        alloc.free(keep)


@pytest.mark.parametrize("size", [24, 5000, 70_000, 300_000])
def test_double_free_is_detected(alloc: Allocator, size: int) -> None:
    addr = alloc.malloc(size)
    guard = alloc.malloc(size)
    alloc.free(addr)
    with pytest.raises(InvalidPointer) as info:  # DoubleFree where the allocator can tell
        alloc.free(addr)
    if size < 200_000:
        assert isinstance(info.value, DoubleFree)
    alloc.free(guard)


def test_double_free_after_coalescing_into_top(alloc: Allocator) -> None:
    # chunks (above the slab classes) small enough that the top they merge
    # into stays below trim_threshold: it keeps b's address mapped
    a = alloc.malloc(20_000)
    b = alloc.malloc(20_000)
    alloc.free(b)  # merges into the top
    alloc.free(a)  # so does a
    assert alloc._registry.main.top_size() < alloc.params["trim_threshold"]
    with pytest.raises(DoubleFree, match="top"):
        alloc.free(b)


def test_double_free_after_the_top_was_trimmed_says_so(alloc: Allocator) -> None:
    # The freed chunks make the top bigger than trim_threshold: it is cut back,
    # and b now lies beyond the heap's mapped end, in its reservation.
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    alloc.free(b)
    alloc.free(a)
    main = alloc._registry.main
    assert main.heap.end <= b < main.heap.base + main.heap.max_size
    with pytest.raises(InvalidPointer, match=r"past the mapped end .*\(freed twice"):
        alloc.free(b)


def test_an_overrun_into_the_next_header_is_heap_corruption(alloc: Allocator) -> None:
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    _, b_size = header(b)
    # write past a's end over b's size field, as a C overrun would
    ctypes.memset(b - 8, 0xFF, 8)
    with pytest.raises(HeapCorruption, match=r"free\(\): invalid (next )?size"):
        alloc.free(a)
    with pytest.raises(HeapCorruption):
        alloc.check()
    ctypes.c_uint64.from_address(b - 8).value = b_size  # repair
    alloc.free(a)
    alloc.free(b)
    alloc.check()
    alloc.free(alloc.malloc(100))  # still works


@pytest.mark.parametrize("forge", [4096, IS_MMAPPED, NON_MAIN_ARENA], ids=["size", "M", "A"])
def test_a_forged_head_is_refused_before_anything_changes(alloc: Allocator, forge: int) -> None:
    a = alloc.malloc(70_000)  # next to the top: its free takes the short way back
    _, head = header(a)
    ctypes.c_uint64.from_address(a - 8).value = head ^ forge
    before = alloc.stats()
    with pytest.raises(HeapCorruption, match=re.escape(f"{a:#x}")):
        alloc.free(a)
    assert alloc.stats() == before
    ctypes.c_uint64.from_address(a - 8).value = head
    alloc.free(a)


def test_a_block_next_to_the_top_merges_its_free_predecessor(alloc: Allocator) -> None:
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    top_before = alloc.stats().arenas[0].top_bytes
    alloc.free(a)  # binned: b is in use after it
    assert not header(b)[1] & PREV_INUSE
    alloc.free(b)  # b borders the top: the top takes a as well
    st = alloc.stats().arenas[0]
    assert st.free_chunks == 0 and st.in_use_chunks == 0
    assert st.top_bytes >= top_before  # (a trim may have given pages back)


def test_a_forged_prev_size_next_to_the_top_is_refused(alloc: Allocator) -> None:
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    alloc.free(a)
    prev_size, _ = header(b)
    ctypes.c_uint64.from_address(b - 16).value = prev_size + 4096
    before = alloc.stats()
    with pytest.raises(HeapCorruption, match="prev_size"):
        alloc.free(b)
    assert alloc.stats() == before
    ctypes.c_uint64.from_address(b - 16).value = prev_size
    alloc.free(b)


# ----------------------------------------------------------- chunk layout
def test_request2size() -> None:
    assert request2size(0) == MINSIZE == 32
    assert request2size(24) == 32
    assert request2size(25) == 48
    assert request2size(100_000) == (100_000 + 8 + 15) & ~15


def test_chunk_headers_in_band(alloc: Allocator) -> None:
    a = alloc.malloc(70_000)
    b = alloc.malloc(70_000)
    _, a_head = header(a)
    _, b_head = header(b)
    assert a_head & ~7 == request2size(70_000)
    assert alloc.usable_size(a) == (a_head & ~7) - 8
    assert b_head & PREV_INUSE  # a, before it, is in use
    assert not b_head & (NON_MAIN_ARENA | IS_MMAPPED)
    assert b == a + (a_head & ~7)  # chunks tile the heap
    alloc.free(a)
    prev_size, b_head = header(b)
    assert not b_head & PREV_INUSE  # a is free now
    assert prev_size == a_head & ~7  # its footer


def test_neighbours_coalesce_in_any_order(alloc: Allocator) -> None:
    for order in ((0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1)):
        blocks = [alloc.malloc(70_000) for _ in range(3)]
        fence = alloc.malloc(70_000)
        for i in order:
            alloc.free(blocks[i])
        st = alloc.stats()
        assert st.arenas[0].free_chunks == 1  # one chunk, three blocks wide
        alloc.check()
        alloc.free(fence)
        assert alloc.stats().arenas[0].free_chunks == 0  # all merged into the top


def test_after_every_error_the_allocator_still_works(alloc: Allocator) -> None:
    errors: list[Callable[[], object]] = [
        lambda: alloc.malloc(-1),
        lambda: alloc.malloc(2**64),
        lambda: alloc.free(12345),
        lambda: alloc.calloc(2**40, 2**40),
        lambda: alloc.memalign(3, 3),
        lambda: alloc.view(0x1000),
        lambda: alloc.usable_size(0x1000),
        lambda: alloc.realloc(0x1000, 5),
    ]
    for call in errors:
        with pytest.raises((AllocatorError, ValueError, TypeError)):
            call()
        addr = alloc.malloc(100)
        alloc.free(addr)
        alloc.check()


def test_module_functions_are_the_same_objects_whatever_the_import_style() -> None:
    import arenas as mod

    early_malloc, early_free = mod.malloc, mod.free  # `from arenas import malloc` at import
    addr = early_malloc(10)  # the first call makes the default allocator
    default = mod.default_allocator()
    assert default.usable_size(addr) == CLASS_SIZES[CLASS_OF[10]]  # the default allocator's
    assert (mod.malloc, mod.free) == (early_malloc, early_free)  # never rebound
    early_free(addr)
    default.mallopt("tcache_count", 5)
    assert mod.malloc is early_malloc
    default.mallopt("tcache_count", 32)
    default.close()
    assert mod.malloc is early_malloc
    addr = early_malloc(10)  # the next call makes a new default allocator ...
    assert mod.default_allocator() is not default
    assert mod.default_allocator().usable_size(addr) == CLASS_SIZES[CLASS_OF[10]]  # ... serves it
    early_free(addr)


@pytest.mark.parametrize("size", [16, 100_000, 1 << 20])
def test_a_reference_taken_before_close_cannot_reach_the_closed_heaps(size: int) -> None:
    alloc = Allocator()
    m, f = alloc.malloc, alloc.free
    p = m(size)
    f(p)  # (a slab block now waits in this thread's cache)
    alloc.close()
    with pytest.raises(AllocatorError, match="closed"):
        m(size)
    with pytest.raises(AllocatorError, match="closed"):
        f(p)


def test_a_reference_taken_before_mallopt_sees_the_new_setting() -> None:
    with Allocator() as alloc:
        m, f = alloc.malloc, alloc.free
        f(m(64))  # cached now
        alloc.mallopt("perturb", 0x5A)
        p = m(64)  # the cached block, filled as perturb asks
        assert ctypes.string_at(p, 64) == bytes([0x5A ^ 0xFF]) * 64
        f(p)
        assert ctypes.string_at(p, 64) == bytes([0x5A]) * 64
        alloc.mallopt("perturb", 0)
        f(m(64))
        alloc.check()
