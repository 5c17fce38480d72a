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
* :meth:`Timeline.write_html` writes one self-contained page (no network;
  its HTML, CSS and JavaScript are ``timeline.html`` beside this module):
  every heap drawn to the same scale, zoom and pan, a lane per thread,
  hover on anything, play/pause, step and keyboard controls;
* :meth:`Timeline.write_png` draws one frame with matplotlib, for docs.

The page's data, and what a frame holds, are :mod:`arenas.frames`'s.

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
from bisect import insort
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from .allocator import Allocator
from .arena import Arena
from .bins import NBINS
from .frames import (
    GRAIN,
    KIND_COLOURS,
    KINDS,
    OP_INDEX,
    OPS,
    SLAB_BAND,
    Piece,
    Sightings,
    ThreadFrame,
    ThreadTally,
    draw_heaps,
    encode_frames,
    heap_pieces,
    human_bytes,
    share_unchanged,
    thread_colours,
)
from .inspect import bin_name
from .slab import CLASS_SIZES, SLAB_MAX
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


def _checked_frames(max_frames: object) -> int:
    """``max_frames`` if it is a whole number of at least 2 (a first frame and a last)."""
    if isinstance(max_frames, bool) or not isinstance(max_frames, int):
        raise TypeError(f"the number of frames must be an int, not {type(max_frames).__name__}")
    if max_frames < 2:
        raise ValueError(f"must be at least 2 (a first frame and a last), not {max_frames}")
    return max_frames


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
        self._threads: dict[int, ThreadTally] = {}
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
            thread = self._threads.setdefault(tid, ThreadTally(cache.arena.index))
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
        if op not in OP_INDEX:
            raise ValueError(f"op must be one of {', '.join(OPS)} (arenas.trace's letters): {op!r}")
        with self._lock:
            thread = self._threads.get(tid)
            if thread is None:
                raise ValueError(f"thread {tid} made a call before Timeline.enter({tid})")
            self.events += 1
            event = self.events
            who = tid * 8 + OP_INDEX[op]
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
            pieces = share_unchanged(heap_pieces(arena, heap, seen), self._last.get(key, ()))
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
                {"name": run.name, "frames": encode_frames(run.frames)} for run in self.runs()
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.page_data(), separators=(",", ":"))

    def write_html(self, path: str | Path, title: str = "arenas over time") -> Path:
        """Write the page: self-contained, with this run and the runs beside it."""
        path = Path(path)
        data = self.to_json().replace("</", "<\\/")  # (a label cannot end the script)
        template = resources.files(__package__).joinpath("timeline.html").read_text("utf-8")
        page = template.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
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
                + f"arena {a['index']}, heap {h['base']:#x} ({human_bytes(h['size'])})",
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
    ax.set_title(
        f"{len(CLASS_SIZES)} size classes (up to {SLAB_MAX} B); red: balloc's powers of two",
        fontsize=8,
    )
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
