"""Slabs: runs of equal-size blocks for small requests (balloc's classes, mimalloc's pages).

A request of at most ``SLAB_MAX`` (64 KiB) bytes is rounded up to a *size
class* and served from a slab of that class.  The table keeps glibc-like
16-byte steps up to 128 bytes, then four classes per doubling, as jemalloc
and mimalloc do; it contains all 13 of GoAhead balloc's power-of-two classes
(16 .. 65536) and bounds the internal waste of a block at 20% (see
docs/slabs.md for the measured figures)::

    16 32 48 64 80 96 112 128 | 160 192 224 256 | 320 384 448 512 | ... | 40960 49152 57344 65536

A slab is one chunk of exactly ``span`` bytes (a power of two, at least
1 KiB) whose *chunk address* is a multiple of ``span``
(:meth:`Arena.alloc_aligned_chunk`).  The chunk's own header is the span's
first 16 bytes and the blocks follow it, so the slab of any block is
``addr & -span``: the same trick as ``heap_for_ptr``, one level down.
Slabs cut one after another from the top chunk tile the heap with no gap::

    arena heap:  ... | slab: chunk hdr | blk | blk | ... | blk | never used yet | slab: ...
                     ^ base (span-aligned)                      ^ bump            ^ base + span

Blocks never touched stay beyond ``bump`` (their pages are never made
resident); freed blocks go on the slab's ``free`` list.  Refills take the
fullest partial slab first, so emptier ones drain.  A slab whose blocks are
all free again goes back to its arena as an ordinary free chunk (with no
thread cache, one empty slab per class is kept back to avoid churning), so
memory from a finished burst can serve any size.

Locking: a slab and its arena's slab lists are guarded by the owning arena's
lock.  :class:`SlabTable` (base -> slab) is read without a lock and written
under its own lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .chunk import CHUNK_HDR_SZ

if TYPE_CHECKING:
    from .arena import Arena
    from .heap import Heap

__all__ = [
    "CLASS_OF",
    "CLASS_SIZES",
    "CLASS_SPANS",
    "NCLASSES",
    "SLAB_MAX",
    "Slab",
    "SlabTable",
    "class_sizes",
    "release_spares",
    "return_blocks",
    "span_for",
    "take_blocks",
]

SLAB_MAX = 65536
# Fewest blocks in a slab; small classes get more, since a slab is at least
# MIN_SPAN.  Big classes get fewer, so that a few big blocks do not pin a big
# span (nor count a big untouched one in the footprint).
SLAB_BLOCKS = 8
SLAB_BLOCKS_LARGE = 4
SLAB_BLOCKS_HUGE = 3
# The smallest span.  It need not be a page: masking works for any power of
# two, and a small program with a few blocks in many classes should not pay
# a page per class.
MIN_SPAN = 1024


def class_sizes(per_doubling: int = 4) -> tuple[int, ...]:
    """16-byte steps up to 128, then ``per_doubling`` classes per doubling up to SLAB_MAX."""
    sizes = [16 * i for i in range(1, 9)]
    base = 128
    while base < SLAB_MAX:
        step = base // per_doubling
        sizes.extend(base + step * k for k in range(1, per_doubling + 1))
        base *= 2
    return tuple(sizes)


CLASS_SIZES: tuple[int, ...] = class_sizes()
NCLASSES = len(CLASS_SIZES)


def span_for(size: int) -> int:
    """The smallest power of two (>= MIN_SPAN) holding the slab's chunk header and its blocks.

    The header's 16 bytes cost a power-of-two class one block of its span
    (a 2048-byte class fits 7 blocks in 16 KiB, leaving a 12.5% tail).  A
    bigger span would shrink that tail, but a class used for one block
    would then hold the bigger span: measured on the shipped traces, light
    users of many classes lost more than heavy users of a few gained.
    """
    if size <= 1024:
        blocks = SLAB_BLOCKS
    elif size <= 16384:
        blocks = SLAB_BLOCKS_LARGE
    else:
        blocks = SLAB_BLOCKS_HUGE
    span = MIN_SPAN
    while span < CHUNK_HDR_SZ + size * blocks:
        span *= 2
    return span


CLASS_SPANS: tuple[int, ...] = tuple(span_for(s) for s in CLASS_SIZES)


def _class_of() -> bytes:
    table = bytearray(SLAB_MAX + 1)
    cls = 0
    for size in range(SLAB_MAX + 1):
        while CLASS_SIZES[cls] < size:
            cls += 1
        table[size] = cls
    return bytes(table)


# CLASS_OF[size] is the class index serving a request of ``size`` bytes (size <= SLAB_MAX).
CLASS_OF: bytes = _class_of()


class Slab:
    """One slab: ``capacity`` blocks of ``size`` bytes from ``base``."""

    __slots__ = ("arena", "base", "bump", "capacity", "cls", "end", "free", "heap", "nfree", "size")

    def __init__(self, arena: Arena, heap: Heap, base: int, cls: int) -> None:
        self.arena = arena
        self.heap = heap
        self.base = base
        self.cls = cls
        self.size = size = CLASS_SIZES[cls]
        first = base + CHUNK_HDR_SZ  # the slab's own chunk header comes first
        self.capacity = (CLASS_SPANS[cls] - CHUNK_HDR_SZ) // size
        self.end = first + self.capacity * size
        self.bump = first
        self.free: list[int] = []
        self.nfree = self.capacity

    def is_block(self, addr: int) -> bool:
        first = self.base + CHUNK_HDR_SZ
        return first <= addr < self.end and (addr - first) % self.size == 0


class SlabTable:
    """Slab bases -> slabs, across all arenas: ``addr & ~(span-1)`` then one lookup."""

    __slots__ = ("lock", "slabs")

    def __init__(self) -> None:
        self.slabs: dict[int, Slab] = {}
        self.lock = threading.Lock()

    def find(self, addr: int) -> Slab | None:
        """The slab containing ``addr`` whatever its class (slow: tries every span)."""
        seen = set()
        for span in CLASS_SPANS:
            if span in seen:
                continue
            seen.add(span)
            slab = self.slabs.get(addr & -span)
            if slab is not None and CLASS_SPANS[slab.cls] == span and slab.base <= addr < slab.end:
                return slab
        return None


# ====================================================================== take
def _new_slab(arena: Arena, cls: int, table: SlabTable, top: bool, grow: bool) -> Slab | None:
    mem = arena.alloc_aligned_chunk(CLASS_SPANS[cls], top, grow)
    if not mem:
        return None
    base = mem - CHUNK_HDR_SZ
    slab = Slab(arena, arena.heap_of(base), base, cls)
    arena.slabs[base] = slab
    with table.lock:
        table.slabs[base] = slab
    return slab


def take_blocks(
    arena: Arena, cls: int, n: int, table: SlabTable, top: bool = True, grow: bool = True
) -> list[int]:
    """Up to ``n`` free blocks of class ``cls`` from this arena's slabs (new ones if needed).

    Called with ``arena.lock`` held.  Returns fewer (possibly none) only when
    the arena cannot make a new slab: new slabs come from free chunks, then
    from the top chunk if ``top``, then from a grown heap if ``grow`` (see
    :meth:`Arena.alloc_aligned_chunk`).  The partial slabs are sorted once
    per call, fullest first, so that emptier ones drain and go back; a scan
    per slab taken would make a refill quadratic in the number of partial
    slabs.
    """
    out: list[int] = []
    partial = arena.slab_partial[cls]
    if partial:
        spare = arena.slab_spare[cls]
        order = (
            sorted(partial.values(), key=_free_count)
            if len(partial) > 1
            else list(partial.values())
        )
        for slab in order:
            n -= _take(slab, n, out)
            if slab.nfree == 0:
                del partial[slab.base]
            if slab is spare:
                arena.slab_spare[cls] = None
            if not n:
                return out
    while n:
        new = _new_slab(arena, cls, table, top, grow)
        if new is None:
            break
        n -= _take(new, n, out)
        if new.nfree:
            partial[new.base] = new
    return out


def _take(slab: Slab, n: int, out: list[int]) -> int:
    """Move up to ``n`` blocks of ``slab`` to ``out``: freed ones first, then fresh ones."""
    free = slab.free
    k = len(free)
    if k >= n:
        out += free[-n:]
        del free[-n:]
        slab.nfree -= n
        return n
    if k:
        out += free
        free.clear()
    want = n - k
    fresh = (slab.end - slab.bump) // slab.size
    if fresh > want:
        fresh = want
    if fresh:
        stop = slab.bump + fresh * slab.size
        out += range(slab.bump, stop, slab.size)
        slab.bump = stop
    slab.nfree -= k + fresh
    return k + fresh


def _free_count(slab: Slab) -> int:
    return slab.nfree


# ==================================================================== return
def return_blocks(
    arena: Arena,
    cls: int,
    blocks: list[int],
    slabs: list[Slab],
    table: SlabTable,
    keep_spare: bool = False,
) -> None:
    """Give ``blocks`` (all of class ``cls``) back to ``slabs`` (the slab of each, in this arena).

    Called with ``arena.lock`` held.  A slab that becomes wholly free goes back
    to the arena, unless ``keep_spare`` asks to keep one such slab per class:
    with no thread cache, a loop that allocates and frees one block would
    otherwise carve and free a slab every time.
    """
    partial = arena.slab_partial[cls]
    for addr, slab in zip(blocks, slabs, strict=True):
        slab.free.append(addr)
        slab.nfree += 1
        if slab.nfree == 1:
            partial[slab.base] = slab
        if slab.nfree == slab.capacity:
            spare = arena.slab_spare[cls]
            if spare is None and keep_spare:
                arena.slab_spare[cls] = slab
            elif spare is not slab:
                _release_slab(arena, slab, table)


def release_spares(arena: Arena, table: SlabTable) -> int:
    """Give the arena's wholly free spare slabs back as chunks.  Returns their bytes."""
    released = 0
    for cls, spare in enumerate(arena.slab_spare):
        if spare is not None and spare.nfree == spare.capacity:
            arena.slab_spare[cls] = None
            released += CLASS_SPANS[cls]
            _release_slab(arena, spare, table)
    return released


