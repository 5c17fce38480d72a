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
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from pickle import PickleBuffer
from types import TracebackType
from typing import Any, TextIO

from .arena import Arena
from .chunk import (
    CHUNK_HDR_SZ,
    MALLOC_ALIGNMENT,
    MAX_REQUEST,
    SIZE_SZ,
    calloc_request,
    checked_address,
    checked_request,
    checked_strdup,
    request2size,
)
from .debug import Debugger, Leak
from .errors import (
    AllocatorError,
    DoubleFree,
    HeapCorruption,
    InvalidPointer,
    OutOfMemory,
    for_call,
)
from .heap import Heap, HeapTable
from .large import MmappedChunks
from .memory import BufferRegion, Region, SystemBudget, retry_deferred_unmaps
from .registry import ArenaRegistry
from .slab import (
    CLASS_OF,
    CLASS_SIZES,
    CLASS_SLAB_BYTES,
    NCLASSES,
    SLAB_MAX,
    Slab,
    SlabTable,
    release_spares,
    return_blocks,
    take_blocks,
)
from .stats import ArenaStats, Stats, format_malloc_info, format_malloc_stats
from .tunables import DEFAULT_MMAP_THRESHOLD_MAX, Params, mallopt_name, validate

__all__ = ["Allocator", "Block"]

_memset = ctypes.memset


_tokens = itertools.count(1)


# A miss in one class first looks at the caches of this many next bigger
# classes: one class up is at most a quarter bigger above 128 bytes, 16 bytes
# below.  More borrowing measured worse (docs/slabs.md): a borrowed block
# wastes more, and pins the slab of the block it stands in for.
TCACHE_BORROW = 1
_BORROW_FROM: tuple[tuple[int, ...], ...] = tuple(
    tuple(range(cls + 1, min(cls + 1 + TCACHE_BORROW, NCLASSES))) for cls in range(NCLASSES)
)


