"""Block: a block of memory with a view that cannot outlive it.

``Allocator.alloc(size)`` returns a :class:`Block`: its address, its size, a
writable ``memoryview`` of exactly ``size`` bytes, and ``free()``.  It is the
safe way to hold allocator memory from Python: after ``free()``, every touch
of the view raises ``ValueError`` instead of reaching bytes that may belong
to someone else by then, and ``free()`` refuses (``BufferError``) while
objects made from the view are still alive.

Locking: a Block is meant for one owner at a time, as a C pointer is; it
holds no lock.  Its views have buffers of their own (see
:mod:`arenas.memory`), so Blocks used by different threads share nothing.
"""

from __future__ import annotations

from pickle import PickleBuffer
from types import TracebackType
from typing import Protocol

from .errors import InvalidPointer

__all__ = ["Block", "Owner"]


class Owner(Protocol):
    """What a Block needs of its allocator."""

    def view(self, addr: int, size: int | None = None) -> memoryview: ...
    def free(self, addr: int) -> None: ...


class Block:
    """A block with its view: ``.addr``, ``.size``, ``.view``, ``.free()``.

    ``view`` is a writable memoryview of exactly ``size`` bytes.  ``free()``
    releases the view first, so any later touch raises ``ValueError`` instead
    of reaching bytes that may belong to someone else by then.  While views
    made from it (slices, ``memoryview(view)``, ``numpy.frombuffer``) are
    alive, ``free()`` raises ``BufferError`` and frees nothing.

    Slices of a memoryview share its buffer and outlive ``release()``, so
    the view handed out is not the allocator's own but one with a buffer of
    its own on top of it: every slice made from it holds an export of
    ``_under``, and ``_under.release()`` fails while any of them is alive.
    """

    __slots__ = ("_allocator", "_freed", "_under", "addr", "size", "view")

    def __init__(self, allocator: Owner, addr: int, size: int) -> None:
        self._allocator = allocator
        self.addr = addr
        self.size = size
        self._under = allocator.view(addr, size)
        self.view = self._own_view()
        self._freed = False

    def _own_view(self) -> memoryview:
        # PickleBuffer hands out _under's buffer itself: the memoryview made
        # from it starts a new buffer, exported by _under, not a slice of it.
        exporter = PickleBuffer(self._under)
        view = memoryview(exporter)
        exporter.release()
        return view

    @property
    def freed(self) -> bool:
        return self._freed

    def free(self) -> None:
        if self._freed:
            raise InvalidPointer(f"block {self.addr:#x} was already freed through this Block")
        try:
            self.view.release()
        except BufferError as exc:
            raise BufferError(
                f"cannot free block {self.addr:#x}: its view is still exported"
                " (release the objects made from it first)"
            ) from exc
        try:
            self._under.release()
        except BufferError as exc:
            self.view = self._own_view()  # nothing was freed: the Block stays whole
            raise BufferError(
                f"cannot free block {self.addr:#x}: slices or copies of its view are"
                " still alive (release or drop them first)"
            ) from exc
        self._allocator.free(self.addr)
        self._freed = True

    def __enter__(self) -> Block:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._freed:
            self.free()

    def __repr__(self) -> str:
        state = "freed" if self._freed else "live"
        return f"<Block {state} addr={self.addr:#x} size={self.size}>"
