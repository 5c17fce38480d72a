"""Issue 5: set_mem_functions and the ready-made replacements (counting, tracing, debugging)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import arenas
from arenas import HeapCorruption, InvalidPointer, OutOfMemory, hooks
from arenas.slab import CLASS_OF, CLASS_SIZES
from arenas.trace import parse


def test_all_three_or_none() -> None:
    c = hooks.counting()
    for args in ((c.malloc, None, None), (None, c.realloc, c.free), (c.malloc, c.realloc, None)):
        with pytest.raises(ValueError, match="all three"):
            hooks.set_mem_functions(*args)
    with pytest.raises(TypeError, match="callable"):
        hooks.set_mem_functions(c.malloc, c.realloc, 5)  # type: ignore[arg-type]
    assert not arenas.dispatch.replaced()  # nothing changed
    arenas.free(arenas.malloc(10))
    assert c.calls == 0


BAD_VALUES = [-1, 1.5, "8", None, True, False, b"x", 2**70]


def _refusals(own: int) -> dict[tuple[str, int, object], str]:
    """What each module-level call does with each bad value: the exception's name."""
    calls: dict[str, Callable[[Any], object]] = {
        "malloc": lambda bad: arenas.malloc(bad),
        "calloc n": lambda bad: arenas.calloc(bad, 8),
        "calloc size": lambda bad: arenas.calloc(8, bad),
        "free": lambda bad: arenas.free(bad),
        "realloc addr": lambda bad: arenas.realloc(bad, 10),
        "realloc size": lambda bad: arenas.realloc(own, bad),
        "strdup": lambda bad: arenas.strdup(bad),
    }
    seen: dict[tuple[str, int, object], str] = {}
    for name, call in calls.items():
        for k, bad in enumerate(BAD_VALUES):
            if name == "strdup" and isinstance(bad, bytes):
                continue  # the one thing strdup takes
            try:
                call(bad)
                seen[name, k, bad] = "accepted"
            except Exception as exc:
                seen[name, k, bad] = type(exc).__name__
    return seen


def test_a_replacement_refuses_bad_arguments_as_the_default_does() -> None:
    # Before, with a replacement in place: free(None) and realloc(None, n)
    # were accepted, strdup(True) copied one byte, realloc(1.5, n) raised
    # ValueError instead of TypeError.
    own = arenas.malloc(40)
    default = _refusals(own)
    arenas.free(own)
    hooks.counting().install()
    own = arenas.malloc(40)
    assert _refusals(own) == default
    assert "accepted" not in default.values()
    arenas.free(own)


def test_the_realloc_contract_is_checked() -> None:
    inner = arenas.Allocator()

    def realloc_that_never_frees(addr: int, size: int) -> int:
        return addr or inner.malloc(max(size, 1))

    def realloc_that_cannot_malloc(addr: int, size: int) -> int:
        return 0

    with pytest.raises(ValueError, match=r"realloc_fn\(p, 0\) must act as free"):
        hooks.set_mem_functions(inner.malloc, realloc_that_never_frees, inner.free)
    with pytest.raises(ValueError, match=r"realloc_fn\(0, n\) must act as malloc"):
        hooks.set_mem_functions(inner.malloc, realloc_that_cannot_malloc, inner.free)
    assert not arenas.dispatch.replaced()


def test_replacement_redirects_malloc_calloc_realloc_strdup_free() -> None:
    seen: list[str] = []
    inner = arenas.Allocator()

    def my_malloc(size: int) -> int:
        seen.append("malloc")
        return inner.malloc(size)

    def my_realloc(addr: int, size: int) -> int:
        seen.append("realloc")
        return inner.realloc(addr, size)

    def my_free(addr: int) -> None:
        seen.append("free")
        inner.free(addr)

    arenas.set_mem_functions(my_malloc, my_realloc, my_free)
    seen.clear()  # the contract probe made two realloc calls
    p = arenas.malloc(10)
    z = arenas.calloc(4, 4)
    assert ctypes.string_at(z, 16) == bytes(16)
    s = arenas.strdup(b"hey")
    assert ctypes.string_at(s, 4) == b"hey\0"
    p = arenas.realloc(p, 100)
    for addr in (p, z, s):
        arenas.free(addr)
    assert seen == ["malloc", "malloc", "malloc", "realloc", "free", "free", "free"]
    with pytest.raises(OutOfMemory, match="overflows"):
        arenas.calloc(2**40, 2**40)
    with pytest.raises(ValueError, match="n must be >= 0"):
        arenas.calloc(-1, -1)  # the product alone would pass
    with pytest.raises(TypeError, match="size must be an int, not bool"):
        arenas.calloc(8, True)
    with pytest.raises(TypeError):
        arenas.strdup("text")  # type: ignore[arg-type]


