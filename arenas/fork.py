"""Fork safety: every lock in the package, taken before ``fork()`` and made anew in the child.

glibc takes every arena's lock before the process forks
(``__malloc_fork_lock_parent``), so that the child's copy of the heap is not
caught half-changed by a thread that does not exist there, and re-initialises
them in the child (``__malloc_fork_unlock_child``).  This package has more
locks than arenas, and a lock held at the fork by any other thread would be
held forever in the child.  So every owner of a lock *names its own locks* by
registering a :class:`ForkSafe` participant here, and this module takes them
all before the fork, in one documented order, and releases them in the
parent.  In the child it works in two passes: first every owner makes new
locks (taking none), then every owner puts right what the lost threads were
holding, when any lock it may need is a fresh one.

The order.  A thread only ever takes a lock of a later level while holding
locks of earlier levels, never the reverse, so taking them level by level
cannot deadlock with a thread that is inside the package when fork() is
called:

=====  ============  ========================================================
level  name          locks
=====  ============  ========================================================
0      ``DEFAULT``   creating the default allocator (``arenas.dispatch``)
1      ``WRAPPER``   tracing replacements and debuggers, newest first: each
                     holds its lock across calls into what it wraps
2      ``ALLOCATOR`` each allocator: its registry, its arenas in index order,
                     then its heap table, slab table, mapping table, budget
3      ``LEAF``      locks held only around their own data: the replacement
                     functions' table, counting replacements, the deferred
                     unmaps
=====  ============  ========================================================

Per-object locks.  On free-threaded CPython 3.13, a dict's or a list's own
lock is taken by ``dict.get``, ``pop``, ``copy``, iteration and stores, and
a fork while one thread waits for it can leave it held, in the child, by a
thread the child lacks: the child's next such operation on that object
hangs (``tests/test_adversarial.py`` forks 8 threads' ``dict.get`` and
``pop`` to show it).  A subscript and ``in`` take no lock.  So a table read
by threads that hold none of its writer's locks is read with :func:`lookup`,
and what the child must take from a table other threads popped without a
lock (a thread cache's live table) is rebuilt from lock-free reads
(:meth:`arenas.tcache.ThreadCaches.fork_child`).

Locking: the list of participants has its own lock.  It is taken after
level 0 (creating the default allocator registers one) and held from the
snapshot to the fork, so no participant can appear half-registered.  What a
fork took is recorded per forking thread.
Participants are held by weak reference: an allocator that is dropped
leaves the list by itself.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

__all__ = [
    "ALLOCATOR",
    "DEFAULT",
    "LEAF",
    "WRAPPER",
    "ForkSafe",
    "LockSet",
    "OneLock",
    "lookup",
    "participants",
    "register",
]

K = TypeVar("K")
V = TypeVar("V")


def lookup(table: dict[K, V], key: K) -> V | None:
    """``table.get(key)``, without taking the dict's own lock (see the opening)."""
    try:
        return table[key]
    except KeyError:
        return None


DEFAULT = 0
WRAPPER = 1
ALLOCATOR = 2
LEAF = 3


class Lockable(Protocol):
    def acquire(self) -> bool: ...
    def release(self) -> None: ...


class ForkSafe(Protocol):
    """An owner of locks: it names them, and rebuilds them in a forked child."""

    def fork_locks(self) -> Sequence[Lockable]:
        """The locks to hold across a fork, in the order this owner takes them."""
        ...

    def fork_new_locks(self) -> None:
        """In the child, first pass: replace every lock named above; take none."""
        ...

    def fork_repair(self) -> None:
        """In the child, second pass: put right what the lost threads held (any
        participant's lock may be taken now: they are all new)."""
        ...


class OneLock:
    """A participant whose one lock is ``self.lock`` (a table, a replacement, a debugger)."""

    __slots__ = ("lock",)
    lock: threading.Lock

    def fork_locks(self) -> Sequence[Lockable]:
        return [self.lock]

    def fork_new_locks(self) -> None:
        self.lock = threading.Lock()

    def fork_repair(self) -> None:
        pass


class LockSet:
    """A participant for locks that live in a module rather than in an object."""

    def __init__(
        self, locks: Callable[[], Sequence[Lockable]], new_locks: Callable[[], None]
    ) -> None:
        self._locks = locks
        self._new_locks = new_locks

    def fork_locks(self) -> Sequence[Lockable]:
        return self._locks()

    def fork_new_locks(self) -> None:
        self._new_locks()

    def fork_repair(self) -> None:
        pass


_lock = threading.Lock()
_order = itertools.count()
# (level, registration order, participant): guarded by _lock.
_participants: list[tuple[int, int, weakref.ref[ForkSafe]]] = []


def register(participant: ForkSafe, level: int) -> None:
    """Take part in every fork from now on, at ``level`` (see the table above)."""
    if level not in (DEFAULT, WRAPPER, ALLOCATOR, LEAF):
        raise ValueError(f"unknown fork level {level}")
    with _lock:
        _participants[:] = [p for p in _participants if p[2]() is not None]
        _participants.append((level, next(_order), weakref.ref(participant)))


def participants() -> list[tuple[int, ForkSafe]]:
    """Every live participant with its level, in the order a fork takes them."""
    with _lock:
        return [(level, p) for level in (DEFAULT, WRAPPER, ALLOCATOR, LEAF) for p in _sorted(level)]


def _sorted(level: int) -> list[ForkSafe]:
    found = [(seq, p()) for lv, seq, p in _participants if lv == level]
    # Tracers are taken newest first: a newer one may wrap an older one, never the reverse.
    found.sort(key=lambda item: -item[0] if level == WRAPPER else item[0])
    return [p for _, p in found if p is not None]


# What _before_fork took, for the handlers after the fork: (participants, their
# locks).  Per thread: two threads forking at once must not release each other's.
_forking = threading.local()


def _held() -> list[tuple[ForkSafe, Sequence[Lockable]]]:
    held: list[tuple[ForkSafe, Sequence[Lockable]]] | None = getattr(_forking, "held", None)
    if held is None:
        held = _forking.held = []
    return held


def _take(participant: ForkSafe) -> None:
    locks = participant.fork_locks()
    taken: list[Lockable] = []
    try:
        for lock in locks:
            lock.acquire()
            taken.append(lock)
    finally:
        _held().append((participant, taken))


def _before_fork() -> None:
    try:
        with _lock:
            first = _sorted(DEFAULT)
        for participant in first:
            _take(participant)
        _lock.acquire()  # held until the fork: no one registers half-way
        _held().append((_LIST, [_lock]))
        for level in (WRAPPER, ALLOCATOR, LEAF):
            for participant in _sorted(level):
                _take(participant)
    except BaseException:
        # (CPython only prints an error raised here, and forks anyway: leave
        # nothing held, or the next fork would wait forever)
        _after_fork_parent()
        raise


def _after_fork_parent() -> None:
    held = _held()
    for _, locks in reversed(held):
        for lock in reversed(locks):
            lock.release()
    held.clear()


def _after_fork_child() -> None:
    global _lock
    _lock = threading.Lock()
    held = _held()
    for participant, _ in held:
        participant.fork_new_locks()
    for participant, _ in held:
        participant.fork_repair()
    held.clear()


# The participant list's own lock, as it appears among what _before_fork holds
# (the child makes a new one above).
_LIST = LockSet(lambda: [], lambda: None)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
