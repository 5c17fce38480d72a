"""The arena registry: which arenas exist and which thread uses which (glibc's arena.c).

A thread's first allocation calls :meth:`ArenaRegistry.arena_get2`, which
picks, in glibc's order:

1. an arena on the **free list** (no thread attached to it any more);
2. a **new arena**, while fewer than ``arena_max`` exist and there is memory
   for its first heap;
3. :meth:`reused_arena`: walk the ring of arenas from a rotating start and
   take the first whose lock is free; if all are busy, the next one in turn
   (the caller then waits on its lock).

The choice is kept in a thread-local by :class:`arenas.allocator.Allocator`,
so later allocations go straight to the arena's lock: the registry is off the
per-allocation path.  When a thread ends, its arena is *detached*; an arena
with no thread left joins the free list for the next new thread.

Locking: ``arenas``, ``free_list``, ``next_to_reuse`` and every arena's
``attached_threads`` are guarded by ``self.rwlock`` (a ``readerwriterlock``:
stats and lookups read, attach/create/detach write).  Lock order: the
registry lock is never taken while an arena lock is held, except by the fork
handler, which takes the registry lock first and then every arena lock.

``arenas`` only ever grows (outside a forked child), so code that only needs
to find an arena by index reads it without the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from readerwriterlock import rwlock

from .arena import Arena
from .errors import HeapCorruption, OutOfMemory
from .fork import Lockable
from .heap import HeapTable

__all__ = ["ArenaRegistry"]


class ArenaRegistry:
    """The ring of arenas of one allocator, and its free list."""

    def __init__(
        self,
        make_arena: Callable[[int, int], Arena],
        arena_max: int,
        prefer_main: bool = False,
        glibc_order: bool = False,
    ) -> None:
        self.rwlock = rwlock.RWLockWrite()
        # The glibc policy's orders: the ring runs main, newest, ..., oldest (glibc
        # links a new arena right after the main one), and the free list is a stack.
        self.glibc_order = glibc_order
        # With a fixed buffer the main arena owns the buffer: every thread starts
        # there, and other arenas only take the overflow (balloc's USE_MALLOC).
        self.prefer_main = prefer_main
        self._make_arena = make_arena
        self.arena_max = arena_max
        main = make_arena(0, 0)
        self.arenas: list[Arena] = [main]
        # The main arena starts free: the first thread to allocate takes it,
        # as glibc's main thread does.
        self.free_list: list[Arena] = [main]
        self.next_to_reuse = 0
        # The limit in force when each arena was made.  mallopt may lower
        # arena_max below the number of arenas later: like glibc, that stops
        # new arenas but frees none, so check() tests each arena against this.
        self.created_under: list[int] = [arena_max]

    @property
    def main(self) -> Arena:
        return self.arenas[0]

    @contextmanager
    def reading(self) -> Iterator[None]:
        lock = self.rwlock.gen_rlock()
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def writing(self) -> Iterator[None]:
        lock = self.rwlock.gen_wlock()
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------ choose
    def arena_get2(
        self, avoid: Arena | None = None, replaced: Arena | None = None, request: int = 0
    ) -> Arena:
        """Attach the calling thread to an arena (not ``avoid``) and return it.

        ``replaced`` is the arena the thread used until now; it is detached.
        ``request`` is the size of the request that asks (a new arena's first
        heap makes room for it).
        """
        with self.writing():
            main = self.arenas[0]
            if self.prefer_main and avoid is not main:
                if main in self.free_list:
                    self.free_list.remove(main)
                return self._attach(main, replaced)
            for arena in reversed(self.free_list) if self.glibc_order else self.free_list:
                if arena is not avoid:
                    self.free_list.remove(arena)
                    return self._attach(arena, replaced)
            if len(self.arenas) < self.arena_max:
                try:
                    arena = self._make_arena(len(self.arenas), request)
                except OutOfMemory:
                    pass  # no memory for a new arena's heap: share one (as glibc does)
                else:
                    self.arenas.append(arena)
                    self.created_under.append(self.arena_max)
                    return self._attach(arena, replaced)
        return self.reused_arena(avoid, replaced)

    def reused_arena(self, avoid: Arena | None, replaced: Arena | None) -> Arena:
        """Share an existing arena: the first uncontended one from a rotating start."""
        ring = self.ring()
        n = len(ring)
        start = self.next_to_reuse % n
        chosen: Arena | None = None
        for k in range(n):
            arena = ring[(start + k) % n]
            if arena is avoid:
                continue
            if arena.lock.acquire(blocking=False):
                arena.lock.release()
                chosen = arena
                break
        if chosen is None:
            # All busy: take the next one in turn and let the caller wait on it.
            chosen = ring[start] if ring[start] is not avoid or n == 1 else ring[(start + 1) % n]
        with self.writing():
            self.next_to_reuse = (ring.index(chosen) + 1) % n
            if chosen in self.free_list:
                self.free_list.remove(chosen)
            return self._attach(chosen, replaced)

    def ring(self) -> list[Arena]:
        """The arenas in the order reused_arena walks them."""
        if self.glibc_order:
            return [self.arenas[0], *reversed(self.arenas[1:])]
        return self.arenas

    def _attach(self, arena: Arena, replaced: Arena | None) -> Arena:
        arena.attached_threads += 1
        if replaced is not None:
            self.detach_locked(replaced)
        return arena

    # ------------------------------------------------------------ release
    def detach_locked(self, arena: Arena) -> None:
        """A thread that used ``arena`` is gone (the caller holds the write lock)."""
        arena.attached_threads -= 1
        if arena.attached_threads == 0 and arena not in self.free_list:
            self.free_list.append(arena)

    # ------------------------------------------------------------ check
    def check(self, heap_table: HeapTable[Arena]) -> None:
        """The ring, its free list and the table of aligned heaps agree (write lock held)."""
        for arena, limit in zip(self.arenas, self.created_under, strict=True):
            if arena.index >= limit:
                raise HeapCorruption(f"arena {arena.index} was made beyond arena_max={limit}")
            if arena.attached_threads < 0:
                raise HeapCorruption(f"arena {arena.index} has negative attached threads")
            if (arena.attached_threads == 0) != (arena in self.free_list):
                raise HeapCorruption(f"arena {arena.index} free-list membership is wrong")
            if arena.is_main and len(arena.heaps) != 1:
                raise HeapCorruption("the main arena must own exactly its main heap")
            if not arena.is_main and any(
                heap_table.heaps.get(h.base) is not h for h in arena.heaps
            ):
                raise HeapCorruption(f"a heap of arena {arena.index} is missing from the table")
        owned = sum(len(a.heaps) for a in self.arenas if not a.is_main)
        if owned != len(heap_table.heaps):
            raise HeapCorruption("the heap table holds heaps no arena owns")

    # ------------------------------------------------------------ fork
    def locks(self) -> list[Lockable]:
        """The registry's write lock, then every arena's lock in index order."""
        return [_AllLocks(self)]

    def reset_after_fork(self) -> None:
        """In a forked child: new locks, unheld (the registry's and every arena's)."""
        self.rwlock = rwlock.RWLockWrite()
        for arena in self.arenas:
            arena.lock = threading.Lock()

    def attach_only(self, survivor: Arena | None) -> None:
        """In a forked child only the forking thread lives: it alone stays attached."""
        for arena in self.arenas:
            arena.attached_threads = 1 if arena is survivor else 0
        self.free_list = [a for a in self.arenas if a.attached_threads == 0]


class _AllLocks:
    """The write lock, then the arenas' locks: the arenas are listed once the write
    lock is held, so an arena made just before the fork is not missed."""

    def __init__(self, registry: ArenaRegistry) -> None:
        self._registry = registry
        self._held: list[Lockable] = []

    def acquire(self) -> bool:
        write = self._registry.rwlock.gen_wlock()
        write.acquire()
        arenas = [arena.lock for arena in self._registry.arenas]
        for lock in arenas:
            lock.acquire()
        self._held = [write, *arenas]
        return True

    def release(self) -> None:
        for lock in reversed(self._held):
            lock.release()
        self._held = []
