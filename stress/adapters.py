"""Allocator adapters: one small interface in front of every allocator we compare.

An adapter hands out *handles*: real addresses for allocators that have
them (arenas, glibc), opaque integers for those that do not
(``multiprocessing.heap``, ``bytearray``).  Workloads only ever touch memory
through ``write`` and ``read``, so every adapter is driven the same way and
every workload can check the bytes it wrote.

Adapters (``ADAPTERS``):

=====================  ====================================================
``arenas``             a fresh ``arenas.Allocator()``
``arenas-1arena``      ``arena_max=1``: every thread shares one arena
``arenas-notcache``    ``tcache_count=0``: no per-thread cache
``glibc``              glibc's malloc family through ``ctypes``
``mp-heap``            ``multiprocessing.heap.Heap`` (its ``malloc``/``free``)
``bytearray``          plain ``bytearray(n)``: what Python code does without us
=====================  ====================================================

``footprint()`` is what the allocator holds from the system for these
blocks: heap and mapping bytes for arenas, the arenas of the
``multiprocessing`` heap, and the live bytes themselves for ``bytearray``.
For glibc it is 0, not measured: in this process glibc's heap also holds
the interpreter's objects (the workload's own lists, frames and bytes), so
its growth is not glibc's footprint for the blocks; :mod:`stress.native`
replays traces in C to measure glibc's footprint (the campaign's traces
table), and the reports print "-" for a footprint of 0.

Locking: each adapter guards its own handle table (if it has one) with a lock.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Callable
from multiprocessing.heap import Heap
from typing import Any

import arenas

from .harness import glibc

__all__ = ["ADAPTERS", "Adapter", "make_adapter"]


class Adapter:
    """The interface every allocator is driven through."""

    name = "adapter"
    real_addresses = True

    def malloc(self, size: int) -> int:
        raise NotImplementedError

    def free(self, addr: int) -> None:
        raise NotImplementedError

    def realloc(self, addr: int, size: int) -> int:
        raise NotImplementedError

    def calloc(self, n: int, size: int) -> int:
        addr = self.malloc(n * size)
        self.write(addr, bytes(n * size))
        return addr

    def memalign(self, alignment: int, size: int) -> int:
        return self.malloc(size)

    def write(self, addr: int, data: bytes, offset: int = 0) -> None:
        ctypes.memmove(addr + offset, data, len(data))

    def read(self, addr: int, n: int, offset: int = 0) -> bytes:
        return ctypes.string_at(addr + offset, n)

    def footprint(self) -> int:
        return 0

    def arena_stats(self) -> list[dict[str, int]] | None:
        return None

    def close(self) -> None:
        pass


# ===================================================================== arenas
class ArenasAdapter(Adapter):
    def __init__(self, name: str = "arenas", **tunables: Any) -> None:
        self.name = name
        self.alloc = arenas.Allocator(**tunables)
        self.malloc = self.alloc.malloc  # type: ignore[method-assign,assignment]
        self.free = self.alloc.free  # type: ignore[method-assign,assignment]
        self.realloc = self.alloc.realloc  # type: ignore[method-assign]
        self.calloc = self.alloc.calloc  # type: ignore[method-assign]
        self.memalign = self.alloc.memalign  # type: ignore[method-assign]

    def footprint(self) -> int:
        return self.alloc.system_bytes()  # (stats().system_bytes, without the whole snapshot)

    def arena_stats(self) -> list[dict[str, int]]:
        return [
            {
                "index": a.index,
                "threads": a.attached_threads,
                "system": a.system_bytes,
                "in_use": a.in_use_bytes,
                "peak": a.max_system_bytes,
            }
            for a in self.alloc.stats().arenas
        ]

    def close(self) -> None:
        self.alloc.close()


# ====================================================================== glibc
_malloc, _free, _realloc, _calloc, _memalign = glibc(
    "malloc", "free", "realloc", "calloc", "memalign"
)


class GlibcAdapter(Adapter):
    name = "glibc"

    def malloc(self, size: int) -> int:
        return int(_malloc(size) or 0)

    def free(self, addr: int) -> None:
        _free(addr)

    def realloc(self, addr: int, size: int) -> int:
        return int(_realloc(addr, size) or 0)

    def calloc(self, n: int, size: int) -> int:
        return int(_calloc(n, size) or 0)

    def memalign(self, alignment: int, size: int) -> int:
        return int(_memalign(alignment, size) or 0)

    def footprint(self) -> int:
        return 0  # not measurable in this process: see the module's docstring


# ============================================================ handle adapters
class _HandleAdapter(Adapter):
    """Adapters without real addresses: integer handles into a table."""

    real_addresses = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(16, 16)
        self._live: dict[int, Any] = {}

    def _put(self, obj: Any) -> int:
        handle = next(self._next)
        with self._lock:
            self._live[handle] = obj
        return handle

    def _pop(self, handle: int) -> Any:
        with self._lock:
            return self._live.pop(handle)

    def realloc(self, addr: int, size: int) -> int:
        if not addr:
            return self.malloc(size)
        if size == 0:
            self.free(addr)
            return 0
        old = self._size(addr)
        new = self.malloc(size)
        self.write(new, self.read(addr, min(old, size)))
        self.free(addr)
        return new

    def _size(self, handle: int) -> int:
        raise NotImplementedError


class BytearrayAdapter(_HandleAdapter):
    name = "bytearray"

    def __init__(self) -> None:
        super().__init__()
        self._bytes = 0

    def malloc(self, size: int) -> int:
        with self._lock:
            self._bytes += size
        return self._put(bytearray(size))

    def free(self, addr: int) -> None:
        if addr:
            buf = self._pop(addr)
            with self._lock:
                self._bytes -= len(buf)

    def write(self, addr: int, data: bytes, offset: int = 0) -> None:
        self._live[addr][offset : offset + len(data)] = data

    def read(self, addr: int, n: int, offset: int = 0) -> bytes:
        return bytes(self._live[addr][offset : offset + n])

    def _size(self, handle: int) -> int:
        return len(self._live[handle])

    def footprint(self) -> int:
        return self._bytes


class MpHeapAdapter(_HandleAdapter):
    """``multiprocessing.heap.Heap``: the allocator behind ``multiprocessing``'s
    shared ctypes objects.  Its ``malloc(size)`` returns ``(arena, start, stop)``
    and ``free`` takes that tuple back; the bytes are ``arena.buffer[start:stop]``."""

    name = "mp-heap"

    def __init__(self) -> None:
        super().__init__()
        self.heap = Heap()

    def malloc(self, size: int) -> int:
        return self._put(self.heap.malloc(max(size, 1)))

    def free(self, addr: int) -> None:
        if addr:
            self.heap.free(self._pop(addr))

    def _block(self, handle: int) -> tuple[Any, int, int]:
        block: tuple[Any, int, int] = self._live[handle]
        return block

    def write(self, addr: int, data: bytes, offset: int = 0) -> None:
        arena, start, _ = self._block(addr)
        arena.buffer[start + offset : start + offset + len(data)] = data

    def read(self, addr: int, n: int, offset: int = 0) -> bytes:
        arena, start, _ = self._block(addr)
        return bytes(arena.buffer[start + offset : start + offset + n])

    def _size(self, handle: int) -> int:
        _, start, stop = self._block(handle)
        return int(stop - start)

    def footprint(self) -> int:
        arenas_: list[Any] = getattr(self.heap, "_arenas", [])
        return sum(int(arena.size) for arena in arenas_)


def _notcache() -> Adapter:
    return ArenasAdapter("arenas-notcache", tcache_count=0)


ADAPTERS: dict[str, Callable[[], Adapter]] = {
    "arenas": lambda: ArenasAdapter("arenas"),
    "arenas-1arena": lambda: ArenasAdapter("arenas-1arena", arena_max=1),
    "arenas-notcache": _notcache,
    "glibc": GlibcAdapter,
    "mp-heap": MpHeapAdapter,
    "bytearray": BytearrayAdapter,
}


def make_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise ValueError(f"unknown allocator {name!r}; known: {', '.join(ADAPTERS)}") from None
