"""Replaceable memory functions (libevent's ``event_set_mem_functions``) and ready-made ones.

``arenas.set_mem_functions(malloc_fn, realloc_fn, free_fn)`` redirects the
module-level ``malloc``, ``calloc``, ``realloc``, ``strdup`` and ``free``:

* all three or none: ``(None, None, None)`` restores the default allocator;
* ``calloc`` and ``strdup`` are built on the replacement ``malloc`` (calloc
  checks ``n * size`` for overflow, then zeroes);
* the contract is checked when installing: ``realloc_fn(0, n)`` must act as
  malloc and ``realloc_fn(p, 0)`` as free (return 0 or None);
* every block is owned by the function set that handed it out.  Freeing a
  block through another set's ``free`` raises :class:`InvalidPointer` naming
  both, instead of corrupting either.

Ownership costs one dict entry per live block handed out by a replacement.
The default functions cost nothing extra: the default allocator knows its
own blocks exactly, and the module names are bound straight to its methods
unless blocks of an earlier replacement are still outstanding.

Ready-made replacements, each with ``.malloc``, ``.realloc`` and ``.free``
(and ``install()`` to put them in place):

* :func:`counting`: the byte-counting allocator of the libevent book;
* :func:`tracing`: writes every call, with thread ids, in the stress
  suite's trace format, so a program's own allocations can be replayed;
* :func:`debugging`: fill bytes, integrity words, guard bytes, leak report
  (:class:`arenas.debug.Debugger`, the same code as ``Allocator(debug=True)``).

Locking: the installed set and the ownership table are guarded by
``_lock``; each replacement guards its own counters with its own lock.
"""

from __future__ import annotations

import ctypes
import gzip
import itertools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .chunk import calloc_request, checked_address, checked_request, checked_strdup
from .debug import Debugger
from .errors import InvalidPointer

if TYPE_CHECKING:
    from .allocator import Allocator

__all__ = [
    "Counting",
    "MemFunctions",
    "Replacement",
    "Tracing",
    "counting",
    "debugging",
    "tracing",
]

MallocFn = Callable[[int], int]
ReallocFn = Callable[[int, int], int]
FreeFn = Callable[[int], None]


class Inner(Protocol):
    """Anything with malloc, realloc and free: an Allocator, or another replacement."""

    def malloc(self, size: int) -> int: ...
    def realloc(self, addr: int, size: int) -> int: ...
    def free(self, addr: int) -> None: ...


# ====================================================================== the set
class MemFunctions:
    """One installed set of functions, and the blocks it handed out."""

    _ids = itertools.count(1)

    def __init__(self, malloc_fn: MallocFn, realloc_fn: ReallocFn, free_fn: FreeFn) -> None:
        self.malloc_fn = malloc_fn
        self.realloc_fn = realloc_fn
        self.free_fn = free_fn
        self.id = next(self._ids)
        self.owned: dict[int, None] = {}  # guarded by _lock

    def __str__(self) -> str:
        name = getattr(self.malloc_fn, "__qualname__", repr(self.malloc_fn))
        return f"replacement #{self.id} ({name})"


_lock = threading.Lock()
_current: MemFunctions | None = None
# Earlier sets that still own live blocks.
_retired: list[MemFunctions] = []


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
        _current = new
    _bind()


def _bind() -> None:
    """Point the module names at the current set: the default allocator's own methods
    when there is no replacement and no earlier one still owns blocks."""
    from . import _bind_replacements

    with _lock:
        _retired[:] = [fns for fns in _retired if fns.owned]
        plain = _current is None and not _retired
    _bind_replacements(None if plain else _REPLACED)


# ================================================================ the functions
def _default() -> Allocator:
    from . import default_allocator

    return default_allocator()


def _returned(fns: MemFunctions, what: str, addr: object) -> int:
    """What a replacement returned, as an address: 0 (or None) means it failed, as in C."""
    if addr is None:
        return 0
    if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0:
        raise TypeError(f"{fns}: {what} returned {addr!r}, not an address")
    return addr


def _malloc(size: int) -> int:
    fns = _current
    if fns is None:
        return _default().malloc(size)
    addr = _returned(fns, "malloc_fn", fns.malloc_fn(checked_request(size)))
    if addr:
        with _lock:
            fns.owned[addr] = None
    return addr


def _free(addr: int) -> None:
    if not checked_address(addr):
        return
    with _lock:
        owner = _owner_of(addr)
        current = _current
    if owner is None:
        if current is None:
            _default().free(addr)
            _maybe_unbind()
            return
        default = _default()
        try:
            default.usable_size(addr)
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


def _realloc(addr: int, size: int) -> int:
    fns = _current
    checked_request(size)  # refused before anything changes, whichever functions run
    if not checked_address(addr):
        return _malloc(size)
    with _lock:
        owner = _owner_of(addr)
    if owner is not fns:
        _free_check_only(addr, owner, fns)
    if fns is None:
        return _default().realloc(addr, size)
    new = _returned(fns, "realloc_fn", fns.realloc_fn(addr, size))
    if new or not size:  # (a failed realloc leaves the old block live, and owned)
        with _lock:
            fns.owned.pop(addr, None)
            if new:
                fns.owned[new] = None
    return new


