"""The thread cache: per thread, per size class, no lock (glibc's tcache).

A request of at most ``SLAB_MAX`` bytes is served from the calling thread's
own cache of free blocks of its size class, and a freed slab block goes into
the *freeing* thread's cache, as in glibc.  Only a miss reaches the slabs (a
*refill*: a batch of blocks taken under the thread's arena lock) and only a
full cache sends blocks home (a *flush*: half of the class, each block under
its own arena's lock)::

    malloc(n) --hit--> pop bins[class]; live[addr] = class           no lock
       | miss: not attached, empty bin, gated, n > SLAB_MAX
       v
    the allocator's slow path: serve() = refill from slabs (arena
                               lock), or a chunk

    free(p) --hit--> live.pop(p); push bins[class]                    no lock
       | not this thread's block: claim it from another thread's live
       | table (a remote free), then this thread's bin, or flush half of
       | the bin home (arena locks)
       v
    the allocator's slow path: not a slab block (a chunk, a mapping, a
    bad address), or an unattached thread

**Sharing nothing on the hit path.**  On free-threaded CPython threads really
run at once, and any object two threads write on every call (a shared dict,
a shared closure's reference count) makes them queue.  So a hit touches only
the calling thread's :class:`ThreadCache`: its bins, and its ``live`` table
of the blocks it handed out.  Ownership stays exact without a table every
thread writes: a live slab block is in exactly one thread's ``live`` table
(the thread that last allocated it, even after that thread ended), so a free
that misses its own table looks in the others' (:meth:`ThreadCaches.claim`).
``dict.pop`` is atomic (under the GIL, and under each dict's own lock on
free-threaded builds), so of two threads freeing one block at once exactly
one gets it, and the other is told it is a double free.  A remote free costs
one ``dict.pop`` per attached thread; docs/ARCHITECTURE.md measures the
choice against mimalloc's, where a block goes back to its owner's queue.

**The hit path** (:mod:`arenas.hotpath`) reads and writes a
:class:`ThreadCache` without a lock; everything it cannot serve comes here.

Locking: a ThreadCache's ``bins`` and ``live`` belong to its thread; no lock.
Other threads touch them only in single atomic operations: a remote free pops
one ``live`` entry; ``check``, ``stats`` and fork copy them (``list(l)`` and
``dict.copy()`` are atomic); ``close`` clears them; gating replaces
``class_of`` and ``counts`` (one attribute store each).  The registry of
caches (:attr:`ThreadCaches.threads`, ``live_tables``, ``abandoned``,
``counts``, ``gated``, ``closed``) is written under the arena registry's write
lock; ``live_tables`` is a tuple replaced whole, so a remote free reads it
without a lock.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from . import fork
from .arena import Arena
from .chunk import CHUNK_HDR_SZ, checked_address
from .errors import CLOSED, AllocatorError, DoubleFree, HeapCorruption, InvalidPointer
from .heap import HeapTable
from .registry import ArenaRegistry
from .slab import CLASS_OF, CLASS_SIZES, NCLASSES, SlabTable
from .tunables import Params

__all__ = ["ThreadCache", "ThreadCaches", "cache_counts"]

_memset = ctypes.memset
_tokens = itertools.count(1)

# What a remote free that found nothing points its hint at (never written).
_NO_TABLE: dict[int, int] = {}
# What a gated cache holds instead of its tables: every hit path misses.
_NO_CLASSES = b""
_NO_COUNTS: tuple[int, ...] = (0,) * NCLASSES


def cache_counts(count: int, max_bytes: int) -> list[int]:
    """Per size class, how many blocks a thread may cache: ``tcache_count``, but no
    more than ``tcache_max_bytes`` of one class (none of a class above it)."""
    return [min(count, max_bytes // size) for size in CLASS_SIZES]


class ThreadCache:
    """One thread's cache in one allocator; its finalizer is the thread-exit hook.

    Invariants, while the thread runs and the allocator is open:

    * ``bins[c]`` holds free blocks of class ``c``, at most ``counts[c]``
      (a lowered ``tcache_count`` is obeyed at the next flush);
    * ``live`` maps every block this thread handed out and nobody freed yet
      to its class; a block is in one thread's ``live`` at most;
    * ``class_of`` is ``CLASS_OF`` and ``counts`` the allocator's limits, or,
      while the caches are gated, ``b""`` and zeros (every hit misses);
    * ``fill[c]`` is how many blocks the next refill of class ``c`` takes: one
      at first, doubling with each miss up to half the cache (jemalloc adapts
      its fill count the same way), so a class used a few times does not pull
      half a cache of blocks it will never use.

    When the thread ends, normally or by an exception, CPython drops the
    thread's ``threading.local`` values, and ``__del__`` queues the cache's
    bins, live table and arena on :attr:`ThreadCaches.exited`; the next safe
    point (:meth:`ThreadCaches.reap`) sends the bins home and detaches the
    arena.  A finalizer may run anywhere, the cyclic garbage collector's
    included, even where this very thread holds the registry's or an
    arena's lock, so it takes no lock: it only appends to a list.  ``live``
    stays behind: the thread's blocks are still the program's.
    """

    __slots__ = (
        "__weakref__",
        "arena",
        "bins",
        "class_of",
        "counts",
        "fill",
        "hint",
        "live",
        "owner",
        "pid",
        "token",
    )

    def __init__(self, owner: ThreadCaches, arena: Arena, live: dict[int, int]) -> None:
        self.owner = weakref.ref(owner)
        self.arena = arena
        self.pid = os.getpid()
        self.token = next(_tokens)
        self.bins: list[list[int]] = [[] for _ in range(NCLASSES)]
        self.live = live
        self.hint: dict[int, int] = live  # (see _free_remote)
        self.fill = [1] * NCLASSES
        self.class_of = CLASS_OF
        self.counts: Sequence[int] = list(owner.counts)

    def __del__(self) -> None:
        owner = self.owner()
        # A forked child drops the parent's other threads: their caches are stale.
        if owner is not None and self.pid == os.getpid():
            owner.exited.append(_Held(self.bins, self.live, self.token, self.arena))


# ======================================================== the caches of an allocator
class _Held(NamedTuple):
    """What the allocator keeps of a thread's cache (the cache itself may be gone)."""

    bins: list[list[int]]
    live: dict[int, int]
    token: int
    arena: Arena
    cache: weakref.ref[ThreadCache] | None = None
    thread: int = 0  # the thread's threading.get_ident()


