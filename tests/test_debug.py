"""Issue 5: Allocator(debug=True): fill bytes, integrity word, guard bytes, leak report."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import pytest
from helpers import run_threads

from arenas import (
    Allocator,
    AllocatorError,
    DoubleFree,
    HeapCorruption,
    InvalidPointer,
    OutOfMemory,
)
from arenas.debug import FILL_FREE, FILL_NEW, HEADER, Debugger


@pytest.fixture
def alloc() -> Allocator:
    """A fresh debug allocator (tests/conftest.py checks and closes it after the test)."""
    return Allocator(debug=True)


BAD_REQUESTS = [
    ("malloc", (-1,), ValueError, "size must be >= 0"),
    ("malloc", (True,), TypeError, "size must be an int, not bool"),
    ("malloc", (1 << 64,), OutOfMemory, "larger than any request"),
    ("calloc", (-1, -1), ValueError, "n must be >= 0"),
    ("calloc", (True, 8), TypeError, "n must be an int, not bool"),
    ("calloc", (8, 1.0), TypeError, "size must be an int, not float"),
    ("calloc", (1 << 40, 1 << 40), OutOfMemory, "the product overflows"),
    ("memalign", (64, -1), ValueError, "size must be >= 0"),
    ("memalign", ("64", 8), TypeError, "alignment must be an int, not str"),
]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(("call", "args", "error", "needle"), BAD_REQUESTS)
def test_debugging_refuses_bad_requests_as_the_allocator_does(
    debug: bool, call: str, args: tuple[object, ...], error: type[Exception], needle: str
) -> None:
    # One check (arenas.chunk.checked_request) serves both: the same
    # exception, the same words, and on_oom told of an impossible size.
    told: list[int] = []
    with Allocator(debug=debug, on_oom=told.append) as alloc:
        with pytest.raises(error, match=needle):
            getattr(alloc, call)(*args)
        assert bool(told) == (error is OutOfMemory)
        assert alloc.stats().in_use_bytes == 0
        alloc.check()


@pytest.mark.parametrize("bad", [1.5, "8", None, True, False, b"x"])
@pytest.mark.parametrize("debug", [False, True])
def test_debugging_refuses_bad_addresses_as_the_allocator_does(debug: bool, bad: object) -> None:
    # realloc(p, False) used to free p in debug mode, as realloc(p, 0) does.
    with Allocator(debug=debug) as alloc:
        own = alloc.malloc(40)
        alloc.view(own, 40)[:] = b"k" * 40
        calls: list[Callable[[], object]] = [
            lambda: alloc.free(bad),  # type: ignore[arg-type]
            lambda: alloc.realloc(bad, 10),  # type: ignore[arg-type]
            lambda: alloc.realloc(own, bad),  # type: ignore[arg-type]
            lambda: alloc.usable_size(bad),  # type: ignore[arg-type]
            lambda: alloc.view(bad),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(TypeError, match="must be an int"):
                call()
        assert alloc.view(own, 40) == b"k" * 40  # untouched by all of that
        alloc.free(own)
        assert alloc.usable_size(0) == 0
        alloc.check()


def test_new_blocks_are_filled(alloc: Allocator) -> None:
    addr = alloc.malloc(64)
    assert ctypes.string_at(addr, 64) == bytes([FILL_NEW]) * 64
    assert alloc.usable_size(addr) == 64  # exactly what was asked
    assert len(alloc.view(addr)) == 64
    with pytest.raises(ValueError, match="exceeds"):
        alloc.view(addr, 65)


def test_freed_blocks_are_filled(alloc: Allocator) -> None:
    keep = alloc.malloc(8)  # so the freed block's bytes stay mapped and readable
    addr = alloc.malloc(200)
    alloc.free(addr)
    assert ctypes.string_at(addr, 200) == bytes([FILL_FREE]) * 200
    alloc.free(keep)


def test_an_overrun_through_ctypes_is_caught_at_free(alloc: Allocator) -> None:
    addr = alloc.malloc(100)
    ctypes.memset(addr, 0x41, 101)  # one byte too many
    with pytest.raises(HeapCorruption, match=rf"{addr:#x} \(100 bytes.*MainThread.*overrun"):
        alloc.free(addr)
    with pytest.raises(HeapCorruption, match="overrun"):
        alloc.check()
    # the damaged block was not freed; repair it and everything works again
    ctypes.memset(addr + 100, 0xFD, 1)
    alloc.free(addr)
    alloc.check()
    alloc.free(alloc.malloc(10))


@pytest.mark.corrupts_heap
def test_a_corrupted_integrity_word_is_caught(alloc: Allocator) -> None:
    addr = alloc.malloc(32)
    ctypes.memset(addr - HEADER, 0, 8)  # an underrun over the integrity word
    with pytest.raises(HeapCorruption, match="integrity word"):
        alloc.free(addr)
    with pytest.raises(HeapCorruption, match="integrity word"):
        alloc.check()


def test_double_and_foreign_frees(alloc: Allocator) -> None:
    addr = alloc.malloc(16)
    alloc.free(addr)
    with pytest.raises(DoubleFree, match="already free"):
        alloc.free(addr)
    with pytest.raises(InvalidPointer):
        alloc.free(0x1000)
    alloc.check()


def test_leak_report_names_sizes_and_threads(alloc: Allocator) -> None:
    mine = alloc.malloc(11)

    def worker() -> None:
        alloc.malloc(22)

    t = threading.Thread(target=worker, name="leaky-worker")
    t.start()
    t.join()
    leaks = {(leak.size, leak.thread) for leak in alloc.report_leaks()}
    assert leaks == {(11, "MainThread"), (22, "leaky-worker")}
    alloc.free(mine)
    assert [leak.size for leak in alloc.report_leaks()] == [22]
    assert "22 bytes at 0x" in str(alloc.report_leaks()[0])


def test_realloc_calloc_memalign_strdup_and_blocks(alloc: Allocator) -> None:
    addr = alloc.malloc(10)
    alloc.view(addr)[:] = b"0123456789"
    addr = alloc.realloc(addr, 5000)
    assert ctypes.string_at(addr, 10) == b"0123456789"
    assert ctypes.string_at(addr + 10, 4) == bytes([FILL_NEW]) * 4
    assert alloc.realloc(addr, 0) == 0
    zeroed = alloc.calloc(10, 10)
    assert ctypes.string_at(zeroed, 100) == bytes(100)
    aligned = alloc.memalign(4096, 50)
    assert aligned % 4096 == 0
    text = alloc.strdup(b"abc")
    assert ctypes.string_at(text, 4) == b"abc\x00"
    with alloc.alloc(8) as block:
        block.view[:] = b"abcdefgh"
    for a in (zeroed, aligned, text):
        alloc.free(a)
    alloc.check()
    assert alloc.report_leaks() == []


def test_report_leaks_needs_debug_mode() -> None:
    with Allocator() as plain, pytest.raises(AllocatorError, match="debug=True"):
        plain.report_leaks()


def test_debugger_rejects_bad_settings() -> None:
    with Allocator() as inner:
        with pytest.raises(ValueError, match="fill_new"):
            Debugger(inner.malloc, inner.free, fill_new=300)
        with pytest.raises(ValueError, match="guard"):
            Debugger(inner.malloc, inner.free, guard=-1)


def test_debug_mode_in_threads(alloc: Allocator) -> None:
    def work(k: int) -> None:
        blocks = [alloc.malloc(16 + 8 * i) for i in range(100)]
        for i, addr in enumerate(blocks):
            ctypes.memset(addr, k, 16 + 8 * i)
        for i, addr in enumerate(blocks):
            assert ctypes.string_at(addr, 16 + 8 * i) == bytes([k]) * (16 + 8 * i)
            alloc.free(addr)

    run_threads(8, work)
    assert alloc.report_leaks() == []
    alloc.check()
