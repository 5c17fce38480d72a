"""Chunks: ptmalloc's in-band layout on a 64-bit machine, and the size math.

A chunk is a run of bytes inside a heap, introduced by a 16-byte header::

        chunk -> +-------------------------------+
                 | prev_size  (8 bytes)          |  size of the previous chunk, valid
                 |                               |  only while that chunk is free
                 +-------------------------------+
                 | size | A | M | P  (8 bytes)   |  this chunk's size; the low three
          mem -> +-------------------------------+  bits are flags
                 | user bytes ...                |
                 .                               .
    next chunk ->+-------------------------------+
                 | prev_size: overlaps the last  |  while this chunk is in use, the
                 | 8 user bytes of this chunk    |  next prev_size is user data
                 +-------------------------------+

Sizes are multiples of 16 (``MALLOC_ALIGNMENT``), so the low bits of the size
word are free for flags: ``PREV_INUSE`` (P, the chunk before is in use),
``IS_MMAPPED`` (M, the chunk has a mapping of its own) and ``NON_MAIN_ARENA``
(A, the chunk lives in a heap of a non-main arena).  The user pointer ``mem``
is ``chunk + 16``; an in-use chunk can hold ``size - 8`` user bytes because it
borrows the next chunk's ``prev_size``.

This module is pure arithmetic: it owns no state and needs no lock.  It
also checks requests, so that every entry point (the allocator, the
debugging wrapper, replaceable functions) refuses a bad size the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import OutOfMemory

__all__ = [
    "CHUNK_HDR_SZ",
    "FLAG_BITS",
    "IS_MMAPPED",
    "MALLOC_ALIGNMENT",
    "MALLOC_ALIGN_MASK",
    "MAX_REQUEST",
    "MINSIZE",
    "NON_MAIN_ARENA",
    "PREV_INUSE",
    "SIZE_BITS",
    "SIZE_SZ",
    "calloc_request",
    "checked_address",
    "checked_count",
    "checked_request",
    "checked_strdup",
    "chunk2mem",
    "mem2chunk",
    "request2size",
]

SIZE_SZ = 8
MALLOC_ALIGNMENT = 2 * SIZE_SZ
MALLOC_ALIGN_MASK = MALLOC_ALIGNMENT - 1
CHUNK_HDR_SZ = 2 * SIZE_SZ
MINSIZE = 32

PREV_INUSE = 0x1
IS_MMAPPED = 0x2
NON_MAIN_ARENA = 0x4
FLAG_BITS = PREV_INUSE | IS_MMAPPED | NON_MAIN_ARENA
SIZE_BITS = ~FLAG_BITS & 0xFFFF_FFFF_FFFF_FFFF

# glibc refuses requests whose padded size would not fit in a ptrdiff_t.
MAX_REQUEST = (1 << 63) - 1 - 2 * MINSIZE


def checked_count(value: object, what: str) -> int:
    """``value`` as a count or an index: an int (not a bool) >= 0, else ``TypeError`` or
    ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


def checked_request(
    size: object, what: str = "size", on_oom: Callable[[int], object] | None = None
) -> int:
    """``size`` as a request: a count (:func:`checked_count`) up to ``MAX_REQUEST``.

    Beyond it ``OutOfMemory``, naming ``what``; ``on_oom(size)`` hears of an
    impossible size first.
    """
    size = checked_count(size, what)
    if size > MAX_REQUEST:
        if on_oom is not None:
            on_oom(size)
        raise OutOfMemory(f"cannot allocate {size} bytes: larger than any request can be")
    return size


def calloc_request(n: object, size: object, on_oom: Callable[[int], object] | None = None) -> int:
    """The bytes ``calloc(n, size)`` asks for, both checked; a product too big is OutOfMemory."""
    n = checked_request(n, "n", on_oom)
    size = checked_request(size, "size", on_oom)
    total = n * size
    if total > MAX_REQUEST:
        if on_oom is not None:
            on_oom(total)
        raise OutOfMemory(f"calloc({n}, {size}): the product overflows")
    return total


def checked_address(addr: object) -> int:
    """``addr`` as an address: an int (not a bool), or ``TypeError``."""
    if isinstance(addr, bool) or not isinstance(addr, int):
        raise TypeError(f"address must be an int, not {type(addr).__name__}")
    return int(addr)


def checked_strdup(data: object) -> memoryview:
    """The bytes ``strdup(data)`` copies: any bytes-like object, else ``TypeError``."""
    if isinstance(data, str):
        raise TypeError("strdup() needs bytes, not str: encode it first")
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"strdup() needs a bytes-like object, not {type(data).__name__}") from None


def request2size(req: int) -> int:
    """The chunk size that serves a request of ``req`` user bytes."""
    if req + SIZE_SZ + MALLOC_ALIGN_MASK < MINSIZE:
        return MINSIZE
    return (req + SIZE_SZ + MALLOC_ALIGN_MASK) & ~MALLOC_ALIGN_MASK


def chunk2mem(chunk: int) -> int:
    return chunk + CHUNK_HDR_SZ


def mem2chunk(mem: int) -> int:
    return mem - CHUNK_HDR_SZ
