"""Pictures over time: arenas, heaps and chunks as a page you can scrub and play.

Debugger plugins show the heap at one breakpoint.  This records *frames*:
each arena's heaps as strips of memory, every chunk coloured by state (in
use, free, top, slab, fencepost) and, when known, by the thread that
allocated it, with the arena each thread is bound to and the allocator's
figures (system and in-use bytes, the top chunk, and fragmentation: the
largest free chunk against all free bytes).

* :class:`Timeline` captures frames of a live allocator (``capture()``);
* :func:`from_trace` replays a trace (:mod:`arenas.trace`'s format) with
  one thread per traced thread and captures a frame every so many events;
* :meth:`Timeline.write_html` writes one self-contained page (no network
  needed): a canvas per arena, a slider to scrub, play/pause, the stats;
* :meth:`Timeline.write_png` draws one frame with matplotlib, for docs.

A million-event trace stays light: at most ``max_frames`` frames are kept,
and each heap strip is quantised to ``resolution`` cells (a cell shows the
state that covers most of its bytes), then run-length encoded.

Locking: a capture reads one arena at a time under its lock.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .allocator import Allocator
from .arena import Arena
from .heap import Heap
from .inspect import heap_chunks
from .trace import Event, drive, parse, perform

__all__ = ["STATES", "Timeline", "from_trace"]

STATES = ["in use", "free", "top", "slab", "fence", "heap_info"]
_CODE = {name: i for i, name in enumerate(STATES)}


def _heap_strip(
    arena: Arena, heap: Heap[Arena], owners: dict[int, int], resolution: int
) -> dict[str, Any]:
    """One heap as run-length encoded cells: [[cells, state, owner], ...]."""
    extent = max(heap.size, 1)
    cell = max(extent / resolution, 16.0)
    ncells = int(extent / cell) + 1
    best: list[tuple[float, int, int]] = [(0.0, _CODE["top"], -1)] * ncells
    weights: list[dict[tuple[int, int], float]] = [{} for _ in range(ncells)]

    def paint(start: int, length: int, state: int, owner: int) -> None:
        lo, hi = start / cell, (start + length) / cell
        i = int(lo)
        while i < ncells and i < hi:
            cover = min(hi, i + 1) - max(lo, i)
            key = (state, owner)
            weights[i][key] = weights[i].get(key, 0.0) + cover
            i += 1

    if heap.start != heap.base:
        paint(0, heap.start - heap.base, _CODE["heap_info"], -1)
    for c in heap_chunks(arena, heap):
        owner = owners.get(c.addr + 16, -1) if c.state == "in use" else -1
        paint(c.addr - heap.base, c.size, _CODE.get(c.state, 0), owner)
    for i, w in enumerate(weights):
        if w:
            key = max(w, key=lambda k: w[k])
            best[i] = (w[key], key[0], key[1])
    runs: list[list[int]] = []
    for _, state, owner in best:
        if runs and runs[-1][1] == state and runs[-1][2] == owner:
            runs[-1][0] += 1
        else:
            runs.append([1, state, owner])
    return {"base": f"{heap.base:#x}", "size": heap.size, "max": heap.max_size, "runs": runs}


class Timeline:
    """Frames of one allocator's arenas over time."""

    def __init__(self, alloc: Allocator, max_frames: int = 300, resolution: int = 600) -> None:
        if max_frames < 1 or resolution < 16:
            raise ValueError("max_frames must be >= 1 and resolution >= 16")
        self.alloc = alloc
        self.max_frames = max_frames
        self.resolution = resolution
        self.frames: list[dict[str, Any]] = []
        self.owners: dict[int, int] = {}  # user address -> thread that allocated it
        self.thread_arena: dict[int, int] = {}  # thread -> arena index
        self.cross_frees = 0
        self.events = 0
        self._lock = threading.Lock()

    def capture(self, label: str = "") -> None:
        """Record one frame of every arena now."""
        arenas = self.alloc.arena_list()
        frame_arenas = []
        for a in arenas:
            with a.lock:
                free_sizes = list(a.bins.free.values())
                strips = [_heap_strip(a, h, self.owners, self.resolution) for h in a.heaps]
                frame_arenas.append(
                    {
                        "index": a.index,
                        "heaps": strips,
                        "system": a.system_mem,
                        "in_use": a.inuse_bytes,
                        "free": sum(free_sizes),
                        "largest_free": max(free_sizes, default=0),
                        "top": a.top_size(),
                        "attached": a.attached_threads,
                        "threads": sorted(t for t, i in self.thread_arena.items() if i == a.index),
                    }
                )
        with self._lock:
            self.frames.append(
                {
                    "label": label,
                    "event": self.events,
                    "cross_frees": self.cross_frees,
                    "arenas": frame_arenas,
                }
            )
            if len(self.frames) > self.max_frames:
                del self.frames[1::2]  # keep every other frame, and the first

    # ------------------------------------------------------------ output
    def to_json(self) -> str:
        return json.dumps({"states": STATES, "frames": self.frames}, separators=(",", ":"))

    def write_html(self, path: str | Path, title: str = "arenas over time") -> Path:
        path = Path(path)
        page = _PAGE.replace("__TITLE__", title).replace("__DATA__", self.to_json())
        path.write_text(page, encoding="utf-8")
        return path

    def busiest_frame(self) -> int:
        """The frame with the most bytes in use, over all arenas."""
        return max(
            range(len(self.frames)),
            key=lambda k: sum(a["in_use"] for a in self.frames[k]["arenas"]),
        )

    def write_png(self, path: str | Path, frame: int | None = None) -> Path:
        """Draw one frame (by default the busiest) as a PNG with matplotlib."""
        shot = self.frames[self.busiest_frame() if frame is None else frame]
        rows = [
            (f"arena {a['index']} heap {h['base'][-7:]}", h)
            for a in shot["arenas"]
            for h in a["heaps"]
        ]
        title = f"event {shot['event']}: in use (by thread), free (grey), slab (orange)"
        return draw_strips(rows, title, path)


