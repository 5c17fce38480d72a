"""Debugging: fill bytes, an integrity word, guard bytes and a leak report (balloc's B_DEBUG).

A :class:`Debugger` wraps any pair of functions that hand out real addresses
(``Allocator(debug=True)`` wraps the allocator's own; ``arenas.hooks.debugging``
wraps whatever it is given).  Every block it hands out is laid out as::

    raw                         user = raw + prefix            user + size
    | ... | integrity | size   | user bytes (filled 0xCD)     | guard 0xFD x 16 |
            8 bytes     8 bytes

* new blocks are filled with ``fill_new`` and freed ones with ``fill_free``
  (balloc's FILL_CHAR, glibc's perturb), so reads of uninitialised or freed
  memory show up as a recognisable pattern;
* the integrity word (balloc's INTEGRITY magic) is mixed with the block's
  address, so a header copied from elsewhere does not pass either;
* the guard bytes after the block catch overruns.

Any damage is reported at ``free``, ``realloc`` or :meth:`Debugger.check` as
:class:`~arenas.errors.HeapCorruption`, naming the block's address, size and
allocating thread, and the damaged block is *not* freed.
:meth:`Debugger.report_leaks` lists the live blocks.

Every block's bytes are touched only while the block is the caller's alone:
just allocated, or taken out of ``blocks`` under the lock (a free, a
realloc).  So a realloc racing a free of the same block makes one of them
fail with ``DoubleFree``/``InvalidPointer``; neither copies from memory the
other has already given back.

Locking: ``blocks``, ``freed`` and ``closed`` are guarded by
``Debugger.lock``.  It is held while a block's bytes are checked through the
inner allocator's view (a block in the records is live, and its allocator
cannot close under the check), never while the inner malloc or free runs.
So the lock is taken before any of the inner allocator's (fork level
WRAPPER, see :mod:`arenas.fork`).
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from . import fork
from .chunk import calloc_request, checked_address, checked_request
from .errors import CLOSED, AllocatorError, DoubleFree, HeapCorruption, InvalidPointer, for_call

__all__ = ["Debugger", "Leak"]

INTEGRITY = 0x5A17_AB1E_C0DE_F00D
FILL_NEW = 0xCD
FILL_FREE = 0xDD
GUARD_BYTE = 0xFD
HEADER = 16  # integrity word + size word, just below the user bytes
MASK64 = (1 << 64) - 1
# How many freed blocks are remembered, so a second free is named as such.
FREED_MEMORY = 1 << 16


@dataclass(frozen=True)
class Leak:
    """A block still live when :meth:`Debugger.report_leaks` was asked."""

    addr: int
    size: int
    thread: str

    def __str__(self) -> str:
        return f"{self.size} bytes at {self.addr:#x}, allocated by thread {self.thread!r}"


@dataclass(frozen=True)
class _Record:
    raw: int
    prefix: int  # user = raw + prefix
    size: int
    thread: str

    @property
    def span(self) -> int:
        return self.prefix + self.size


ViewFn = Callable[[int, int], memoryview]


class Debugger(fork.OneLock):
    """Debugging versions of malloc, free, realloc, calloc and memalign over inner ones.

    ``view(raw, n)``, when given, is the inner allocator's view of its blocks:
    every byte the debugger reads or writes goes through it, so a block of an
    allocator closed meanwhile raises that allocator's error instead of
    touching unmapped memory.  Without it, the bytes are reached by address,
    and the inner allocator must keep its blocks mapped while they are live.
    """

    def __init__(
        self,
        malloc: Callable[[int], int],
        free: Callable[[int], None],
        memalign: Callable[[int, int], int] | None = None,
        *,
        view: ViewFn | None = None,
        fill_new: int = FILL_NEW,
        fill_free: int = FILL_FREE,
        guard: int = 16,
        on_oom: Callable[[int], object] | None = None,
    ) -> None:
        for name, value in (("fill_new", fill_new), ("fill_free", fill_free)):
            if not 0 <= value <= 255:
                raise ValueError(f"{name} must be a byte value 0..255, got {value}")
        if not 0 <= guard <= 4096:
            raise ValueError(f"guard must be 0..4096 bytes, got {guard}")
        self._malloc = malloc
        self._free = free
        self._memalign = memalign
        self._view = view
        self._on_oom = on_oom  # told of sizes refused before the inner malloc sees them
        self.fill_new = fill_new
        self.fill_free = fill_free
        self.guard = guard
        self._guard_bytes = bytes([GUARD_BYTE]) * guard
        self.lock = threading.Lock()
        self.blocks: dict[int, _Record] = {}
        self.freed: OrderedDict[int, int] = OrderedDict()
        self.closed = False
        fork.register(self, fork.WRAPPER)

    def close(self) -> None:
        """The inner allocator is closed: forget every block; later calls raise."""
        with self.lock:
            self.closed = True
            self.blocks.clear()
            self.freed.clear()

    def _live_record(self, user: int, op: str) -> _Record:
        """The record of the live block ``user`` (``lock`` held), or the error ``op`` raises."""
        if self.closed:
            raise AllocatorError(CLOSED)
        record = self.blocks.get(user)
        if record is None:
            raise for_call(self._not_live(user), op, user)
        return record

    def _bytes(self, raw: int, length: int) -> memoryview:
        """The first ``length`` bytes of the inner block at ``raw``."""
        if self._view is not None:
            return self._view(raw, length)
        return memoryview((ctypes.c_char * length).from_address(raw)).cast("B")

    # ----------------------------------------------------------- allocate
    def malloc(self, size: int) -> int:
        size = checked_request(size, "size", self._on_oom)
        raw = self._malloc(size + HEADER + self.guard)
        return self._dress(raw, HEADER, size)

    def memalign(self, alignment: int, size: int) -> int:
        if self._memalign is None:
            raise NotImplementedError("the wrapped allocator has no memalign")
        alignment = checked_request(alignment, "alignment", self._on_oom)
        size = checked_request(size, "size", self._on_oom)
        prefix = max(HEADER, alignment)
        raw = self._memalign(alignment, size + prefix + self.guard)
        return self._dress(raw, prefix, size)

    def calloc(self, n: int, size: int) -> int:
        total = calloc_request(n, size, self._on_oom)
        addr = self.malloc(total)
        record = self.record(addr, "calloc")
        with self._bytes(record.raw, record.span) as mv:  # (ours alone: just allocated)
            mv[record.prefix :] = bytes(total)
        return addr

    def _dress(self, raw: int, prefix: int, size: int) -> int:
        user = raw + prefix
        record = _Record(raw, prefix, size, threading.current_thread().name)
        with self._bytes(raw, record.span + self.guard) as mv:  # (ours alone: just allocated)
            struct.pack_into("<QQ", mv, prefix - HEADER, (INTEGRITY ^ user) & MASK64, size)
            mv[prefix : prefix + size] = bytes([self.fill_new]) * size
            mv[prefix + size :] = self._guard_bytes
        with self.lock:
            self.blocks[user] = record
            self.freed.pop(user, None)
        return user

    # ---------------------------------------------------------------- free
    def free(self, addr: int) -> None:
        user = checked_address(addr)
        if not user:
            return
        self._release(user, self._claim(user, "free"))

    def realloc(self, addr: int, size: int) -> int:
        user = checked_address(addr)
        size = checked_request(size, "size", self._on_oom)
        if not user:
            return self.malloc(size)
        if size == 0:
            self.free(user)
            return 0
        old = self._claim(user, "realloc")  # ours alone: a racing free finds nothing
        try:
            new = self.malloc(size)
            n = min(old.size, size)
            new_raw = self.record(new, "realloc").raw
            with (
                self._bytes(old.raw, old.span) as src,
                self._bytes(new_raw, new - new_raw + n) as dst,
            ):
                dst[new - new_raw :] = src[old.prefix : old.prefix + n]
        except BaseException:
            with self.lock:  # the old block is untouched: it stays live
                self.blocks[user] = old
            raise
        self._release(user, old)
        return new

    def _claim(self, user: int, op: str) -> _Record:
        """Take the live block ``user`` out of the records, checked: the caller owns it
        alone now.  A damaged block stays live, and is reported."""
        with self.lock:
            record = self._live_record(user, op)
            self._verify(user, record)
            del self.blocks[user]
        return record

    def _release(self, user: int, record: _Record) -> None:
        """Fill a claimed block with the free pattern and free it underneath."""
        with self.lock:
            self.freed[user] = record.size
            if len(self.freed) > FREED_MEMORY:
                self.freed.popitem(last=False)
        with self._bytes(record.raw, record.span) as mv:
            mv[record.prefix :] = bytes([self.fill_free]) * record.size
        self._free(record.raw)

    def _not_live(self, user: int) -> InvalidPointer:
        if user in self.freed:
            return DoubleFree(
                f"free(): double free detected: debug block {user:#x}"
                f" ({self.freed[user]} bytes) is already free"
            )
        return InvalidPointer(f"free(): invalid pointer {user:#x}: not a live debug block")

    # --------------------------------------------------------------- check
    def _verify(self, user: int, record: _Record) -> None:
        with self._bytes(record.raw, record.span + self.guard) as mv:
            integrity, size = struct.unpack_from("<QQ", mv, record.prefix - HEADER)
            guard = mv[record.span :].tobytes()
        where = f"block {user:#x} ({record.size} bytes, allocated by thread {record.thread!r})"
        if integrity != (INTEGRITY ^ user) & MASK64 or size != record.size:
            raise HeapCorruption(f"integrity word before {where} is corrupted: underrun?")
        if guard != self._guard_bytes:
            raise HeapCorruption(f"guard bytes after {where} are overwritten: overrun")

    def usable_size(self, addr: int) -> int:
        if checked_address(addr) == 0:
            return 0
        return self.record(addr, "usable_size").size

    def record(self, addr: int, op: str) -> _Record:
        """The record of the live block ``addr``; if none, the error ``op`` (the call) raises."""
        with self.lock:
            return self._live_record(addr, op)

    def check(self) -> None:
        """Verify every live block's integrity word and guard bytes."""
        with self.lock:
            for user, record in self.blocks.items():
                self._verify(user, record)

    def report_leaks(self) -> list[Leak]:
        """The live blocks, oldest first, with their sizes and allocating threads."""
        with self.lock:
            return [Leak(user, r.size, r.thread) for user, r in self.blocks.items()]