def _free_check_only(addr: int, owner: MemFunctions | None, fns: MemFunctions | None) -> None:
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


def _maybe_unbind() -> None:
    if _retired and not any(fns.owned for fns in _retired):
        _bind()


def _calloc(n: int, size: int) -> int:
    if _current is None:
        return _default().calloc(n, size)
    total = calloc_request(n, size)
    addr = _malloc(total)
    if addr:
        ctypes.memset(addr, 0, total)
    return addr


def _strdup(data: bytes | bytearray | memoryview) -> int:
    if _current is None:
        return _default().strdup(data)
    raw = checked_strdup(data).tobytes()
    addr = _malloc(len(raw) + 1)
    if addr:  # a replacement's malloc may fail with 0, as C's does (and so does strdup)
        ctypes.memmove(addr, raw + b"\0", len(raw) + 1)
    return addr


# What the module names are bound to while a replacement is in play.
_REPLACED: dict[str, Callable[..., Any]] = {
    "malloc": _malloc,
    "free": _free,
    "realloc": _realloc,
    "calloc": _calloc,
    "strdup": _strdup,
}


# ============================================================ ready-made ones
class Replacement:
    """A set of functions built on an inner allocator; ``install()`` puts it in place."""

    def __init__(self, inner: Inner | None) -> None:
        self.inner: Inner = inner if inner is not None else _default()

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


class Counting(Replacement):
    """Counts the bytes currently allocated (requested sizes), across realloc and free."""

    def __init__(self, inner: Inner | None = None) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.sizes: dict[int, int] = {}
        self.allocated = 0
        self.peak = 0
        self.calls = 0

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


class Tracing(Replacement):
    """Writes every call as one line of the stress suite's trace format.

    ``<tid> m <size> <addr>``, ``<tid> c <n> <size> <addr>``,
    ``<tid> r <old> <size> <new>``, ``<tid> f <addr>``,
    ``<tid> a <align> <size> <addr>``; thread ids are renumbered 0..N-1 in
    order of first appearance.  One lock is held across each inner call and
    its line, so the file is a valid order of events across threads.

    The trace ends at ``close()``: later calls still reach the inner
    allocator, untraced, so blocks allocated while tracing can be freed
    after it (by a replacement still installed, say).
    """

    def __init__(self, path: str, inner: Inner | None = None) -> None:
        super().__init__(inner)
        self.path = path
        self.lock = threading.Lock()
        self.out: TextIO | _Ended
        if path.endswith(".gz"):
            self.out = gzip.open(path, "wt", encoding="ascii")  # noqa: SIM115 - see close()
        else:
            self.out = open(path, "w", encoding="ascii")  # noqa: SIM115 - see close()
        self.tids: dict[int, int] = {}

    def _tid(self) -> int:
        ident = threading.get_ident()
        tid = self.tids.get(ident)
        if tid is None:
            tid = self.tids[ident] = len(self.tids)
        return tid

    def malloc(self, size: int) -> int:
        with self.lock:
            addr = self.inner.malloc(size)
            self.out.write(f"{self._tid()} m {size} {addr:#x}\n")
        return addr

    def calloc(self, n: int, size: int) -> int:
        with self.lock:
            calloc = getattr(self.inner, "calloc", None)
            if calloc is None:
                raise NotImplementedError("the inner allocator has no calloc")
            addr: int = calloc(n, size)
            self.out.write(f"{self._tid()} c {n} {size} {addr:#x}\n")
        return addr

    def memalign(self, alignment: int, size: int) -> int:
        with self.lock:
            memalign = getattr(self.inner, "memalign", None)
            if memalign is None:
                raise NotImplementedError("the inner allocator has no memalign")
            addr: int = memalign(alignment, size)
            self.out.write(f"{self._tid()} a {alignment} {size} {addr:#x}\n")
        return addr

    def realloc(self, addr: int, size: int) -> int:
        with self.lock:
            new = self.inner.realloc(addr, size)
            self.out.write(f"{self._tid()} r {addr:#x} {size} {new:#x}\n")
        return new

    def free(self, addr: int) -> None:
        with self.lock:
            self.inner.free(addr)
            if addr:
                self.out.write(f"{self._tid()} f {addr:#x}\n")

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
    """Log every call to ``path`` (gzip when it ends in ``.gz``) in the stress trace format."""
    return Tracing(path, inner)


def debugging(
    inner: Inner | None = None,
    *,
    fill_new: int = 0xCD,
    fill_free: int = 0xDD,
    guard: int = 16,
) -> Debugger:
    """The debugging allocator over ``inner``: the same code as ``Allocator(debug=True)``."""
    base: Any = inner if inner is not None else _default()
    return Debugger(
        base.malloc,
        base.free,
        getattr(base, "memalign", None),
        fill_new=fill_new,
        fill_free=fill_free,
        guard=guard,
    )
