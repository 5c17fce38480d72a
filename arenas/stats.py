"""Statistics: immutable snapshots of what the allocator holds (glibc's ``mallinfo2``).

:class:`Stats` carries glibc's ``mallinfo2`` fields for the whole allocator
and an :class:`ArenaStats` per arena.  A snapshot is taken arena by arena,
each under its own lock, so it is consistent per arena; totals across arenas
are the sum of those per-arena snapshots.

Locking: snapshots are plain frozen dataclasses and need no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from .slab import CLASS_SIZES

__all__ = ["ArenaStats", "Stats", "collect", "format_malloc_info", "format_malloc_stats"]


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
    tcache_bytes: int  # their size-class bytes

    @property
    def system_bytes(self) -> int:
        """Everything taken from the system: heaps plus mmapped chunks."""
        return self.arena + self.hblkhd

    @property
    def in_use_bytes(self) -> int:
        """Every byte handed out (chunk sizes): heap chunks plus mmapped chunks."""
        return self.uordblks + self.hblkhd


def collect(
    per: Sequence[ArenaStats],
    slabs: Sequence[tuple[int, int, int]],
    cached: Iterable[Sequence[Sequence[int]]],
    live: Mapping[int, int],
    mapped: tuple[int, int, int, int],
    max_system_bytes: int,
) -> Stats:
    """One snapshot from its parts, each taken by its owner under its own lock.

    ``per``: each arena's figures; ``slabs``: each arena's ``(slabs, bytes, free
    blocks)``; ``cached``: each thread's bins of cached blocks; ``live``: live
    slab block -> class; ``mapped``: the mappings' ``(chunks, bytes, most bytes,
    most chunks)``.
    """
    tcache_blocks = tcache_bytes = 0
    for bins in cached:
        for cls, blocks in enumerate(bins):
            tcache_blocks += len(blocks)
            tcache_bytes += len(blocks) * CLASS_SIZES[cls]
    hblks, hblkhd, max_mm, max_n = mapped
    system = sum(a.system_bytes for a in per)
    used = sum(a.in_use_bytes for a in per)
    return Stats(
        arena=system,
        ordblks=sum(a.free_chunks for a in per),
        smblks=0,
        hblks=hblks,
        hblkhd=hblkhd,
        usmblks=0,
        fsmblks=0,
        uordblks=used,
        fordblks=system - used,
        keepcost=per[0].top_bytes if per else 0,
        arenas=tuple(per),
        max_mmapped_bytes=max_mm,
        max_mmapped_chunks=max_n,
        max_system_bytes=max_system_bytes,
        slabs=sum(s[0] for s in slabs),
        slab_bytes=sum(s[1] for s in slabs),
        slab_blocks_live=len(live),
        slab_live_bytes=sum(map(CLASS_SIZES.__getitem__, live.values())),  # (C speed: no frames)
        slab_blocks_free=sum(s[2] for s in slabs),
        tcache_blocks=tcache_blocks,
        tcache_bytes=tcache_bytes,
    )


# ===================================================================== reports
def format_malloc_stats(stats: Stats) -> str:
    """glibc's ``malloc_stats`` layout, line for line."""
    lines: list[str] = []
    for arena in stats.arenas:
        lines.append(f"Arena {arena.index}:")
        lines.append(f"system bytes     = {arena.system_bytes:10d}")
        lines.append(f"in use bytes     = {arena.in_use_bytes:10d}")
    lines.append("Total (incl. mmap):")
    lines.append(f"system bytes     = {stats.system_bytes:10d}")
    lines.append(f"in use bytes     = {stats.in_use_bytes:10d}")
    lines.append(f"max mmap regions = {stats.max_mmapped_chunks:10d}")
    lines.append(f"max mmap bytes   = {stats.max_mmapped_bytes:10d}")
    return "\n".join(lines) + "\n"


def format_malloc_info(
    stats: Stats, histograms: Sequence[Sequence[tuple[str, int, int, int, int]]]
) -> str:
    """glibc's ``malloc_info`` XML; ``histograms[i]`` lists arena i's bins as
    ``(kind, from, to, total, count)``.  Slab and thread-cache totals are extra
    ``<total>`` elements that glibc does not have."""

    def attrs(**kv: object) -> str:
        return " ".join(f"{k}={quoteattr(str(v))}" for k, v in kv.items())

    out = ['<malloc version="1">']
    rest_count = rest_size = 0
    for arena, rows in zip(stats.arenas, histograms, strict=True):
        out.append(f"<heap {attrs(nr=arena.index)}>")
        out.append("<sizes>")
        for kind, lo, hi, total, count in rows:
            out.append(
                f"  <{kind} {attrs(**{'from': lo, 'to': hi, 'total': total, 'count': count})}/>"
            )
        out.append("</sizes>")
        count = arena.free_chunks + (1 if arena.top_bytes else 0)
        size = arena.free_bytes
        rest_count += count
        rest_size += size
        out.append('<total type="fast" count="0" size="0"/>')
        out.append(f'<total type="rest" {attrs(count=count, size=size)}/>')
        out.append(f'<system type="current" {attrs(size=arena.system_bytes)}/>')
        out.append(f'<system type="max" {attrs(size=arena.max_system_bytes)}/>')
        out.append(f'<aspace type="total" {attrs(size=arena.system_bytes)}/>')
        out.append(f'<aspace type="mprotect" {attrs(size=arena.system_bytes)}/>')
        if arena.index:
            out.append(f'<aspace type="subheaps" {attrs(size=arena.heaps)}/>')
        out.append("</heap>")
    out.append('<total type="fast" count="0" size="0"/>')
    out.append(f'<total type="rest" {attrs(count=rest_count, size=rest_size)}/>')
    out.append(f'<total type="mmap" {attrs(count=stats.hblks, size=stats.hblkhd)}/>')
    out.append(f'<total type="slab" {attrs(count=stats.slabs, size=stats.slab_bytes)}/>')
    out.append(
        f'<total type="tcache" {attrs(count=stats.tcache_blocks, size=stats.tcache_bytes)}/>'
    )
    out.append(f'<system type="current" {attrs(size=stats.system_bytes)}/>')
    out.append(f'<system type="max" {attrs(size=stats.max_system_bytes)}/>')
    out.append(f'<aspace type="total" {attrs(size=stats.system_bytes)}/>')
    out.append(f'<aspace type="mprotect" {attrs(size=stats.system_bytes)}/>')
    out.append("</malloc>")
    return "\n".join(out) + "\n"