_STATE_COLOURS = ["#4c72b0", "#dddddd", "#ffffff", "#f39c12", "#000000", "#555555"]
_THREAD_COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd"]


def draw_strips(rows: list[tuple[str, dict[str, Any]]], title: str, path: str | Path) -> Path:
    """Draw labelled heap strips (as captured in frames) into a PNG with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(rows)))
    for row, (_, strip) in enumerate(rows):
        x = 0
        for cells, state, owner in strip["runs"]:
            colour = (
                _THREAD_COLOURS[owner % len(_THREAD_COLOURS)]
                if state == 0 and owner >= 0
                else _STATE_COLOURS[state]
            )
            ax.barh(row, cells, left=x, color=colour, edgecolor="#999999", linewidth=0.2)
            x += cells
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tutorial_pictures(directory: str | Path) -> list[Path]:
    """Draw the pictures of docs/tutorial.md from live allocators.

    ``python -m arenas.timeline --tutorial docs/img`` remakes them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .slab import CLASS_SIZES

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
    timeline = Timeline(alloc, resolution=200)
    q, r, s = (alloc.malloc(100_000) for _ in range(3))
    snapshots: list[tuple[str, dict[str, Any]]] = []
    for label, action in (
        ("malloc q, r, s", None),
        ("free(r): a free chunk", r),
        ("free(s): r and s melt into the top", s),
    ):
        if action is not None:
            alloc.free(action)
        timeline.capture(label)
        snapshots.append((label, timeline.frames[-1]["arenas"][0]["heaps"][0]))
    alloc.free(q)
    written.append(
        draw_strips(
            snapshots,
            "the main heap: in use (blue), free (grey), top (white)",
            out / "tutorial-chunks.png",
        )
    )
    alloc.close()

    # Step 5: three threads alive at once, each bound to its own arena.
    alloc = Allocator()
    timeline = Timeline(alloc, resolution=200)
    alloc.free(alloc.malloc(1))  # this thread takes the main arena
    ready = threading.Barrier(4)
    done = threading.Event()
    kept: list[int] = []

    def work(tid: int) -> None:
        timeline.thread_arena[tid] = alloc.thread_arena()
        for k in range(4):
            addr = alloc.malloc(90_000 + 5_000 * (tid + k))  # chunks, below mmap_threshold
            timeline.owners[addr] = tid
            kept.append(addr)
        ready.wait()
        done.wait()

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(3)]
    for t in threads:
        t.start()
    ready.wait()
    timeline.capture("three threads")
    done.set()
    for t in threads:
        t.join()
    frame = timeline.frames[-1]
    rows = [
        (
            f"arena {a['index']} (thread {', '.join(map(str, a['threads'])) or 'main'})",
            a["heaps"][0],
        )
        for a in frame["arenas"]
    ]
    written.append(
        draw_strips(rows, "each thread's chunks in its own arena", out / "tutorial-arenas.png")
    )
    alloc.close()
    return written


