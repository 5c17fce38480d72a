"""Inspection: the heap as a debugger plugin shows it (pwndbg's ``heap``, ``bins``,
``arenas``, ``vis_heap_chunks``), with only Python needed.

* :func:`heap` lists every chunk of an arena's heaps: address, size, flags
  (P = PREV_INUSE, M = IS_MMAPPED, A = NON_MAIN_ARENA) and state (in use,
  free and in which bin, a slab of which class, the top, a fencepost);
* :func:`bins` shows each non-empty bin, the slabs' free blocks and the
  calling thread's cache;
* :func:`arenas` lists the arenas with their threads, heaps and bytes;
* :func:`vis_heap_chunks` hexdumps the heap's bytes 16 to a row, each chunk
  in its own colour, header words labelled with their meaning.

Each function returns a string: plain text by default, ANSI colour when
``color=True`` (``None``: colour when standard output is a terminal).  Each
arena is read under its own lock, one arena at a time, so the views are
consistent per arena and can be taken while other threads run.

From the command line: ``python -m arenas.inspect {heap,bins,arenas,vis}``
shows a small demonstration heap.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .allocator import Allocator
from .arena import Arena
from .bins import NSMALLBINS, UNSORTED, bin_index
from .chunk import (
    FLAG_BITS,
    IS_MMAPPED,
    NON_MAIN_ARENA,
    PREV_INUSE,
    SIZE_BITS,
    checked_address,
    checked_count,
)
from .dispatch import default_allocator
from .heap import HEAP_INFO_SIZE, Heap
from .slab import CLASS_SIZES, CLASS_SLAB_BYTES

__all__ = ["ChunkInfo", "arenas", "bin_name", "bins", "chunks", "heap", "vis_heap_chunks"]

_RESET = "\x1b[0m"
_NO_LINKS = "fd | bk in glibc; here the bins keep the links, so: old bytes"
_PALETTE = ["\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[36m"]
_STATE_COLOUR = {"top": "\x1b[97;1m", "fence": "\x1b[90m", "free": "\x1b[94m"}


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk as seen in its heap."""

    addr: int
    size: int
    flags: int
    state: str  # "in use", "free", "slab", "top", "fence"
    detail: str = ""
    bin: int = 0  # a free chunk's bin, glibc's numbering (1 unsorted, 2..63 small, 64.. large)

    @property
    def flag_text(self) -> str:
        return "".join(
            letter if self.flags & bit else "-"
            for letter, bit in (("P", PREV_INUSE), ("M", IS_MMAPPED), ("A", NON_MAIN_ARENA))
        )


def _use_color(color: bool | None) -> bool:
    return sys.stdout.isatty() if color is None else color


def _allocator(alloc: Allocator | None) -> Allocator:
    """``alloc``, or the default allocator for None; anything else is a ``TypeError``."""
    if alloc is None:
        return default_allocator()
    if not isinstance(alloc, Allocator):
        raise TypeError(f"expected an Allocator or None, not {type(alloc).__name__}")
    return alloc


def _arena(alloc: Allocator | None, index: int) -> tuple[Allocator, Arena]:
    alloc = _allocator(alloc)
    return alloc, alloc.arena(index)


def _bin_of(arena: Arena, chunk: int, size: int) -> int:
    return UNSORTED if chunk in arena.bins.unsorted else bin_index(size)


def bin_name(bin_number: int) -> str:
    """What a bin is called: "unsorted bin", "small bin 12", "large bin 70" (glibc's numbers)."""
    if bin_number == UNSORTED:
        return "unsorted bin"
    return f"{'small' if bin_number < NSMALLBINS else 'large'} bin {bin_number}"


def heap_chunks(arena: Arena, heap: Heap[Arena]) -> list[ChunkInfo]:
    """Every chunk of one heap, its top or fencepost last (arena lock held)."""
    out: list[ChunkInfo] = []
    for chunk, head, state in arena.walk(heap):
        size = head & SIZE_BITS
        detail = ""
        bin_number = 0
        if state == "free":
            bin_number = _bin_of(arena, chunk, size)
            detail = bin_name(bin_number)
        elif state == "slab":
            slab = arena.slab_pool.slabs[chunk]
            detail = f"{slab.capacity} x {slab.size} B, {slab.nfree} free"
        elif state == "corrupt":
            detail = "size field damaged"
        elif state in ("top", "fence"):
            size = heap.end - chunk
        out.append(ChunkInfo(chunk, size, head & FLAG_BITS, state, detail, bin_number))
    return out


