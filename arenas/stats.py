"""Statistics: immutable snapshots of what the allocator holds (glibc's ``mallinfo2``).

:class:`Stats` carries glibc's ``mallinfo2`` fields for the whole allocator
and an :class:`ArenaStats` per arena.  A snapshot is taken arena by arena,
each under its own lock, so it is consistent per arena; totals across arenas
are the sum of those per-arena snapshots.

Locking: snapshots are plain frozen dataclasses and need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArenaStats", "Stats"]


@dataclass(frozen=True)
class ArenaStats:
    """One arena's figures, as glibc's ``malloc_stats`` prints them."""

    index: int
    attached_threads: int
    heaps: int
    system_bytes: int
    in_use_bytes: int
    free_bytes: int
    top_bytes: int
    max_system_bytes: int
    free_chunks: int
    in_use_chunks: int


@dataclass(frozen=True)
class Stats:
    """A snapshot of the whole allocator; the first ten fields are glibc's ``mallinfo2``."""

    arena: int  # bytes taken from the system for heaps (not mmapped chunks)
    ordblks: int  # free chunks in bins (the top chunk not counted)
    smblks: int  # fastbin chunks: this allocator has no fastbins
    hblks: int  # chunks with a mapping of their own
    hblkhd: int  # bytes in those mappings
    usmblks: int  # glibc: always 0
    fsmblks: int  # bytes in fastbin chunks: none
    uordblks: int  # bytes in use in heaps (chunk sizes, headers included)
    fordblks: int  # free bytes in heaps, the top chunks included
    keepcost: int  # bytes at the top of the heaps that trimming could release
    arenas: tuple[ArenaStats, ...]
    max_mmapped_bytes: int
    max_mmapped_chunks: int
    max_system_bytes: int
    slabs: int  # slabs carved from the arenas
    slab_bytes: int  # bytes spanned by those slabs
    slab_blocks_live: int  # slab blocks held by the program
    slab_live_bytes: int  # their size-class bytes
    slab_blocks_free: int  # slab blocks free in their slabs
    tcache_blocks: int  # slab blocks waiting in threads' caches

    @property
    def system_bytes(self) -> int:
        """Everything taken from the system: heaps plus mmapped chunks."""
        return self.arena + self.hblkhd

    @property
    def in_use_bytes(self) -> int:
        """Every byte handed out (chunk sizes): heap chunks plus mmapped chunks."""
        return self.uordblks + self.hblkhd