def test_restoring_defaults_restores_the_fast_path() -> None:
    c = hooks.counting()
    c.install()
    assert arenas.dispatch.replaced()
    calls = c.calls  # (installing probed realloc's contract)
    arenas.free(arenas.malloc(10))
    assert c.calls == calls + 2
    c.uninstall()
    assert not arenas.dispatch.replaced()
    addr = arenas.malloc(10)  # the default allocator's own hit path: not counted
    assert arenas.default_allocator().usable_size(addr) == CLASS_SIZES[CLASS_OF[10]]
    arenas.free(addr)
    assert c.calls == calls + 2


def test_blocks_never_reach_the_wrong_free() -> None:
    before = arenas.malloc(32)  # the default functions' block
    c = hooks.counting(arenas.Allocator())
    c.install()
    with pytest.raises(InvalidPointer, match="default functions, before"):
        arenas.free(before)
    with pytest.raises(InvalidPointer, match=r"default functions|not allocated"):
        arenas.realloc(before, 64)
    mine = arenas.malloc(16)
    hooks.set_mem_functions(None, None, None)
    with pytest.raises(InvalidPointer, match=r"replacement #\d+ \(Counting.malloc\)"):
        arenas.free(mine)
    arenas.free(before)  # the default functions' block goes to the default free
    assert c.allocated == 16  # the counting set's block was not freed behind its back
    c2 = hooks.counting(arenas.Allocator())
    c2.install()
    with pytest.raises(InvalidPointer, match=r"allocated by replacement #\d+"):
        arenas.free(mine)  # not the second set's either
    arenas.free(arenas.malloc(8))  # both sets still work
    c.install()  # the same three functions again: the set owns its blocks again
    arenas.free(mine)
    assert c.allocated == 0
    hooks.set_mem_functions(None, None, None)
    assert not arenas.dispatch.replaced()  # no set owns a block: the plain path again


def test_counting_exact_totals() -> None:
    c = hooks.counting(arenas.Allocator())
    c.install()
    p = arenas.malloc(100)
    q = arenas.calloc(3, 7)
    assert c.allocated == 121
    p = arenas.realloc(p, 40)
    assert c.allocated == 61
    s = arenas.strdup(b"12345")
    assert c.allocated == 67
    assert arenas.realloc(q, 0) == 0
    assert c.allocated == 46
    arenas.free(p)
    arenas.free(s)
    assert c.allocated == 0
    assert c.peak == 121


def test_counting_in_eight_threads() -> None:
    c = hooks.counting(arenas.Allocator())
    c.install()
    held: list[list[int]] = [[] for _ in range(8)]
    gate = threading.Barrier(8)

    def work(k: int) -> None:
        gate.wait()
        for i in range(200):
            addr = arenas.malloc(10 + i)
            if i % 2:
                arenas.free(addr)
            else:
                held[k].append(addr)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = 8 * sum(10 + i for i in range(0, 200, 2))
    assert c.allocated == expected
    for mine in held:
        for addr in mine:
            arenas.free(addr)
    assert c.allocated == 0