def from_trace(
    trace: str | Path,
    alloc: Allocator | None = None,
    max_frames: int = 300,
    resolution: int = 600,
) -> Timeline:
    """Replay ``trace`` through ``alloc`` (a fresh Allocator by default), capturing frames.

    Uses :mod:`arenas.trace`'s reader and driver: one thread per traced
    thread, paced in the trace's global order, so the pictures show the
    interleaving the program had and come out the same every time.  A frame
    is captured every ``events / max_frames`` events.
    """
    plan = parse(trace)
    alloc = alloc or Allocator()
    timeline = Timeline(alloc, max_frames, resolution)
    every = max(plan.events // max_frames, 1)
    counter = threading.Lock()
    owners = timeline.owners

    def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
        timeline.thread_arena[tid] = alloc.thread_arena()

        def step(ev: Event, old: int | None) -> int | None:
            if old is not None and owners.pop(old, tid) != tid:
                timeline.cross_frees += 1  # a block going home to another thread's arena
            new = perform(ev, old, alloc)
            if new:
                owners[new] = tid
            with counter:
                timeline.events += 1
                due = timeline.events % every == 0
            if due:
                timeline.capture()
            return new

        return step

    timeline.capture("start")
    drive(plan, thread_step, paced=True)
    timeline.capture("end")
    return timeline


def main(argv: list[str]) -> int:
    """``python -m arenas.timeline TRACE [--html OUT] [--png OUT]``."""
    import argparse

    from .cliargs import writable_dir, writable_file

    parser = argparse.ArgumentParser(prog="python -m arenas.timeline", description=main.__doc__)
    parser.add_argument("trace", nargs="?")
    parser.add_argument(
        "--tutorial", metavar="DIR", type=writable_dir, help="draw the tutorial's pictures into DIR"
    )
    parser.add_argument("--html", type=writable_file, help="write the scrubbable page here")
    parser.add_argument(
        "--png", type=writable_file, help="write a snapshot of the busiest frame here"
    )
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args(argv)
    if args.tutorial:
        for path in tutorial_pictures(args.tutorial):
            print(path)
        if not args.trace:
            return 0
    if not args.trace:
        parser.error("give a trace (or --tutorial DIR)")
    try:
        timeline = from_trace(args.trace, max_frames=args.frames)
    except (OSError, ValueError) as exc:
        print(f"python -m arenas.timeline: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"python -m arenas.timeline: out of memory: {exc}", file=sys.stderr)
        return 1
    if args.html:
        print(timeline.write_html(args.html, f"arenas: {Path(args.trace).name}"))
    if args.png:
        print(timeline.write_png(args.png))
    return 0


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
 #bar { display: flex; gap: 12px; align-items: center; margin-bottom: 10px; }
 #scrub { flex: 1; }
 .arena { margin: 8px 0 14px; }
 .arena h3 { margin: 0 0 4px; font-size: 13px; }
 canvas { border: 1px solid #ccc; display: block; }
 .stats { color: #555; font-size: 12px; margin-top: 3px; }
 .legend span { display: inline-block; padding: 1px 6px; margin-right: 6px; border: 1px solid #aaa; }
</style></head>
<body>
<h2>__TITLE__</h2>
<div class="legend" id="legend"></div>
<div id="bar"><button id="play">play</button>
<input type="range" id="scrub" min="0" value="0"><span id="where"></span></div>
<div id="arenas"></div>
<script>
"use strict";
const DATA = __DATA__;
let errors = 0;
window.onerror = () => { errors += 1; document.body.dataset.errors = String(errors); };
const THREAD = ["#4c72b0","#55a868","#c44e52","#8172b2","#ccb974","#64b5cd","#8c564b","#e377c2"];
const STATE = ["#4c72b0","#dddddd","#ffffff","#f39c12","#000000","#555555"];
const frames = DATA.frames;
const nArenas = Math.max(...frames.map(f => f.arenas.length));
const scrub = document.getElementById("scrub");
scrub.max = String(frames.length - 1);
const legend = document.getElementById("legend");
DATA.states.forEach((s, i) => {
  const span = document.createElement("span");
  span.textContent = s; span.style.background = STATE[i];
  if (i === 0 || i === 4) span.style.color = "#fff";
  legend.appendChild(span);
});
const holder = document.getElementById("arenas");
const views = [];
for (let a = 0; a < nArenas; a++) {
  const div = document.createElement("div"); div.className = "arena";
  const h = document.createElement("h3"); const c = document.createElement("canvas");
  const s = document.createElement("div"); s.className = "stats";
  c.width = 900; div.append(h, c, s); holder.appendChild(div); views.push({h, c, s});
}
function human(n) { return n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : (n / 1024).toFixed(1) + " KiB"; }
function draw(k) {
  const f = frames[k];
  document.getElementById("where").textContent =
    `frame ${k + 1}/${frames.length}, event ${f.event}, cross-thread frees ${f.cross_frees}`;
  views.forEach((v, a) => {
    const ar = f.arenas[a];
    const ctx = v.c.getContext("2d");
    if (!ar) { v.h.textContent = `arena ${a}: not created yet`; v.c.height = 4; v.s.textContent = ""; return; }
    v.c.height = Math.max(ar.heaps.length * 26, 4);
    ctx.clearRect(0, 0, v.c.width, v.c.height);
    ar.heaps.forEach((heap, row) => {
      const total = heap.runs.reduce((n, r) => n + r[0], 0);
      let x = 0;
      heap.runs.forEach(([cells, state, owner]) => {
        const w = cells / total * v.c.width;
        ctx.fillStyle = state === 0 && owner >= 0 ? THREAD[owner % THREAD.length] : STATE[state];
        ctx.fillRect(x, row * 26 + 2, Math.max(w, 0.5), 22);
        x += w;
      });
    });
    const frag = ar.free ? (ar.largest_free / ar.free).toFixed(2) : "-";
    v.h.textContent = `arena ${ar.index}: threads ${ar.threads.join(", ") || "-"} (${ar.attached} attached), ${ar.heaps.length} heap(s)`;
    v.s.textContent = `system ${human(ar.system)}, in use ${human(ar.in_use)}, free ${human(ar.free)},`
      + ` largest free / free ${frag}, top ${human(ar.top)}`;
  });
  scrub.value = String(k);
}
let timer = null;
document.getElementById("play").onclick = () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  timer = setInterval(() => { const k = (Number(scrub.value) + 1) % frames.length; draw(k); }, 80);
};
scrub.oninput = () => draw(Number(scrub.value));
const inUse = f => f.arenas.reduce((n, a) => n + a.in_use, 0);
draw(frames.reduce((best, f, k) => inUse(f) > inUse(frames[best]) ? k : best, 0));
document.body.dataset.arenas = String(nArenas);
document.body.dataset.frames = String(frames.length);
document.body.dataset.errors = String(errors);
</script></body></html>
"""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
