"""The hit path: ``malloc`` and ``free`` served from the calling thread's cache.

This is the whole of what most calls run (glibc's ``tcache_get`` and
``tcache_put``, mimalloc's ``_mi_page_malloc``): a pop from the thread's bin
of the request's size class, or a push onto it, and an entry in the thread's
``live`` table, with no lock (see :mod:`arenas.tcache` for why none is
needed, and for the invariants of a :class:`~arenas.tcache.ThreadCache`).
Each function has one exit to its slow path: ``_malloc_miss(size)`` and
``_free_miss(addr)``, the allocator's ``malloc_slow`` and ``free_slow``.

It is written once, as the module-level functions
:func:`malloc` and :func:`free` below, and every user of it gets *copies* of
them (:class:`HotPath`): the same code object, with globals of its own that
name its thread-local and its slow paths.  Each :class:`~arenas.Allocator`
has one pair, and ``arenas.malloc``/``arenas.free`` are one more, pointed at
the default allocator.  Why copies, and not methods or closures: on
free-threaded 3.13, functions defined at module level get deferred reference
counting, and copies of them too, while bound methods and closures called by
several threads contend on their reference counts (measured in
docs/ARCHITECTURE.md).  The names never change after they are made, so a
reference taken at any time (``from arenas import malloc``, ``m = a.malloc``)
runs at the same speed and sees every later change: a closed allocator or a
changed tunable *gates* the caches (the hit path then always misses) instead
of rebinding anything.


Locking: none here.  A copy's globals are written once, when it is made, and
by :meth:`HotPath.retarget` (one dict store: the default allocator changed).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from types import FunctionType
from typing import Any, cast

from .errors import CLOSED, AllocatorError
from .slab import SLAB_MAX
from .tcache import ThreadCache

__all__ = ["HotPath", "free", "malloc"]

# Every bound copy of malloc and free has its own values of these names.
_tls: Any = threading.local()


def _malloc_miss(size: Any) -> int:
    raise AssertionError("the hit path is used through HotPath copies only")


def _free_miss(addr: Any) -> None:
    raise AssertionError("the hit path is used through HotPath copies only")


def _free_full(cache: ThreadCache, addr: Any, cls: int) -> None:
    """The hit path freed a block it cannot keep: a full bin, a gated cache, or an
    address that only compares equal to an int."""
    owner = cache.owner()
    if owner is None:  # (the allocator is gone, and this thread's cache with it)
        raise AllocatorError(CLOSED)
    owner.free_popped(cache, addr, cls)


def _free_remote(cache: ThreadCache, addr: Any) -> bool:
    """A free the thread's own table missed: if another thread's table holds ``addr``,
    claim it and cache it here (as glibc's tcache does); else False."""
    owner = cache.owner()
    if owner is None:
        return False
    # The table that held the last block this thread freed for another: a
    # consumer freeing one producer's blocks finds each at the first look.
    cls = cache.hint.pop(addr, None)
    if cls is None:
        cls, table = owner.claim_from(addr)
        if cls is None:
            return False
        cache.hint = table
    owner.free_popped(cache, addr, cls)
    return True


def malloc(size: int) -> int:
    """Allocate ``size`` bytes; return the real address of the first one."""
    if size.__class__ is int and 0 <= size <= SLAB_MAX:  # (a chunk: no exception to catch)
        try:
            cache = _tls.cache  # AttributeError: this thread is not attached yet
            cls = cache.class_of[size]  # IndexError: gated
            cached = cache.bins[cls]
            if cached:
                addr = cached.pop()  # (IndexError only if close() emptied it just now)
                cache.live[addr] = cls
                return addr  # type: ignore[no-any-return]
        except (AttributeError, IndexError):
            pass
    return _malloc_miss(size)


def free(addr: int) -> None:
    """Free the block at ``addr``; ``free(0)`` does nothing."""
    try:
        cache = _tls.cache
        cls = cache.live.pop(addr, None)  # atomic: of two racing frees, one wins
    except (AttributeError, TypeError):  # not attached; an unhashable address
        return _free_miss(addr)
    if cls is None:
        if _free_remote(cache, addr):  # another thread's slab block, claimed and cached
            return None
        return _free_miss(addr)
    cached = cache.bins[cls]
    if len(cached) < cache.counts[cls] and addr.__class__ is int:
        cached.append(addr)
        return None
    return _free_full(cache, addr, cls)


class HotPath:
    """Copies of :func:`malloc` and :func:`free` bound to one thread-local and its slow paths.

    ``malloc_miss(size)`` and ``free_miss(addr)`` take every call the hit
    path cannot serve.  :meth:`retarget` points the copies at another
    thread-local (the module-level functions follow the default allocator).
    """

    def __init__(
        self,
        tls: threading.local,
        malloc_miss: Callable[[Any], int],
        free_miss: Callable[[Any], None],
        *,
        module: str,
        owner: str = "",
    ) -> None:
        self._globals: dict[str, Any] = {
            "__builtins__": builtins,
            "__name__": module,
            "_tls": tls,
            "_malloc_miss": malloc_miss,
            "_free_miss": free_miss,
            "_free_full": _free_full,
            "_free_remote": _free_remote,
            "SLAB_MAX": SLAB_MAX,
        }
        self.malloc = cast(Callable[[int], int], self._copy(malloc, owner))
        self.free = cast(Callable[[int], None], self._copy(free, owner))

    def _copy(self, template: Callable[..., Any], owner: str) -> FunctionType:
        code = template.__code__
        fn = FunctionType(code, self._globals, code.co_name)
        fn.__qualname__ = f"{owner}.{code.co_name}" if owner else code.co_name
        fn.__doc__ = template.__doc__
        fn.__annotations__ = dict(template.__annotations__)
        return fn

    def retarget(self, tls: threading.local) -> None:
        self._globals["_tls"] = tls
