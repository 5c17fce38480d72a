"""Large chunks: requests of ``mmap_threshold`` bytes or more get a mapping each.

glibc serves big requests with their own ``mmap`` (``sysmalloc_mmap``) so that
freeing them hands the memory straight back with ``munmap``, instead of
leaving a hole in a heap.  The chunk header is the same as everywhere else,
with ``IS_MMAPPED`` set; ``prev_size`` holds the distance from the start of
the mapping to the chunk (non-zero only for over-aligned ``memalign``).

Locking: every field is guarded by :attr:`MmappedChunks.lock`, which no
other lock is taken under except the budget's.
"""

from __future__ import annotations

import threading

from . import fork
from .chunk import CHUNK_HDR_SZ, IS_MMAPPED, MALLOC_ALIGNMENT, SIZE_BITS
from .errors import HeapCorruption
from .memory import Region, SystemBudget, page_align

__all__ = ["MmappedChunks"]


class MmappedChunks(fork.OneLock):
    """All chunks that have a mapping of their own, keyed by user address.

    A chunk's header is read only under ``lock``, and a mapping is unmapped
    only after it left ``chunks`` under that lock: whoever takes a chunk out
    of the table (:meth:`claim`) owns it alone, so two threads freeing it at
    once find it once, and bytes are never read from a mapping already gone.
    """

    __slots__ = (
        "budget",
        "chunks",
        "max_mmapped_mem",
        "max_n_mmaps",
        "mmapped_mem",
        "pending",
    )

    def __init__(self, budget: SystemBudget) -> None:
        self.lock = threading.Lock()
        self.budget = budget
        self.chunks: dict[int, Region] = {}
        self.pending = 0  # mappings being made: counted against mmap_max already
        self.mmapped_mem = 0
        self.max_mmapped_mem = 0
        self.max_n_mmaps = 0

    def alloc(self, nb: int, alignment: int = MALLOC_ALIGNMENT, limit: int = 1 << 62) -> int:
        """Map a chunk of at least ``nb`` bytes; return its user address, or 0.

        0 also when ``limit`` mappings (``mmap_max``) exist already, counting
        those other threads are making right now.
        """
        with self.lock:
            if len(self.chunks) + self.pending >= limit:
                return 0
            self.pending += 1
        try:
            return self._map(nb, alignment)
        finally:
            with self.lock:
                self.pending -= 1

    def _map(self, nb: int, alignment: int) -> int:
        slack = alignment if alignment > MALLOC_ALIGNMENT else 0
        size = page_align(nb + CHUNK_HDR_SZ + slack)
        if not self.budget.take(size):
            return 0
        try:
            region = Region(size)
        except MemoryError:
            self.budget.give(size)
            return 0
        self.budget.mapped()
        lead = (-(region.addr + CHUNK_HDR_SZ)) % alignment if slack else 0
        w = region.words
        w[lead >> 3] = lead
        w[(lead >> 3) + 1] = (size - lead) | IS_MMAPPED
        mem = region.addr + lead + CHUNK_HDR_SZ
        self._enter(mem, region)
        return mem

    def _enter(self, mem: int, region: Region) -> None:
        with self.lock:
            self.chunks[mem] = region
            self.mmapped_mem += region.size
            self.max_mmapped_mem = max(self.max_mmapped_mem, self.mmapped_mem)
            self.max_n_mmaps = max(self.max_n_mmaps, len(self.chunks))

    def _chunk_size(self, region: Region, mem: int) -> int:
        """The chunk size from the in-band header, checked against the mapping (lock held)."""
        hdr = (mem - region.addr) >> 3
        w = region.words
        lead = w[hdr - 2]
        head = w[hdr - 1]
        size = head & SIZE_BITS
        if not head & IS_MMAPPED or lead + CHUNK_HDR_SZ != mem - region.addr:
            raise HeapCorruption(f"munmap_chunk(): invalid pointer {mem:#x}: header flags damaged")
        if size + lead != region.size:
            raise HeapCorruption(f"munmap_chunk(): invalid size at {mem:#x}: header says {size}")
        return size

    def lookup(self, mem: int) -> tuple[Region, int] | None:
        """The mapping of the live chunk ``mem`` and its chunk size, or None."""
        with self.lock:
            region = self.chunks.get(mem)
            if region is None:
                return None
            return region, self._chunk_size(region, mem)

    def claim(self, mem: int) -> tuple[Region, int] | None:
        """Take the chunk ``mem`` out of the table: the caller owns it alone now.

        Returns its mapping and chunk size, or None if it is not a live chunk
        (never one, or claimed already).  The caller then either releases
        it (:meth:`release`) or puts it back (:meth:`restore`).
        """
        with self.lock:
            region = self.chunks.get(mem)
            if region is None:
                return None
            size = self._chunk_size(region, mem)  # a damaged header stays in the table
            del self.chunks[mem]
            self.mmapped_mem -= region.size
        return region, size

    def restore(self, mem: int, region: Region) -> None:
        """Put a claimed chunk back, unchanged (the operation that claimed it failed)."""
        self._enter(mem, region)

    def release(self, region: Region) -> None:
        """Unmap a claimed chunk."""
        self.budget.give(region.size)
        region.unmap()

    def free(self, mem: int) -> int | None:
        """Unmap the chunk at ``mem``; return its chunk size, or None if it is not ours."""
        claimed = self.claim(mem)
        if claimed is None:
            return None
        self.release(claimed[0])
        return claimed[1]

    def check(self) -> None:
        """Every chunk's header agrees with its mapping."""
        with self.lock:
            for mem, region in self.chunks.items():
                self._chunk_size(region, mem)

    def usage(self) -> tuple[int, int, int, int]:
        """``(chunks, bytes mapped, most bytes ever mapped, most chunks ever)``."""
        with self.lock:
            return len(self.chunks), self.mmapped_mem, self.max_mmapped_mem, self.max_n_mmaps

    def release_all(self) -> None:
        """Unmap every chunk (the allocator is closing)."""
        with self.lock:
            regions = list(self.chunks.values())
            self.chunks.clear()
        for region in regions:
            region.unmap()
