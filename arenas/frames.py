"""Frames: what one picture of the heaps holds, how the page encodes it, how a PNG draws it.

A frame is every heap of every arena as its *pieces*, in address order
(``heap_info``, chunks in use, free chunks with their bin, the top,
fenceposts, and each slab as its header and its blocks: live, cached by a
thread, free in the slab, or never handed out), each with the thread that
allocated or caches it and the last call on an address inside it
(:func:`heap_pieces`); and each thread's arena, calls and cross-thread
frees.  :class:`arenas.timeline.Timeline` captures frames; this module
knows what they are.

**The page's data**, as :meth:`Timeline.page_data` builds it (JSON)::

    {"format": 2, "kinds": [...], "ops": [...], "classes": [...], "bins": [...], "grain": 16,
     "colours": {...}, "threads": [tid, ...],
     "runs": [{"name": "default", "frames": [frame, ...]}, ...]}
    frame = {"event": E, "label": "...", "cross_frees": n,
             "threads": [[tid, state, arena, allocations, frees, [[arena, n], ...]], ...],
             "arenas": [{"index": i, "system": .., "in_use": .., "free": .., "largest_free": ..,
                         "top": .., "attached": n, "heaps": [heap, ...]}, ...]}
    heap = {"base": "0x7f..", "size": bytes, "max": bytes, "p": records}  # every piece
         | {"base": "0x7f..", "size": bytes, "max": bytes, "d": splices}  # what changed
    records = [length / 16, 2 * code, ...]  or  [length / 16, 2 * code + 1, ago, who, ...]
    splices = [kept, removed, added, <added records>, kept, removed, ...]

All flat lists of integers, to keep a page of a long trace small.  A heap's
records tile it from its base, so offsets are implied.  A piece's ``code``
is ``kind + 16 * detail``: ``kind`` indexes ``kinds``; ``detail`` is the
thread + 1 for a chunk in use and a live or cached block (0: not known),
the bin for a free chunk, the size class for a slab header.  A record
with an odd second number goes on with ``ago``, how many events before the
frame the last call on an address inside the piece was made, and ``who``,
that call's thread * 8 + its index in ``ops``.  A heap that was in the
frame before (same arena, same base) sends only its changes: keep
``kept`` records of the frame before, drop the next ``removed``, put in
``added`` records, and so on; the rest is kept.  A thread's ``state`` is
0 (no call yet), 1 (running) or 2 (done); its counts are totals so far.
Several runs (``compare``) have their frames at the same events.

Locking: none here.  :func:`heap_pieces` runs under the arena's lock (its
caller takes it); a :class:`ThreadTally` and a :class:`Sightings` belong to
one timeline, under that timeline's lock; frames are not changed once made.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .arena import Arena
from .chunk import CHUNK_HDR_SZ
from .heap import Heap
from .inspect import heap_chunks

KINDS = (
    "heap_info",
    "chunk in use",
    "free chunk",
    "top chunk",
    "fencepost",
    "slab header",
    "live block",
    "cached block",
    "free block",
    "untouched block",
    "corrupt",
)
(HEAP_INFO, IN_USE, FREE, TOP, FENCE, SLAB_HEADER, LIVE, CACHED, FREE_BLOCK, UNTOUCHED, CORRUPT) = (
    range(len(KINDS))
)
_KIND_OF_CHUNK = {"in use": IN_USE, "free": FREE, "top": TOP, "fence": FENCE, "corrupt": CORRUPT}
# The calls of the trace format, by their letter; a touch's ``who`` is tid * 8 + index.
OPS = {"m": "malloc", "c": "calloc", "r": "realloc", "f": "free", "a": "memalign"}
OP_INDEX = {op: i for i, op in enumerate(OPS)}
GRAIN = 16  # every piece starts and ends on a multiple of 16 bytes from its heap's base

# Colours, shared by the page and the PNG.  Each thread colour has at least
# 3:1 contrast against white (WCAG's figure for graphics); light kinds get a
# dark outline in the legend.  Cached blocks are stripes of their thread's colour.
THREAD_COLOURS = (
    "#0072b2",
    "#d55e00",
    "#009e73",
    "#cc79a7",
    "#5e3c99",
    "#a6761d",
    "#01665e",
    "#b2182b",
)
KIND_COLOURS = (
    "#404040",  # heap_info
    "#6e6e6e",  # in use, thread not known
    "#bdbdbd",  # free chunk
    "#f6efd2",  # top
    "#000000",  # fence
    "#8a4b00",  # slab header
    "#6e6e6e",  # live block, thread not known
    "#6e6e6e",  # cached block, thread not known
    "#e3e3e3",  # free block
    "#ffffff",  # untouched block
    "#ff00ff",  # corrupt
)
SLAB_BAND = "#e69f00"  # under every slab, so that its blocks read as one slab
BLOCK_KINDS = (LIVE, CACHED, FREE_BLOCK, UNTOUCHED)


class Piece(NamedTuple):
    """One piece of a heap: a chunk, a slab's header, or one of a slab's blocks.

    ``offset`` is from the heap's base; ``code`` is ``kind + 16 * detail``
    (see the module's docstring); ``event`` is the number of the last call
    made on an address inside it (0: none seen) and ``who`` that call's
    thread * 8 + its op's index in :data:`OPS`.
    """

    offset: int
    code: int
    event: int
    who: int

    @property
    def kind(self) -> int:
        return self.code & 15

    @property
    def detail(self) -> int:
        return self.code >> 4


class Sightings:
    """What is known of a heap's blocks beyond the heap itself, for :func:`heap_pieces`.

    ``owners``: block address -> thread that allocated it; ``cached``: block
    address -> thread whose cache holds it; ``touches``: block address ->
    (event, who) of the last call on it, ``touched`` the same addresses sorted.
    A :class:`Timeline` builds one at each capture, under its lock; the
    default knows nothing (no threads, no calls).
    """

    __slots__ = ("cached", "owners", "touched", "touches")

    def __init__(
        self,
        owners: Mapping[int, int] | None = None,
        cached: Mapping[int, int] | None = None,
        touches: Mapping[int, tuple[int, int]] | None = None,
        touched: Sequence[int] | None = None,
    ) -> None:
        self.owners = owners or {}
        self.cached = cached or {}
        self.touches = touches or {}
        self.touched = touched if touched is not None else sorted(self.touches)

    def last_in(self, start: int, end: int) -> tuple[int, int]:
        """The latest (event, who) of a call on an address in [start, end); (0, 0) if none."""
        touched = self.touched
        touches = self.touches
        best = (0, 0)
        for k in range(bisect_left(touched, start), bisect_left(touched, end)):
            seen = touches[touched[k]]
            if seen[0] > best[0]:
                best = seen
        return best


def heap_pieces(arena: Arena, heap: Heap[Arena], seen: Sightings | None = None) -> list[Piece]:
    """Every piece of ``heap`` in address order, tiling it from base to end (arena lock held).

    This is the one place that turns an arena's chunks and its slabs'
    blocks into what the page and the PNG draw.  A slab block is *live*
    (handed out: its thread is the one that allocated it), *cached* (in a
    thread's cache: that thread), *free* (on its slab's free list) or
    *untouched* (beyond the slab's bump pointer: never handed out).
    """
    seen = seen or Sightings()
    base = heap.base
    out: list[Piece] = []
    add = out.append
    piece = tuple.__new__  # (Piece's own __new__ is a Python call: a capture makes thousands)
    if heap.start != base:
        add(piece(Piece, (0, HEAP_INFO, 0, 0)))
    owners, cached, touches = seen.owners, seen.cached, seen.touches
    untouched = (0, 0)
    slabs = arena.slab_pool.slabs
    for chunk in heap_chunks(arena, heap):
        addr = chunk.addr
        if chunk.state == "slab":
            slab = slabs[addr]
            add(piece(Piece, (addr - base, SLAB_HEADER + 16 * slab.cls, 0, 0)))
            free = set(slab.free)
            bump = slab.bump
            for block in range(addr + CHUNK_HDR_SZ, slab.end, slab.size):
                if block >= bump:
                    add(piece(Piece, (block - base, UNTOUCHED, 0, 0)))
                    continue
                if block in free:
                    code = FREE_BLOCK
                elif block in cached:
                    code = CACHED + 16 * (cached[block] + 1)
                else:
                    code = LIVE + 16 * (owners.get(block, -1) + 1)
                add(piece(Piece, (block - base, code, *touches.get(block, untouched))))
        elif chunk.state == "in use":
            mem = addr + CHUNK_HDR_SZ
            code = IN_USE + 16 * (owners.get(mem, -1) + 1)
            add(piece(Piece, (addr - base, code, *touches.get(mem, untouched))))
        else:
            code = _KIND_OF_CHUNK[chunk.state] + 16 * chunk.bin
            add(piece(Piece, (addr - base, code, *seen.last_in(addr, addr + chunk.size))))
    return out


def share_unchanged(new: list[Piece], old: Sequence[Piece]) -> tuple[Piece, ...]:
    """``new``, with every piece equal to one of ``old`` (by offset) replaced by that one,
    so that frames share what did not change."""
    same = dict(zip([p[0] for p in old], old, strict=True)).get
    return tuple([kept if (kept := same(p[0])) == p else p for p in new])


class ThreadFrame(NamedTuple):
    """One thread in one frame: its counts are totals since the start."""

    state: int  # 0 no call yet, 1 running, 2 done (the page's numbers)
    arena: int  # the arena it was bound to when it made its first call
    allocations: int  # calls that returned a block
    frees: int  # calls that freed one (a realloc that moved counts as both)
    cross: dict[int, int]  # arena (-1: a mapping) -> frees of blocks another thread allocated


class ThreadTally:
    """One thread as a timeline sees it (the timeline's lock guards it)."""

    __slots__ = ("allocations", "arena", "cross", "frees", "state")

    def __init__(self, arena: int) -> None:
        self.arena = arena
        self.state = 1  # 0 no call yet, 1 running, 2 done (see the page format)
        self.allocations = 0
        self.frees = 0
        self.cross: dict[int, int] = {}  # arena (-1: a mapping) -> cross-thread frees into it


def thread_colours(tids: Iterable[int]) -> dict[int, str]:
    """Each thread's colour: by its rank among ``tids``, round the palette."""
    return {tid: THREAD_COLOURS[k % len(THREAD_COLOURS)] for k, tid in enumerate(sorted(tids))}


def _records(pieces: Sequence[Piece], ends: Sequence[int], event: int) -> list[int]:
    """Pieces as the page's records, one flat list (see the module's docstring)."""
    out: list[int] = []
    for p, end in zip(pieces, ends, strict=True):
        if p.event:
            out += ((end - p.offset) // GRAIN, p.code * 2 + 1, event - p.event, p.who)
        else:
            out += ((end - p.offset) // GRAIN, p.code * 2)
    return out


def _ends(pieces: Sequence[Piece], size: int) -> list[int]:
    return [p.offset for p in pieces[1:]] + [size] if pieces else []


def _splices(
    old: Sequence[Piece], old_size: int, new: Sequence[Piece], new_size: int, event: int
) -> list[int]:
    """The splices that turn the records of ``old`` into those of ``new`` (one heap, two
    frames; both tile it from offset 0), as one flat list of ``kept, removed, added,
    records...``.  Each replaces a stretch where the two differ, ending where both
    lists have a piece end at the same offset."""
    old_ends, new_ends = _ends(old, old_size), _ends(new, new_size)
    n_old, n_new = len(old), len(new)
    out: list[int] = []
    i = j = kept = 0
    while i < n_old or j < n_new:
        if i < n_old and j < n_new and old[i] == new[j] and old_ends[i] == new_ends[j]:
            i += 1
            j += 1
            kept += 1
            continue
        i0, j0 = i, j
        if i == n_old or j == n_new:
            i, j = n_old, n_new  # the heap grew or shrank: the rest of one list
        else:
            end_old, end_new = old_ends[i], new_ends[j]
            i += 1
            j += 1
            while end_old != end_new:
                if end_old < end_new:
                    if i == n_old:
                        j = n_new
                        break
                    end_old = old_ends[i]
                    i += 1
                else:
                    if j == n_new:
                        i = n_old
                        break
                    end_new = new_ends[j]
                    j += 1
        out += (kept, i - i0, j - j0)
        out += _records(new[j0:j], new_ends[j0:j], event)
        kept = 0
    return out


def encode_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames as the page's JSON: each heap's records, or its changes since the frame before."""
    out = []
    before: dict[tuple[int, int], dict[str, Any]] = {}
    for f in frames:
        event = f["event"]
        now: dict[tuple[int, int], dict[str, Any]] = {}
        arenas = []
        for a in f["arenas"]:
            heaps = []
            for h in a["heaps"]:
                key = (a["index"], h["base"])
                now[key] = h
                entry: dict[str, Any] = {
                    "base": f"{h['base']:#x}",
                    "size": h["size"],
                    "max": h["max"],
                }
                old = before.get(key)
                if old is None:
                    entry["p"] = _records(h["pieces"], _ends(h["pieces"], h["size"]), event)
                else:
                    entry["d"] = _splices(old["pieces"], old["size"], h["pieces"], h["size"], event)
                heaps.append(entry)
            arenas.append({**{k: v for k, v in a.items() if k != "heaps"}, "heaps": heaps})
        before = now
        out.append(
            {
                "label": f["label"],
                "event": event,
                "cross_frees": f["cross_frees"],
                "threads": [
                    [tid, t.state, t.arena, t.allocations, t.frees, sorted(t.cross.items())]
                    for tid, t in sorted(f["threads"].items())
                ],
                "arenas": arenas,
            }
        )
    return out


def human_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _fill(piece: Piece, colours: Mapping[int, str]) -> tuple[str, str, str]:
    """A piece's face colour, hatch and legend entry in the PNG (the page's rule)."""
    kind, detail = piece.kind, piece.detail
    if kind in (IN_USE, LIVE, CACHED) and detail - 1 in colours:
        tid = detail - 1
        if kind == CACHED:
            return colours[tid], "////", "cached block (stripes of its thread's colour)"
        return colours[tid], "", f"thread {tid}"
    return KIND_COLOURS[kind], "", KINDS[kind]


def draw_heaps(
    rows: list[tuple[str, dict[str, Any]]], title: str, path: str | Path, tids: Sequence[int]
) -> Path:
    """Draw labelled heaps (as captured in frames), all to one scale, into a PNG.

    Pieces a thread holds are in its colour (cached blocks striped), the
    others in their kind's; an orange band runs under each slab.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    colours = thread_colours(tids)
    fig, ax = plt.subplots(figsize=(9, 1.3 + 0.42 * len(rows)))
    widest = max((heap["size"] for _, heap in rows), default=1)
    legend: dict[str, Patch] = {}
    for row, (_, heap) in enumerate(rows):
        spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
        slabs: list[tuple[int, int]] = []  # (start, length) of each slab
        last: tuple[str, str] | None = None
        pieces = heap["pieces"]
        for piece, end in zip(pieces, _ends(pieces, heap["size"]), strict=True):
            face, hatch, label = _fill(piece, colours)
            ranges = spans.setdefault((face, hatch), [])
            if last == (face, hatch):  # one bar for a run of pieces that look alike
                ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
            else:
                ranges.append((piece.offset, end - piece.offset))
            last = (face, hatch)
            edge = face if hatch else "#767676"
            legend.setdefault(
                label,
                Patch(
                    facecolor="white" if hatch else face, edgecolor=edge, hatch=hatch, label=label
                ),
            )
            if piece.kind == SLAB_HEADER:
                slabs.append((piece.offset, end - piece.offset))
            elif piece.kind in BLOCK_KINDS and slabs:
                slabs[-1] = (slabs[-1][0], end - slabs[-1][0])
        for (face, hatch), ranges in spans.items():
            if hatch:  # cached blocks: stripes of their thread's colour
                ax.broken_barh(
                    ranges,
                    (row - 0.32, 0.64),
                    facecolors="white",
                    edgecolor=face,
                    hatch=hatch,
                    linewidth=0,
                )
            else:
                ax.broken_barh(ranges, (row - 0.32, 0.64), facecolors=face, linewidth=0)
        if slabs:
            ax.broken_barh(slabs, (row + 0.34, 0.1), facecolors=SLAB_BAND, linewidth=0)
            legend.setdefault("slab", Patch(facecolor=SLAB_BAND, label="slab (the band under it)"))
        ax.add_patch(
            Rectangle((0, row - 0.32), heap["size"], 0.64, fill=False, edgecolor="#767676", lw=0.6)
        )
    ax.set_xlim(0, widest * 1.01)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.xaxis.set_major_locator(MultipleLocator(1 << max(4, (widest // 6).bit_length())))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_bytes(int(x))))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=8)
    ax.legend(
        handles=[legend[label] for label in sorted(legend)],
        fontsize=6,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1 - 0.4 / max(len(rows), 1)),
        frameon=False,
    )
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
