"""Pictures over time: arenas, heaps, chunks and slab blocks, as a page you can scrub and play.

Debugger plugins show the heap at one breakpoint.  This records *frames*:
every heap of every arena as its pieces, in address order (``heap_info``,
chunks in use, free chunks with their bin, the top, fenceposts, and each
slab drawn as its header and its blocks: live, cached by a thread, free in
the slab, or never handed out), each piece with the thread that allocated
or caches it and the last call made on an address inside it; with each
thread's arena, how many calls it made and its cross-thread frees.

* :class:`Timeline` captures frames of a live allocator (:meth:`~Timeline.capture`);
  :meth:`~Timeline.enter` and :meth:`~Timeline.note` tell it which thread
  did what, so that pieces get their threads;
* :func:`from_trace` replays a trace (:mod:`arenas.trace`'s format) with
  one thread per traced thread, in the recorded order, and captures a
  frame every so many events; with ``compare`` it replays the same trace
  under other tunables too, frame for frame, for a side-by-side page;
* :meth:`Timeline.write_html` writes one self-contained page (no network):
  every heap drawn to the same scale, zoom and pan, a lane per thread,
  hover on anything, play/pause, step and keyboard controls;
* :meth:`Timeline.write_png` draws one frame with matplotlib, for docs.

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

Locking: :meth:`~Timeline.note` and :meth:`~Timeline.capture` take the
timeline's own lock, so a frame agrees with the calls noted.  A capture
reads the threads' caches under the allocator's registry lock, then each
arena under its own lock, one arena at a time: exact when the allocating
threads are idle, as in a paced replay (only the thread whose turn it is
runs, and it captures), per arena otherwise.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from .allocator import Allocator
from .arena import Arena
from .bins import NBINS
from .chunk import CHUNK_HDR_SZ
from .heap import Heap
from .inspect import bin_name, heap_chunks
from .slab import CLASS_SIZES
from .trace import Event, Plan, drive, parse, perform
from .tunables import parse_tunables

__all__ = [
    "KINDS",
    "OPS",
    "Piece",
    "Sightings",
    "ThreadFrame",
    "Timeline",
    "from_trace",
    "heap_pieces",
]

# What a piece of a heap is.  The order is the page's too (DATA.kinds).
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
_OP_INDEX = {op: i for i, op in enumerate(OPS)}
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
_BLOCK_KINDS = (LIVE, CACHED, FREE_BLOCK, UNTOUCHED)


def _checked_frames(max_frames: object) -> int:
    """``max_frames`` if it is a whole number of at least 2 (a first frame and a last)."""
    if isinstance(max_frames, bool) or not isinstance(max_frames, int):
        raise TypeError(f"the number of frames must be an int, not {type(max_frames).__name__}")
    if max_frames < 2:
        raise ValueError(f"must be at least 2 (a first frame and a last), not {max_frames}")
    return max_frames


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


def _shared(new: list[Piece], old: Sequence[Piece]) -> tuple[Piece, ...]:
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


class _Thread:
    """One thread as a timeline sees it (the timeline's lock guards it)."""

    __slots__ = ("allocations", "arena", "cross", "frees", "state")

    def __init__(self, arena: int) -> None:
        self.arena = arena
        self.state = 1  # 0 no call yet, 1 running, 2 done (see the page format)
        self.allocations = 0
        self.frees = 0
        self.cross: dict[int, int] = {}  # arena (-1: a mapping) -> cross-thread frees into it


class Timeline:
    """Frames of one allocator's arenas over time.

    ``name`` labels the run on the page (the tunables it differs by, say).
    Threads that allocate tell the timeline who they are with
    :meth:`enter`, and each call with :meth:`note`; :func:`from_trace`
    does both for every traced thread.
    """

    def __init__(self, alloc: Allocator, max_frames: int = 300, name: str = "default") -> None:
        try:
            self.max_frames = _checked_frames(max_frames)
        except ValueError as exc:
            raise ValueError(f"max_frames {exc}") from None
        self.alloc = alloc
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.owners: dict[int, int] = {}  # block address -> thread that allocated it
        self._touches: dict[int, tuple[int, int]] = {}  # block address -> (event, who)
        self._touched: list[int] = []  # the keys of touches, sorted
        self._threads: dict[int, _Thread] = {}
        self._tokens: dict[int, int] = {}  # thread cache token -> thread
        self._last: dict[tuple[int, int], tuple[Piece, ...]] = {}  # (arena, base) -> pieces
        self.cross_frees = 0
        self.events = 0
        self.compared: list[Timeline] = []  # runs shown beside this one, frame for frame
        self._lock = threading.Lock()

    # ------------------------------------------------------------ calls
    def enter(self, tid: int) -> None:
        """The calling thread is ``tid`` (0, 1, ...): record its arena and its cache
        (attaching it to the allocator)."""
        if isinstance(tid, bool) or not isinstance(tid, int):
            raise TypeError(f"a thread is numbered by an int, not {type(tid).__name__}")
        if tid < 0:
            raise ValueError(f"a thread's number cannot be negative: {tid}")
        cache = self.alloc.caches.current()
        with self._lock:
            self._tokens[cache.token] = tid
            thread = self._threads.setdefault(tid, _Thread(cache.arena.index))
            thread.arena = cache.arena.index
            thread.state = 1

    def leave(self, tid: int) -> None:
        """Thread ``tid`` makes no more calls."""
        with self._lock:
            self._threads[tid].state = 2

    def foreign_home(self, tid: int, addr: int | None) -> int | None:
        """If ``addr`` is a block another thread allocated, the arena it belongs to (-1 for a
        chunk with a mapping of its own): ask before ``tid`` frees it.  None otherwise.

        Reads ``owners`` without the lock: one ``dict.get``, atomic, of a block
        that only the caller can free now."""
        if addr is None or self.owners.get(addr, tid) == tid:
            return None
        home = self.alloc.arena_for(addr)
        return -1 if home is None else home

    def note(
        self, tid: int, op: str, freed: int | None, made: int | None, home: int | None = None
    ) -> int:
        """Record a call ``tid`` made (``op`` a letter of :data:`OPS`) that freed or resized
        the block ``freed`` and returned ``made``; ``home`` is :meth:`foreign_home`'s answer
        for ``freed``.  Returns the number of calls noted so far."""
        if op not in _OP_INDEX:
            raise ValueError(f"op must be one of {', '.join(OPS)} (arenas.trace's letters): {op!r}")
        with self._lock:
            thread = self._threads.get(tid)
            if thread is None:
                raise ValueError(f"thread {tid} made a call before Timeline.enter({tid})")
            self.events += 1
            event = self.events
            who = tid * 8 + _OP_INDEX[op]
            if freed is not None:
                self.owners.pop(freed, None)
                self._touch(freed, event, who)
                if made != freed:  # (a realloc in place frees nothing)
                    thread.frees += 1
                    if home is not None:
                        self.cross_frees += 1
                        thread.cross[home] = thread.cross.get(home, 0) + 1
            if made:
                self.owners[made] = tid
                self._touch(made, event, who)
                thread.allocations += 1
            return event

    def _touch(self, addr: int, event: int, who: int) -> None:
        if addr not in self._touches:
            insort(self._touched, addr)
        self._touches[addr] = (event, who)

    # ------------------------------------------------------------ frames
    def capture(self, label: str = "") -> None:
        """Record one frame of every arena now (see the module's docstring for the locks)."""
        with self._lock:
            arenas = self.alloc.arena_list()
            caches = self.alloc.caches
            with caches.registry.reading():
                held = caches.cached_blocks()
            cached = {
                addr: self._tokens.get(token, -1)
                for token, bins in held.items()
                for blocks in bins
                for addr in blocks
            }
            seen = Sightings(self.owners, cached, self._touches, self._touched)
            frame_arenas = []
            for arena in arenas:
                with arena.lock:
                    frame_arenas.append(self._arena_frame(arena, seen))
            self.frames.append(
                {
                    "label": label,
                    "event": self.events,
                    "cross_frees": self.cross_frees,
                    "threads": {
                        tid: ThreadFrame(t.state, t.arena, t.allocations, t.frees, dict(t.cross))
                        for tid, t in self._threads.items()
                    },
                    "arenas": frame_arenas,
                }
            )
            if len(self.frames) > self.max_frames:
                del self.frames[1::2]  # keep every other frame, and the first

    def _arena_frame(self, arena: Arena, seen: Sightings) -> dict[str, Any]:
        """One arena's figures and heaps (its lock held)."""
        heaps = []
        for heap in arena.heaps:
            key = (arena.index, heap.base)
            pieces = _shared(heap_pieces(arena, heap, seen), self._last.get(key, ()))
            self._last[key] = pieces
            heaps.append(
                {"base": heap.base, "size": heap.size, "max": heap.max_size, "pieces": pieces}
            )
        free_sizes = list(arena.bins.free.values())
        return {
            "index": arena.index,
            "heaps": heaps,
            "system": arena.system_mem,
            "in_use": arena.inuse_bytes,
            "free": sum(free_sizes),
            "largest_free": max(free_sizes, default=0),
            "top": arena.top_size(),
            "attached": arena.attached_threads,
        }

    def compare_with(self, other: Timeline) -> None:
        """Show ``other`` beside this run; both must have frames at the same events."""
        if [f["event"] for f in other.frames] != [f["event"] for f in self.frames]:
            raise ValueError(
                f"run {other.name!r} is not frame-locked with {self.name!r}:"
                " its frames are at other events (replay the same trace with the same max_frames)"
            )
        self.compared.append(other)

    def busiest_frame(self) -> int:
        """The frame with the most bytes in use, over all arenas."""
        self._require_frames()
        return max(
            range(len(self.frames)),
            key=lambda k: sum(a["in_use"] for a in self.frames[k]["arenas"]),
        )

    def _require_frames(self) -> None:
        if not self.frames:
            raise ValueError("no frames to draw: capture() some first")

    # ------------------------------------------------------------ output
    def thread_ids(self) -> list[int]:
        """Every thread seen in any frame of this run and the runs beside it, in order."""
        return sorted({tid for run in self.runs() for f in run.frames for tid in f["threads"]})

    def runs(self) -> list[Timeline]:
        """This run, then the runs shown beside it."""
        return [self, *self.compared]

    def page_data(self) -> dict[str, Any]:
        """What the page draws (the format is in the module's docstring)."""
        self._require_frames()
        tids = self.thread_ids()
        return {
            "format": 2,
            "kinds": list(KINDS),
            "ops": list(OPS.values()),
            "classes": list(CLASS_SIZES),
            "bins": [bin_name(number) if number else "" for number in range(NBINS)],
            "grain": GRAIN,
            "threads": tids,
            "colours": {
                "threads": [thread_colours(tids)[tid] for tid in tids],
                "kinds": list(KIND_COLOURS),
                "slab": SLAB_BAND,
            },
            "runs": [
                {"name": run.name, "frames": _encode_frames(run.frames)} for run in self.runs()
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.page_data(), separators=(",", ":"))

    def write_html(self, path: str | Path, title: str = "arenas over time") -> Path:
        """Write the page: self-contained, with this run and the runs beside it."""
        path = Path(path)
        data = self.to_json().replace("</", "<\\/")  # (a label cannot end the script)
        page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
        path.write_text(page, encoding="utf-8")
        return path

    def write_png(self, path: str | Path, frame: int | None = None) -> Path:
        """Draw one frame (by default the busiest) of each run as a PNG with matplotlib."""
        k = self.busiest_frame() if frame is None else frame
        if not 0 <= k < len(self.frames):
            raise IndexError(
                f"no frame {k}: there are {len(self.frames)} (0 to {len(self.frames) - 1})"
            )
        runs = self.runs()
        rows = [
            (
                (f"{run.name}: " if len(runs) > 1 else "")
                + f"arena {a['index']}, heap {h['base']:#x} ({_human(h['size'])})",
                h,
            )
            for run in runs
            for a in run.frames[k]["arenas"]
            for h in a["heaps"]
        ]
        shot = self.frames[k]
        title = (
            f"after call {shot['event']:,} (frame {k + 1} of {len(self.frames)}):"
            " every heap to one scale, from its base"
        )
        return draw_heaps(rows, title, path, self.thread_ids())


# ================================================================ the page's data
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


def _encode_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


# ================================================================ replaying a trace
def from_trace(
    trace: str | Path,
    alloc: Allocator | None = None,
    max_frames: int = 300,
    compare: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "default",
) -> Timeline:
    """Replay ``trace`` through ``alloc`` (a fresh Allocator by default), capturing frames.

    Uses :mod:`arenas.trace`'s reader and driver: one thread per traced
    thread, paced in the trace's global order, so the pictures show the
    interleaving the program had and come out the same every time.  A frame
    is captured every ``events / max_frames`` events.

    ``compare`` maps a run's name to the keyword arguments of the
    :class:`Allocator` it replays through, ``{"arena_max=1": {"arena_max": 1}}``
    (a later policy is one more such choice): the trace is replayed once
    more for each, and those runs are shown beside this one
    (:attr:`Timeline.compared`), frame for frame.  Every allocator is made,
    so its settings checked, before any replay.
    """
    try:
        _checked_frames(max_frames)
    except ValueError as exc:
        raise ValueError(f"max_frames {exc}") from None
    compare = compare or {}
    if name in compare:
        raise ValueError(f"the run compared with is named {name!r} too: give it a name of its own")
    others: dict[str, Allocator] = {}
    try:
        for label, settings in compare.items():
            others[label] = Allocator(**settings)
        plan = parse(trace)
    except BaseException:
        for other in others.values():
            other.close()
        raise
    timeline = _replay(plan, alloc or Allocator(), max_frames, name)
    for label, other in others.items():
        timeline.compare_with(_replay(plan, other, max_frames, label))
    return timeline


def _replay(plan: Plan, alloc: Allocator, max_frames: int, name: str) -> Timeline:
    timeline = Timeline(alloc, max_frames, name)
    every = max(plan.events // max_frames, 1)

    def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
        left = len(plan.threads[tid])
        entered = False

        def step(ev: Event, old: int | None) -> int | None:
            nonlocal left, entered
            if not entered:  # bound to an arena at its first call, as a thread is in glibc
                timeline.enter(tid)
                entered = True
            home = timeline.foreign_home(tid, old)
            new = perform(ev, old, alloc)
            done = timeline.note(tid, ev.op, old, new, home)
            left -= 1
            if not left:
                timeline.leave(tid)
            if done % every == 0:
                timeline.capture()
            return new

        return step

    timeline.capture("start")
    drive(plan, thread_step, paced=True)
    timeline.capture("end")
    return timeline


# ================================================================ pictures
def _human(n: int) -> str:
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
            elif piece.kind in _BLOCK_KINDS and slabs:
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
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _human(int(x))))
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


def tutorial_pictures(directory: str | Path) -> list[Path]:
    """Draw the pictures of docs/tutorial.md from live allocators.

    ``python -m arenas.timeline --tutorial docs/img`` remakes them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    # Step 1: the size classes and the worst waste of each.
    fig, ax = plt.subplots(figsize=(8, 2.6))
    prev = 0
    for size in CLASS_SIZES:
        worst = (size - prev - 1) / size
        power = size & (size - 1) == 0
        ax.bar(str(size), worst * 100, color="#c44e52" if power else "#4c72b0")
        prev = size
    ax.set_ylabel("worst waste %")
    ax.set_title("44 size classes; red: balloc's 13 powers of two", fontsize=8)
    ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    fig.tight_layout()
    written.append(out / "tutorial-classes.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    # Steps 3 and 4: three chunks, one freed, then coalesced into the top.
    alloc = Allocator(top_pad=0, trim_threshold=1 << 30)  # keep the top in the picture
    timeline = Timeline(alloc)
    timeline.enter(0)
    q, r, s = (alloc.malloc(100_000) for _ in range(3))
    for block in (q, r, s):
        timeline.note(0, "m", None, block)
    snapshots: list[tuple[str, dict[str, Any]]] = []
    for label, action in (
        ("malloc q, r, s", None),
        ("free(r): a free chunk", r),
        ("free(s): r and s melt into the top", s),
    ):
        if action is not None:
            alloc.free(action)
            timeline.note(0, "f", action, None)
        timeline.capture(label)
        snapshots.append((label, timeline.frames[-1]["arenas"][0]["heaps"][0]))
    alloc.free(q)
    written.append(
        draw_heaps(
            snapshots,
            "the main heap: chunks in use (thread 0's colour), a free chunk (grey), the top",
            out / "tutorial-chunks.png",
            [0],
        )
    )
    alloc.close()

    # Step 5: three threads alive at once, each bound to its own arena.
    alloc = Allocator()
    timeline = Timeline(alloc)
    timeline.enter(0)  # this thread takes the main arena
    first = alloc.malloc(1)
    timeline.note(0, "m", None, first)
    alloc.free(first)
    timeline.note(0, "f", first, None)
    ready = threading.Barrier(4)
    done = threading.Event()

    def work(tid: int) -> None:
        timeline.enter(tid)
        for k in range(4):
            addr = alloc.malloc(90_000 + 5_000 * (tid + k))  # chunks, below mmap_threshold
            timeline.note(tid, "m", None, addr)
        ready.wait()
        done.wait()

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(1, 4)]
    for t in threads:
        t.start()
    ready.wait()
    timeline.capture("three threads")
    done.set()
    for t in threads:
        t.join()
    frame = timeline.frames[-1]
    bound = {info.arena: tid for tid, info in frame["threads"].items()}
    rows = [
        (f"arena {a['index']} (thread {bound[a['index']]})", a["heaps"][0]) for a in frame["arenas"]
    ]
    written.append(
        draw_heaps(
            rows,
            "each thread's chunks in its own arena, every heap to one scale",
            out / "tutorial-arenas.png",
            [0, 1, 2, 3],
        )
    )
    alloc.close()
    return written


# ================================================================ the command line
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _frame_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    try:
        return _checked_frames(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tunables(text: str) -> dict[str, int]:
    try:
        return dict(parse_tunables(text))
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str]) -> int:
    """``python -m arenas.timeline TRACE --html OUT [--png OUT] [--compare TUNABLES]``."""
    from .cliargs import needs, writable_dir, writable_file

    parser = _Parser(
        prog="python -m arenas.timeline",
        description="Replay a trace and draw its arenas over time: a page to play and"
        " hover (--html), a picture of one frame (--png).",
    )
    parser.add_argument("trace", nargs="?", help="a trace (arenas.trace's format, .gz or not)")
    parser.add_argument(
        "--tutorial", metavar="DIR", type=writable_dir, help="draw the tutorial's pictures into DIR"
    )
    parser.add_argument("--html", metavar="OUT", type=writable_file, help="write the page here")
    parser.add_argument(
        "--png",
        metavar="OUT",
        type=writable_file,
        help="write a picture of the busiest frame here (needs matplotlib)",
    )
    parser.add_argument(
        "--frames",
        metavar="N",
        type=_frame_count,
        default=300,
        help="keep at most N frames (default 300, at least 2): a frame every EVENTS/N events,"
        " every other one dropped whenever there are more",
    )
    parser.add_argument(
        "--tunables",
        metavar="TUNABLES",
        type=_tunables,
        default={},
        help="replay through an allocator with these tunables (name=value:name=value)",
    )
    parser.add_argument(
        "--compare",
        metavar="TUNABLES",
        type=_tunables,
        action="append",
        default=[],
        help="replay again with these tunables, shown side by side frame for frame"
        " (e.g. arena_max=1); may be given more than once",
    )
    args = parser.parse_args(argv)
    if args.tutorial is None and args.trace is None:
        parser.error("give a trace (or --tutorial DIR)")
    if args.trace is not None and not (args.html or args.png):
        parser.error("nothing to write: give --html OUT and/or --png OUT")
    needs(parser, "matplotlib", {"--png": args.png, "--tutorial": args.tutorial})
    if args.tutorial:
        for path in tutorial_pictures(args.tutorial):
            print(path)
        if not args.trace:
            return 0
    name = _label(args.tunables)
    compare = {_label(tunables): tunables for tunables in args.compare}
    if name in compare or len(compare) < len(args.compare):
        parser.error("--compare: every run needs tunables of its own")
    try:
        timeline = from_trace(
            args.trace, Allocator(**args.tunables), args.frames, compare=compare, name=name
        )
    except (OSError, ValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"{parser.prog}: out of memory: {exc}", file=sys.stderr)
        return 1
    if args.html:
        print(timeline.write_html(args.html, f"arenas: {Path(args.trace).name}"))
    if args.png:
        print(timeline.write_png(args.png))
    return 0


def _label(tunables: Mapping[str, int]) -> str:
    """A run's name: its tunables as ARENAS_TUNABLES spells them, or "default"."""
    return ":".join(f"{k}={v}" for k, v in tunables.items()) or "default"


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 :root { --ink: #1a1a1a; --muted: #4d4d4d; --line: #767676; --focus: #0b57d0; }
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--ink); background: #fff; }
 header, #legend, #stage, .help { margin: 0 16px; }
 h1 { font-size: 18px; margin: 12px 0 2px; }
 #about { color: var(--muted); margin: 0 0 6px; }
 #controls { position: sticky; top: 0; z-index: 2; background: #fff; display: flex; flex-wrap: wrap;
   gap: 6px; align-items: center; padding: 6px 16px; border-bottom: 1px solid #c8c8c8; }
 button, select { font: inherit; color: var(--ink); background: #fff; border: 1px solid var(--line);
   border-radius: 4px; padding: 2px 9px; cursor: pointer; }
 button[aria-pressed="true"] { background: #e8eefc; }
 :focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; }
 #scrub { flex: 1 1 180px; min-width: 140px; }
 #where { font-variant-numeric: tabular-nums; }
 #scale { color: var(--muted); font-variant-numeric: tabular-nums; }
 #legend { display: flex; flex-wrap: wrap; gap: 3px 14px; margin-top: 8px; margin-bottom: 4px; font-size: 13px; }
 #legend .group { font-weight: 600; }
 .key { display: inline-flex; align-items: center; gap: 5px; }
 .swatch { width: 14px; height: 14px; border: 1px solid var(--line); display: inline-block; }
 #stage { position: relative; }
 #board { display: grid; gap: 4px 16px; }
 #board > div { padding-left: 40px; min-width: 0; }  /* the gutter: where the wires run */
 .run-title { font-weight: 600; font-size: 15px; margin-top: 8px; border-bottom: 2px solid #c8c8c8; }
 .inbound { font-size: 12.5px; }
 .arena h3 { font-size: 14px; margin: 8px 0 0; }
 .arena .stats, .heap-label { color: var(--muted); font-size: 12.5px; }
 .heap-label { margin-top: 2px; }
 .heap canvas { display: block; width: 100%; height: 36px; cursor: crosshair; touch-action: pan-y; }
 .missing { color: var(--muted); font-style: italic; }
 .lanes h2 { font-size: 15px; margin: 16px 0 2px; }
 .lanes canvas { display: block; width: 100%; cursor: crosshair; }
 #links { position: absolute; left: 0; top: 0; pointer-events: none; overflow: visible; }
 #links text { font: 12px system-ui, sans-serif; fill: var(--ink); paint-order: stroke; stroke: #fff; stroke-width: 3px; }
 #tip { position: fixed; z-index: 5; max-width: 380px; background: #fff; color: var(--ink);
   border: 1px solid var(--line); border-radius: 4px; box-shadow: 0 2px 8px rgba(0,0,0,.25);
   padding: 6px 8px; font-size: 12.5px; pointer-events: none; }
 #tip div + div { margin-top: 2px; }
 .help { color: var(--muted); font-size: 12.5px; margin-top: 10px; margin-bottom: 16px; }
 kbd { border: 1px solid var(--line); border-radius: 3px; padding: 0 3px; font: 11px ui-monospace, monospace; }
</style></head>
<body>
<header><h1>__TITLE__</h1><p id="about"></p></header>
<div id="controls" role="toolbar" aria-label="frames and zoom">
 <button id="first" title="first frame (Home)" >|&#x25C0; first</button>
 <button id="back" title="previous frame (&#x2190;)" >&#x25C0; back</button>
 <button id="play" title="play or pause (space)" aria-pressed="false">&#x25B6; play</button>
 <button id="step" title="next frame (&#x2192;)" >step &#x25B6;</button>
 <button id="last" title="last frame (End)" >last &#x25B6;|</button>
 <label>speed <select id="speed"><option value="300">slow</option><option value="120" selected>normal</option><option value="40">fast</option></select></label>
 <input type="range" id="scrub" min="0" value="0" aria-label="frame">
 <span id="where"></span>
 <span><button id="zoom-out" title="zoom out (-)" aria-label="zoom out">&#x2212;</button>
 <button id="zoom-fit" title="fit the largest heap (0)">fit</button>
 <button id="zoom-in" title="zoom in (+)" aria-label="zoom in">+</button></span>
 <span id="scale"></span>
</div>
<div id="legend"></div>
<div id="stage">
 <div id="board"></div>
 <svg id="links" aria-hidden="true"></svg>
</div>
<p class="help">Under the heaps, a lane per thread: bars above its line are calls that allocated,
below it frees (black: frees of blocks another thread allocated, cross-thread frees). The blue line
is this frame. A wire runs from a thread's lane to each arena it sent cross-thread frees to: bold, and
counted under the arena's heading, when some were in this frame; faint when all were earlier.</p>
<p class="help">Hover or tap anything for its address, size and history; click or tap to pin it
(it then follows that address from frame to frame; <kbd>Esc</kbd> unpins). Keys: <kbd>space</kbd> play/pause,
<kbd>&#x2190;</kbd> <kbd>&#x2192;</kbd> step, <kbd>Home</kbd> <kbd>End</kbd> first/last, <kbd>+</kbd> <kbd>-</kbd>
<kbd>0</kbd> zoom, <kbd>shift</kbd>+<kbd>&#x2190;</kbd> <kbd>&#x2192;</kbd> pan. Drag a heap to pan it,
ctrl+wheel (or pinch) to zoom. Every heap is drawn to the same scale, from its own base.</p>
<div id="tip" role="tooltip" hidden></div>
<script>
"use strict";
const DATA = __DATA__;
let errors = 0;
window.addEventListener("error", () => { errors += 1; document.body.dataset.errors = String(errors); });

// ------------------------------------------------------------------ vocabulary
const KINDS = DATA.kinds;
const K = Object.fromEntries(KINDS.map((name, i) => [name, i]));
const GRAIN = DATA.grain;
const BLOCK_KINDS = new Set([K["live block"], K["cached block"], K["free block"], K["untouched block"]]);
const HELD_KINDS = new Set([K["chunk in use"], K["live block"], K["cached block"]]);
const THREAD_COLOUR = new Map(DATA.threads.map((tid, i) => [tid, DATA.colours.threads[i]]));
const STATES = ["no call yet", "running", "done"];
const ROW = 36, BODY_Y = 3, BODY_H = 25, BAND_Y = 30, BAND_H = 4;  // a heap's canvas, in CSS px
const MAX_SCALE = 4;  // pixels per byte, zoomed in all the way (a 16-byte block is 64 px)

function human(n) {
  if (n >= 1048576) return (n / 1048576).toFixed(n >= 10485760 ? 1 : 2) + " MiB";
  if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}
const count = n => n.toLocaleString("en-US");
const hex = n => "0x" + BigInt(n).toString(16);
const threadName = tid => "thread " + tid;
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

// ------------------------------------------------------------------ decoding
// Every frame of every run becomes arenas of heaps of records {off, len, kind, detail, event, who};
// a record that did not change is the same object as in the frame before.
function readRecords(flat, p, n, off, frameEvent, out) {  // n records (or all) from flat[p]; the next p
  for (let i = 0; i < n && p < flat.length; i++) {
    const len = flat[p] * GRAIN, tag = flat[p + 1], code = tag >> 1, touched = tag & 1;
    out.push({off, len, kind: code & 15, detail: code >> 4,
              event: touched ? frameEvent - flat[p + 2] : 0, who: touched ? flat[p + 3] : -1});
    off += len;
    p += touched ? 4 : 2;
  }
  return p;
}
function decodeHeap(h, old, frameEvent) {
  const recs = [];
  if (h.p) {
    readRecords(h.p, 0, Infinity, 0, frameEvent, recs);
    return recs;
  }
  let i = 0;  // the next record of the old list
  for (let p = 0; p < h.d.length;) {
    const kept = h.d[p], removed = h.d[p + 1], added = h.d[p + 2];
    for (let k = 0; k < kept; k++) recs.push(old[i++]);
    i += removed;
    const off = recs.length ? recs[recs.length - 1].off + recs[recs.length - 1].len : 0;
    p = readRecords(h.d, p + 3, added, off, frameEvent, recs);
  }
  while (i < old.length) recs.push(old[i++]);
  return recs;
}
function decodeRun(run) {
  let before = new Map();
  return run.frames.map(f => {
    const now = new Map();
    const arenas = f.arenas.map(a => {
      const heaps = a.heaps.map(h => {
        const key = a.index + "@" + h.base, old = before.get(key);
        const recs = decodeHeap(h, old ? old.recs : [], f.event);
        const end = recs.length ? recs[recs.length - 1].off + recs[recs.length - 1].len : 0;
        if (end !== h.size) console.error(`heap ${h.base} of arena ${a.index}: records end at ${end}, not ${h.size}`);
        const heap = {base: Number(BigInt(h.base)), hex: h.base, size: h.size, max: h.max, arena: a.index, recs};
        now.set(key, heap);
        return heap;
      });
      return Object.assign({}, a, {heaps});
    });
    before = now;
    const threads = new Map(f.threads.map(([tid, state, arena, allocations, frees, cross]) =>
      [tid, {state, arena, allocations, frees, cross: new Map(cross)}]));
    return {event: f.event, label: f.label, cross_frees: f.cross_frees, threads, arenas};
  });
}
const RUNS = DATA.runs.map(run => ({name: run.name, frames: decodeRun(run)}));
const NFRAMES = RUNS[0].frames.length;
const NARENAS = Math.max(...RUNS.map(run => Math.max(...run.frames.map(f => f.arenas.length))));
const WIDEST = Math.max(1, ...RUNS.flatMap(run => run.frames.flatMap(f => f.arenas.flatMap(a => a.heaps.map(h => h.size)))));
const LAST_EVENT = RUNS[0].frames[NFRAMES - 1].event;

// ------------------------------------------------------------------ page
const $ = id => document.getElementById(id);
const board = $("board"), tip = $("tip"), scrub = $("scrub"), links = $("links");
scrub.max = String(NFRAMES - 1);
$("about").textContent = `${count(LAST_EVENT)} calls by ${DATA.threads.length} thread(s), ${NFRAMES} frames`
  + (RUNS.length > 1 ? `; side by side, frame for frame: ${RUNS.map(r => r.name).join(" | ")}` : `; run: ${RUNS[0].name}`);

function swatch(style, label) {
  const key = el("span", "key"), box = el("span", "swatch");
  Object.assign(box.style, style);
  key.append(box, document.createTextNode(label));
  return key;
}
const stripesCss = colour => ({background: `repeating-linear-gradient(135deg, ${colour} 0 3px, #fff 3px 6px)`});
(function legend() {
  // The "held" samples show no one thread's colour: a piece takes the colour of its own thread.
  const box = $("legend"), kc = DATA.colours.kinds, some = DATA.colours.threads.slice(0, 3);
  const bands = some.length ? `linear-gradient(90deg, ${some.map((c, i) => `${c} ${i * 100 / some.length}% ${(i + 1) * 100 / some.length}%`).join(", ")})` : kc[K["chunk in use"]];
  if (DATA.threads.length) box.append(el("span", "group", "Threads:"));
  DATA.threads.forEach((tid, i) => box.append(swatch({background: DATA.colours.threads[i]}, threadName(tid))));
  box.append(el("span", "group", "Held:"),
    swatch({background: bands}, "chunk in use or live block: in its thread's colour"),
    swatch(stripesCss("#1a1a1a"), "cached block: striped in the caching thread's colour"),
    swatch({background: kc[K["chunk in use"]]}, "thread not known"),
    el("span", "group", "Not held:"),
    swatch({background: kc[K["free chunk"]]}, "free chunk"),
    swatch({background: kc[K["free block"]]}, "free block"),
    swatch({background: kc[K["untouched block"]]}, "untouched block"),
    swatch({background: kc[K["top chunk"]]}, "top chunk"),
    el("span", "group", "Structure:"),
    swatch({background: DATA.colours.slab}, "slab (band under its blocks)"),
    swatch({background: kc[K["slab header"]]}, "slab header"),
    swatch({background: kc[K["heap_info"]]}, "heap_info"),
    swatch({background: kc[K["fencepost"]]}, "fencepost"));
})();

// The board: a column per run, a row per arena; each cell an arena's heading, figures and heaps.
board.style.gridTemplateColumns = `repeat(${RUNS.length}, minmax(0, 1fr))`;
if (RUNS.length > 1) RUNS.forEach(run => board.append(el("div", "run-title", run.name)));
const cells = [];  // cells[arena][run]
for (let a = 0; a < NARENAS; a++) {
  cells.push(RUNS.map((run, r) => {
    const div = el("div", "arena"), h = el("h3"), stats = el("div", "stats"), inbound = el("div", "inbound");
    const heaps = el("div");
    div.append(h, stats, inbound, heaps);
    board.append(div);
    return {div, h, stats, inbound, heaps, rows: [], run: r, arena: a};
  }));
}
const laneCanvases = RUNS.map((run, r) => {  // under each run's arenas: its threads over time
  const div = el("div", "lanes"), canvas = el("canvas");
  div.append(el("h2", "", "Threads over time"), canvas);
  if (!DATA.threads.length) div.append(el("p", "missing", "no thread told the timeline of its calls (Timeline.enter and note)"));
  board.append(div);
  canvas.run = r;
  watchLanes(canvas);
  return canvas;
});
function heapRow(cell, i) {  // the i-th heap row of a cell, made on first use
  while (cell.rows.length <= i) {
    const div = el("div", "heap"), label = el("div", "heap-label"), canvas = el("canvas");
    canvas.tabIndex = -1;
    div.append(label, canvas);
    cell.heaps.append(div);
    const row = {div, label, canvas, heap: null, cell};
    canvas.row = row;
    cell.rows.push(row);
    watchHeap(canvas);
  }
  return cell.rows[i];
}

// ------------------------------------------------------------------ the view
const view = {k: 0, scale: 0, pan: 0, timer: null, pinned: null, hover: null};
function canvasWidth() {
  const any = board.querySelector(".heap canvas");
  return any && any.clientWidth ? any.clientWidth : Math.max(200, (board.clientWidth - 20 * (RUNS.length - 1)) / RUNS.length);
}
const fitScale = () => (canvasWidth() - 2) / WIDEST;
function setScale(scale, anchor) {  // anchor: the canvas x that stays put
  const before = view.scale;
  view.scale = Math.min(MAX_SCALE, Math.max(fitScale(), scale));
  view.pan = (view.pan + anchor) * (view.scale / before) - anchor;
  setPan(view.pan);
}
function setPan(pan) {
  view.pan = Math.max(0, Math.min(pan, WIDEST * view.scale - canvasWidth() + 2));
  draw();
}
function fit() { view.scale = fitScale(); view.pan = 0; draw(); }

const patterns = new Map();
function stripes(ctx, colour) {  // a cached block: stripes of its thread's colour
  if (!patterns.has(colour)) {
    const tile = document.createElement("canvas");
    tile.width = tile.height = 6;
    const t = tile.getContext("2d");
    t.fillStyle = "#fff"; t.fillRect(0, 0, 6, 6);
    t.strokeStyle = colour; t.lineWidth = 2.2;
    t.beginPath(); t.moveTo(-1, 7); t.lineTo(7, -1); t.moveTo(-1, 1); t.lineTo(1, -1); t.moveTo(5, 7); t.lineTo(7, 5); t.stroke();
    patterns.set(colour, ctx.createPattern(tile, "repeat"));
  }
  return patterns.get(colour);
}
function fillOf(ctx, rec) {
  if (HELD_KINDS.has(rec.kind) && THREAD_COLOUR.has(rec.detail - 1)) {
    const colour = THREAD_COLOUR.get(rec.detail - 1);
    return rec.kind === K["cached block"] ? stripes(ctx, colour) : colour;
  }
  return DATA.colours.kinds[rec.kind];
}
function indexAt(recs, offset) {  // the index of the record holding byte offset (binary search)
  let lo = 0, hi = recs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (recs[mid].off <= offset) lo = mid; else hi = mid - 1;
  }
  return lo;
}
function slabEnd(recs, i) {  // the index past the last block of the slab whose header is recs[i]
  let j = i + 1;
  while (j < recs.length && BLOCK_KINDS.has(recs[j].kind)) j++;
  return j;
}

