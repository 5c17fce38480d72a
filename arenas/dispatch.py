"""What ``arenas.malloc`` is now: the module-level functions, and what they dispatch to.

The module-level functions serve the *default allocator*, made on first use
with its tunables from the ``ARENAS_TUNABLES`` environment variable
(``arena_max=2:mmap_threshold=65536``), unless replacement functions are
installed with :func:`set_mem_functions` (libevent's
``event_set_mem_functions``).

``malloc`` and ``free`` are one more copy of the thread cache's hit path
(:class:`arenas.hotpath.HotPath`), pointed at the default allocator's thread
caches: a hit costs exactly what ``Allocator.malloc`` costs.  They are made
once and never rebound, so ``from arenas import malloc`` taken before the
first call is the very object ``arenas.malloc`` is after it, at the same
speed, and it follows every later change.  The hot path is in one of three
states, switched by pointing it at a thread-local (one dict store):

* **no default allocator yet**: it points at a thread-local no thread ever
  fills, so every call misses; the first miss makes the default allocator;
* **plain**: it points at the default allocator's thread caches; a miss goes
  to that allocator's slow paths (a closed default allocator gates its
  caches, and the next miss makes a new one);
* **replaced**: a replacement set is installed, or an earlier set still owns
  blocks: it points at the empty thread-local again, and every call goes
  through the replacement functions below.

Replacement functions:

* all three or none: ``(None, None, None)`` restores the default allocator;
* ``calloc`` and ``strdup`` are built on the replacement ``malloc`` (calloc
  checks ``n * size`` for overflow, then zeroes);
* the contract is checked when installing: ``realloc_fn(0, n)`` must act as
  malloc and ``realloc_fn(p, 0)`` as free (return 0 or None);
* every block is owned by the function set that handed it out.  Freeing a
  block through another set's ``free`` raises :class:`InvalidPointer` naming
  both, instead of corrupting either.  Ownership costs one dict entry per
  live block handed out by a replacement; the default functions cost nothing
  extra (the default allocator knows its own blocks exactly).
* a replacement's malloc may fail with 0 (or None), as C's does: ``strdup``
  and ``calloc`` then write nothing, and a failed realloc leaves the old
  block owned and intact.

Locking: ``_default_lock`` is held while the default allocator is made;
``_lock`` guards the installed set, the retired sets, every set's ownership
table, and which thread-local the hot path points at.  Both are registered
with :mod:`arenas.fork` (levels DEFAULT and LEAF).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from . import fork
from .allocator import Allocator
from .chunk import calloc_request, checked_address, checked_request, checked_strdup
from .errors import InvalidPointer
from .hotpath import HotPath
from .stats import Stats
from .tunables import parse_tunables

__all__ = [
    "MemFunctions",
    "calloc",
    "default_allocator",
    "free",
    "malloc",
    "memalign",
    "realloc",
    "replaced",
    "set_mem_functions",
    "stats",
    "strdup",
    "usable_size",
    "view",
]

MallocFn = Callable[[int], int]
ReallocFn = Callable[[int, int], int]
FreeFn = Callable[[int], None]

_default: Allocator | None = None
_default_lock = threading.Lock()


class MemFunctions:
    """One installed set of functions, and the blocks it handed out."""

    _ids = itertools.count(1)

    def __init__(self, malloc_fn: MallocFn, realloc_fn: ReallocFn, free_fn: FreeFn) -> None:
        self.malloc_fn = malloc_fn
        self.realloc_fn = realloc_fn
        self.free_fn = free_fn
        self.id = next(self._ids)
        self.owned: dict[int, None] = {}  # guarded by _lock

    def same_functions(self, other: MemFunctions) -> bool:
        """The same three functions (bound methods of one object compare equal)."""
        return (self.malloc_fn, self.realloc_fn, self.free_fn) == (
            other.malloc_fn,
            other.realloc_fn,
            other.free_fn,
        )

    def __str__(self) -> str:
        name = getattr(self.malloc_fn, "__qualname__", repr(self.malloc_fn))
        return f"replacement #{self.id} ({name})"


_lock = threading.Lock()
_current: MemFunctions | None = None
# Earlier sets that still own live blocks.
_retired: list[MemFunctions] = []
# True while the module functions go through the replacement functions.
_replaced = False


def _reset_locks() -> None:
    global _default_lock, _lock
    _default_lock = threading.Lock()
    _lock = threading.Lock()


_fork_default = fork.LockSet(lambda: [_default_lock], lambda: None)
_fork_table = fork.LockSet(lambda: [_lock], _reset_locks)
fork.register(_fork_default, fork.DEFAULT)
fork.register(_fork_table, fork.LEAF)


# ============================================================ the hot path
def _malloc_miss(size: Any) -> int:
    if _replaced:
        return _replaced_malloc(size)
    allocator = _default  # (default_allocator's first test, without the call)
    if allocator is None or allocator.closed:
        allocator = default_allocator()
    return allocator.malloc_slow(size)


def _free_miss(addr: Any) -> None:
    if _replaced:
        return _replaced_free(addr)
    allocator = _default
    if allocator is None or allocator.closed:
        allocator = default_allocator()
    return allocator.free_slow(addr)


# A thread-local that no thread ever fills: while the hot path points at it,
# every call misses.
_NEVER = threading.local()
_hot = HotPath(_NEVER, _malloc_miss, _free_miss, module="arenas")
malloc = _hot.malloc
free = _hot.free


def replaced() -> bool:
    """Whether the module functions go through replacement functions now."""
    return _replaced


def _point() -> None:
    """Point the hot path at the default allocator's caches, or at nothing (``_lock`` held)."""
    plain = _default is not None and not _default.closed and not _replaced
    _hot.retarget(_default.caches.tls if plain and _default is not None else _NEVER)