@pytest.mark.parametrize("name", ["trace.txt", "trace.txt.gz"])
def test_tracing_writes_a_valid_order_across_threads(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with hooks.tracing(str(path), arenas.Allocator()) as tracer:
        tracer.install()
        gate = threading.Barrier(8)

        def work_own(_: int) -> None:
            gate.wait()
            own: list[int] = []
            for size in range(1, 50):
                own.append(arenas.realloc(arenas.malloc(size), size * 2))
            for addr in own:
                arenas.free(addr)

        threads = [threading.Thread(target=work_own, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tracer.calloc(2, 3)
        hooks.set_mem_functions(None, None, None)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    plan = parse(path)  # raises at a free, a realloc or an allocation the order makes impossible
    assert sorted(plan.threads) == list(range(len(plan.threads)))  # renumbered 0..N-1
    assert len(plan.threads) >= 8
    assert list(plan.live_at_end.values()) == [6]  # only the calloc is left


class CStyle:
    """An allocator that fails the way C's does: 0 from malloc and realloc above a limit."""

    def __init__(self, limit: int) -> None:
        self.alloc = arenas.Allocator()
        self.limit = limit

    def malloc(self, size: int) -> int:
        return 0 if size > self.limit else self.alloc.malloc(size)

    def realloc(self, addr: int, size: int) -> int:
        if not addr:
            return self.malloc(size)
        if not size:
            self.alloc.free(addr)
            return 0
        return 0 if size > self.limit else self.alloc.realloc(addr, size)

    def free(self, addr: int) -> None:
        self.alloc.free(addr)


def test_a_replacement_that_fails_with_0_is_handled_as_c_would() -> None:
    inner = CStyle(limit=32)
    counter = hooks.counting(inner)
    counter.install()
    # strdup copied into address 0 (a segmentation fault) when malloc failed.
    assert arenas.strdup(b"longer than the thirty-two byte limit") == 0
    assert arenas.calloc(10, 10) == 0
    assert arenas.malloc(100) == 0
    assert counter.allocated == 0  # failures are not counted as blocks
    block = arenas.malloc(16)
    ctypes.memmove(block, b"kept", 4)
    # A failed realloc leaves the old block live: still owned by the replacement
    # (its free used to say "did not allocate it"), still counted, bytes intact.
    assert arenas.realloc(block, 1000) == 0
    assert ctypes.string_at(block, 4) == b"kept" and counter.allocated == 16
    arenas.free(block)
    assert counter.allocated == 0
    inner.alloc.check()
    assert inner.alloc.stats().slab_blocks_live == 0


@pytest.mark.parametrize("returned", ["0x10", -16, 1.5, True])
def test_a_replacement_returning_a_non_address_is_a_type_error(returned: object) -> None:
    inner = CStyle(limit=1 << 20)
    hooks.set_mem_functions(lambda size: returned, inner.realloc, inner.free)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"returned .*, not an address"):
        arenas.malloc(8)
    with pytest.raises(TypeError, match=r"returned .*, not an address"):
        arenas.strdup(b"x")


def test_a_closed_trace_stops_writing_but_calls_go_on(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    tracer = hooks.tracing(str(path), arenas.Allocator())
    tracer.install()
    kept = arenas.malloc(24)
    tracer.close()
    tracer.close()  # twice is fine
    more = arenas.malloc(24)  # raised ValueError (closed file) after the block was made
    arenas.free(more)
    arenas.free(kept)
    lines = path.read_text().splitlines()
    assert lines[-1].split()[1:3] == ["m", "24"]  # after install()'s two probe calls
    assert len(lines) == 3


def test_debugging_hook_catches_an_overrun_at_free() -> None:
    d = hooks.debugging(arenas.Allocator())
    arenas.set_mem_functions(d.malloc, d.realloc, d.free)
    addr = arenas.malloc(24)
    assert ctypes.string_at(addr, 24) == b"\xcd" * 24
    ctypes.memset(addr, 0x41, 25)
    with pytest.raises(HeapCorruption, match="overrun"):
        arenas.free(addr)
    ctypes.memset(addr + 24, 0xFD, 1)
    arenas.free(addr)
    leak = arenas.malloc(7)
    assert [(x.addr, x.size) for x in d.report_leaks()] == [(leak, 7)]
    arenas.free(leak)
    d.check()