def chunks(alloc: Allocator | None = None, arena: int = 0) -> list[list[ChunkInfo]]:
    """The chunks of each heap of one arena, oldest heap first."""
    alloc, a = _arena(alloc, arena)
    with a.lock:
        return [heap_chunks(a, h) for h in a.heaps]


def heap(alloc: Allocator | None = None, arena: int = 0, color: bool | None = None) -> str:
    """Every chunk of every heap of ``arena``: address, size, flags, state."""
    alloc, a = _arena(alloc, arena)
    paint = _use_color(color)
    lines: list[str] = []
    with a.lock:
        kind = "main arena" if a.is_main else "non-main arena"
        lines.append(f"Arena {a.index} ({kind}): {len(a.heaps)} heap(s), {a.system_mem} bytes")
        for h in a.heaps:
            info = "" if h.start == h.base else f", heap_info {HEAP_INFO_SIZE} bytes"
            lines.append(
                f"heap {h.base:#x}: {h.size:,} bytes mapped of {h.max_size:,} reserved{info}"
            )
            for n, c in enumerate(heap_chunks(a, h)):
                text = f"  {c.addr:#x}  size {c.size:#8x}  {c.flag_text}  {c.state}"
                if c.detail:
                    text += f" ({c.detail})"
                if paint:
                    colour = _STATE_COLOUR.get(c.state, _PALETTE[n % len(_PALETTE)])
                    text = colour + text + _RESET
                lines.append(text)
    return "\n".join(lines)


def bins(
    alloc: Allocator | None = None,
    arena: int = 0,
    color: bool | None = None,
    thread: int | None = None,
) -> str:
    """Each non-empty bin of ``arena``, its slabs' free blocks, and a thread's cache.

    The cache is the calling thread's, or that of ``thread`` (its
    ``threading.get_ident()``, as ``Thread.ident`` gives it), listed by size
    class with each cached block's address, as pwndbg's ``tcachebins`` does.
    """
    alloc, a = _arena(alloc, arena)
    caches = alloc.caches.bins_by_thread()
    who = threading.get_ident() if thread is None else checked_count(thread, "thread")
    if thread is not None and who not in caches:
        attached = ", ".join(str(t) for t in sorted(caches)) or "none"
        raise ValueError(f"thread {who} has no cache in this allocator (attached: {attached})")
    lines: list[str] = []
    with a.lock:
        a.slab_pool.settle()  # (loose blocks into their slabs, so the slabs' counts are whole)
        if not a.bins.unsorted:
            lines.append("unsorted: empty")
        for idx, entries in a.bins.nonempty():
            if idx == UNSORTED:
                lines.append("unsorted: " + ", ".join(f"{c:#x} ({s:#x})" for s, c in entries))
            elif idx < NSMALLBINS:
                listed = ", ".join(f"{c:#x}" for _, c in entries)
                lines.append(f"small bin {idx} ({idx << 4} B): {listed}")
            else:
                lines.append(
                    f"large bin {idx}: " + ", ".join(f"{c:#x} ({s:#x})" for s, c in entries)
                )
        for cls, partial in enumerate(a.slab_pool.partial):
            if partial:
                free = sum(s.nfree for s in partial.values())
                lines.append(
                    f"slabs of {CLASS_SIZES[cls]} B ({CLASS_SLAB_BYTES[cls]} B each):"
                    f" {len(partial)} with free blocks, {free} free blocks"
                )
    cached = caches.get(who)
    if cached is not None:
        label = "this thread" if thread is None else f"thread {who}"
        lines.append(f"tcache ({label}):" + ("" if any(cached) else " empty"))
        for cls, blocks in enumerate(cached):
            if blocks:
                listed = ", ".join(f"{b:#x}" for b in blocks)
                lines.append(f"tcache  {CLASS_SIZES[cls]} B x {len(blocks)}: {listed}")
    if _use_color(color):
        lines = [
            _PALETTE[3] + line + _RESET if line.startswith("tcache") else line for line in lines
        ]
    return "\n".join(lines)


