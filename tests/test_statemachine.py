"""A model-based test: random malloc/calloc/realloc/memalign/free against a reference model.

The model is a dict of live blocks (address -> the bytes written there).
After every step, every live block still holds its bytes, no two live
blocks overlap, and ``check()`` walks every invariant of the allocator.
It runs with the thread cache on and off (issue 4), and small thresholds
so that slabs, heap chunks and mapped chunks are all exercised; and under
the glibc policy (issue 19), where tcache chunks, fastbins,
``malloc_consolidate`` and the unsorted pass take the slabs' place.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any, ClassVar

import pytest
from helpers import usable_for
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from arenas import Allocator

SIZES = st.one_of(
    st.integers(0, 256),  # small slab classes
    st.integers(257, 1024),  # large slab classes (up to SLAB_MAX)
    st.integers(1025, 70_000),  # heap chunks
    st.integers(70_001, 200_000),  # beyond mmap_threshold (64 KiB here): mapped
)
ALIGNMENTS = st.sampled_from([16, 32, 64, 128, 4096, 65536])


class AllocatorModel(RuleBasedStateMachine):
    tunables: ClassVar[dict[str, Any]] = {}

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator(**{"mmap_threshold": 64 << 10, **self.tunables})
        self.model: dict[int, bytes] = {}
        self.counter = itertools.count(1)

    def _fill(self, addr: int, size: int) -> int:
        pattern = bytes([next(self.counter) % 251 + 1]) * size
        ctypes.memmove(addr, pattern, size)
        assert addr not in self.model, f"{addr:#x} handed out twice"
        self.model[addr] = pattern
        return addr

    def _take(self, addr: int) -> bytes:
        pattern = self.model.pop(addr)
        assert ctypes.string_at(addr, len(pattern)) == pattern, f"{addr:#x} damaged"
        return pattern

    @rule(target=blocks, size=SIZES)
    def malloc(self, size: int) -> int:
        return self._malloc(size)

    def _malloc(self, size: int) -> int:
        addr = self.alloc.malloc(size)
        assert self.alloc.usable_size(addr) == usable_for(self.alloc, addr, size)
        return self._fill(addr, size)

    @rule(target=blocks, n=st.integers(0, 64), size=st.integers(0, 2048))
    def calloc(self, n: int, size: int) -> int:
        addr = self.alloc.calloc(n, size)
        assert ctypes.string_at(addr, n * size) == bytes(n * size)
        return self._fill(addr, n * size)

    @rule(target=blocks, alignment=ALIGNMENTS, size=SIZES)
    def memalign(self, alignment: int, size: int) -> int:
        addr = self.alloc.memalign(alignment, size)
        assert addr % alignment == 0
        assert self.alloc.usable_size(addr) == usable_for(self.alloc, addr, size, alignment)
        return self._fill(addr, size)

    @rule(target=blocks, addr=consumes(blocks), size=SIZES)
    def realloc(self, addr: int, size: int) -> int:
        old = self._take(addr)
        new = self.alloc.realloc(addr, max(size, 1))
        kept = old[: max(size, 1)]
        assert ctypes.string_at(new, len(kept)) == kept
        return self._fill(new, max(size, 1))

    @rule(addr=consumes(blocks))
    def free(self, addr: int) -> None:
        self._take(addr)
        self.alloc.free(addr)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def trim(self) -> None:
        self.alloc.trim()

    @invariant()
    def blocks_hold_their_bytes_and_do_not_overlap(self) -> None:
        spans = sorted((a, a + self.alloc.usable_size(a)) for a in self.model)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"live blocks overlap at {start:#x}"
        for addr, pattern in self.model.items():
            assert ctypes.string_at(addr, len(pattern)) == pattern

    @invariant()
    def allocator_is_consistent(self) -> None:
        self.alloc.check()

    def teardown(self) -> None:
        for addr in list(self.model):
            self._take(addr)
            self.alloc.free(addr)
        self.alloc.check()
        st_ = self.alloc.stats()
        assert st_.slab_blocks_live == 0 and st_.hblks == 0
        self.alloc.close()


class WithCache(AllocatorModel):
    tunables: ClassVar[dict[str, Any]] = {"tcache_count": 4}


class WithoutCache(AllocatorModel):
    tunables: ClassVar[dict[str, Any]] = {"tcache_count": 0}


class Glibc(AllocatorModel):
    """The glibc policy, with its tcache (7 chunks a bin) and fastbins."""

    tunables: ClassVar[dict[str, Any]] = {"policy": "glibc"}


class GlibcNoTcache(AllocatorModel):
    """The glibc policy without a tcache: every free reaches the fastbins and bins."""

    tunables: ClassVar[dict[str, Any]] = {"policy": "glibc", "tcache_count": 0, "mxfast": 160}


class TinyHeaps(AllocatorModel):
    """A non-main arena with small aligned heaps, so that it chains several heaps.

    A parked thread takes the main arena first, so the test's thread gets a
    non-main arena of its own.  Requests up to 256 KiB are heap chunks here,
    and an extra rule asks for big ones, so that a 1 MiB heap fills up.
    Refills of up to 5 blocks carve two slabs at once in the classes above
    128 bytes (4 blocks a slab), so one refill can take slabs from free
    chunks in different heaps.
    """

    tunables: ClassVar[dict[str, Any]] = {
        "tcache_count": 8,
        "heap_max_size": 1 << 20,
        "arena_max": 2,
        "mmap_threshold": 256 << 10,  # the biggest requests fill heaps, too
    }

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        attached = threading.Event()

        def hold_the_main_arena() -> None:
            self.alloc.free(self.alloc.malloc(1))
            attached.set()
            self.release.wait()

        self.holder = threading.Thread(target=hold_the_main_arena)
        self.holder.start()
        attached.wait()
        assert self.alloc.thread_arena() != 0

    @rule(target=AllocatorModel.blocks, size=st.integers(100_000, 250_000))
    def malloc_big_chunk(self, size: int) -> int:
        return self._malloc(size)

    def teardown(self) -> None:
        self.release.set()
        self.holder.join()
        super().teardown()


FAST = settings(max_examples=25, stateful_step_count=30, deadline=None)
LONG = settings(max_examples=500, stateful_step_count=100, deadline=None)


def as_test(machine: type[RuleBasedStateMachine], how: settings) -> Any:
    case = machine.TestCase
    case.settings = how
    return case


class WithCacheLong(WithCache):
    pass


class WithoutCacheLong(WithoutCache):
    pass


class TinyHeapsLong(TinyHeaps):
    pass


class GlibcTinyHeaps(TinyHeaps):
    """TinyHeaps under the glibc policy: new heaps, fenceposts and heap_trim as glibc's."""

    tunables: ClassVar[dict[str, Any]] = {**TinyHeaps.tunables, "policy": "glibc"}


class GlibcLong(Glibc):
    pass


class GlibcTinyHeapsLong(GlibcTinyHeaps):
    pass


test_model_with_cache = as_test(WithCache, FAST)
test_model_without_cache = as_test(WithoutCache, FAST)
test_model_tiny_heaps = as_test(TinyHeaps, FAST)
test_model_glibc = as_test(Glibc, FAST)
test_model_glibc_no_tcache = as_test(GlibcNoTcache, FAST)
test_model_glibc_tiny_heaps = as_test(GlibcTinyHeaps, FAST)
# opt-in: pytest -m stress
test_model_with_cache_long = pytest.mark.stress(as_test(WithCacheLong, LONG))
test_model_without_cache_long = pytest.mark.stress(as_test(WithoutCacheLong, LONG))
test_model_tiny_heaps_long = pytest.mark.stress(as_test(TinyHeapsLong, LONG))
test_model_glibc_long = pytest.mark.stress(as_test(GlibcLong, LONG))
test_model_glibc_tiny_heaps_long = pytest.mark.stress(as_test(GlibcTinyHeapsLong, LONG))