def default_allocator() -> Allocator:
    """The allocator behind the module-level functions, created on first use."""
    global _default
    allocator = _default
    if allocator is None or allocator.closed:
        with _default_lock:
            allocator = _default
            if allocator is None or allocator.closed:
                allocator = Allocator(**parse_tunables(os.environ.get("ARENAS_TUNABLES", "")))
                _default = allocator
                with _lock:
                    _point()
    return allocator


# ================================================= the other module functions
def calloc(n: int, size: int) -> int:
    """Allocate ``n * size`` zeroed bytes; an overflowing product raises ``OutOfMemory``."""
    if _replaced:
        return _replaced_calloc(n, size)
    return default_allocator().calloc(n, size)


def realloc(addr: int, size: int) -> int:
    """Resize a block: ``realloc(0, n)`` mallocs, ``realloc(p, 0)`` frees and returns 0."""
    if _replaced:
        return _replaced_realloc(addr, size)
    return default_allocator().realloc(addr, size)


def strdup(data: bytes | bytearray | memoryview) -> int:
    """A NUL-terminated copy of ``data`` in the default allocator."""
    if _replaced:
        return _replaced_strdup(data)
    return default_allocator().strdup(data)


def memalign(alignment: int, size: int) -> int:
    """Allocate ``size`` bytes aligned to ``alignment`` (a power of two)."""
    return default_allocator().memalign(alignment, size)


def usable_size(addr: int) -> int:
    """How many bytes the block at ``addr`` can hold."""
    return default_allocator().usable_size(addr)


def view(addr: int, size: int | None = None) -> memoryview:
    """A writable memoryview of the block at ``addr``, bounded to the block."""
    return default_allocator().view(addr, size)


def stats() -> Stats:
    """A statistics snapshot of the default allocator."""
    return default_allocator().stats()


# ================================================== replacement functions
def _owner_of(addr: int) -> MemFunctions | None:
    for fns in (_current, *_retired):
        if fns is not None and addr in fns.owned:
            return fns
    return None