// One routine draws every heap, whichever run it belongs to.  Each pixel column takes the colour
// covering most of its bytes, so that a zoomed-out heap shows what dominates, not a blur.
function drawHeap(canvas, heap) {
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(ROW * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(ROW * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, ROW);
  const s = view.scale, x0 = -view.pan, recs = heap.recs;
  if (recs.length && x0 + heap.size * s > 0) {
    const i0 = indexAt(recs, Math.max(0, -x0 / s));
    paintColumns(ctx, recs, i0, x0, s, W);
    paintEdges(ctx, recs, i0, x0, s, W);
  }
  ctx.strokeStyle = "#767676"; ctx.lineWidth = 1;
  ctx.strokeRect(Math.round(x0) + 0.5, BODY_Y - 0.5, Math.round(heap.size * s), BODY_H + 1);
}
function paintColumns(ctx, recs, i0, x0, s, W) {
  let col = -1, runFill = null, runA = 0, runB = 0;
  const gathered = new Map();  // fill -> pixels of it in column col
  const put = (a, b, fill) => {  // columns [a, b) are decided
    if (fill === runFill && a === runB) { runB = b; return; }
    if (runFill !== null) { ctx.fillStyle = runFill; ctx.fillRect(runA, BODY_Y, runB - runA, BODY_H); }
    runFill = fill; runA = a; runB = b;
  };
  const decide = () => {
    let best = null, most = -1;
    for (const [fill, px] of gathered) if (px > most) { best = fill; most = px; }
    if (best !== null) put(col, col + 1, best);
    gathered.clear();
  };
  for (let i = i0; i < recs.length; i++) {
    const rec = recs[i];
    let a = Math.max(0, x0 + rec.off * s);
    if (a >= W) break;
    const b = Math.min(W, x0 + (rec.off + rec.len) * s);
    if (b <= a) continue;
    const fill = fillOf(ctx, rec);
    while (a < b) {
      const c = Math.floor(a);
      if (c !== col) { decide(); col = c; }
      if (a === c && b >= c + 1) {  // whole columns of this piece alone
        const n = Math.floor(b) - c;
        put(c, c + n, fill);
        a = c + n; col = -1;
        continue;
      }
      const next = Math.min(b, c + 1);
      gathered.set(fill, (gathered.get(fill) || 0) + next - a);
      a = next;
    }
  }
  decide();
  if (runFill !== null) { ctx.fillStyle = runFill; ctx.fillRect(runA, BODY_Y, runB - runA, BODY_H); }
}
function paintEdges(ctx, recs, i0, x0, s, W) {
  // Where a piece is wide enough, a line where it starts: dark between chunks, white between
  // blocks; and the orange band under each slab, split where slabs meet.
  for (let i = i0; i < recs.length; i++) {
    const rec = recs[i], a = x0 + rec.off * s;
    if (a >= W) break;
    const wide = rec.len * s >= 4;
    if (wide && a > 0) {
      ctx.fillStyle = BLOCK_KINDS.has(rec.kind) ? "#ffffff" : "#1a1a1a";
      ctx.fillRect(Math.round(a), BODY_Y, 1, BODY_H);
    }
    if (rec.kind === K["slab header"]) {
      const j = slabEnd(recs, i), last = recs[j - 1];
      const b = x0 + (last.off + last.len) * s, gap = b - a >= 6 ? 1 : 0;
      ctx.fillStyle = DATA.colours.slab;
      ctx.fillRect(a, BAND_Y, Math.max(b - a - gap, 0.5), BAND_H);
    }
  }
}

// ------------------------------------------------------------------ one frame
function boundText(frame, arena) {
  const bound = [...frame.threads].filter(([, t]) => t.arena === arena && t.state > 0)
    .map(([tid, t]) => `${threadName(tid)} (${STATES[t.state]})`);
  return bound.length ? "bound: " + bound.join(", ") : "no thread bound";
}
function occupancy(arena) {
  const n = new Map();
  for (const heap of arena.heaps) for (const rec of heap.recs) if (BLOCK_KINDS.has(rec.kind)) n.set(rec.kind, (n.get(rec.kind) || 0) + 1);
  const total = [...n.values()].reduce((x, y) => x + y, 0);
  if (!total) return "";
  return ` · slab blocks: ${count(total)} (${count(n.get(K["live block"]) || 0)} live, ${count(n.get(K["cached block"]) || 0)} cached,`
    + ` ${count(n.get(K["free block"]) || 0)} free, ${count(n.get(K["untouched block"]) || 0)} untouched)`;
}
function drawCell(cell, frame) {
  const arena = frame.arenas[cell.arena];
  if (!arena) {
    const later = RUNS[cell.run].frames.some(f => f.arenas.length > cell.arena);
    cell.h.textContent = `arena ${cell.arena}`;
    cell.h.className = "missing";
    cell.stats.textContent = later ? "not created yet" : "never created in this run";
    cell.rows.forEach(row => { row.div.hidden = true; row.heap = null; });
    return;
  }
  cell.h.className = "";
  cell.h.textContent = `arena ${arena.index}${arena.index === 0 ? " (main)" : ""} · ${boundText(frame, arena.index)}`
    + ` · ${arena.attached} ${arena.attached === 1 ? "thread" : "threads"} attached now`;
  const frag = arena.free ? ` (largest ${human(arena.largest_free)})` : "";
  cell.stats.textContent = `system ${human(arena.system)} · in use ${human(arena.in_use)}`
    + ` · free chunks ${human(arena.free)}${frag} · top ${human(arena.top)}` + occupancy(arena);
  arena.heaps.forEach((heap, i) => {
    const row = heapRow(cell, i);
    row.div.hidden = false;
    row.heap = heap;
    row.label.textContent = `heap ${heap.hex} · ${human(heap.size)} of ${human(heap.max)} reserved`;
  });
  cell.rows.slice(arena.heaps.length).forEach(row => { row.div.hidden = true; row.heap = null; });
}
function draw() {
  const k = view.k;
  cells.forEach(runs => runs.forEach(cell => drawCell(cell, RUNS[cell.run].frames[k])));
  if (!view.scale) view.scale = fitScale();
  cells.forEach(runs => runs.forEach(cell => cell.rows.forEach(row => { if (row.heap) drawHeap(row.canvas, row.heap); })));
  const f = RUNS[0].frames[k];
  $("where").textContent = `frame ${k + 1} of ${NFRAMES} · call ${count(f.event)} of ${count(LAST_EVENT)}`
    + (f.label ? ` (${f.label})` : "") + ` · ${count(f.cross_frees)} cross-thread frees so far`;
  const perPx = 1 / view.scale;
  $("scale").textContent = `1 px = ${perPx >= 1024 ? human(Math.round(perPx)) : perPx.toFixed(perPx < 1 ? 2 : 0) + " B"}`;
  scrub.value = String(k);
  laneCanvases.forEach(drawLanes);
  cells.forEach(runs => runs.forEach(cell => drawInbound(cell, RUNS[cell.run].frames[k], RUNS[cell.run])));
  drawWires();
  refreshTip();
  document.body.dataset.frame = String(k);
}
function show(k) { view.k = Math.max(0, Math.min(NFRAMES - 1, k)); draw(); }

// ------------------------------------------------------------------ lanes and wires
const LANE = 30, AXIS = 16;
let LANE_LABEL = 0;  // the widest lane label, measured when the lanes are first drawn
const laneLabel = (tid, t) => `${threadName(tid)}: ${t && t.state ? STATES[t.state] + ", arena " + t.arena : STATES[0]}`;
const laneSpan = canvas => Math.max(1, canvas.clientWidth - LANE_LABEL - 8);
function laneX(canvas, k) { return LANE_LABEL + (NFRAMES > 1 ? k / (NFRAMES - 1) : 0) * laneSpan(canvas); }
function laneFrame(canvas, x) { return Math.max(0, Math.min(NFRAMES - 1, Math.round((x - LANE_LABEL) / laneSpan(canvas) * (NFRAMES - 1)))); }
function delta(run, k, tid, field) {  // what thread tid did between frames k-1 and k
  const now = run.frames[k].threads.get(tid), then = k ? run.frames[k - 1].threads.get(tid) : undefined;
  if (field !== "cross") return now ? now[field] - (then ? then[field] : 0) : 0;
  const out = new Map();
  if (now) for (const [arena, n] of now.cross) {
    const d = n - (then && then.cross.has(arena) ? then.cross.get(arena) : 0);
    if (d) out.set(arena, d);
  }
  return out;
}
const crossCount = m => [...m.values()].reduce((x, y) => x + y, 0);
let laneMost = 0;  // the most calls of one kind by one thread between two frames: a full bar
function drawLanes(canvas) {
  const run = RUNS[canvas.run], dpr = window.devicePixelRatio || 1, W = canvas.clientWidth;
  const H = DATA.threads.length * LANE + AXIS;
  canvas.style.height = H + "px";
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  if (!LANE_LABEL) {
    LANE_LABEL = 24 + Math.max(...DATA.threads.flatMap(tid => [1, 2].map(state => ctx.measureText(laneLabel(tid, {state, arena: 99})).width)));
    for (const r of RUNS) for (let k = 1; k < NFRAMES; k++) for (const tid of DATA.threads) {
      laneMost = Math.max(laneMost, delta(r, k, tid, "allocations"), delta(r, k, tid, "frees"));
    }
    laneMost = Math.max(laneMost, 1);
  }
  const step = NFRAMES > 1 ? laneSpan(canvas) / (NFRAMES - 1) : 0, bar = Math.max(1, Math.min(step - 1, 6));
  ctx.textBaseline = "middle";
  DATA.threads.forEach((tid, row) => {
    const mid = row * LANE + LANE / 2, half = LANE / 2 - 3, colour = THREAD_COLOUR.get(tid);
    ctx.fillStyle = colour; ctx.fillRect(0, mid - 6, 12, 12);
    ctx.fillStyle = "#1a1a1a";
    ctx.fillText(laneLabel(tid, run.frames[view.k].threads.get(tid)), 16, mid);
    ctx.fillStyle = "#c8c8c8"; ctx.fillRect(LANE_LABEL, mid, W - LANE_LABEL - 8, 1);
    for (let k = 1; k < NFRAMES; k++) {
      const x = laneX(canvas, k) - bar, up = delta(run, k, tid, "allocations"), down = delta(run, k, tid, "frees");
      const cross = crossCount(delta(run, k, tid, "cross"));
      if (up) { ctx.fillStyle = colour; ctx.fillRect(x, mid - half * up / laneMost, bar, half * up / laneMost); }
      if (down) { ctx.fillStyle = "#8c8c8c"; ctx.fillRect(x, mid + 1, bar, half * down / laneMost); }
      if (cross) { ctx.fillStyle = "#000"; ctx.fillRect(x, mid + 1, bar, Math.max(1, half * cross / laneMost)); }
    }
  });
  const bottom = DATA.threads.length * LANE;
  ctx.fillStyle = "#0b57d0"; ctx.fillRect(laneX(canvas, view.k) - 1, 0, 2, bottom);
  ctx.fillStyle = "#4d4d4d"; ctx.textBaseline = "top";
  ctx.fillText("call 0", LANE_LABEL, bottom + 2);
  const end = `call ${count(LAST_EVENT)}`;
  ctx.fillText(end, W - 8 - ctx.measureText(end).width, bottom + 2);
}
function drawInbound(cell, frame, run) {  // under an arena's heading: this frame's cross-thread frees into it
  const into = DATA.threads.map(tid => [tid, delta(run, view.k, tid, "cross").get(cell.arena) || 0]).filter(([, n]) => n);
  cell.inbound.textContent = into.length && frame.arenas[cell.arena]
    ? "this frame, freed here by a thread that did not allocate them: " + into.map(([tid, n]) => `${count(n)} by ${threadName(tid)}`).join(", ")
    : "";
}
function drawWires() {
  // From each thread's lane, left into its column's gutter, up, and into each arena it has sent
  // cross-thread frees to; bold when some were in this frame.
  const stage = $("stage").getBoundingClientRect();
  links.setAttribute("width", String(stage.width)); links.setAttribute("height", String(stage.height));
  links.replaceChildren();
  const ns = "http://www.w3.org/2000/svg", svg = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  };
  RUNS.forEach((run, r) => {
    const lanesBox = laneCanvases[r].getBoundingClientRect();
    DATA.threads.forEach((tid, row) => {
      const t = run.frames[view.k].threads.get(tid);
      if (!t) return;
      const recent = delta(run, view.k, tid, "cross");
      for (const [arena, total] of t.cross) {
        const cell = cells[arena] && cells[arena][r];
        if (!cell || !run.frames[view.k].arenas[arena]) continue;  // (-1: a mapping, no arena to point at)
        const head = cell.h.getBoundingClientRect(), n = recent.get(arena) || 0, bend = 5;
        const x = lanesBox.left - stage.left - 34 + 5 * row, y1 = lanesBox.top - stage.top + row * LANE + LANE / 2;
        const y2 = head.top - stage.top + head.height / 2, x2 = head.left - stage.left - 3;
        const path = svg("path", {
          d: `M${lanesBox.left - stage.left - 2},${y1} L${x + bend},${y1} Q${x},${y1} ${x},${y1 - bend}`
            + ` L${x},${y2 + bend} Q${x},${y2} ${x + bend},${y2} L${x2},${y2}`,
          fill: "none", stroke: THREAD_COLOUR.get(tid), "stroke-width": n ? 3 : 1.5, "stroke-opacity": n ? 0.9 : 0.35,
          "marker-end": n ? `url(#arrow-${row})` : "",
        });
        Object.assign(path.dataset, {thread: tid, arena, run: r, frees: n, total});
        links.append(path);
      }
    });
  });
  const defs = svg("defs", {});
  DATA.threads.forEach((tid, row) => {
    const marker = svg("marker", {id: `arrow-${row}`, viewBox: "0 0 6 6", refX: 5, refY: 3, markerWidth: 4, markerHeight: 4, orient: "auto"});
    marker.append(svg("path", {d: "M0,0 L6,3 L0,6 z", fill: THREAD_COLOUR.get(tid)}));
    defs.append(marker);
  });
  links.prepend(defs);
}
function watchLanes(canvas) {
  canvas.addEventListener("pointermove", e => {
    const box = canvas.getBoundingClientRect(), x = e.clientX - box.left, row = Math.floor((e.clientY - box.top) / LANE);
    if (x < LANE_LABEL || row < 0 || row >= DATA.threads.length || NFRAMES < 2) { view.hover = null; refreshTip(); return; }
    view.hover = {lane: row, run: canvas.run, k: Math.max(1, laneFrame(canvas, x)), clientX: e.clientX, clientY: e.clientY};
    refreshTip();
  });
  canvas.addEventListener("pointerleave", () => { view.hover = null; refreshTip(); });
  canvas.addEventListener("click", e => {
    const x = e.clientX - canvas.getBoundingClientRect().left;
    if (x >= LANE_LABEL) { setPlaying(false); show(laneFrame(canvas, x)); }
  });
}

