"""The allocator: glibc's public entry points (``__libc_malloc`` and friends).

:class:`Allocator` is what a program talks to.  Each call does what glibc's
wrappers do:

* ``malloc``  size checks, then a request of ``mmap_threshold`` or more gets a
  mapping of its own; anything else goes to the calling thread's arena
  (``arena_get``: a thread-local lookup), under that arena's lock, with
  ``arena_get_retry`` when the arena cannot serve;
* ``free``    finds the owning arena from the address alone: an aligned heap by
  masking (``heap_for_ptr``), the main heap by range, or a mapping by lookup,
  and frees under *that* arena's lock, whichever thread calls;
* ``realloc``, ``memalign``, ``calloc`` the same, built on the arena's
  ``_int_*`` operations.

Locking: the hot paths take exactly one arena lock.  The thread-local
(``_tls``) needs none.  ``_registry`` has its reader-writer lock, used only
when a thread attaches, detaches or asks for stats.  ``_closed`` is written
under the registry write lock.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from .arena import Arena
from .chunk import CHUNK_HDR_SZ, MALLOC_ALIGNMENT, MAX_REQUEST, SIZE_SZ, request2size
from .errors import AllocatorError, HeapCorruption, InvalidPointer, OutOfMemory
from .heap import HeapTable
from .large import MmappedChunks
from .memory import Region, SystemBudget, retry_deferred_unmaps
from .registry import ArenaRegistry
from .stats import ArenaStats, Stats
from .tunables import DEFAULT_MMAP_THRESHOLD_MAX, Params, validate

__all__ = ["Allocator", "Block"]

_memset = ctypes.memset


def _bad_size(size: object, what: str = "size") -> int:
    """The slow path of the size check: the right exception for a bad size."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{what} must be an int, not {type(size).__name__}")
    if size < 0:
        raise ValueError(f"{what} must be >= 0, got {size}")
    if size > MAX_REQUEST:
        raise OutOfMemory(f"cannot allocate {size} bytes: larger than any request can be")
    return int(size)


def _bad_addr(addr: object) -> int:
    if isinstance(addr, bool) or not isinstance(addr, int):
        raise TypeError(f"address must be an int, not {type(addr).__name__}")
    return int(addr)


class _ThreadState:
    """What one thread holds in one allocator; its finalizer is the thread-exit hook.

    When the thread ends, normally or by an exception, CPython clears the
    thread's ``threading.local`` dicts, this object is dropped, and
    ``__del__`` detaches the thread from its arena.
    """

    __slots__ = ("__weakref__", "arena", "owner", "pid")

    def __init__(self, owner: Allocator, arena: Arena) -> None:
        self.owner = weakref.ref(owner)
        self.arena = arena
        self.pid = os.getpid()

    def __del__(self) -> None:
        owner = self.owner()
        # A forked child drops the parent's other threads: their states are stale.
        if owner is not None and self.pid == os.getpid():
            owner._thread_exit(self)


class _Closed:
    """Stands in for the thread-local once the allocator is closed."""

    @property
    def arena(self) -> Arena:
        raise AllocatorError("the allocator is closed")


class Block:
    """A block with its view: ``.addr``, ``.size``, ``.view``, ``.free()``.

    ``view`` is a writable memoryview of exactly ``size`` bytes.  ``free()``
    releases the view first, so any later touch raises ``ValueError`` instead
    of reaching bytes that may belong to someone else by then.
    """

    __slots__ = ("_allocator", "_freed", "addr", "size", "view")

    def __init__(self, allocator: Allocator, addr: int, size: int) -> None:
        self._allocator = allocator
        self.addr = addr
        self.size = size
        self.view = allocator.view(addr, size)
        self._freed = False

    @property
    def freed(self) -> bool:
        return self._freed

    def free(self) -> None:
        if self._freed:
            raise InvalidPointer(f"block {self.addr:#x} was already freed through this Block")
        try:
            self.view.release()
        except BufferError as exc:
            raise BufferError(
                f"cannot free block {self.addr:#x}: its view is still exported"
                " (release the objects made from it first)"
            ) from exc
        self._allocator.free(self.addr)
        self._freed = True

    def __enter__(self) -> Block:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._freed:
            self.free()

    def __repr__(self) -> str:
        state = "freed" if self._freed else "live"
        return f"<Block {state} addr={self.addr:#x} size={self.size}>"


