"""Ready-made replacement functions for ``arenas.set_mem_functions`` (libevent's
``event_set_mem_functions``).

Each has ``.malloc``, ``.realloc`` and ``.free`` (and ``install()`` to put
them in place with :func:`arenas.set_mem_functions`, which lives in
:mod:`arenas.dispatch` with the rest of what decides what ``arenas.malloc``
is):

* :func:`counting`: the byte-counting allocator of the libevent book;
* :func:`tracing`: writes every call, with thread ids, in the trace
  format of :mod:`arenas.trace`, so a program's own allocations can be
  replayed;
* :func:`debugging`: fill bytes, integrity words, guard bytes, leak report
  (:class:`arenas.debug.Debugger`, the same code as ``Allocator(debug=True)``).

Locking: each replacement guards its own counters with its own lock, which
it registers with :mod:`arenas.fork`: a tracer holds its lock across the
call into the allocator it wraps (level WRAPPER), a counter only around its
own counts (level LEAF).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Protocol, TextIO

from . import fork
from .debug import Debugger
from .dispatch import MemFunctions, default_allocator, set_mem_functions
from .trace import format_call, open_trace

__all__ = [
    "Counting",
    "MemFunctions",
    "Replacement",
    "Tracing",
    "counting",
    "debugging",
    "set_mem_functions",
    "tracing",
]


class Inner(Protocol):
    """Anything with malloc, realloc and free: an Allocator, or another replacement."""

    def malloc(self, size: int) -> int: ...
    def realloc(self, addr: int, size: int) -> int: ...
    def free(self, addr: int) -> None: ...


# ============================================================ ready-made ones
class Replacement:
    """A set of functions built on an inner allocator; ``install()`` puts it in place."""

    def __init__(self, inner: Inner | None) -> None:
        self.inner: Inner = inner if inner is not None else default_allocator()

    def malloc(self, size: int) -> int:
        return self.inner.malloc(size)

    def realloc(self, addr: int, size: int) -> int:
        return self.inner.realloc(addr, size)

    def free(self, addr: int) -> None:
        self.inner.free(addr)

    def install(self) -> None:
        set_mem_functions(self.malloc, self.realloc, self.free)

    def uninstall(self) -> None:
        set_mem_functions(None, None, None)


class Counting(Replacement, fork.OneLock):
    """Counts the bytes currently allocated (requested sizes), across realloc and free."""

    def __init__(self, inner: Inner | None = None) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.sizes: dict[int, int] = {}
        self.allocated = 0
        self.peak = 0
        self.calls = 0
        fork.register(self, fork.LEAF)

    def malloc(self, size: int) -> int:
        addr = self.inner.malloc(size)
        with self.lock:
            self.calls += 1
            if addr:  # (an inner allocator may fail with 0, as C's does)
                self.sizes[addr] = size
                self.allocated += size
                self.peak = max(self.peak, self.allocated)
        return addr

    def realloc(self, addr: int, size: int) -> int:
        new = self.inner.realloc(addr, size)
        with self.lock:
            self.calls += 1
            if new or not size:  # a failed realloc (0 for a size) leaves the old block
                self.allocated -= self.sizes.pop(addr, 0) if addr else 0
            if new:
                self.sizes[new] = size
                self.allocated += size
            self.peak = max(self.peak, self.allocated)
        return new

    def free(self, addr: int) -> None:
        self.inner.free(addr)
        if addr:
            with self.lock:
                self.calls += 1
                self.allocated -= self.sizes.pop(addr, 0)


class _Ended:
    """A closed trace's writer: calls go on, their lines go nowhere."""

    def write(self, line: str) -> int:
        return 0

    def close(self) -> None:
        pass


class Tracing(Replacement, fork.OneLock):
    """Writes every call as one line of the trace format (:mod:`arenas.trace`).

    Thread ids are renumbered 0..N-1 in order of first appearance.  One
    lock is held across each inner call and its line, so the file is a
    valid order of events across threads.

    The trace ends at ``close()``: later calls still reach the inner
    allocator, untraced, so blocks allocated while tracing can be freed
    after it (by a replacement still installed, say).
    """

    def __init__(self, path: str, inner: Inner | None = None) -> None:
        super().__init__(inner)
        self.path = path
        self.lock = threading.Lock()
        self.out: TextIO | _Ended
        self.out = open_trace(path, "w")  # open across calls: close() ends the trace
        self.tids: dict[int, int] = {}
        fork.register(self, fork.WRAPPER)

    def _tid(self) -> int:
        ident = threading.get_ident()
        tid = self.tids.get(ident)
        if tid is None:
            tid = self.tids[ident] = len(self.tids)
        return tid

    def malloc(self, size: int) -> int:
        with self.lock:
            addr = self.inner.malloc(size)
            self.out.write(format_call(self._tid(), "m", size, addr))
        return addr

    def calloc(self, n: int, size: int) -> int:
        with self.lock:
            calloc = getattr(self.inner, "calloc", None)
            if calloc is None:
                raise NotImplementedError("the inner allocator has no calloc")
            addr: int = calloc(n, size)
            self.out.write(format_call(self._tid(), "c", n, size, addr))
        return addr

    def memalign(self, alignment: int, size: int) -> int:
        with self.lock:
            memalign = getattr(self.inner, "memalign", None)
            if memalign is None:
                raise NotImplementedError("the inner allocator has no memalign")
            addr: int = memalign(alignment, size)
            self.out.write(format_call(self._tid(), "a", alignment, size, addr))
        return addr

    def realloc(self, addr: int, size: int) -> int:
        with self.lock:
            new = self.inner.realloc(addr, size)
            self.out.write(format_call(self._tid(), "r", addr, size, new))
        return new

    def free(self, addr: int) -> None:
        with self.lock:
            self.inner.free(addr)
            if addr:
                self.out.write(format_call(self._tid(), "f", addr))

    def close(self) -> None:
        with self.lock:
            self.out.close()
            self.out = _Ended()

    def __enter__(self) -> Tracing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def counting(inner: Inner | None = None) -> Counting:
    """The byte-counting allocator of the libevent book, over ``inner`` (default allocator)."""
    return Counting(inner)


def tracing(path: str, inner: Inner | None = None) -> Tracing:
    """Log every call to ``path`` (gzip when it ends in ``.gz``) in the trace format."""
    return Tracing(path, inner)


def debugging(
    inner: Inner | None = None,
    *,
    fill_new: int = 0xCD,
    fill_free: int = 0xDD,
    guard: int = 16,
) -> Debugger:
    """The debugging allocator over ``inner``: the same code as ``Allocator(debug=True)``."""
    base: Any = inner if inner is not None else default_allocator()
    return Debugger(
        base.malloc,
        base.free,
        getattr(base, "memalign", None),
        view=getattr(base, "view", None),
        fill_new=fill_new,
        fill_free=fill_free,
        guard=guard,
    )