def _check_contract(malloc_fn: MallocFn, realloc_fn: ReallocFn, free_fn: FreeFn) -> None:
    for name, fn in (("malloc_fn", malloc_fn), ("realloc_fn", realloc_fn), ("free_fn", free_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
    probe = realloc_fn(0, 16)
    if not isinstance(probe, int) or not probe:
        raise ValueError("realloc_fn(0, n) must act as malloc and return an address")
    gone = realloc_fn(probe, 0)
    if gone not in (0, None):
        raise ValueError("realloc_fn(p, 0) must act as free and return 0")


def set_mem_functions(
    malloc_fn: MallocFn | None, realloc_fn: ReallocFn | None, free_fn: FreeFn | None
) -> None:
    """Redirect the module-level malloc, calloc, realloc, strdup and free; all three or none."""
    global _current
    given = [fn is not None for fn in (malloc_fn, realloc_fn, free_fn)]
    if any(given) and not all(given):
        raise ValueError("set_mem_functions() needs all three functions, or three Nones")
    new: MemFunctions | None = None
    if malloc_fn is not None and realloc_fn is not None and free_fn is not None:
        _check_contract(malloc_fn, realloc_fn, free_fn)
        new = MemFunctions(malloc_fn, realloc_fn, free_fn)
    with _lock:
        old = _current
        if old is not None and old.owned:
            _retired.append(old)
        revived = next((f for f in _retired if new is not None and f.same_functions(new)), None)
        if revived is not None:  # a set installed again owns its blocks again
            _retired.remove(revived)
            new = revived
        _current = new
        _update()


def _update() -> None:
    """Replaced while a set is installed or an earlier one still owns blocks (``_lock`` held)."""
    global _replaced
    _retired[:] = [fns for fns in _retired if fns.owned]
    _replaced = _current is not None or bool(_retired)
    _point()


def _returned(fns: MemFunctions, what: str, addr: object) -> int:
    """What a replacement returned, as an address: 0 (or None) means it failed, as in C."""
    if addr is None:
        return 0
    if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0:
        raise TypeError(f"{fns}: {what} returned {addr!r}, not an address")
    return addr


def _replaced_malloc(size: int) -> int:
    fns = _current
    if fns is None:
        return default_allocator().malloc(size)
    addr = _returned(fns, "malloc_fn", fns.malloc_fn(checked_request(size)))
    if addr:
        with _lock:
            fns.owned[addr] = None
    return addr


def _replaced_free(addr: int) -> None:
    if not checked_address(addr):
        return
    with _lock:
        owner = _owner_of(addr)
        current = _current
    if owner is None:
        if current is None:
            default_allocator().free(addr)
            _maybe_plain()
            return
        try:
            default_allocator().usable_size(addr)
        except InvalidPointer:
            raise InvalidPointer(
                f"free(): invalid pointer {addr:#x}: {current} did not allocate it"
            ) from None
        raise InvalidPointer(
            f"free(): block {addr:#x} was allocated by the default functions, before"
            f" {current} was installed; it must not reach that free function"
        )
    if owner is not current:
        raise InvalidPointer(
            f"free(): block {addr:#x} was allocated by {owner}, but the free function"
            f" installed now is {current or 'the default allocator'}'s"
        )
    owner.free_fn(addr)  # if it refuses (a corrupted block, say), the block stays owned
    with _lock:
        owner.owned.pop(addr, None)


def _replaced_realloc(addr: int, size: int) -> int:
    fns = _current
    checked_request(size)  # refused before anything changes, whichever functions run
    if not checked_address(addr):
        return _replaced_malloc(size)
    with _lock:
        owner = _owner_of(addr)
    if owner is not fns:
        _check_owner(addr, owner, fns)
    if fns is None:
        return default_allocator().realloc(addr, size)
    new = _returned(fns, "realloc_fn", fns.realloc_fn(addr, size))
    if new or not size:  # (a failed realloc leaves the old block live, and owned)
        with _lock:
            fns.owned.pop(addr, None)
            if new:
                fns.owned[new] = None
    return new


def _check_owner(addr: int, owner: MemFunctions | None, fns: MemFunctions | None) -> None:
    if owner is None and fns is not None:
        raise InvalidPointer(
            f"realloc(): block {addr:#x} was not allocated by {fns}"
            " (allocated by the default functions before it was installed?)"
        )
    if owner is not None:
        raise InvalidPointer(
            f"realloc(): block {addr:#x} was allocated by {owner}, but the functions"
            f" installed now are {fns or 'the default allocator'}'s"
        )


def _maybe_plain() -> None:
    """The last block of the retired sets is gone: back to the plain default functions."""
    if _retired and not any(fns.owned for fns in _retired):
        with _lock:
            _update()


def _replaced_calloc(n: int, size: int) -> int:
    if _current is None:
        return default_allocator().calloc(n, size)
    total = calloc_request(n, size)
    addr = _replaced_malloc(total)
    if addr:
        ctypes.memset(addr, 0, total)
    return addr


def _replaced_strdup(data: bytes | bytearray | memoryview) -> int:
    if _current is None:
        return default_allocator().strdup(data)
    raw = checked_strdup(data).tobytes()
    addr = _replaced_malloc(len(raw) + 1)
    if addr:  # a replacement's malloc may fail with 0, as C's does (and so does strdup)
        ctypes.memmove(addr, raw + b"\0", len(raw) + 1)
    return addr
