"""The allocator's exceptions.

Every error is raised *before* any allocator state changes, so the allocator
keeps working after it.  The hierarchy mirrors what a C programmer would see:

    AllocatorError
    ├── InvalidPointer (ValueError)   free()/realloc() of a pointer we never handed out
    │   └── DoubleFree                 ... or one that is already free
    ├── HeapCorruption                 an in-band header failed its checks
    └── OutOfMemory (MemoryError)      a request that cannot be served

Messages follow glibc's wording where glibc has one ("free(): invalid pointer",
"free(): double free detected", "free(): invalid next size (normal)"), so a
reader can look the message up in ``malloc/malloc.c``.
"""

from __future__ import annotations

__all__ = ["AllocatorError", "DoubleFree", "HeapCorruption", "InvalidPointer", "OutOfMemory"]


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