def arenas(alloc: Allocator | None = None, color: bool | None = None) -> str:
    """Each arena: threads attached, heaps, system and in-use bytes; then the mappings."""
    st = _allocator(alloc).stats()
    lines = [
        f"{'arena':>5}  {'threads':>7}  {'heaps':>5}  {'system':>12}  {'in use':>12}  {'top':>10}"
    ]
    for a in st.arenas:
        lines.append(
            f"{a.index:>5}  {a.attached_threads:>7}  {a.heaps:>5}  {a.system_bytes:>12,}"
            f"  {a.in_use_bytes:>12,}  {a.top_bytes:>10,}"
        )
    lines.append(f"mapped chunks: {st.hblks} ({st.hblkhd:,} bytes)")
    lines.append(f"slabs: {st.slabs}, thread caches: {st.tcache_blocks} blocks")
    if _use_color(color):
        lines[0] = "\x1b[1m" + lines[0] + _RESET
    return "\n".join(lines)


def vis_heap_chunks(
    alloc: Allocator | None = None,
    addr: int | None = None,
    count: int = 8,
    arena: int = 0,
    color: bool | None = None,
    max_rows: int = 6,
) -> str:
    """Hexdump ``count`` chunks from the one holding ``addr`` (default: the heap's first).

    Each 16-byte row shows its address and two little-endian words, as
    pwndbg's ``vis_heap_chunks`` does; a chunk's header row is labelled
    ``prev_size | size``, and long chunks are cut to ``max_rows`` rows.  A
    free chunk's second row is where glibc keeps its ``fd | bk`` links; here
    the links live in :class:`~arenas.bins.Bins`, out of the heap, so the
    row holds whatever bytes were there (zeros, for memory never written).
    """
    alloc, a = _arena(alloc, arena)
    if addr is not None:
        addr = checked_address(addr)
    count = checked_count(count, "count")
    max_rows = checked_count(max_rows, "max_rows")
    paint = _use_color(color)
    lines: list[str] = []
    with a.lock:
        for h in a.heaps:
            infos = heap_chunks(a, h)
            if addr is not None and not (h.base <= addr < h.end):
                continue
            start = 0
            if addr is not None:
                start = next(
                    (i for i, c in enumerate(infos) if c.addr <= addr < c.addr + c.size), 0
                )
            for n, c in enumerate(infos[start : start + count]):
                colour = _PALETTE[(start + n) % len(_PALETTE)] if paint else ""
                reset = _RESET if paint else ""
                rows = max(c.size // 16, 1)
                shown = list(range(min(rows, max_rows)))
                for r in shown:
                    row = c.addr + 16 * r
                    if row + 16 > h.end:
                        break
                    lo, hi = h.prev_size(row), h.head(row)
                    note = ""
                    if r == 0:
                        note = f"  <- prev_size | size {hi & SIZE_BITS:#x} {c.flag_text}: {c.state}"
                    elif r == 1 and c.state == "free":
                        note = f"  <- {_NO_LINKS}"
                    lines.append(f"{colour}{row:#014x}  {lo:#018x}  {hi:#018x}{note}{reset}")
                if rows > len(shown):
                    lines.append(
                        f"{colour}{'':14}  ... {rows - len(shown)} more rows of this chunk{reset}"
                    )
            break
    return "\n".join(lines)


# ------------------------------------------------------------------- demo
def demo() -> Allocator:
    """A small heap worth looking at: a few blocks, a slab, free chunks in bins."""
    alloc = Allocator(top_pad=0)
    keep = [alloc.malloc(n) for n in (70_000, 80_000, 90_000, 100_000)]
    alloc.free(keep[1])
    small = [alloc.malloc(24) for _ in range(5)]
    alloc.free(small[0])
    return alloc


def main(argv: list[str]) -> int:
    views: dict[str, Callable[[Allocator], str]] = {
        "heap": lambda a: heap(a),
        "bins": lambda a: bins(a),
        "arenas": lambda a: arenas(a),
        "vis": lambda a: vis_heap_chunks(a),
    }
    if len(argv) != 1 or argv[0] not in views:
        print("usage: python -m arenas.inspect {heap,bins,arenas,vis}", file=sys.stderr)
        return 2
    print(views[argv[0]](demo()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