// ------------------------------------------------------------------ hover, tap, pin
function recordAt(row, offset) {
  const recs = row.heap.recs;
  if (!recs.length || offset < 0 || offset >= row.heap.size) return -1;
  return indexAt(recs, offset);
}
function describe(row, i) {
  const heap = row.heap, rec = heap.recs[i], run = RUNS[row.cell.run], frame = run.frames[view.k];
  const kind = KINDS[rec.kind], lines = [];
  const addr = hex(heap.base + rec.off);
  lines.push(`<b>${addr}</b> · ${human(rec.len)} (${count(rec.len)} bytes) · <b>${kind}</b>`);
  if (BLOCK_KINDS.has(rec.kind) || rec.kind === K["slab header"]) {
    let h = i;
    while (h > 0 && heap.recs[h].kind !== K["slab header"]) h--;
    const end = slabEnd(heap.recs, h), blocks = heap.recs.slice(h + 1, end);
    const size = DATA.classes[heap.recs[h].detail], tally = kind => blocks.filter(b => b.kind === K[kind]).length;
    lines.push(rec.kind === K["slab header"]
      ? `the header of a slab of ${blocks.length} blocks of ${size} B: ${tally("live block")} live, ${tally("cached block")} cached, ${tally("free block")} free, ${tally("untouched block")} untouched`
      : `block ${i - h} of ${blocks.length} of the ${size}-byte class, in the slab at ${hex(heap.base + heap.recs[h].off)}`);
  } else if (rec.kind === K["free chunk"]) {
    lines.push(`a free chunk, in the ${DATA.bins[rec.detail]}`);
  } else if (rec.kind === K["chunk in use"]) {
    lines.push(`a chunk in use: the program's block starts at ${hex(heap.base + rec.off + 16)}`);
  } else if (rec.kind === K["top chunk"]) {
    lines.push("the top chunk: the free end of the arena's newest heap");
  } else if (rec.kind === K["fencepost"]) {
    lines.push("a fencepost: closes a heap its arena has moved past");
  } else if (rec.kind === K["heap_info"]) {
    lines.push("heap_info: names the arena that owns this heap");
  }
  lines.push(`arena ${heap.arena}, heap ${heap.hex}` + (RUNS.length > 1 ? `, run ${run.name}` : ""));
  if (HELD_KINDS.has(rec.kind)) {
    const who = rec.detail ? threadName(rec.detail - 1) : "a thread not known";
    lines.push(rec.kind === K["cached block"] ? `cached by ${who} (its thread cache)` : `allocated by ${who}`);
  }
  if (rec.event) {
    const op = DATA.ops[rec.who & 7], by = threadName(rec.who >> 3), ago = frame.event - rec.event;
    lines.push(`last call here: call ${count(rec.event)}, ${op} by ${by}` + (ago ? ` (${count(ago)} calls before this frame)` : " (this frame's last)"));
  } else if (rec.kind !== K["heap_info"] && rec.kind !== K["slab header"]) {
    lines.push("no call seen on it yet");
  }
  if (rec.len * view.scale < 1) lines.push(`<i>narrower than a pixel here: zoom in to see its neighbours</i>`);
  return lines.map(line => `<div>${line}</div>`).join("");
}
function placeTip(x, y) {
  tip.hidden = false;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = Math.max(4, Math.min(x + 14, window.innerWidth - w - 4)) + "px";
  tip.style.top = (y + 18 + h > window.innerHeight ? Math.max(4, y - h - 10) : y + 18) + "px";
}
function pointAt(canvas, clientX, clientY) {
  const row = canvas.row, box = canvas.getBoundingClientRect();
  if (!row.heap) return null;
  const offset = Math.floor((clientX - box.left + view.pan) / view.scale);
  return {run: row.cell.run, arena: row.cell.arena, base: row.heap.hex, offset, clientX, clientY};
}
function rowOf(point) {  // the row showing point's heap in this frame, if any
  const cell = cells[point.arena] && cells[point.arena][point.run];
  return cell ? cell.rows.find(row => row.heap && row.heap.hex === point.base) : undefined;
}
function refreshTip() {
  const point = view.pinned || view.hover;
  if (!point) { tip.hidden = true; return; }
  if (point.lane !== undefined) { tip.innerHTML = describeLane(point); placeTip(point.clientX, point.clientY); return; }
  const row = rowOf(point), i = row ? recordAt(row, point.offset) : -1;
  if (i < 0) {
    tip.innerHTML = `<div>heap ${point.base} of arena ${point.arena}: ${row ? "beyond its end" : "not in this frame"}</div>`;
  } else {
    tip.innerHTML = describe(row, i) + (view.pinned ? "<div><i>pinned: Esc or tap elsewhere to unpin</i></div>" : "");
  }
  placeTip(point.clientX, point.clientY);
}
function watchHeap(canvas) {
  let drag = null;
  canvas.addEventListener("pointermove", e => {
    if (drag && (e.buttons & 1)) {
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (drag.moved) { setPan(drag.pan - dx); return; }
    }
    if (e.pointerType === "mouse") { view.hover = pointAt(canvas, e.clientX, e.clientY); refreshTip(); }
  });
  canvas.addEventListener("pointerleave", () => { view.hover = null; refreshTip(); });
  canvas.addEventListener("pointerdown", e => {
    drag = {x: e.clientX, pan: view.pan, moved: false};
    canvas.setPointerCapture(e.pointerId);  // (a drag that leaves the canvas still pans it)
  });
  canvas.addEventListener("pointerup", e => {
    const tapped = drag && !drag.moved;
    drag = null;
    if (!tapped) return;
    const point = pointAt(canvas, e.clientX, e.clientY);
    const same = view.pinned && point && view.pinned.base === point.base && view.pinned.offset === point.offset;
    view.pinned = same ? null : point;
    refreshTip();
  });
  canvas.addEventListener("wheel", e => {
    const box = canvas.getBoundingClientRect();
    if (e.ctrlKey || e.metaKey) { e.preventDefault(); setScale(view.scale * Math.exp(-e.deltaY / 200), e.clientX - box.left); }
    else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) { e.preventDefault(); setPan(view.pan + (e.deltaX || e.deltaY)); }
  }, {passive: false});
}
function describeLane(point) {
  const run = RUNS[point.run], k = point.k, tid = DATA.threads[point.lane];
  const from = run.frames[k - 1].event, to = run.frames[k].event, cross = delta(run, k, tid, "cross");
  const lines = [`<b>${threadName(tid)}</b>, calls ${count(from + 1)} to ${count(to)} (up to frame ${k + 1})`,
    `${count(delta(run, k, tid, "allocations"))} calls that allocated, ${count(delta(run, k, tid, "frees"))} frees`];
  if (cross.size) lines.push("cross-thread frees: "
    + [...cross].map(([arena, n]) => `${count(n)} into ${arena < 0 ? "mappings of their own" : "arena " + arena}`).join(", "));
  lines.push("<i>click to go to that frame</i>");
  return lines.map(line => `<div>${line}</div>`).join("");
}
// ------------------------------------------------------------------ controls
const playButton = $("play");
function setPlaying(on) {
  if (on && !view.timer) {
    if (view.k === NFRAMES - 1) show(0);
    view.timer = setInterval(() => { if (view.k >= NFRAMES - 1) setPlaying(false); else show(view.k + 1); }, Number($("speed").value));
  } else if (!on && view.timer) {
    clearInterval(view.timer); view.timer = null;
  }
  playButton.innerHTML = view.timer ? "&#x2759;&#x2759; pause" : "&#x25B6; play";
  playButton.setAttribute("aria-pressed", view.timer ? "true" : "false");
  document.body.dataset.playing = view.timer ? "1" : "0";
}
playButton.onclick = () => setPlaying(!view.timer);
$("speed").onchange = () => { if (view.timer) { setPlaying(false); setPlaying(true); } };
$("first").onclick = () => { setPlaying(false); show(0); };
$("back").onclick = () => { setPlaying(false); show(view.k - 1); };
$("step").onclick = () => { setPlaying(false); show(view.k + 1); };
$("last").onclick = () => { setPlaying(false); show(NFRAMES - 1); };
$("zoom-in").onclick = () => setScale(view.scale * 2, canvasWidth() / 2);
$("zoom-out").onclick = () => setScale(view.scale / 2, canvasWidth() / 2);
$("zoom-fit").onclick = fit;
scrub.oninput = () => { setPlaying(false); show(Number(scrub.value)); };
document.addEventListener("keydown", e => {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const t = e.target, onControl = t instanceof HTMLInputElement || t instanceof HTMLSelectElement;
  const actions = {
    " ": () => setPlaying(!view.timer), k: () => setPlaying(!view.timer),
    ArrowLeft: () => e.shiftKey ? setPan(view.pan - canvasWidth() / 4) : $("back").onclick(),
    ArrowRight: () => e.shiftKey ? setPan(view.pan + canvasWidth() / 4) : $("step").onclick(),
    j: () => $("back").onclick(), l: () => $("step").onclick(),
    Home: () => $("first").onclick(), End: () => $("last").onclick(),
    "+": () => $("zoom-in").onclick(), "=": () => $("zoom-in").onclick(), "-": () => $("zoom-out").onclick(),
    "0": fit, Escape: () => { view.pinned = null; refreshTip(); },
  };
  const act = actions[e.key];
  if (!act || (onControl && e.key !== "Escape") || (e.key === " " && t instanceof HTMLButtonElement)) return;
  e.preventDefault();
  act();
});
let resizing = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(() => {
    const fitted = view.scale <= fitScale() * 1.0001 || view.scale === 0;
    view.scale = fitted ? fitScale() : Math.max(view.scale, fitScale());
    setPan(view.pan);
  });
});