class Allocator:
    """A multi-arena allocator over real memory.  Keyword arguments are tunables."""

    def __init__(self, **tunables: Any) -> None:
        self._mp = mp = Params(validate(tunables))
        self._budget = SystemBudget(mp.max_heap_bytes)
        self._heap_table = HeapTable()
        self._heaps = self._heap_table.heaps
        self._heap_mask = ~(mp.heap_max_size - 1)
        self._mmapped = MmappedChunks(self._budget)
        self._registry = ArenaRegistry(self._new_arena, mp.arena_max)
        main_heap = self._registry.main.heap
        self._main_lo = main_heap.base
        self._main_hi = main_heap.base + main_heap.max_size
        self._tls: Any = threading.local()
        self._closed = False
        _live_allocators.add(self)

    def _new_arena(self, index: int) -> Arena:
        return Arena(index, self._mp, self._budget, self._heap_table)

    @property
    def params(self) -> dict[str, int]:
        """The tunables in force."""
        return self._mp.as_dict()

    # ============================================================ arena_get
    def _attach_thread(self) -> Arena:
        """The slow path of ``arena_get``: this thread's first allocation."""
        if self._closed:
            raise AllocatorError("the allocator is closed")
        arena = self._registry.arena_get2()
        tls = self._tls
        tls.arena = arena
        tls.state = _ThreadState(self, arena)
        return arena

    def _switch_arena(self, arena: Arena) -> None:
        self._tls.arena = arena
        self._tls.state.arena = arena

    def _thread_exit(self, state: _ThreadState) -> None:
        if not self._closed:
            self._registry.detach(state.arena)

    def thread_arena(self) -> int:
        """The index of the calling thread's arena (attaching it if needed)."""
        try:
            arena: Arena = self._tls.arena
        except AttributeError:
            arena = self._attach_thread()
        return arena.index

    # ================================================================ malloc
    def malloc(self, size: int) -> int:
        """Allocate ``size`` bytes; return the real address of the first one."""
        if size.__class__ is not int or size < 0 or size > MAX_REQUEST:
            size = _bad_size(size)
        nb = (size + 23) & ~15 if size > 8 else 32
        if nb >= self._mp.mmap_threshold:
            mem = self._mmapped.alloc(nb)
            if mem:
                return mem
        try:
            arena: Arena = self._tls.arena
        except AttributeError:
            arena = self._attach_thread()
        with arena.lock:
            mem = arena._int_malloc(nb)
        if mem:
            return mem
        return self._arena_get_retry(arena, nb, 0, size)

    def _arena_get_retry(self, arena: Arena, nb: int, alignment: int, size: int) -> int:
        """glibc's ``arena_get_retry``: the main arena, or from it another one."""
        registry = self._registry
        if arena is not registry.main:
            other = registry.main
        else:
            other = registry.arena_get2(avoid=arena, replaced=arena)
            self._switch_arena(other)
        if other is not arena:
            with other.lock:
                mem = other._int_memalign(alignment, nb) if alignment else other._int_malloc(nb)
            if mem:
                return mem
        raise OutOfMemory(
            f"cannot allocate {size} bytes: arena {arena.index} and arena {other.index}"
            " cannot grow"
            + (f" (max_heap_bytes={self._mp.max_heap_bytes})" if self._mp.max_heap_bytes else "")
        )

    def calloc(self, n: int, size: int) -> int:
        """Allocate ``n * size`` zeroed bytes; an overflowing product raises ``OutOfMemory``."""
        n = _bad_size(n, "n")
        size = _bad_size(size)
        total = n * size
        if total > MAX_REQUEST:
            raise OutOfMemory(f"calloc({n}, {size}): the product overflows")
        mem = self.malloc(total)
        if mem not in self._mmapped.chunks:  # fresh mappings are already zero
            _memset(mem, 0, self.usable_size(mem))
        return mem

    def memalign(self, alignment: int, size: int) -> int:
        """Allocate ``size`` bytes at an address that is a multiple of ``alignment``."""
        alignment = _bad_size(alignment, "alignment")
        if alignment == 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        size = _bad_size(size)
        if alignment <= MALLOC_ALIGNMENT:
            return self.malloc(size)
        if size > MAX_REQUEST - alignment - 64:
            raise OutOfMemory(f"cannot allocate {size} bytes aligned to {alignment}")
        nb = request2size(size)
        if nb + alignment >= self._mp.mmap_threshold:
            mem = self._mmapped.alloc(nb, alignment)
            if mem:
                return mem
        try:
            arena: Arena = self._tls.arena
        except AttributeError:
            arena = self._attach_thread()
        with arena.lock:
            mem = arena._int_memalign(alignment, nb)
        if mem:
            return mem
        return self._arena_get_retry(arena, nb, alignment, size)

    def strdup(self, data: bytes) -> int:
        """A NUL-terminated copy of ``data`` (any bytes-like object)."""
        if isinstance(data, str):
            raise TypeError("strdup() needs bytes, not str: encode it first")
        src = memoryview(data).cast("B")
        n = src.nbytes
        mem = self.malloc(n + 1)
        dst = self.view(mem, n + 1)
        dst[:n] = src
        dst[n] = 0
        dst.release()
        return mem

    # ================================================================== free
    def free(self, addr: int) -> None:
        """Free the block at ``addr``; ``free(0)`` does nothing."""
        try:
            heap = self._heaps.get(addr & self._heap_mask)
        except TypeError:
            heap = None
        if heap is None:
            self._free_slow(addr)
            return
        arena = heap.arena
        with arena.lock:
            arena._int_free(heap, addr)

    def _free_slow(self, addr: int) -> None:
        addr = _bad_addr(addr)
        if addr == 0:
            return
        if self._main_lo <= addr < self._main_hi:
            main = self._registry.main
            with main.lock:
                main._int_free(main.heap, addr)
            return
        size = self._mmapped.free(addr)
        if size is None:
            raise self._foreign(addr)
        mp = self._mp
        # glibc's dynamic threshold: a freed mapping raises the bar for the next one.
        if not mp.no_dyn_threshold and mp.mmap_threshold < size <= DEFAULT_MMAP_THRESHOLD_MAX:
            mp.mmap_threshold = size
            mp.trim_threshold = 2 * size

    def _foreign(self, addr: int) -> AllocatorError:
        if self._closed:
            return AllocatorError("the allocator is closed")
        if addr & (MALLOC_ALIGNMENT - 1):
            return InvalidPointer(f"free(): invalid pointer {addr:#x}: misaligned")
        return InvalidPointer(f"free(): invalid pointer {addr:#x}: not allocated by this allocator")

    # ================================================================ realloc
    def realloc(self, addr: int, size: int) -> int:
        """Resize the block at ``addr``; returns its (maybe new) address.

        ``realloc(0, n)`` is ``malloc(n)``; ``realloc(p, 0)`` frees and returns 0.
        On failure the old block is left valid and unchanged.
        """
        if size.__class__ is not int or size < 0 or size > MAX_REQUEST:
            size = _bad_size(size)
        addr = addr if addr.__class__ is int else _bad_addr(addr)
        if addr == 0:
            return self.malloc(size)
        if size == 0:
            self.free(addr)
            return 0
        nb = request2size(size)
        region, usable = self._locate(addr)
        heap = self._heaps.get(addr & self._heap_mask)
        if heap is None and self._main_lo <= addr < self._main_hi:
            heap = self._registry.main.heap
        if heap is not None:
            arena = heap.arena
            with arena.lock:
                new = arena._int_realloc(heap, addr, nb, nb < self._mp.mmap_threshold)
            if new:
                return new
        elif usable + CHUNK_HDR_SZ >= nb and usable < 2 * nb:
            return addr  # a mapping that already fits, without wasting half of it
        new = self.malloc(size)
        n = min(usable, size)
        self._locate(new)[0].view(new, n)[:] = region.view(addr, n)
        self.free(addr)
        return new

    # ============================================================ inspection
    def _locate(self, addr: int) -> tuple[Region, int]:
        """The region holding the live block ``addr`` and its usable size."""
        heap = self._heaps.get(addr & self._heap_mask)
        if heap is None and self._main_lo <= addr < self._main_hi:
            heap = self._registry.main.heap
        if heap is not None:
            size = heap.arena.in_use.get(addr)
            if size is None:
                raise heap.arena.diagnose_bad_pointer(addr)
            return heap.region, size - SIZE_SZ
        region = self._mmapped.chunks.get(addr)
        if region is None:
            raise self._foreign(_bad_addr(addr))
        return region, self._mmapped.chunk_size(region, addr) - CHUNK_HDR_SZ

    def usable_size(self, addr: int) -> int:
        """How many bytes the block at ``addr`` can hold (glibc's ``malloc_usable_size``)."""
        if addr == 0:
            return 0
        return self._locate(addr)[1]

    def view(self, addr: int, size: int | None = None) -> memoryview:
        """A writable view of the block at ``addr``: ``size`` bytes, or all usable bytes."""
        region, usable = self._locate(addr)
        if size is None:
            size = usable
        elif size.__class__ is not int or not 0 <= size <= usable:
            _bad_size(size)
            raise ValueError(f"view of {size} bytes exceeds block {addr:#x} ({usable} usable)")
        return region.view(addr, size)

    def alloc(self, size: int) -> Block:
        """Allocate ``size`` bytes as a :class:`Block` (with a view of exactly ``size``)."""
        return Block(self, self.malloc(size), size)

    def heap_for_ptr(self, addr: int) -> int:
        """The base address of the heap holding block ``addr`` (``addr & ~(HEAP_MAX_SIZE-1)``
        for a non-main arena, the main heap's base for the main arena)."""
        self._locate(addr)
        base = addr & self._heap_mask
        if base in self._heaps:
            return base
        if self._main_lo <= addr < self._main_hi:
            return self._main_lo
        raise InvalidPointer(f"block {addr:#x} has a mapping of its own, not a heap")

    def arena_for(self, addr: int) -> int | None:
        """The index of the arena owning block ``addr`` (0 = main), None for a mapped chunk."""
        self._locate(addr)
        heap = self._heaps.get(addr & self._heap_mask)
        if heap is not None:
            return heap.arena.index
        if self._main_lo <= addr < self._main_hi:
            return 0
        return None

    @contextmanager
    def _arena_snapshot(self) -> Iterator[list[Arena]]:
        with self._registry.reading():
            arenas = list(self._registry.arenas)
        yield arenas

    def check(self) -> None:
        """Walk every arena, heap, bin and mapping; raise ``HeapCorruption`` if anything is off."""
        with self._arena_snapshot() as arenas:
            for arena in arenas:
                with arena.lock:
                    arena.check()
                    if arena.is_main and len(arena.heaps) != 1:
                        raise HeapCorruption("the main arena must own exactly its main heap")
                    if not arena.is_main:
                        for heap in arena.heaps:
                            if self._heaps.get(heap.base) is not heap:
                                raise HeapCorruption(f"heap {heap.base:#x} missing from the table")
        with self._mmapped.lock:
            for mem, region in self._mmapped.chunks.items():
                self._mmapped.chunk_size(region, mem)
        with self._registry.reading():
            registry = self._registry
            if len(registry.arenas) > registry.arena_max:
                raise HeapCorruption("more arenas than arena_max")
            for arena in registry.arenas:
                if arena.attached_threads < 0:
                    raise HeapCorruption(f"arena {arena.index} has negative attached threads")
                if (arena.attached_threads == 0) != (arena in registry.free_list):
                    raise HeapCorruption(f"arena {arena.index} free-list membership is wrong")
            owned = sum(len(a.heaps) for a in registry.arenas if not a.is_main)
            if owned != len(self._heaps):
                raise HeapCorruption("the heap table holds heaps no arena owns")

    def stats(self) -> Stats:
        """A snapshot of every arena and mapping (glibc's ``mallinfo2`` and more)."""
        per: list[ArenaStats] = []
        with self._arena_snapshot() as arenas:
            for arena in arenas:
                with arena.lock:
                    top = arena.top_size()
                    per.append(
                        ArenaStats(
                            index=arena.index,
                            attached_threads=arena.attached_threads,
                            heaps=len(arena.heaps),
                            system_bytes=arena.system_mem,
                            in_use_bytes=arena.inuse_bytes,
                            free_bytes=arena.system_mem - arena.inuse_bytes,
                            top_bytes=top,
                            max_system_bytes=arena.max_system_mem,
                            free_chunks=len(arena.bins.free),
                            in_use_chunks=len(arena.in_use),
                        )
                    )
        mm = self._mmapped
        with mm.lock:
            hblks, hblkhd = len(mm.chunks), mm.mmapped_mem
            max_mm, max_n = mm.max_mmapped_mem, mm.max_n_mmaps
        system = sum(a.system_bytes for a in per)
        used = sum(a.in_use_bytes for a in per)
        return Stats(
            arena=system,
            ordblks=sum(a.free_chunks for a in per),
            smblks=0,
            hblks=hblks,
            hblkhd=hblkhd,
            usmblks=0,
            fsmblks=0,
            uordblks=used,
            fordblks=system - used,
            keepcost=per[0].top_bytes if per else 0,
            arenas=tuple(per),
            max_mmapped_bytes=max_mm,
            max_mmapped_chunks=max_n,
            max_system_bytes=self._budget.max_used,
        )

    # ================================================================ close
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap every heap and mapping.  Every later call raises ``AllocatorError``."""
        with self._registry.writing():
            if self._closed:
                return
            self._closed = True
            self._tls = _Closed()
            arenas = list(self._registry.arenas)
        for arena in arenas:
            with arena.lock:
                for heap in arena.heaps:
                    if not arena.is_main:
                        self._heap_table.remove(heap)
                    heap.release()
                arena.heaps.clear()
                arena.in_use.clear()
        with self._mmapped.lock:
            regions = list(self._mmapped.chunks.values())
            self._mmapped.chunks.clear()
        for region in regions:
            region.unmap()
        self._main_hi = self._main_lo
        retry_deferred_unmaps()
        _live_allocators.discard(self)

    def __enter__(self) -> Allocator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._registry.arenas)} arenas"
        return f"<Allocator {state}>"

    # ================================================================= fork
    def _fork_prepare(self) -> None:
        self._fork_lock = self._registry.rwlock.gen_wlock()
        self._fork_lock.acquire()
        for arena in self._registry.arenas:
            arena.lock.acquire()
        self._heap_table.lock.acquire()
        self._mmapped.lock.acquire()

    def _fork_parent(self) -> None:
        self._mmapped.lock.release()
        self._heap_table.lock.release()
        for arena in reversed(self._registry.arenas):
            arena.lock.release()
        self._fork_lock.release()

    def _fork_child(self) -> None:
        for arena in self._registry.arenas:
            arena.lock = threading.Lock()
        self._heap_table.lock = threading.Lock()
        self._mmapped.lock = threading.Lock()
        self._budget.reset_lock()
        tls = self._tls
        survivor: Arena | None = getattr(tls, "arena", None)
        self._registry.reset_after_fork(survivor)
        state = getattr(tls, "state", None)
        if state is not None:
            state.pid = os.getpid()


# ------------------------------------------------------------------ fork hooks
# One set of hooks for the process; each live allocator takes part.
_live_allocators: weakref.WeakSet[Allocator] = weakref.WeakSet()
_forking: list[Allocator] = []


def _before_fork() -> None:
    _forking[:] = list(_live_allocators)
    for allocator in _forking:
        allocator._fork_prepare()


def _after_fork_parent() -> None:
    for allocator in _forking:
        allocator._fork_parent()
    _forking.clear()


def _after_fork_child() -> None:
    for allocator in _forking:
        allocator._fork_child()
    _forking.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
