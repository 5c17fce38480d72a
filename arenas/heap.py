"""Heaps: the contiguous regions an arena carves chunks from (glibc's arena.c heaps).

Two kinds, as in glibc:

* the **main heap** belongs to the main arena and plays the part of glibc's
  ``sbrk`` area: one big reservation that grows and shrinks at its end;
* **aligned heaps** belong to the other arenas.  Each is ``HEAP_MAX_SIZE``
  bytes of address space aligned to ``HEAP_MAX_SIZE``, so the heap of any
  address is ``addr & ~(HEAP_MAX_SIZE - 1)`` (``heap_for_ptr``), and the
  heap's first 32 bytes (``heap_info``) name its arena.  An arena that fills
  its heap starts another and links it to the previous one.

A heap's ``size`` is how much of its reservation is in use (glibc's
``heap_info.size``); growing and shrinking move that mark, and shrinking hands
the pages past it back to the OS.  Untouched pages were never resident.

::

    aligned heap at base (a multiple of HEAP_MAX_SIZE)
    +-----------+--------+--------+-----+--------------------+................+
    | heap_info | chunk  | chunk  | ... | top chunk          |  reserved,     |
    | 32 bytes  |        |        |     |                    |  not yet used  |
    +-----------+--------+--------+-----+--------------------+................+
    base        start                                        base+size        base+HEAP_MAX_SIZE

When an arena moves on to a new heap, the old heap's top is freed into the
bins and a 16-byte *fencepost* chunk closes the old heap, so that coalescing
never walks off its end.

A heap also owns the chunk vocabulary (glibc's ``chunksize``, ``set_head``,
``set_foot``): a chunk at address ``c`` keeps its ``prev_size`` word at
``words[(c - base) >> 3]`` and its size-and-flags word (the *head*) at
``words[((c - base) >> 3) + 1]``.  The cold paths (checks, inspection, heap
retirement) use :meth:`Heap.head`, :meth:`Heap.set_head`,
:meth:`Heap.set_foot` and :meth:`Heap.chunks`; the hot paths in
:mod:`arenas.arena` inline exactly this arithmetic, and say so.

Locking: a Heap is guarded by its arena's lock.  The table of aligned heaps
(:class:`HeapTable`) is read without a lock (a dict lookup is atomic, under
the GIL and in free-threaded builds alike) and written under its own lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from . import fork
from .chunk import FLAG_BITS, MALLOC_ALIGN_MASK, MINSIZE, SIZE_BITS
from .errors import HeapCorruption
from .memory import Region, SystemBudget, page_align

__all__ = ["HEAP_INFO_SIZE", "Heap", "HeapOwner", "HeapTable"]

HEAP_INFO_SIZE = 32
_HEAP_MAGIC = 0x4845_4150_494E_464F  # "HEAPINFO", for a hexdump reader


class HeapOwner(Protocol):
    """What a heap knows of its arena: the index its ``heap_info`` records."""

    @property
    def index(self) -> int: ...


OwnerT = TypeVar("OwnerT", bound=HeapOwner)


class Heap(Generic[OwnerT]):
    """One heap: a region, how much of it is in use, and where its chunks start.

    Generic in its owner (glibc's ``heap_info.ar_ptr``), so that this module
    needs nothing from the arena module above it.
    """

    __slots__ = (
        "arena",
        "base",
        "budget",
        "fence",
        "max_size",
        "prev",
        "region",
        "size",
        "start",
        "words",
    )

    def __init__(
        self,
        arena: OwnerT,
        region: Region,
        budget: SystemBudget,
        *,
        aligned: bool,
        prev: Heap[OwnerT] | None = None,
        header: int = HEAP_INFO_SIZE,
    ) -> None:
        self.arena = arena
        self.region = region
        self.budget = budget
        self.base = region.addr
        self.max_size = region.size
        self.words = region.words
        self.prev = prev
        # Where the first chunk starts: after heap_info (and, for the glibc
        # policy, after the arena's malloc_state in its first heap).
        self.start = self.base + (header if aligned else 0)
        self.size = 0
        # Address of the fencepost chunk once this heap is no longer the
        # arena's current heap; 0 while it is.
        self.fence = 0
        if aligned:
            w = self.words
            w[0] = arena.index
            w[1] = prev.base if prev is not None else 0
            w[3] = _HEAP_MAGIC

    @property
    def end(self) -> int:
        return self.base + self.size

    # ------------------------------------------------------- chunk vocabulary
    def head(self, chunk: int) -> int:
        """The size-and-flags word of ``chunk`` (glibc's ``mchunk_size``)."""
        return self.words[((chunk - self.base) >> 3) + 1]

    def set_head(self, chunk: int, head: int) -> None:
        self.words[((chunk - self.base) >> 3) + 1] = head

    def set_head_size(self, chunk: int, size: int) -> None:
        """Give ``chunk`` a new size, keeping its flag bits (glibc's ``set_head_size``)."""
        i = ((chunk - self.base) >> 3) + 1
        self.words[i] = (self.words[i] & FLAG_BITS) | size

    def prev_size(self, chunk: int) -> int:
        """The word before ``chunk``'s head: its free predecessor's size (its foot)."""
        return self.words[(chunk - self.base) >> 3]

    def set_foot(self, chunk: int, size: int) -> None:
        """Write a free chunk's size into the ``prev_size`` word of the chunk after it."""
        self.words[(chunk + size - self.base) >> 3] = size

    def chunks(self, last: int) -> Iterator[tuple[int, int]]:
        """``(chunk, head)`` for every chunk from ``start`` up to ``last`` (the top or fence).

        Raises ``HeapCorruption`` at a head whose size cannot be right, before
        yielding it, so that a walk never runs off its heap.
        """
        chunk = self.start
        while chunk < last:
            head = self.head(chunk)
            size = head & SIZE_BITS
            if size < MINSIZE or size & MALLOC_ALIGN_MASK or chunk + size > last:
                raise HeapCorruption(f"chunk {chunk:#x} has a bad size {size:#x}")
            yield chunk, head
            chunk += size

    def grow(self, diff: int) -> bool:
        """Extend the in-use part by ``diff`` bytes (page multiple); False if it cannot."""
        if self.size + diff > self.max_size or not self.budget.take(diff):
            return False
        self.budget.mapped()  # (the reservation's pages are ours already)
        self.size += diff
        self._record_size()
        return True

    def shrink(self, diff: int) -> None:
        """Give the last ``diff`` bytes (page multiple) back to the OS."""
        self.size -= diff
        self.region.discard(self.base + self.size, diff)
        self.budget.give(diff)
        self._record_size()

    def _record_size(self) -> None:
        if self.start != self.base:
            self.words[2] = self.size

    def release(self) -> None:
        """Unmap the heap; its bytes must no longer be referenced by any chunk."""
        self.budget.give(self.size)
        self.size = 0
        self.region.unmap()

    @classmethod
    def new_aligned(
        cls,
        arena: OwnerT,
        min_size: int,
        heap_max_size: int,
        budget: SystemBudget,
        prev: Heap[OwnerT] | None,
        header: int = HEAP_INFO_SIZE,
    ) -> Heap[OwnerT] | None:
        """glibc's ``new_heap``: reserve an aligned heap and make ``min_size`` bytes usable."""
        size = page_align(min_size)
        if size > heap_max_size or not budget.take(size):
            return None
        try:
            region = Region(heap_max_size, align=heap_max_size)
        except MemoryError:
            budget.give(size)
            return None
        budget.mapped()
        heap = cls(arena, region, budget, aligned=True, prev=prev, header=header)
        heap.size = size
        heap._record_size()
        return heap


class HeapTable(Generic[OwnerT], fork.OneLock):
    """Every heap of one allocator: aligned heap bases -> heaps, and the main heap.

    Reads are lock-free: one ``dict.get`` (atomic under the GIL and, on
    free-threaded builds, done under the dict's own per-object lock) and one
    attribute load.  ``add`` and ``remove`` take ``lock``; ``main`` is written
    once when the main arena is made, and cleared when the allocator closes.
    This is what makes :meth:`heap_for_ptr` an O(1) answer to "which arena
    owns this address?" from any thread.
    """

    __slots__ = ("heaps", "main", "mask")

    def __init__(self, heap_max_size: int) -> None:
        self.heaps: dict[int, Heap[OwnerT]] = {}
        self.main: Heap[OwnerT] | None = None
        self.mask = ~(heap_max_size - 1)
        self.lock = threading.Lock()

    def heap_for_ptr(self, addr: int) -> Heap[OwnerT] | None:
        """The heap holding ``addr``: the main heap by range, else an aligned heap by
        masking (glibc's ``heap_for_ptr``); None in no heap (a mapped chunk, foreign memory)."""
        main = self.main  # (first: a miss in ``heaps`` would cost a KeyError)
        if main is not None and main.base <= addr < main.base + main.max_size:
            return main
        return fork.lookup(self.heaps, addr & self.mask)

    def add(self, heap: Heap[OwnerT]) -> None:
        with self.lock:
            self.heaps[heap.base] = heap

    def remove(self, heap: Heap[OwnerT]) -> None:
        with self.lock:
            del self.heaps[heap.base]
