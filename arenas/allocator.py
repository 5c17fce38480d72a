"""The allocator: glibc's public entry points (``__libc_malloc`` and friends).

:class:`Allocator` is what a program talks to.  Each call does what glibc's
wrappers do:

* ``malloc``  a request of at most ``SLAB_MAX`` bytes is served by the
  calling thread's cache (:mod:`arenas.tcache`); a bigger one of
  ``mmap_threshold`` or more gets a mapping of its own; anything else goes to
  the calling thread's arena (``arena_get``: a thread-local lookup), under
  that arena's lock, with ``arena_get_retry`` when the arena cannot serve;
* ``free``    a slab block goes into the freeing thread's cache; a chunk
  finds its arena from the address alone: an aligned heap by masking
  (``heap_for_ptr``), the main heap by range, or a mapping by lookup, and is
  freed under *that* arena's lock, whichever thread calls;
* ``realloc``, ``memalign``, ``calloc`` the same, built on the arena's
  ``_int_*`` operations.

Every path that reads or writes a block's bytes (a realloc's copy, a
calloc's clear, the perturb fill) does it while the block is its own: just
allocated, taken out of its live table (:meth:`ThreadCaches.claim`) or of
the mapping table (:meth:`MmappedChunks.claim`), or under its arena's lock.
So a racing free of the same block gets an error, never the bytes of a block
someone else has by then, and never an unmapped page.

Locking: the hot paths take at most one arena lock.  The thread caches need
none (see :mod:`arenas.tcache`).  ``_registry`` has its reader-writer lock,
used when a thread attaches or detaches and by ``check``, ``stats``,
``trim``, ``mallopt`` and ``close``.  ``_closed`` is written under the
registry's write lock and read without it (one attribute load).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from . import fork
from .arena import Arena
from .block import Block
from .chunk import (
    CHUNK_HDR_SZ,
    MALLOC_ALIGNMENT,
    MAX_REQUEST,
    MINSIZE,
    SIZE_SZ,
    calloc_request,
    checked_address,
    checked_count,
    checked_request,
    checked_strdup,
    request2size,
)
from .debug import Debugger, Leak
from .errors import (
    CLOSED,
    AllocatorError,
    InvalidPointer,
    OutOfMemory,
    for_call,
)
from .fork import Lockable
from .heap import Heap, HeapTable
from .hotpath import HotPath
from .large import MmappedChunks
from .memory import BufferRegion, Region, SystemBudget, retry_deferred_unmaps
from .ptmalloc import GlibcArena, GlibcPolicy
from .registry import ArenaRegistry
from .slab import CLASS_OF, CLASS_SIZES, SLAB_MAX, SlabTable
from .stats import Stats, collect, format_malloc_info, format_malloc_stats
from .tcache import ThreadCache, ThreadCaches, cache_counts
from .tunables import Params, mallopt_name, validate

__all__ = ["Allocator", "Block"]

_memset = ctypes.memset
_memmove = ctypes.memmove
# request2size's terms, for the chunk path's inlined copy.
_CHUNK_PAD = SIZE_SZ + MALLOC_ALIGNMENT - 1
_CHUNK_ROUND = ~(MALLOC_ALIGNMENT - 1)
_SMALLEST = MINSIZE - SIZE_SZ  # the largest request a MINSIZE chunk serves


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

    ``malloc`` and ``free`` are the thread cache's hit path
    (:class:`arenas.hotpath.HotPath`), bound to this allocator when it is made
    and never rebound: a reference taken at any time sees every later change.
    """

    malloc: Callable[[int], int]
    free: Callable[[int], None]

    def __init__(
        self,
        *,
        buffer: object = None,
        use_malloc: bool = False,
        on_oom: Callable[[int], object] | None = None,
        debug: bool = False,
        policy: str = "default",
        **tunables: Any,
    ) -> None:
        if on_oom is not None and not callable(on_oom):
            raise TypeError("on_oom must be callable")
        if not isinstance(policy, str):
            raise TypeError(f"policy must be a str, not {type(policy).__name__}")
        values = validate(tunables, policy)
        main_region = BufferRegion(buffer) if buffer is not None else None
        if main_region is not None and not use_malloc:
            # Everything comes from the buffer: one arena, no mappings.
            values["arena_max"] = 1
            values["mmap_max"] = 0
        self._mp = mp = Params(values, policy)
        self._main_region = main_region
        self._on_oom = on_oom
        self._budget = SystemBudget(mp.max_heap_bytes)
        self._heap_table: HeapTable[Arena] = HeapTable(mp.heap_max_size)
        self._heap_of = self._heap_table.heap_for_ptr
        self._mmapped = MmappedChunks(self._budget)
        self._slab_table = SlabTable()
        # The glibc policy's chunks parked in threads' tcaches (user address -> bin).
        self._tcached: dict[int, int] = {}
        self._registry = ArenaRegistry(
            self._new_arena,
            mp.arena_limit(),
            prefer_main=main_region is not None,
            glibc_order=policy == "glibc",
        )
        self._closed = False
        self._caches = ThreadCaches(
            self._registry,
            self._slab_table,
            self._heap_table,
            mp,
            cache_counts(mp.tcache_count, mp.tcache_max_bytes),
        )
        hot = HotPath(
            self._caches.tls,
            self.malloc_slow,
            self.free_slow,
            module=__name__,
            owner=type(self).__qualname__,
        )
        # The plain paths, whatever the mode: what debug mode wraps.
        self._malloc = hot.malloc
        self._free = hot.free
        self._glibc: GlibcPolicy | None = None
        memalign = Allocator.memalign.__get__(self)
        if policy == "glibc":
            # glibc's paths instead of the slabs' (see arenas/ptmalloc.py).
            self._glibc = glibc = GlibcPolicy(
                self._registry,
                self._heap_table,
                self._mmapped,
                mp,
                self._tcached,
                lambda: self._closed,
                on_oom,
            )
            self._malloc = glibc.malloc
            self._free = glibc.free
            self.realloc = glibc.realloc  # type: ignore[method-assign]
            self.calloc = glibc.calloc  # type: ignore[method-assign]
            self.memalign = memalign = glibc.memalign  # type: ignore[method-assign]
        self.malloc = self._malloc
        self.free = self._free
        self._debugger: Debugger | None = None
        if debug:
            self._debugger = debugger = Debugger(
                self._malloc,
                self._free,
                memalign,
                view=Allocator.view.__get__(self),
                on_oom=on_oom,
            )
            self.malloc = debugger.malloc
            self.free = debugger.free
            self.realloc = debugger.realloc  # type: ignore[method-assign]
            self.calloc = debugger.calloc  # type: ignore[method-assign]
            self.memalign = debugger.memalign  # type: ignore[method-assign]
            self.usable_size = debugger.usable_size  # type: ignore[method-assign]
            self.view = self._debug_view  # type: ignore[method-assign]
        if mp.perturb:
            self._caches.gate(True)
        fork.register(self, fork.ALLOCATOR)

    def _new_arena(self, index: int, request: int) -> Arena:
        region = self._main_region if index == 0 else None
        if self._mp.policy == "glibc":
            return GlibcArena(
                index,
                self._mp,
                self._budget,
                self._heap_table,
                self._slab_table,
                region,
                request,
                self._mmapped,
                self._tcached,
            )
        return Arena(index, self._mp, self._budget, self._heap_table, self._slab_table, region)

    @property
    def policy(self) -> str:
        """The policy this allocator follows: ``"default"`` or ``"glibc"``."""
        return self._mp.policy

    @property
    def glibc(self) -> GlibcPolicy | None:
        """The glibc policy's front end (its threads' tcaches), or None."""
        return self._glibc

    @property
    def params(self) -> dict[str, int]:
        """The tunables in force."""
        return self._mp.as_dict()

    @property
    def caches(self) -> ThreadCaches:
        """The thread caches: read-only views for ``inspect`` and the module functions."""
        return self._caches

    def arena_list(self) -> list[Arena]:
        """The arenas, read under the registry's lock (each is then read under its own)."""
        self._caches.reap()
        if self._glibc is not None:
            self._glibc.reap()
        with self._registry.reading():
            self._require_open()
            return list(self._registry.arenas)

    def arena(self, index: int) -> Arena:
        """Arena ``index`` (0 is the main arena); ``ValueError`` if there is none."""
        arenas = self.arena_list()
        if checked_count(index, "arena") >= len(arenas):
            raise ValueError(f"no arena {index}: there are {len(arenas)}")
        return arenas[index]

    def _require_open(self) -> None:
        """Raise ``AllocatorError`` once the allocator is closed: its arenas are
        empty shells then, and a report or a check of them would be nonsense."""
        if self._closed:
            raise AllocatorError(CLOSED)

    def thread_exit(self) -> None:
        """Do now what the calling thread's end would do: its cache goes home (glibc's
        tcache shutdown, for the glibc policy) and its arena is detached, free for the
        next new thread.  The thread may allocate again later: it attaches anew."""
        self._require_open()
        if self._glibc is not None:
            self._glibc.thread_exit()
        else:
            self._caches.exit_current()

    def thread_arena(self) -> int:
        """The index of the calling thread's arena (attaching it if needed)."""
        if self._glibc is not None:
            return self._glibc.current().arena.index
        return self._caches.current().arena.index

    # ================================================================ malloc
    def malloc_slow(self, size: Any) -> int:
        """``malloc``'s slow path: whatever its hit path could not serve."""
        if size.__class__ is int and 0 <= size <= SLAB_MAX:
            caches = self._caches
            addr = caches.serve(caches.current(), size)
            if not addr:  # no room for a whole slab: an ordinary chunk may still fit
                addr = self._malloc_chunk(size)
        else:
            addr = self._malloc_chunk(size)
        perturb = self._mp.perturb
        if perturb:  # (the block is ours alone until we return it)
            _memset(addr, perturb ^ 0xFF, self._locate(addr, "malloc")[1])
        return addr

    def _malloc_chunk(self, size: Any, alignment: int = 0) -> int:
        """glibc's malloc proper: a chunk from the arena, or a mapping of its own.

        With an ``alignment`` (a power of two above ``MALLOC_ALIGNMENT``), glibc's
        ``_mid_memalign``: the same, aligned.
        """
        if size.__class__ is not int or size < 0 or size > MAX_REQUEST:
            size = self._size(size)
        cache: ThreadCache
        try:  # (ThreadCaches.current, inlined: this thread's cache, once it is attached)
            cache = self._caches.tls.cache
        except AttributeError:
            cache = self._caches.current()
        if self._closed:
            raise AllocatorError(CLOSED)
        # (request2size, inlined: the chunk path serves mostly sizes above MINSIZE)
        nb = (size + _CHUNK_PAD) & _CHUNK_ROUND if size > _SMALLEST else MINSIZE
        mp = self._mp
        if nb + alignment >= mp.mmap_threshold:
            mem = self._mmapped.alloc(nb, alignment or MALLOC_ALIGNMENT, mp.mmap_max)
            if mem:
                return mem
        arena = cache.arena
        lock = arena.lock
        # acquire/release rather than ``with``: half the cost on 3.11, whose ``with``
        # calls ``__exit__`` with three arguments; the chunk path is that short.
        lock.acquire()
        try:
            mem = arena.int_memalign(alignment, nb) if alignment else arena.int_malloc(nb)
        finally:
            lock.release()
        if mem:
            return mem
        return self._arena_get_retry(cache, nb, alignment, size)

    def _arena_get_retry(self, cache: ThreadCache, nb: int, alignment: int, size: int) -> int:
        """glibc's ``arena_get_retry``: the main arena, or from it another one."""
        registry = self._registry
        arena = cache.arena
        if arena is not registry.main:
            other = registry.main
        else:
            other = registry.arena_get2(avoid=arena, replaced=arena)
            self._caches.switch_arena(cache, other)
        if other is not arena:
            with other.lock:
                mem = other.int_memalign(alignment, nb) if alignment else other.int_malloc(nb)
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
        mem = self._malloc(total)
        # Fresh mappings are zero already, unless perturb filled them.
        if self._mp.perturb or mem not in self._mmapped.chunks:
            _memset(mem, 0, self._locate(mem, "calloc")[1])  # (ours alone: just allocated)
        return mem

    def memalign(self, alignment: int, size: int) -> int:
        """Allocate ``size`` bytes at an address that is a multiple of ``alignment``."""
        alignment = self._size(alignment, "alignment")
        if alignment == 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        size = self._size(size)
        if alignment <= MALLOC_ALIGNMENT:
            return self._malloc(size)
        if size > MAX_REQUEST - alignment - 64:
            raise self._oom(size, f"cannot allocate {size} bytes aligned to {alignment}")
        return self._malloc_chunk(size, alignment)

    def strdup(self, data: bytes | bytearray | memoryview) -> int:
        """A NUL-terminated copy of ``data`` (any bytes-like object)."""
        src = checked_strdup(data).tobytes()
        mem = self.malloc(len(src) + 1)
        _memmove(mem, src + b"\0", len(src) + 1)  # (ours alone: just allocated)
        return mem

    # ================================================================== free
    def free_slow(self, addr: Any) -> None:
        """``free``'s slow path: whatever its hit path could not take (another thread's
        block, a chunk, a mapping, or a bad address)."""
        if addr.__class__ is not int:
            addr = checked_address(addr)
        if addr == 0:
            return
        heap = self._heap_of(addr)
        arena = heap.arena if heap is not None else None
        # A chunk its arena handed out (not lent to a slab) is in no live table:
        # no need to look (the arena checks it again, under its lock).
        if arena is None or addr not in arena.in_use or addr in arena.lent:
            caches = self._caches
            cls = caches.claim(addr)
            if cls is not None:  # another thread's slab block: ours alone now
                caches.free_popped(caches.current(), addr, cls)
                return
        if heap is not None and arena is not None:
            lock = arena.lock
            lock.acquire()  # (not ``with``: see _malloc_chunk)
            try:
                arena.int_free(heap, addr)
            except InvalidPointer as exc:
                lock.release()
                raise self._caches.diagnose(addr) or exc from None
            except BaseException:
                lock.release()
                raise
            lock.release()
            return
        size = self._mmapped.free(addr)
        if size is None:
            raise self._foreign(addr)
        self._mp.mapping_freed(size)

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
            return self._malloc(size)
        if size == 0:
            self._free(addr)
            return 0
        cls = self._caches.claim(addr)
        if cls is not None:
            return self._realloc_slab_block(addr, cls, size)
        heap = self._heap_of(addr)
        if heap is not None:
            return self._realloc_chunk(heap, addr, size)
        return self._realloc_mapped(addr, size)

    def _realloc_slab_block(self, addr: int, cls: int, size: int) -> int:
        """``addr`` was claimed from its live table: no other thread can free it now."""
        caches = self._caches
        cache = caches.current()
        usable = CLASS_SIZES[cls]
        if size <= usable and CLASS_OF[size] == cls:  # still its class: it stays
            caches.unclaim(cache, addr, cls)
            return addr
        # It grows out of its class, or shrinks into a smaller one: it moves, as
        # glibc's realloc gives a shrunk chunk's tail back (a program that
        # shrinks its buffers, as CPython does its strings, would otherwise
        # keep every block at its largest size).
        return self._move(
            addr,
            min(usable, size),
            size,
            keep=lambda: caches.unclaim(cache, addr, cls),
            release=lambda: caches.free_popped(cache, addr, cls),
        )

    def _realloc_chunk(self, heap: Heap[Arena], addr: int, size: int) -> int:
        nb = request2size(size)
        arena = heap.arena
        try:
            with arena.lock:
                new = arena.int_realloc(heap, addr, nb, nb < self._mp.mmap_threshold)
        except InvalidPointer as exc:
            raise for_call(self._caches.diagnose(addr) or exc, "realloc", addr) from None
        if new:
            return new
        # It has to move out of this arena: to a mapping, or to another arena.
        new = self._malloc(size)
        try:
            with arena.lock:
                old = arena.checked_chunk(heap, addr)  # (another thread may have freed it)
                _memmove(new, addr, min(old - SIZE_SZ, size))
                arena.int_free(heap, addr)
        except BaseException:
            self._free(new)
            raise
        return new

    def _realloc_mapped(self, addr: int, size: int) -> int:
        mapped = self._mmapped
        claimed = mapped.claim(addr)
        if claimed is None:
            raise for_call(self._foreign(addr), "realloc", addr)
        region, chunk_size = claimed
        usable = chunk_size - CHUNK_HDR_SZ
        nb = request2size(size)
        if usable + CHUNK_HDR_SZ >= nb and usable < 2 * nb:
            mapped.restore(addr, region)  # it fits, without wasting half of it
            return addr
        return self._move(
            addr,
            min(usable, size),
            size,
            keep=lambda: mapped.restore(addr, region),
            release=lambda: mapped.release(region),
        )

    def _move(
        self,
        addr: int,
        length: int,
        size: int,
        keep: Callable[[], None],
        release: Callable[[], None],
    ) -> int:
        """Move a claimed block (ours alone): a new block of ``size`` bytes gets its first
        ``length`` bytes, then ``release`` frees the old one; if no new block can be
        had, ``keep`` puts the old one back as it was."""
        try:
            new = self._malloc(size)
        except BaseException:
            keep()
            raise
        _memmove(new, addr, length)
        release()
        return new

    # ============================================================ inspection
    def _locate(self, addr: int, op: str) -> tuple[Region, int]:
        """The region holding the live block ``addr`` and its usable size; errors name ``op``."""
        if addr.__class__ is not int:
            addr = checked_address(addr)
        cls = self._caches.find(addr)
        if cls is not None:
            slab = self._slab_table.owners([addr], cls)[0]
            return slab.region, CLASS_SIZES[cls]
        heap = self._heap_of(addr)
        if heap is not None:
            size = fork.lookup(heap.arena.in_use, addr)
            if self._glibc is not None and self._glibc.is_cached(addr):
                raise for_call(
                    InvalidPointer(f"use after free: {addr:#x} is free (in a tcache or fastbin)"),
                    op,
                    addr,
                )
            if size is None or addr in heap.arena.lent:
                bad = self._caches.diagnose(addr) or heap.arena.diagnose_bad_pointer(addr)
                raise for_call(bad, op, addr)
            return heap.region, size - SIZE_SZ
        found = self._mmapped.lookup(addr)
        if found is None:
            raise for_call(self._foreign(checked_address(addr)), op, addr)
        return found[0], found[1] - CHUNK_HDR_SZ

    def usable_size(self, addr: int) -> int:
        """How many bytes the block at ``addr`` can hold (glibc's ``malloc_usable_size``)."""
        if checked_address(addr) == 0:
            return 0
        return self._locate(addr, "usable_size")[1]

    def view(self, addr: int, size: int | None = None) -> memoryview:
        """A writable view of the block at ``addr``: ``size`` bytes, or all usable bytes.

        The view keeps the block's memory mapped, but not the block allocated:
        after a ``free``, it reads what is there then (use :meth:`alloc` for a
        view that cannot outlive its block).
        """
        region, usable = self._locate(addr, "view")
        return self._view_of(region, addr, usable, size)

    def _view_of(self, region: Region, addr: int, usable: int, size: int | None) -> memoryview:
        if size is None:
            size = usable
        elif checked_count(size, "size") > usable:
            raise ValueError(f"view of {size} bytes exceeds block {addr:#x} ({usable} usable)")
        try:
            return region.view(addr, size)
        except ValueError:  # freed and its heap unmapped after we found it
            raise InvalidPointer(f"view(): use after free: {addr:#x} is already free") from None

    def alloc(self, size: int) -> Block:
        """Allocate ``size`` bytes as a :class:`Block` (with a view of exactly ``size``)."""
        addr = self.malloc(size)
        try:
            return Block(self, addr, size)
        except BaseException:
            self.free(addr)
            raise

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
        self._caches.reap()
        if self._glibc is not None:
            self._glibc.reap()  # (before the registry's lock: a thread's end detaches its arena)
        with registry.writing():
            self._require_open()
            arenas = list(registry.arenas)
            for arena in arenas:
                with arena.lock:
                    arena.check()
            registry.check(self._heap_table)
            if self._glibc is not None:
                self._glibc.check()
            if quiet is None:
                quiet = sum(a.attached_threads for a in arenas) <= 1
            if quiet:
                self._slab_table.check_blocks(
                    self._caches.held_blocks(), [a.slab_pool for a in arenas]
                )
        self._mmapped.check()
        if self._debugger is not None:
            self._debugger.check()

    def stats(self) -> Stats:
        """A snapshot of every arena and mapping (glibc's ``mallinfo2`` and more)."""
        per = []
        slabs = []
        for arena in self.arena_list():
            with arena.lock:
                per.append(arena.stats())
                slabs.append(arena.slab_pool.usage())
        with self._registry.reading():
            cached = self._caches.cached_blocks().values()
        return collect(
            per,
            slabs,
            cached,
            self._caches.live_blocks(),
            self._mmapped.usage(),
            self._budget.max_used,
        )

    def system_bytes(self) -> int:
        """``stats().system_bytes`` alone: the heap and mapping bytes taken from the system.

        Each arena is read under its own lock, as :meth:`stats` reads it, but
        nothing else is gathered: a cost per arena, not per live block, for a
        caller that samples the footprint often (a benchmark's at every new peak).
        """
        total = 0
        for arena in self.arena_list():
            with arena.lock:
                total += arena.system_mem
        return total + self._mmapped.usage()[1]

    def malloc_stats(self, file: TextIO | None = None) -> None:
        """Print glibc's ``malloc_stats`` report (to standard error by default)."""
        print(format_malloc_stats(self.stats()), end="", file=file or sys.stderr)

    def malloc_info(self) -> str:
        """glibc's ``malloc_info`` XML: per arena, its free chunks by size, and totals."""
        histograms = []
        for arena in self.arena_list():
            with arena.lock:
                histograms.append(arena.bins.histogram())
        return format_malloc_info(self.stats(), histograms)

    # ================================================================= trim
    def trim(self, pad: int = 0) -> int:
        """glibc's ``malloc_trim``: give free memory back to the OS; returns the bytes released.

        The calling thread's cache is flushed first, so its blocks can go
        home; then, in every arena: wholly free spare slabs are freed, heaps
        that emptied out are unmapped (in the middle of an arena's chain too),
        each top chunk is cut down to ``pad`` bytes, and whole pages inside
        free chunks are advised away with ``MADV_DONTNEED``.  A ``pad``
        larger than every top releases nothing from the tops.
        """
        pad = checked_count(pad, "pad")
        self._require_open()
        if self._glibc is not None:
            return self._glibc.trim(self.arena_list(), pad)
        self._caches.flush()
        released = 0
        for arena in self.arena_list():
            with arena.lock:
                released += arena.slab_pool.release_spares()
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
        name = mallopt_name(param, self._mp.policy)
        value = validate({name: value}, self._mp.policy)[name]
        mp = self._mp
        with self._registry.writing():
            self._require_open()
            mp.set(name, value)
            if name == "max_heap_bytes":
                self._budget.cap = value
            self._registry.arena_max = mp.arena_limit()
        if name in ("tcache_count", "tcache_max_bytes"):
            self._caches.set_counts(cache_counts(mp.tcache_count, mp.tcache_max_bytes))
            self._caches.flush()  # this thread obeys at once; the others as they free
        elif name == "perturb":
            self._caches.gate(bool(value))
        elif name == "mxfast" and self._glibc is not None:
            self._glibc.set_max_fast(self.arena_list())

    # ================================================================ debug
    def _debug_view(self, addr: int, size: int | None = None) -> memoryview:
        assert self._debugger is not None
        # One look at the record: another thread may free the block just after.
        record = self._debugger.record(checked_address(addr), "view")
        region = self._locate(record.raw, "view")[0]
        return self._view_of(region, addr, record.size, size)

    def report_leaks(self) -> list[Leak]:
        """Live blocks with their sizes and allocating threads (needs ``debug=True``)."""
        if self._debugger is None:
            raise AllocatorError("report_leaks() needs Allocator(debug=True)")
        self._require_open()
        return self._debugger.report_leaks()

    # ================================================================ close
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap every heap and mapping.  Every later call raises ``AllocatorError``.

        Every thread's cache is emptied and gated first, so a ``malloc`` or
        ``free`` taken from this allocator at any time raises too.
        """
        with self._registry.writing():
            if self._closed:
                return
            self._closed = True
            self._caches.close()
            if self._glibc is not None:
                self._glibc.close()
            arenas = list(self._registry.arenas)
        if self._debugger is not None:
            self._debugger.close()
        self._heap_table.main = None  # (a racing free then finds no heap)
        for arena in arenas:
            with arena.lock:
                arena.release_heaps()
        self._mmapped.release_all()
        self._slab_table.clear()
        retry_deferred_unmaps()

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
    def fork_locks(self) -> list[Lockable]:
        """Registry and arenas, then heap table, slab table, mappings, budget (see fork.py)."""
        return [
            *self._registry.locks(),
            *(lock for table in self._tables() for lock in table.fork_locks()),
        ]

    def fork_new_locks(self) -> None:
        self._registry.reset_after_fork()
        for table in self._tables():
            table.fork_new_locks()

    def _tables(self) -> tuple[fork.OneLock, ...]:
        """The shared tables, each with one lock, in the order locks are taken."""
        return (self._heap_table, self._slab_table, self._mmapped, self._budget)

    def fork_repair(self) -> None:
        cache: ThreadCache | None = getattr(self._caches.tls, "cache", None)
        self._registry.attach_only(cache.arena if cache is not None else None)
        if not self._closed:
            self._caches.fork_child()