def _release_slab(arena: Arena, slab: Slab, table: SlabTable) -> None:
    del arena.slab_partial[slab.cls][slab.base]
    del arena.slabs[slab.base]
    with table.lock:
        del table.slabs[slab.base]
    arena.release_internal(slab.heap, slab.base + CHUNK_HDR_SZ)


# ================================================================ the table
def waste_report() -> str:
    """The class table with its internal waste, as docs/slabs.md shows it.

    Waste of a request is ``(class size - request) / class size``; the mean is
    over every request size from 1 to the class size (uniform sizes), the max
    over the worst request of the class (one byte above the class below).
    The slab tail is the share of a span that holds no block: the chunk
    header and what is left after the last block.
    """
    lines = ["| class | size | span | blocks | slab tail | worst waste | mean waste (uniform) |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    prev = 0
    for cls, size in enumerate(CLASS_SIZES):
        worst = (size - (prev + 1)) / size
        mean = sum((size - r) / size for r in range(prev + 1, size + 1)) / (size - prev)
        span = CLASS_SPANS[cls]
        blocks = (span - CHUNK_HDR_SZ) // size
        tail = (span - blocks * size) / span
        lines.append(
            f"| {cls} | {size} | {span} | {blocks} | {tail:.1%} | {worst:.1%} | {mean:.1%} |"
        )
        prev = size
    for lo, hi in ((1, 1024), (16, 1024), (1, SLAB_MAX)):
        waste = sum(CLASS_SIZES[CLASS_OF[r]] - r for r in range(lo, hi + 1))
        total = sum(CLASS_SIZES[CLASS_OF[r]] for r in range(lo, hi + 1))
        lines.append(f"\nrequests uniform in {lo}..{hi}: {waste / total:.1%} of block bytes wasted")
    return "\n".join(lines)