def _tcache_counts(count: int, max_bytes: int) -> list[int]:
    """Per size class, how many blocks a thread's cache may hold."""
    return [min(count, max_bytes // size) for size in CLASS_SIZES]


class _ThreadState:
    """What one thread holds in one allocator; its finalizer is the thread-exit hook.

    ``tcache`` is the thread's cache (glibc's tcache): per size class, a list
    of free block addresses that only this thread touches, so it needs no lock.
    ``fill`` is, per class, how many blocks the next refill takes: it starts
    at one and doubles with each miss, up to half the cache (jemalloc adapts
    its fill count the same way), so a class the thread uses a few times
    does not pull half a cache of blocks it will never use.
    When the thread ends, normally or by an exception, CPython clears the
    thread's ``threading.local`` dicts, this object is dropped, and
    ``__del__`` flushes the cache and detaches the thread from its arena.
    """

    __slots__ = ("__weakref__", "arena", "fill", "owner", "pid", "tcache", "token")

    def __init__(self, owner: Allocator, arena: Arena) -> None:
        self.owner = weakref.ref(owner)
        self.arena = arena
        self.pid = os.getpid()
        self.token = next(_tokens)
        self.tcache: list[list[int]] = [[] for _ in range(NCLASSES)]
        self.fill = [1] * NCLASSES

    def __del__(self) -> None:
        owner = self.owner()
        # A forked child drops the parent's other threads: their states are stale.
        if owner is not None and self.pid == os.getpid():
            owner._thread_exit(self)


CLOSED = "the allocator is closed"


class _Closed:
    """Stands in for the thread-local once the allocator is closed."""

    @property
    def arena(self) -> Arena:
        raise AllocatorError(CLOSED)

    @property
    def tcache(self) -> list[list[int]]:
        raise AllocatorError(CLOSED)


class Block:
    """A block with its view: ``.addr``, ``.size``, ``.view``, ``.free()``.

    ``view`` is a writable memoryview of exactly ``size`` bytes.  ``free()``
    releases the view first, so any later touch raises ``ValueError`` instead
    of reaching bytes that may belong to someone else by then.  While views
    made from it (slices, ``memoryview(view)``, ``numpy.frombuffer``) are
    alive, ``free()`` raises ``BufferError`` and frees nothing.

    Slices of a memoryview share its buffer and outlive ``release()``, so
    the view is not the allocator's own (a slice of a whole region's view),
    but one with a buffer of its own on top of it: every slice made from it
    holds an export of ``_under``, and ``_under.release()`` fails while any
    of them is alive.
    """

    __slots__ = ("_allocator", "_freed", "_under", "addr", "size", "view")

    def __init__(self, allocator: Allocator, addr: int, size: int) -> None:
        self._allocator = allocator
        self.addr = addr
        self.size = size
        self._under = allocator.view(addr, size)
        self.view = self._own_view()
        self._freed = False

    def _own_view(self) -> memoryview:
        # PickleBuffer hands out _under's buffer itself: the memoryview made
        # from it starts a new buffer, exported by _under, not a slice of it.
        exporter = PickleBuffer(self._under)
        view = memoryview(exporter)
        exporter.release()
        return view

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
        try:
            self._under.release()
        except BufferError as exc:
            self.view = self._own_view()  # nothing was freed: the Block stays whole
            raise BufferError(
                f"cannot free block {self.addr:#x}: slices or copies of its view are"
                " still alive (release or drop them first)"
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
    """A multi-arena allocator over real memory.

    Keyword arguments are tunables (see :mod:`arenas.tunables`), plus balloc's
    fixed-buffer mode:

    * ``buffer``: a writable buffer (bytearray, mmap, ``SharedMemory.buf``) that
      becomes the main arena's heap; every block is carved from it.  It is
      never freed or closed by the allocator.
    * ``use_malloc``: when the buffer is full, grow with ordinary heaps and
      mappings (balloc's USE_MALLOC) instead of failing.
    * ``on_oom(size)``: called before ``OutOfMemory`` is raised (balloc's memNotifier).

    ``debug=True`` adds fill bytes, an integrity word and guard bytes to every
    block (see :mod:`arenas.debug`); damage is reported at ``free`` and
    ``check()``, and ``report_leaks()`` lists the live blocks.
    """

    # Methods an instance may rebind to a faster or a debugging version.
    _REBOUND = ("malloc", "free", "realloc", "calloc", "memalign", "usable_size", "view")

    def __init__(
        self,
        *,
        buffer: object = None,
        use_malloc: bool = False,
        on_oom: Callable[[int], object] | None = None,
        debug: bool = False,
        **tunables: Any,
    ) -> None:
        if on_oom is not None and not callable(on_oom):
            raise TypeError("on_oom must be callable")
        main_region = BufferRegion(buffer) if buffer is not None else None
        values = validate(tunables)
        if main_region is not None and not use_malloc:
            # Everything comes from the buffer: one arena, no mappings.
            values["arena_max"] = 1
            values["mmap_max"] = 0
        self._mp = mp = Params(values)
        self._main_region = main_region
        self._on_oom = on_oom
        self._budget = SystemBudget(mp.max_heap_bytes)
        self._heap_table = HeapTable()
        self._heaps = self._heap_table.heaps
        self._heap_mask = ~(mp.heap_max_size - 1)
        self._mmapped = MmappedChunks(self._budget)
        self._slab_table = SlabTable()
        # Every slab block handed to the user: address -> size class.  One dict
        # operation (atomic under the GIL) is what makes double and invalid
        # frees exact on the lock-free fast path.
        self._live: dict[int, int] = {}
        # How many blocks of each class a thread may cache: tcache_count, but no
        # more than tcache_max_bytes of one class (none of a class above it).
        self._tcache_counts = _tcache_counts(mp.tcache_count, mp.tcache_max_bytes)
        # Every thread's cache, by token, so that check(), stats() and a forked
        # child can see them; guarded by the registry lock.
        self._caches: dict[int, list[list[int]]] = {}
        self._registry = ArenaRegistry(
            self._new_arena, mp.arena_limit(), prefer_main=main_region is not None
        )
        main_heap = self._registry.main.heap
        self._main_lo = main_heap.base
        self._main_hi = main_heap.base + main_heap.max_size
        self._tls: Any = threading.local()
        self._closed = False
        # Told whenever the bound fast paths change (see _install_fast_paths).
        self._rebind_observers: list[Callable[[Allocator], None]] = []
        self._debugger: Debugger | None = None
        if debug:
            self._debugger = Debugger(
                Allocator.malloc.__get__(self),
                Allocator.free.__get__(self),
                Allocator.memalign.__get__(self),
                on_oom=on_oom,
            )
        self._install_fast_paths()
        _live_allocators.add(self)

    def _new_arena(self, index: int) -> Arena:
        region = self._main_region if index == 0 else None
        return Arena(index, self._mp, self._budget, self._heap_table, NCLASSES, region)

    @property
    def params(self) -> dict[str, int]:
        """The tunables in force."""
        return self._mp.as_dict()

    # ============================================================ arena_get
    def _attach_thread(self) -> Arena:
        """The slow path of ``arena_get``: this thread's first allocation."""
        self._require_open()
        registry = self._registry
        arena = registry.arena_get2()
        state = _ThreadState(self, arena)
        with registry.writing():
            self._caches[state.token] = state.tcache
        tls = self._tls
        tls.arena = arena
        tls.tcache = state.tcache
        tls.state = state
        return arena

    def _require_open(self) -> None:
        """Raise ``AllocatorError`` once the allocator is closed: its arenas are
        empty shells then, and a report or a check of them would be nonsense."""
        if self._closed:
            raise AllocatorError(CLOSED)

    def _switch_arena(self, arena: Arena) -> None:
        self._tls.arena = arena
        self._tls.state.arena = arena

    def _thread_exit(self, state: _ThreadState) -> None:
        if self._closed:
            return
        registry = self._registry
        with registry.writing():
            self._flush_cache(state.tcache)
            self._caches.pop(state.token, None)
            registry._detach(state.arena)

    def _flush_cache(self, tcache: list[list[int]]) -> None:
        for cls, cached in enumerate(tcache):
            if cached:
                blocks = cached[:]
                cached.clear()
                self._return_blocks(cls, blocks)

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
        if size.__class__ is int and 0 <= size <= SLAB_MAX:
            # The fast path: a hit in this thread's cache takes no lock.
            try:
                cached = self._tls.tcache[CLASS_OF[size]]
            except AttributeError:
                self._attach_thread()
                cached = self._tls.tcache[CLASS_OF[size]]
            if cached:
                addr: int = cached.pop()
                self._live[addr] = CLASS_OF[size]
                return addr
            return self._malloc_refill(size, cached)
        return self._malloc_chunk(size)

    def _malloc_refill(self, size: int, cached: list[int]) -> int:
        """A cache miss: a cached block of a slightly bigger class, or a batch from the slabs.

        A block cached in one of the next ``TCACHE_BORROW`` classes is already
        held by this thread: serving the request with it costs no lock and no
        new memory, where a refill would take more (docs/slabs.md measures
        what it saves).
        """
        cls = CLASS_OF[size]
        tls = self._tls
        tcache: list[list[int]] = tls.tcache
        for bigger in _BORROW_FROM[cls]:
            spare = tcache[bigger]
            if spare:
                addr: int = spare.pop()
                self._live[addr] = bigger
                return addr
        fill: list[int] = tls.state.fill
        want = fill[cls]
        most = (self._tcache_counts[cls] >> 1) + 1
        if want < most:
            fill[cls] = min(want * 2, most)
        else:
            want = most  # (tcache_count may have been lowered since)
        arena: Arena = tls.arena
        table = self._slab_table
        main = self._registry.main
        with arena.lock:
            blocks = take_blocks(arena, cls, want, table, grow=arena is main)
        if not blocks:
            if arena is not main:
                blocks = self._refill_elsewhere(arena, main, cls, want)
            if not blocks:
                # No room for a whole slab: an ordinary chunk may still fit.
                return self._malloc_chunk(size)
        blocks.reverse()
        addr = blocks.pop()
        cached.extend(blocks)
        self._live[addr] = cls
        return addr

    def _refill_elsewhere(self, arena: Arena, main: Arena, cls: int, want: int) -> list[int]:
        """A non-main arena would have to grow its heap for a new slab.

        Memory the main arena holds already freed (blocks in its partial
        slabs, free chunks left by a burst that ended) is used first, if its
        lock is free at once: otherwise a thread that finished its work on
        the main arena pins memory there that no other thread can reach.
        The main arena's top is left alone, so that threads stay on their
        own arenas while there is no freed memory to reuse.  Then the arena
        grows; then the main arena grows (glibc's ``arena_get_retry``).
        """
        table = self._slab_table
        blocks: list[int] = []
        if main.lock.acquire(blocking=False):
            try:
                blocks = take_blocks(main, cls, want, table, top=False, grow=False)
            finally:
                main.lock.release()
        if not blocks:
            with arena.lock:
                blocks = take_blocks(arena, cls, want, table)
        if not blocks:
            with main.lock:
                blocks = take_blocks(main, cls, want, table)
        return blocks

    def _malloc_chunk(self, size: int) -> int:
        """glibc's malloc proper: a chunk from the arena, or a mapping of its own."""
        if size.__class__ is not int or size < 0 or size > MAX_REQUEST:
            size = self._size(size)
        nb = (size + 23) & ~15 if size > 8 else 32
        if nb >= self._mp.mmap_threshold:
            mem = self._mmapped.alloc(nb, MALLOC_ALIGNMENT, self._mp.mmap_max)
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
        cap = self._mp.max_heap_bytes
        tried = f"arena {arena.index}"
        if other is not arena:
            tried += f" and arena {other.index}"
        raise self._oom(
            size,
            f"cannot allocate {size} bytes: {tried} cannot grow"
            + (f" (max_heap_bytes={cap})" if cap else ""),
        )

    def _size(self, size: object, what: str = "size") -> int:
        """Check a size argument; an impossible size tells ``on_oom`` too."""
        return checked_request(size, what, self._on_oom)

    def _oom(self, size: int, message: str) -> OutOfMemory:
        """The ``OutOfMemory`` to raise, after telling ``on_oom`` (balloc's memNotifier)."""
        if self._on_oom is not None:
            self._on_oom(size)
        return OutOfMemory(message)

    def calloc(self, n: int, size: int) -> int:
        """Allocate ``n * size`` zeroed bytes; an overflowing product raises ``OutOfMemory``."""
        total = calloc_request(n, size, self._on_oom)
        mem = Allocator.malloc(self, total)  # never perturbed, as in glibc
        if mem not in self._mmapped.chunks:  # fresh mappings are already zero
            _memset(mem, 0, self.usable_size(mem))
        return mem

    def memalign(self, alignment: int, size: int) -> int:
        """Allocate ``size`` bytes at an address that is a multiple of ``alignment``."""
        alignment = self._size(alignment, "alignment")
        if alignment == 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        size = self._size(size)
        if alignment <= MALLOC_ALIGNMENT:
            return Allocator.malloc(self, size)
        if size > MAX_REQUEST - alignment - 64:
            raise self._oom(size, f"cannot allocate {size} bytes aligned to {alignment}")
        nb = request2size(size)
        if nb + alignment >= self._mp.mmap_threshold:
            mem = self._mmapped.alloc(nb, alignment, self._mp.mmap_max)
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

    def strdup(self, data: bytes | bytearray | memoryview) -> int:
        """A NUL-terminated copy of ``data`` (any bytes-like object)."""
        src = checked_strdup(data)
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
        cls = self._live.pop(addr, None)
        if cls is not None:
            self._free_popped(addr, cls)
            return
        try:
            heap = self._heaps.get(addr & self._heap_mask)
        except TypeError:
            heap = None
        if heap is None:
            self._free_slow(addr)
            return
        arena = heap.arena
        try:
            with arena.lock:
                arena._int_free(heap, addr)
        except InvalidPointer as exc:
            raise self._diagnose_slab(addr) or exc from None

    def _free_popped(self, addr: int, cls: int) -> None:
        """Free a slab block already taken out of ``_live``: into this thread's cache,
        whichever thread allocated it, or home when the cache is full."""
        if addr.__class__ is not int:
            self._live[int(addr)] = cls
            checked_address(addr)
        try:
            cached = self._tls.tcache[cls]
        except AttributeError:
            self._attach_thread()
            cached = self._tls.tcache[cls]
        if len(cached) < self._tcache_counts[cls]:
            cached.append(addr)
            return
        self._flush(cls, cached, addr)

    def _flush(self, cls: int, cached: list[int], addr: int) -> None:
        """The cache of this class is full: send half of it, and ``addr``, home."""
        keep = len(cached) >> 1
        blocks = cached[keep:]
        del cached[keep:]
        blocks.append(addr)
        self._return_blocks(cls, blocks)

    def _return_blocks(self, cls: int, blocks: list[int]) -> None:
        """Give blocks back to their slabs, each under its own arena's lock."""
        table = self._slab_table
        owners = table.owners(blocks, cls)
        keep_spare = self._tcache_counts[cls] == 0
        arena = owners[0].arena
        for slab in owners:
            if slab.arena is not arena:
                break
        else:  # the usual case: one arena, one lock
            with arena.lock:
                return_blocks(arena, cls, blocks, owners, table, keep_spare)
            return
        by_arena: dict[Arena, tuple[list[int], list[Slab]]] = {}
        for addr, slab in zip(blocks, owners, strict=True):
            mine, theirs = by_arena.setdefault(slab.arena, ([], []))
            mine.append(addr)
            theirs.append(slab)
        for arena, (mine, theirs) in by_arena.items():
            with arena.lock:
                return_blocks(arena, cls, mine, theirs, table, keep_spare)

    def _diagnose_slab(self, addr: int) -> InvalidPointer | None:
        """If ``addr`` points into a slab, say exactly what is wrong with it."""
        slab = self._slab_table.find(addr)
        if slab is None:
            return None
        if not slab.is_block(addr):
            return InvalidPointer(
                f"free(): invalid pointer {addr:#x}: inside a {slab.size}-byte slab block"
            )
        if any(addr in cache[slab.cls] for cache in list(self._caches.values())):
            return DoubleFree(f"free(): double free detected in tcache: {addr:#x}")
        return DoubleFree(f"free(): double free detected: slab block {addr:#x} is already free")

    def _free_slow(self, addr: int) -> None:
        addr = checked_address(addr)
        if addr == 0:
            return
        if self._main_lo <= addr < self._main_hi:
            main = self._registry.main
            try:
                with main.lock:
                    main._int_free(main.heap, addr)
            except InvalidPointer as exc:
                raise self._diagnose_slab(addr) or exc from None
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
            return AllocatorError(CLOSED)
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
            size = self._size(size)
        addr = addr if addr.__class__ is int else checked_address(addr)
        if addr == 0:
            return self.malloc(size)
        if size == 0:
            self.free(addr)
            return 0
        region, usable = self._locate(addr, "realloc")
        cls = self._live.get(addr)
        if cls is not None:
            if size <= usable:
                return addr  # a slab block keeps its class when it shrinks
            new = self.malloc(size)
            self._locate(new, "realloc")[0].view(new, usable)[:] = region.view(addr, usable)
            self.free(addr)
            return new
        nb = request2size(size)
        heap = self._heap_of(addr)
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
        self._locate(new, "realloc")[0].view(new, n)[:] = region.view(addr, n)
        self.free(addr)
        return new

    # ============================================================ inspection
    def _heap_of(self, addr: int) -> Heap | None:
        """The heap an address falls in: an aligned heap by mask, else the main heap by
        range; None for addresses in no heap (mapped chunks, foreign memory)."""
        heap = self._heaps.get(addr & self._heap_mask)
        if heap is None and self._main_lo <= addr < self._main_hi:
            heap = self._registry.main.heap
        return heap

    def _locate(self, addr: int, op: str) -> tuple[Region, int]:
        """The region holding the live block ``addr`` and its usable size; errors name ``op``."""
        if addr.__class__ is not int:
            addr = checked_address(addr)
        cls = self._live.get(addr)
        if cls is not None:
            slab = self._slab_table.owners([addr], cls)[0]
            return slab.heap.region, CLASS_SIZES[cls]
        heap = self._heap_of(addr)
        if heap is not None:
            size = heap.arena.in_use.get(addr)
            if size is None or addr - CHUNK_HDR_SZ in heap.arena.slabs:
                bad = self._diagnose_slab(addr) or heap.arena.diagnose_bad_pointer(addr)
                raise for_call(bad, op, addr)
            return heap.region, size - SIZE_SZ
        region = self._mmapped.chunks.get(addr)
        if region is None:
            raise for_call(self._foreign(checked_address(addr)), op, addr)
        return region, self._mmapped.chunk_size(region, addr) - CHUNK_HDR_SZ

    def usable_size(self, addr: int) -> int:
        """How many bytes the block at ``addr`` can hold (glibc's ``malloc_usable_size``)."""
        if checked_address(addr) == 0:
            return 0
        return self._locate(addr, "usable_size")[1]

    def view(self, addr: int, size: int | None = None) -> memoryview:
        """A writable view of the block at ``addr``: ``size`` bytes, or all usable bytes."""
        region, usable = self._locate(addr, "view")
        if size is None:
            size = usable
        elif size.__class__ is not int or not 0 <= size <= usable:
            self._size(size)
            raise ValueError(f"view of {size} bytes exceeds block {addr:#x} ({usable} usable)")
        return region.view(addr, size)

    def alloc(self, size: int) -> Block:
        """Allocate ``size`` bytes as a :class:`Block` (with a view of exactly ``size``)."""
        return Block(self, self.malloc(size), size)

    def heap_for_ptr(self, addr: int) -> int:
        """The base address of the heap holding block ``addr`` (``addr & ~(HEAP_MAX_SIZE-1)``
        for a non-main arena, the main heap's base for the main arena)."""
        self._locate(addr, "heap_for_ptr")
        heap = self._heap_of(addr)
        if heap is None:
            raise InvalidPointer(f"block {addr:#x} has a mapping of its own, not a heap")
        return heap.base

    def arena_for(self, addr: int) -> int | None:
        """The index of the arena owning block ``addr`` (0 = main), None for a mapped chunk."""
        self._locate(addr, "arena_for")
        heap = self._heap_of(addr)
        return None if heap is None else heap.arena.index

    def check(self, quiet: bool | None = None) -> None:
        """Walk every arena, heap, bin, slab and mapping; raise ``HeapCorruption`` if anything
        is off.

        Each arena is checked under its own lock, so that part is exact
        whatever other threads do.  The slab accounting across threads (every
        block live, cached by some thread, or free in its slab, exactly once)
        reads the threads' caches, which are lock-free: while other threads
        allocate, a block can be on its way between them, and no snapshot is
        exact.  So it runs only when ``quiet``: by default, when the calling
        thread is the only one attached; pass ``quiet=True`` when you know the
        other threads are idle, ``False`` to skip it.
        """
        registry = self._registry
        with registry.writing():
            self._require_open()
            arenas = list(registry.arenas)
            for arena in arenas:
                with arena.lock:
                    arena.check()
                    if arena.is_main and len(arena.heaps) != 1:
                        raise HeapCorruption("the main arena must own exactly its main heap")
                    if not arena.is_main:
                        for heap in arena.heaps:
                            if self._heaps.get(heap.base) is not heap:
                                raise HeapCorruption(f"heap {heap.base:#x} missing from the table")
                    self._check_slabs(arena)
            if quiet is None:
                quiet = sum(a.attached_threads for a in arenas) <= 1
            if quiet:
                self._check_slab_blocks(arenas)
            for arena, limit in zip(registry.arenas, registry.created_under, strict=True):
                if arena.index >= limit:
                    raise HeapCorruption(f"arena {arena.index} was made beyond arena_max={limit}")
            for arena in registry.arenas:
                if arena.attached_threads < 0:
                    raise HeapCorruption(f"arena {arena.index} has negative attached threads")
                if (arena.attached_threads == 0) != (arena in registry.free_list):
                    raise HeapCorruption(f"arena {arena.index} free-list membership is wrong")
            owned = sum(len(a.heaps) for a in registry.arenas if not a.is_main)
            if owned != len(self._heaps):
                raise HeapCorruption("the heap table holds heaps no arena owns")
        with self._mmapped.lock:
            for mem, region in self._mmapped.chunks.items():
                self._mmapped.chunk_size(region, mem)
        if self._debugger is not None:
            self._debugger.check()

    def _check_slabs(self, arena: Arena) -> None:
        """One arena's slabs against its chunks and lists (arena lock held)."""
        table = self._slab_table.slabs
        for base, slab in arena.slabs.items():
            where = f"slab {base:#x} (class {slab.size}) of arena {arena.index}"
            windows = SlabTable.windows(slab)
            if slab.arena is not arena or any(slab not in table.get(key, ()) for key in windows):
                raise HeapCorruption(f"{where} is missing from the slab table")
            if arena.in_use.get(base + CHUNK_HDR_SZ) != CLASS_SLAB_BYTES[slab.cls]:
                raise HeapCorruption(f"{where} is not an in-use chunk of its class's length")
            if slab.heap is not arena.heap_of(base):
                raise HeapCorruption(f"{where} records a heap that does not hold it")
            untouched = (slab.end - slab.bump) // slab.size
            if slab.nfree != len(slab.free) + untouched or len(set(slab.free)) != len(slab.free):
                raise HeapCorruption(f"{where}: free count disagrees with its free list")
            if any(not slab.is_block(b) or b >= slab.bump for b in slab.free):
                raise HeapCorruption(f"{where}: free list holds a non-block")
            if (slab.nfree > 0) != (base in arena.slab_partial[slab.cls]):
                raise HeapCorruption(f"{where}: partial-list membership is wrong")
        for cls, partial in enumerate(arena.slab_partial):
            for base, slab in partial.items():
                if arena.slabs.get(base) is not slab or slab.cls != cls:
                    raise HeapCorruption(f"arena {arena.index}: stale slab {base:#x} in a list")

    def _check_slab_blocks(self, arenas: list[Arena]) -> None:
        """Every slab block is live, cached or free in its slab: exactly one of them."""
        held: dict[Slab, int] = {}
        seen: set[int] = set()
        table = self._slab_table

        def claim(addr: int, cls: int, what: str) -> None:
            slab = table.slab_of(addr, cls)
            if slab is None or not slab.is_block(addr) or addr >= slab.bump:
                raise HeapCorruption(f"{what} block {addr:#x} is not a block of any slab")
            if addr in seen:
                raise HeapCorruption(f"block {addr:#x} is {what} and also elsewhere")
            seen.add(addr)
            held[slab] = held.get(slab, 0) + 1

        for addr, cls in list(self._live.items()):
            claim(addr, cls, "live")
        for cache in self._caches.values():
            for cls, cached in enumerate(cache):
                for addr in cached:
                    claim(addr, cls, "cached")
        for arena in arenas:
            with arena.lock:
                for slab in arena.slabs.values():
                    for addr in slab.free:
                        if addr in seen:
                            raise HeapCorruption(f"block {addr:#x} is free and also in use")
                    if held.get(slab, 0) + slab.nfree != slab.capacity:
                        raise HeapCorruption(
                            f"slab {slab.base:#x}: {held.get(slab, 0)} held + {slab.nfree} free"
                            f" != {slab.capacity} blocks"
                        )
        owned = sum(len(a.slabs) for a in arenas)
        entered = {slab for found in table.slabs.values() for slab in found}
        if table.count != owned or len(entered) != owned:
            raise HeapCorruption("the slab table holds slabs no arena owns")

    def stats(self) -> Stats:
        """A snapshot of every arena and mapping (glibc's ``mallinfo2`` and more)."""
        per: list[ArenaStats] = []
        with self._registry.reading():
            self._require_open()
            arenas = list(self._registry.arenas)
        if arenas:
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
        with self._registry.reading():
            tcache_blocks = tcache_bytes = 0
            for cache in self._caches.values():
                for cls, cached in enumerate(cache):
                    tcache_blocks += len(cached)
                    tcache_bytes += len(cached) * CLASS_SIZES[cls]
        slab_count = slab_bytes = slab_free = 0
        for arena in arenas:
            with arena.lock:
                slab_count += len(arena.slabs)
                for slab in arena.slabs.values():
                    slab_bytes += CLASS_SLAB_BYTES[slab.cls]
                    slab_free += slab.nfree
        live = self._live
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
            slabs=slab_count,
            slab_bytes=slab_bytes,
            slab_blocks_live=len(live),
            slab_live_bytes=sum(CLASS_SIZES[c] for c in list(live.values())),
            slab_blocks_free=slab_free,
            tcache_blocks=tcache_blocks,
            tcache_bytes=tcache_bytes,
        )

    def malloc_stats(self, file: TextIO | None = None) -> None:
        """Print glibc's ``malloc_stats`` report (to standard error by default)."""
        print(format_malloc_stats(self.stats()), end="", file=file or sys.stderr)

    def malloc_info(self) -> str:
        """glibc's ``malloc_info`` XML: per arena, its free chunks by size, and totals."""
        with self._registry.reading():
            self._require_open()
            arenas = list(self._registry.arenas)
        return format_malloc_info(self.stats(), [self._bin_histogram(a) for a in arenas])

    @staticmethod
    def _bin_histogram(arena: Arena) -> list[tuple[str, int, int, int, int]]:
        """``(kind, from, to, total, count)`` per non-empty bin, as malloc_info lists them."""
        rows: list[tuple[str, int, int, int, int]] = []
        with arena.lock:
            bins = arena.bins
            for idx, small in enumerate(bins.small):
                if small:
                    size = idx << 4
                    rows.append(("size", size - 15, size, size * len(small), len(small)))
            for large in bins.large:
                if large:
                    sizes = [size for size, _ in large]
                    rows.append(("size", sizes[0], sizes[-1], sum(sizes), len(sizes)))
            if bins.unsorted:
                sizes = [bins.free[c] for c in bins.unsorted]
                rows.append(("unsorted", min(sizes), max(sizes), sum(sizes), len(sizes)))
        return rows

    # ================================================================= trim
    def trim(self, pad: int = 0) -> int:
        """glibc's ``malloc_trim``: give free memory back to the OS; returns the bytes released.

        The calling thread's cache is flushed first, so its blocks can go
        home; then, in every arena: wholly free spare slabs are freed, heaps
        that emptied out are unmapped (in the middle of an arena's chain too),
        each top chunk is cut down to ``pad`` bytes, and whole pages inside
        free chunks are advised away with ``MADV_DONTNEED``.
        """
        pad = self._size(pad, "pad")
        registry = self._registry
        state: _ThreadState | None = getattr(self._tls, "state", None)
        with registry.writing():
            self._require_open()
            if state is not None:
                self._flush_cache(state.tcache)
            arenas = list(registry.arenas)
        released = 0
        for arena in arenas:
            with arena.lock:
                released += release_spares(arena, self._slab_table)
                if not arena.is_main:
                    released += arena.drop_empty_heaps()
                    released += arena.heap_trim()
                released += arena.trim_top(pad)
                released += arena.discard_free_pages()
        return released

    # =============================================================== mallopt
    def mallopt(self, param: int | str, value: int) -> None:
        """Change a tunable at run time: an ``M_*`` number (glibc's) or a tunable name.

        Raises ``ValueError`` naming the tunable and its valid range; nothing
        changes unless the value is valid.
        """
        name = mallopt_name(param)
        value = validate({name: value})[name]
        mp = self._mp
        with self._registry.writing():
            self._require_open()
            setattr(mp, name, value)
            if name in ("mmap_threshold", "trim_threshold"):
                mp.no_dyn_threshold = True
            elif name == "arena_max":
                mp.arena_max_set = True
            elif name in ("tcache_count", "tcache_max_bytes"):
                self._tcache_counts = _tcache_counts(mp.tcache_count, mp.tcache_max_bytes)
            elif name == "max_heap_bytes":
                self._budget.cap = value
            self._registry.arena_max = mp.arena_limit()
        if name in ("perturb", "tcache_count", "tcache_max_bytes"):
            self._install_fast_paths()
            # This thread's cache obeys the new bounds at once; others as they free.
            state: _ThreadState | None = getattr(self._tls, "state", None)
            if state is not None:
                with self._registry.writing():
                    self._flush_cache(state.tcache)

    # ============================================================ fast paths
    def _install_fast_paths(self) -> None:
        """Rebind this instance's methods for its current settings; tell the observers."""
        for name in self._REBOUND:
            self.__dict__.pop(name, None)
        try:
            self._bind_fast_paths()
        finally:
            for observer in self._rebind_observers:
                observer(self)

    def on_rebind(self, observer: Callable[[Allocator], None]) -> None:
        """Call ``observer(self)`` now and whenever the bound methods change.

        The module-level functions use this to hold the default allocator's
        bound methods directly, with no extra call in between.
        """
        self._rebind_observers.append(observer)
        observer(self)

    def _bind_fast_paths(self) -> None:
        """Bind ``malloc`` and ``free`` (and more in debug mode) to the fastest versions.

        The methods of the class are the reference implementation.  The
        closures below repeat only their first lines, a thread-cache hit, with
        every name they touch held in a closure cell instead of looked up on
        ``self``; anything else falls through to the class methods.  In debug
        mode the Debugger's methods are bound; with ``perturb`` set, filling
        versions are.  An allocator without those pays nothing for them.
        """
        debugger = self._debugger
        if debugger is not None:
            self.malloc = debugger.malloc  # type: ignore[method-assign]
            self.free = debugger.free  # type: ignore[method-assign]
            self.realloc = debugger.realloc  # type: ignore[method-assign]
            self.calloc = debugger.calloc  # type: ignore[method-assign]
            self.memalign = debugger.memalign  # type: ignore[method-assign]
            self.usable_size = debugger.usable_size  # type: ignore[method-assign]
            self.view = self._debug_view  # type: ignore[method-assign]
            return
        if self._mp.perturb:
            self.malloc = self._malloc_perturbed  # type: ignore[method-assign]
            self.free = self._free_perturbed  # type: ignore[method-assign]
            return
        tls = self._tls
        live = self._live
        counts = self._tcache_counts
        class_of = CLASS_OF
        reference_malloc: Callable[[int], int] = Allocator.malloc.__get__(self)
        reference_free: Callable[[int], None] = Allocator.free.__get__(self)
        free_popped = self._free_popped
        refill = self._malloc_refill

        def malloc(size: int) -> int:
            if size.__class__ is int and size >= 0:
                try:
                    cls = class_of[size]  # IndexError above SLAB_MAX
                    cached = tls.tcache[cls]  # AttributeError before the thread attaches
                except (IndexError, AttributeError):
                    cached = None  # (outside the handler, so errors do not chain to it)
                if cached:
                    addr: int = cached.pop()
                    live[addr] = cls
                    return addr
                if cached is not None:
                    return refill(size, cached)
            return reference_malloc(size)

        def free(addr: int) -> None:
            cls = live.pop(addr, None)  # atomic: of two racing frees, one wins
            if cls is None:
                return reference_free(addr)
            if addr.__class__ is int:
                try:
                    cached = tls.tcache[cls]
                except AttributeError:
                    return free_popped(addr, cls)
                if len(cached) < counts[cls]:
                    cached.append(addr)
                    return None
            return free_popped(addr, cls)

        malloc.__doc__ = Allocator.malloc.__doc__
        free.__doc__ = Allocator.free.__doc__
        self.malloc = malloc  # type: ignore[method-assign]
        self.free = free  # type: ignore[method-assign]

    def _debug_view(self, addr: int, size: int | None = None) -> memoryview:
        assert self._debugger is not None
        # One look at the record: another thread may free the block just after.
        record = self._debugger.record(checked_address(addr), "view")
        usable = record.size
        if size is None:
            size = usable
        elif size.__class__ is not int or not 0 <= size <= usable:
            self._size(size)
            raise ValueError(f"view of {size} bytes exceeds block {addr:#x} ({usable} bytes)")
        return self._locate(record.raw, "view")[0].view(addr, size)

    def report_leaks(self) -> list[Leak]:
        """Live blocks with their sizes and allocating threads (needs ``debug=True``)."""
        if self._debugger is None:
            raise AllocatorError("report_leaks() needs Allocator(debug=True)")
        return self._debugger.report_leaks()

    def _malloc_perturbed(self, size: int) -> int:
        addr = Allocator.malloc(self, size)
        _memset(addr, self._mp.perturb ^ 0xFF, self.usable_size(addr))
        return addr

    def _free_perturbed(self, addr: int) -> None:
        if addr:
            _memset(addr, self._mp.perturb, self.usable_size(addr))
        Allocator.free(self, addr)

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
            for name in self._REBOUND:
                self.__dict__.pop(name, None)
            for observer in self._rebind_observers:
                observer(self)
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
        self._live.clear()
        self._caches.clear()
        self._slab_table.slabs.clear()
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
        self._slab_table.lock = threading.Lock()
        tls = self._tls
        survivor: Arena | None = getattr(tls, "arena", None)
        self._registry.reset_after_fork(survivor)
        state = getattr(tls, "state", None)
        if state is not None:
            state.pid = os.getpid()
        # The other threads are gone; glibc leaks their tcaches, we take them back.
        for token, cache in list(self._caches.items()):
            if state is None or token != state.token:
                self._flush_cache(cache)
                del self._caches[token]
        self._reclaim_orphans()

    def _reclaim_orphans(self) -> None:
        """In a forked child: return slab blocks that no one holds any more.

        A thread that did not survive the fork may have been carrying blocks
        between a slab and its cache (a refill, a flush, a block between the
        cache and the live table).  Nothing can reach them now, and the only
        thread left is inside ``os.fork``, not the allocator, so every block
        that is neither live, cached nor free goes back to its slab.
        """
        held = set(self._live)
        for cache in self._caches.values():
            for cached in cache:
                held.update(cached)
        for arena in self._registry.arenas:
            for slab in arena.slabs.values():
                free = set(slab.free)
                orphans = [
                    addr
                    for addr in range(slab.base + CHUNK_HDR_SZ, slab.bump, slab.size)
                    if addr not in held and addr not in free
                ]
                if orphans:
                    slab.free += orphans
                    slab.nfree += len(orphans)
                    arena.slab_partial[slab.cls][slab.base] = slab


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
