"""Memory regions: anonymous mappings with real addresses (glibc's MMAP/MORECORE layer).

This module owns every byte the allocator hands out.  A :class:`Region` is one
anonymous ``mmap``: private (a forked child gets a copy-on-write copy, not
shared memory) and ``MAP_NORESERVE`` (untouched pages cost no resident memory,
so reserving 128 MiB of address space for an aligned heap is free).

Each region has one *exporter*: a ``ctypes`` array over its bytes, the only
object that holds a buffer of the mapping.  Everything else is made from it:

* ``words``  -- the region's bytes as unsigned 64-bit words, for chunk headers;
* ``view()`` -- a user view: a fresh ``memoryview`` of the exporter each time.

Why a fresh view each time, not a slice of one shared view: slicing a
memoryview bumps a counter in the buffer it shares with its parent, and on
free-threaded CPython 3.13 that counter is not atomic (CPython issues 127716
and 155606).  Threads slicing one shared view, or dropping slices of it in
other threads, corrupt the count; the buffer is then released while views
still use it.  A view made from the exporter has a buffer of its own, which
only its own thread creates; the exporter itself counts nothing (``ctypes``
keeps no export count), so the one thing threads share is the exporter's
reference count, which every build keeps exactly.

A view keeps the exporter alive, and the exporter keeps the mapping: Python's
``mmap`` refuses to close while it is exported.  So a region is unmapped only
when no user view remains; otherwise its pages are handed back with
``MADV_DONTNEED`` and the unmap is retried later (a stale view then reads
zeros instead of crashing the process).  On free-threaded builds an object
dropped by a thread other than its creator may be freed a little later (the
creator merges its reference counts at its next check), so an unmap can be
deferred there even with no view alive; the pages are given back at once
either way.

Locking: a Region has no lock of its own; its owner's lock guards ``words``
and ``unmap`` (the owning arena's lock for heaps, the mapping table's lock
for large chunks).  ``view()`` needs none: it reads one attribute.
:class:`SystemBudget` has its own small lock, as has the list of deferred
unmaps.
"""

from __future__ import annotations

import ctypes
import mmap
import threading

from . import fork
from .errors import OutOfMemory

__all__ = ["PAGE_SIZE", "BufferRegion", "Region", "SystemBudget", "page_align", "resident_bytes"]

PAGE_SIZE: int = mmap.PAGESIZE
# Linux's MAP_NORESERVE; Python's mmap module does not export it before 3.13.
_MAP_NORESERVE = 0x4000
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE

_mincore = ctypes.CDLL(None).mincore
_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_mincore.restype = ctypes.c_int


def resident_bytes(addr: int, length: int) -> int:
    """How many bytes of the page-aligned range ``[addr, addr + length)`` are resident.

    ``mincore(2)`` marks each resident page with bit 0; if it fails, every
    page is counted.
    """
    pages = length // PAGE_SIZE
    vec = ctypes.create_string_buffer(pages)
    if _mincore(addr, length, vec) != 0:
        return pages * PAGE_SIZE
    return (pages - vec.raw.count(0)) * PAGE_SIZE


# Mappings whose unmapping was refused because a user view was still alive.
# Their pages are already discarded; we retry closing them now and then.
_deferred: list[mmap.mmap] = []
_deferred_lock = threading.Lock()


def _reset_deferred_lock() -> None:
    global _deferred_lock
    _deferred_lock = threading.Lock()


_fork_locks = fork.LockSet(lambda: [_deferred_lock], _reset_deferred_lock)
fork.register(_fork_locks, fork.LEAF)


def page_align(n: int) -> int:
    """Round ``n`` up to a whole number of pages."""
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _address_of(mm: mmap.mmap) -> int:
    anchor = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def _mmap(length: int) -> mmap.mmap:
    """An anonymous private mapping, or ``OutOfMemory`` (whatever the system's reason)."""
    try:
        return mmap.mmap(-1, length, flags=_MAP_FLAGS)
    except (OSError, OverflowError, ValueError) as exc:
        raise OutOfMemory(f"mmap of {length} bytes failed: {exc}") from exc