class ThreadCaches:
    """Every thread's cache of one allocator, and the paths between caches and slabs.

    ``tls.cache`` is the calling thread's :class:`ThreadCache`.  ``threads``
    holds, by token, every attached thread's bins and live table;
    ``live_tables`` every live table still holding blocks (attached threads'
    and ``abandoned`` ones, of threads that ended); a new thread adopts an
    abandoned table, so there are never more tables than threads at the peak.
    """

    def __init__(
        self,
        registry: ArenaRegistry,
        table: SlabTable,
        heaps: HeapTable[Arena],
        mp: Params,
        counts: list[int],
    ) -> None:
        self.tls = threading.local()
        self.registry = registry
        self.table = table
        self.heaps = heaps
        self.mp = mp
        self.counts = counts
        self.threads: dict[int, _Held] = {}
        self.live_tables: tuple[dict[int, int], ...] = ()
        self.abandoned: list[dict[int, int]] = []
        self.gated = False
        self.closed = False
        # Caches of threads that ended, queued by their finalizers (list.append
        # is atomic); the next safe point reaps them.
        self.exited: list[_Held] = []

    # ------------------------------------------------------------ attach and exit
    def current(self) -> ThreadCache:
        """The calling thread's cache, attaching the thread (``arena_get``) on first use."""
        try:
            cache: ThreadCache = self.tls.cache
        except AttributeError:
            return self._attach()
        if self.closed:
            raise AllocatorError(CLOSED)
        return cache

    def _attach(self) -> ThreadCache:
        if self.closed:
            raise AllocatorError(CLOSED)
        self.reap()  # (arenas of threads that ended go back to the free list first)
        registry = self.registry
        arena = registry.arena_get2()
        with registry.writing():
            if self.closed:
                registry.detach_locked(arena)
                raise AllocatorError(CLOSED)
            self._prune()
            if self.abandoned:
                live = self.abandoned.pop()  # still in live_tables
            else:
                live = {}
                self.live_tables = (*self.live_tables, live)
            cache = ThreadCache(self, arena, live)
            if self.gated:
                self._gate(cache)
            self.threads[cache.token] = _Held(
                cache.bins, live, cache.token, arena, weakref.ref(cache), threading.get_ident()
            )
        self.tls.cache = cache
        return cache

    def exit_current(self) -> None:
        """The calling thread is done: its cache goes home and its arena is detached now,
        as when the thread ends."""
        cache: ThreadCache | None = getattr(self.tls, "cache", None)
        if cache is not None:
            del self.tls.cache
            del cache  # (its __del__ queues it for reap)
            self.reap()

    def reap(self) -> None:
        """Threads that ended: their caches go home, their arenas are detached.

        Called where no lock of this allocator is held: before attaching a
        thread, and by ``check``, ``stats``, ``trim`` and the other reports.
        """
        if not self.exited:
            return
        registry = self.registry
        with registry.writing():
            while self.exited:
                gone = self.exited.pop()
                if self.closed or self.threads.pop(gone.token, None) is None:
                    continue  # (closed, or a forked child forgot it already)
                self._abandon(gone.live)
                self._flush_bins(gone.bins)
                registry.detach_locked(gone.arena)

    def _abandon(self, live: dict[int, int]) -> None:
        """A thread left: its table stays where remote frees look, until it empties."""
        self.abandoned.append(live)
        self._prune()

    def _prune(self) -> None:
        """Forget abandoned tables that emptied: no one adds to them any more."""
        empty = [t for t in self.abandoned if not t]
        if empty:
            self.abandoned = [t for t in self.abandoned if t]
            self.live_tables = tuple(t for t in self.live_tables if all(t is not e for e in empty))

    def switch_arena(self, cache: ThreadCache, arena: Arena) -> None:
        """The thread moved to another arena (``arena_get_retry``)."""
        cache.arena = arena

    # -------------------------------------------------------------- ownership
    def claim(self, addr: int) -> int | None:
        """Take ``addr`` out of whichever live table holds it; its class, or None.

        The caller owns the block alone from then on: a free, or a realloc.
        """
        return self.claim_from(addr)[0]

    def claim_from(self, addr: int) -> tuple[int | None, dict[int, int]]:
        """:meth:`claim`, and the table it was found in (or an empty one)."""
        for table in self.live_tables:
            if addr in table:  # (no lock taken: only the table that holds it is popped)
                cls = table.pop(addr, None)
                if cls is not None:
                    return cls, table
        return None, _NO_TABLE

    def find(self, addr: int) -> int | None:
        """The class of the live slab block ``addr``, or None (it stays live)."""
        for table in self.live_tables:
            cls = fork.lookup(table, addr)
            if cls is not None:
                return cls
        return None

    def unclaim(self, cache: ThreadCache, addr: int, cls: int) -> None:
        """A claimed block stays live after all (a realloc that kept it, or failed)."""
        cache.live[addr] = cls

    # ------------------------------------------------------------- allocation
    def serve(self, cache: ThreadCache, size: int) -> int:
        """A slab block for ``size`` that the hit path could not give; 0 if no slab
        can be made (the caller then tries an ordinary chunk).

        A block of the class only, never one of a bigger class: on real
        programs' traces the bigger blocks cost more memory than the refills
        they save (docs/slabs.md).
        """
        cls = CLASS_OF[size]
        bins = cache.bins
        cached = bins[cls]
        if cached:  # (the hit path can miss with blocks cached: gated caches, say)
            try:
                addr = cached.pop()
            except IndexError:  # close() emptied it just now
                raise AllocatorError(CLOSED) from None
            cache.live[addr] = cls
            return addr
        blocks = self._refill(cache, cls)
        if not blocks:
            return 0
        blocks.reverse()
        addr = blocks.pop()
        bins[cls].extend(blocks)
        cache.live[addr] = cls
        return addr

    def _refill(self, cache: ThreadCache, cls: int) -> list[int]:
        """A batch of free blocks of class ``cls`` from the slabs of this thread's arena.

        The batch grows with each miss (``fill``).  A non-main arena that
        would have to grow its heap for a new slab first uses memory the main
        arena holds already freed (:meth:`_refill_elsewhere`).
        """
        fill = cache.fill
        want = fill[cls]
        most = (self.counts[cls] >> 1) + 1
        if want < most:
            fill[cls] = min(want * 2, most)
        else:
            want = most  # (tcache_count may have been lowered since)
        arena = cache.arena
        main = self.registry.main
        with arena.lock:
            blocks = arena.slab_pool.take(cls, want, grow=arena is main)
        if not blocks and arena is not main:
            blocks = self._refill_elsewhere(arena, main, cls, want)
        return blocks

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
        blocks: list[int] = []
        if main.lock.acquire(blocking=False):
            try:
                blocks = main.slab_pool.take(cls, want, top=False, grow=False)
            finally:
                main.lock.release()
        if not blocks:
            with arena.lock:
                blocks = arena.slab_pool.take(cls, want)
        if not blocks:
            with main.lock:
                blocks = main.slab_pool.take(cls, want)
        return blocks

    # ------------------------------------------------------------------- free
    def free_popped(self, cache: ThreadCache, addr: Any, cls: int) -> None:
        """Free a slab block already taken out of a live table: into ``cache``,
        whichever thread allocated it, or home when the bin is full."""
        if addr.__class__ is not int:  # a float or a bool that compared equal
            cache.live[int(addr)] = cls
            checked_address(addr)
        if self.closed:
            raise AllocatorError(CLOSED)
        perturb = self.mp.perturb
        if perturb:  # (the block is ours alone: popped from its live table)
            _memset(addr, perturb, CLASS_SIZES[cls])
        cached = cache.bins[cls]
        if len(cached) < self.counts[cls]:
            cached.append(addr)
            return
        # A full bin: send half of it home, and ``addr`` with it.
        keep = len(cached) >> 1
        blocks = cached[keep:]
        del cached[keep:]
        blocks.append(addr)
        self.return_blocks(cls, blocks)

    def return_blocks(self, cls: int, blocks: list[int]) -> None:
        """Give blocks back to their arenas, each under its own arena's lock.

        The usual case, every block in one heap (a thread's own arena's, or
        the one thread it frees for), costs two comparisons and a list extend:
        they go on the class's loose list (see :class:`~arenas.slab.SlabPool`).
        Otherwise the first block's arena takes every block of its own into its
        slabs, and so on.
        """
        lo, hi = min(blocks), max(blocks)
        heap = self.heaps.heap_for_ptr(lo)
        if heap is not None and hi < heap.end:
            pool = heap.arena.slab_pool
            with pool.lock:
                pool.give_back_loose(cls, blocks)
            return
        table = self.table
        while blocks:
            pool = table.owners(blocks[:1], cls)[0].pool
            with pool.lock:
                blocks = pool.give_back(cls, blocks)

    def _flush_bins(self, bins: list[list[int]]) -> None:
        for cls, cached in enumerate(bins):
            if cached:
                blocks = cached[:]
                cached.clear()
                self.return_blocks(cls, blocks)

    def flush(self) -> None:
        """Send the calling thread's whole cache home (``trim``, a lowered limit)."""
        cache: ThreadCache | None = getattr(self.tls, "cache", None)
        if cache is not None:
            with self.registry.writing():
                if not self.closed:
                    self._flush_bins(cache.bins)

    # --------------------------------------------------------------- settings
    def set_counts(self, counts: list[int]) -> None:
        """New per-class limits, obeyed by every thread from its next free."""
        with self.registry.writing():
            self.counts = counts
            if not self.gated:
                for cache in self._caches():
                    cache.counts = list(counts)

    def gate(self, gated: bool) -> None:
        """Make every hit path miss (``perturb`` set), or serve again."""
        with self.registry.writing():
            self.gated = gated
            for cache in self._caches():
                if gated:
                    self._gate(cache)
                else:
                    cache.class_of = CLASS_OF
                    cache.counts = list(self.counts)

    @staticmethod
    def _gate(cache: ThreadCache) -> None:
        cache.class_of = _NO_CLASSES
        cache.counts = _NO_COUNTS

    def _caches(self) -> list[ThreadCache]:
        found = (held.cache() for held in self.threads.values() if held.cache is not None)
        return [cache for cache in found if cache is not None]

    def close(self) -> None:
        """Every cache forgets its blocks; every later hit misses (registry lock held)."""
        self.closed = True
        for cache in self._caches():
            self._gate(cache)
        for held in self.threads.values():
            for cached in held.bins:
                cached.clear()
        for live in self.live_tables:
            live.clear()
        self.threads.clear()
        self.live_tables = ()
        self.abandoned = []

    # ------------------------------------------------------------- snapshots
    def live_blocks(self) -> dict[int, int]:
        """Every live slab block and its class (a copy; exact when threads are idle)."""
        merged: dict[int, int] = {}
        for table in self.live_tables:
            merged.update(table.copy())
        return merged

    def cached_blocks(self) -> dict[int, list[list[int]]]:
        """Each attached thread's bins, by token (copies; registry lock held)."""
        return {token: [list(c) for c in held.bins] for token, held in self.threads.items()}

    def held_blocks(self) -> Iterator[tuple[int, int, str]]:
        """``(block, class, "live" or "cached")`` for every block a thread holds: what
        :meth:`arenas.slab.SlabTable.check_blocks` checks the slabs against (threads idle)."""
        live_tables = self.live_tables
        if len({id(t) for t in live_tables}) != len(live_tables):
            raise HeapCorruption("a thread's live table is listed twice")
        for table in live_tables:
            for addr, cls in table.copy().items():
                yield addr, cls, "live"
        for bins in self.cached_blocks().values():
            for cls, cached in enumerate(bins):
                for addr in cached:
                    yield addr, cls, "cached"

    def current_bins(self) -> list[list[int]] | None:
        """The calling thread's bins (a copy), or None if it is not attached."""
        cache: ThreadCache | None = getattr(self.tls, "cache", None)
        return None if cache is None else [list(c) for c in cache.bins]

    def bins_by_thread(self) -> dict[int, list[list[int]]]:
        """Each attached thread's bins (copies), by its ``threading.get_ident()``."""
        with self.registry.reading():
            return {held.thread: [list(c) for c in held.bins] for held in self.threads.values()}

    def diagnose(self, addr: int) -> InvalidPointer | None:
        """If ``addr`` points into a slab but is no live block, say exactly what it is."""
        slab = self.table.find(addr)
        if slab is None:
            return None
        if not slab.is_block(addr):
            return InvalidPointer(
                f"free(): invalid pointer {addr:#x}: inside a {slab.size}-byte slab block"
            )
        if any(addr in list(held.bins[slab.cls]) for held in list(self.threads.values())):
            return DoubleFree(f"free(): double free detected in tcache: {addr:#x}")
        return DoubleFree(f"free(): double free detected: slab block {addr:#x} is already free")

    # ------------------------------------------------------------------ fork
    def fork_child(self) -> None:
        """In a forked child: only the forking thread lives.  The other threads'
        caches go home; their live blocks stay live (the child may free them)."""
        survivor: ThreadCache | None = getattr(self.tls, "cache", None)
        if survivor is not None:
            survivor.pid = os.getpid()
        self._fresh_live_tables(survivor)
        self.exited = []  # (every thread but this one leaves below, queued or not)
        for token, held in list(self.threads.items()):
            if survivor is None or token != survivor.token:
                self._flush_bins(held.bins)
                del self.threads[token]
                self._abandon(held.live)
        self._reclaim_orphans()

    def _fresh_live_tables(self, survivor: ThreadCache | None) -> None:
        """New live tables with the old ones' entries, read without their locks.

        Other threads popped these tables without a lock of ours, so one may be
        locked for good in this child (see :mod:`arenas.fork`).  Every block a
        slab ever handed out is a candidate; ``in`` and a subscript take no lock.
        """
        candidates = [
            addr
            for arena in self.registry.arenas
            for slab in arena.slab_pool.slabs.values()
            for addr in range(slab.base + CHUNK_HDR_SZ, slab.bump, slab.size)
        ]
        fresh = {
            id(old): {addr: old[addr] for addr in candidates if addr in old}
            for old in self.live_tables
        }
        self.live_tables = tuple(fresh[id(old)] for old in self.live_tables)
        self.abandoned = [fresh[id(old)] for old in self.abandoned]
        for token, held in self.threads.items():
            self.threads[token] = held._replace(live=fresh[id(held.live)])
        if survivor is not None:
            survivor.live = survivor.hint = fresh[id(survivor.live)]

    def _reclaim_orphans(self) -> None:
        """Blocks that no thread holds any more go back to their slabs (a forked child)."""
        held = {addr for addr, _, _ in self.held_blocks()}
        for arena in self.registry.arenas:
            arena.slab_pool.reclaim_orphans(held)
