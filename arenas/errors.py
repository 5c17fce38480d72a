"""The allocator's exceptions.

Every error is raised *before* any allocator state changes, so the allocator
keeps working after it.  The hierarchy mirrors what a C programmer would see:

    AllocatorError
    ├── InvalidPointer (ValueError)   an address that is not a live block (free, realloc,
    │   │                              view, usable_size: a use after free, for the last two)
    │   └── DoubleFree                 free()/realloc() of a block that is already free
    ├── HeapCorruption                 an in-band header failed its checks
    └── OutOfMemory (MemoryError)      a request that cannot be served

Messages follow glibc's wording where glibc has one ("free(): invalid pointer",
"free(): double free detected", "free(): invalid next size (normal)"), so a
reader can look the message up in ``malloc/malloc.c``; each message names the
call that met the bad address (:func:`for_call`).
"""

from __future__ import annotations

__all__ = [
    "CLOSED",
    "AllocatorError",
    "DoubleFree",
    "HeapCorruption",
    "InvalidPointer",
    "OutOfMemory",
    "for_call",
]


# What every call on a closed allocator raises, as an ``AllocatorError``.
CLOSED = "the allocator is closed"


class AllocatorError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidPointer(AllocatorError, ValueError):
    """The address is not the start of a live block of this allocator."""


class DoubleFree(InvalidPointer):
    """The address was a block of this allocator, and it is already free."""


class HeapCorruption(AllocatorError):
    """An in-band chunk header does not agree with the allocator's records.

    Raised when user code wrote over a header (an overrun) or a guard; the
    allocator refuses the operation rather than act on a forged size.
    """


class OutOfMemory(AllocatorError, MemoryError):
    """The request cannot be served: too large, an overflowing product, or a cap reached."""


def for_call(exc: AllocatorError, op: str, addr: int) -> AllocatorError:
    """``free``'s diagnosis of a bad address, worded for the call ``op`` that met it.

    One diagnosis serves every call that takes an address.  A block already
    free is a double free for ``realloc``, which would free it again, and a
    use after free for a call that only reads it (``view``, ``usable_size``).
    """
    if op == "free" or not isinstance(exc, InvalidPointer):
        return exc
    if isinstance(exc, DoubleFree) and op != "realloc":
        return InvalidPointer(f"{op}(): use after free: {addr:#x} is already free")
    return type(exc)(f"{op}(): {str(exc).removeprefix('free(): ')}")