class Region:
    """One anonymous mapping, optionally trimmed to an aligned window.

    ``addr`` is the real virtual address of the window's first byte and
    ``size`` its length.  With ``align`` set, twice the size is reserved and the
    aligned window inside it is used, as glibc's ``new_heap`` does; the slack
    on either side is never touched, so it costs address space only.
    """

    __slots__ = ("_exporter", "_mm", "addr", "offset", "size", "words")

    _mm: mmap.mmap | None
    # A ctypes array over the window: the one object holding a buffer of the
    # mapping, and the source of every view.  None once the region is unmapped.
    _exporter: ctypes.Array[ctypes.c_char] | None

    def __init__(self, size: int, align: int = 0) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"region size must be a positive multiple of {PAGE_SIZE}")
        mm = _mmap(size + align if align else size)
        base = _address_of(mm)
        offset = (-base) % align if align else 0
        self._mm = mm
        self._setup(base + offset, size, offset, (ctypes.c_char * size).from_buffer(mm, offset))

    def _setup(
        self, addr: int, size: int, offset: int, exporter: ctypes.Array[ctypes.c_char]
    ) -> None:
        self.offset = offset
        self.addr = addr
        self.size = size
        self._exporter = exporter
        self.words = memoryview(exporter).cast("B").cast("Q")

    def view(self, addr: int, length: int) -> memoryview:
        """A writable byte view of ``length`` bytes at absolute ``addr``, with a buffer
        of its own (see the module's docstring); it keeps the mapping alive."""
        exporter = self._exporter  # one read: a concurrent unmap cannot take it from us
        if exporter is None:
            raise ValueError(f"the region at {self.addr:#x} is unmapped")
        start = addr - self.addr
        return memoryview(exporter)[start : start + length].cast("B")

    def discard(self, addr: int, length: int) -> int:
        """Give whole pages inside ``[addr, addr + length)`` back to the OS.

        The bytes read as zero afterwards.  Returns how many resident bytes
        were released: pages never touched, or released by an earlier call,
        do not count.
        """
        lo = page_align(addr - self.addr)
        hi = (addr - self.addr + length) & ~(PAGE_SIZE - 1)
        if hi <= lo or self._mm is None:
            return 0
        resident = resident_bytes(self.addr + lo, hi - lo)
        self._mm.madvise(mmap.MADV_DONTNEED, self.offset + lo, hi - lo)
        return resident

    def unmap(self) -> bool:
        """Unmap the region.  Returns False when a user view kept it alive.

        In that case the pages are discarded and the unmap is retried later.
        """
        self.words.release()
        self._exporter = None
        mm = self._mm
        if mm is None:
            return True
        try:
            mm.close()
        except BufferError:
            mm.madvise(mmap.MADV_DONTNEED)
            with _deferred_lock:
                _deferred.append(mm)
            return False
        finally:
            retry_deferred_unmaps()
        return True


class BufferRegion(Region):
    """A region over memory the caller owns: a bytearray, an mmap, ``SharedMemory.buf``.

    balloc's fixed buffer.  The first 16-byte aligned byte is ``addr``.  Pages
    are never advised away (the bytes are the caller's) and ``unmap`` only
    lets go of our views: the buffer itself is never freed or closed.
    """

    __slots__ = ()

    def __init__(self, buffer: object) -> None:
        try:
            whole = memoryview(buffer)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"buffer must support the buffer protocol, not {type(buffer).__name__}"
            ) from None
        if whole.readonly or not whole.c_contiguous:
            whole.release()
            raise TypeError("buffer must be writable and contiguous")
        whole = whole.cast("B")
        # (the address of an empty buffer does not matter: it is too small anyway)
        base = ctypes.addressof(ctypes.c_char.from_buffer(whole)) if whole.nbytes else 0
        offset = (-base) % 16
        size = (whole.nbytes - offset) & ~15
        if size < 4096:
            nbytes = whole.nbytes
            whole.release()
            raise ValueError(f"buffer too small: {nbytes} bytes (at least 4 KiB needed)")
        self._mm = None
        self._setup(base + offset, size, offset, (ctypes.c_char * size).from_buffer(whole, offset))


def retry_deferred_unmaps() -> None:
    """Close mappings whose views have since gone away."""
    if not _deferred:
        return
    with _deferred_lock:
        still: list[mmap.mmap] = []
        for mm in _deferred:
            try:
                mm.close()
            except BufferError:
                still.append(mm)
        _deferred[:] = still


class SystemBudget(fork.OneLock):
    """The total of bytes the allocator has taken from the system, against a cap.

    ``max_heap_bytes`` (0 = no cap) bounds heaps and large mappings together;
    when a request would pass it, the heap cannot grow and the allocator falls
    back to other arenas before it raises ``OutOfMemory``.

    ``take`` reserves bytes before they are mapped; ``give`` hands them back,
    after an unmap or when the mapping failed.  The peak counts only what was
    really mapped (``mapped``), so a request that failed leaves no trace.

    Guarded by its own lock, taken briefly while an arena lock may be held
    (lock order: arena lock, then budget lock; never the reverse).
    """

    __slots__ = ("cap", "max_used", "used")

    def __init__(self, cap: int = 0) -> None:
        self.lock = threading.Lock()
        self.cap = cap
        self.used = 0
        self.max_used = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False if that would pass the cap."""
        with self.lock:
            if self.cap and self.used + n > self.cap:
                return False
            self.used += n
            return True

    def mapped(self) -> None:
        """What was reserved is mapped now: count it in the peak."""
        with self.lock:
            if self.used > self.max_used:
                self.max_used = self.used

    def give(self, n: int) -> None:
        with self.lock:
            self.used -= n