// ------------------------------------------------------------------ for tests and tools
window.timeline = {
  frames: NFRAMES,
  runs: RUNS.map(run => run.name),
  frame: () => view.k,
  go: show,
  playing: () => view.timer !== null,
  // Every heap row on screen: its run, arena, base and size, and where its extent is drawn.
  heaps: () => cells.flat().flatMap(cell => cell.rows.filter(row => row.heap).map(row => {
    const box = row.canvas.getBoundingClientRect();
    return {run: cell.run, arena: cell.arena, base: row.heap.hex, size: row.heap.size,
            left: box.left - view.pan, top: box.top + BODY_Y, width: row.heap.size * view.scale,
            height: BODY_H, canvas: {left: box.left, top: box.top, width: box.width, height: box.height}};
  })),
  // The pieces of one heap in this frame: offset, length, kind and thread (-1: none or not known).
  pieces: (run, arena, base) => {
    const row = rowOf({run, arena, base});
    return row ? row.heap.recs.map(rec => ({offset: rec.off, length: rec.len, kind: KINDS[rec.kind],
      thread: HELD_KINDS.has(rec.kind) ? rec.detail - 1 : -1})) : [];
  },
  // Zoom and pan until the piece at offset is at least 40 px wide (or as wide as zoom allows)
  // and in view; the client coordinates of its middle.
  reveal: (run, arena, base, offset) => {
    const row = rowOf({run, arena, base}), i = row ? recordAt(row, offset) : -1;
    if (i < 0) return null;
    const rec = row.heap.recs[i];
    view.scale = Math.min(MAX_SCALE, Math.max(fitScale(), view.scale, 40 / rec.len));
    setPan((rec.off + rec.len / 2) * view.scale - canvasWidth() / 2);
    const box = row.canvas.getBoundingClientRect();
    return {x: box.left - view.pan + (rec.off + rec.len / 2) * view.scale, y: box.top + BODY_Y + BODY_H / 2};
  },
};
document.body.dataset.frames = String(NFRAMES);
document.body.dataset.runs = String(RUNS.length);
document.body.dataset.arenas = String(NARENAS);
document.body.dataset.errors = String(errors);
setPlaying(false);
show(0);
document.body.dataset.ready = "1";
</script></body></html>
"""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
