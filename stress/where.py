"""Where the memory goes: an arenas allocator's footprint at a trace's live peak, in parts.

``python -m stress where TRACE...`` (a trace, or a directory of them)
replays each trace through a fresh :class:`arenas.Allocator`, in one
thread and in the trace's global order
(so that the result is the same every run), stops at the event where live
bytes first reach their peak, and splits the footprint there
(``Stats.system_bytes``: mapped heap bytes, top included, plus mmapped
chunks) into what holds it:

* **live**: the bytes the program asked for and holds;
* **class rounding**: slab blocks are their class's size, not the request's;
* **partial slabs**: free blocks inside slabs that also hold live blocks;
* **thread caches**: blocks a thread keeps for its next requests;
* **chunk overhead**: chunk headers and 16-byte rounding of live chunks,
  slab headers, and mmapped chunks' page rounding;
* **free chunks**: chunks in the bins (holes in the heaps), spare slabs
  included (a spare is a slab none of whose blocks is live);
* **top**: the top chunks, what the heaps hold beyond their last chunk.

Each part is given as a fraction of live bytes, so they add up to the
footprint / live ratio that the campaign reports (its replay is threaded
and paced; this one runs in one thread, so a multi-thread trace's figure
can differ from the campaign's, by the thread caches and arenas its
threads would have had).  Tunables (``--tunables top_pad=0:tcache_count=7``)
show what a design change would do before it is made.

Locking: none; the replay runs in the calling thread.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arenas
from arenas.chunk import CHUNK_HDR_SZ
from arenas.slab import SLAB_MAX
from arenas.trace import parse, perform
from arenas.tunables import parse_tunables, validate

__all__ = ["PARTS", "Breakdown", "breakdown", "main"]

PARTS = (
    "class rounding",
    "partial slabs",
    "thread caches",
    "chunk overhead",
    "free chunks",
    "top",
)


@dataclass(frozen=True)
class Breakdown:
    """One trace's footprint at its live peak, in bytes per part."""

    trace: str
    peak_live: int
    footprint: int
    parts: dict[str, int]  # PARTS -> bytes; live + these == footprint

    @property
    def ratio(self) -> float:
        return self.footprint / self.peak_live if self.peak_live else 0.0


def breakdown(path: str | Path, tunables: dict[str, Any] | None = None) -> Breakdown:
    """Replay ``path`` in one thread up to its live peak; split the footprint there."""
    plan = parse(path)
    events = sorted((ev for evs in plan.threads.values() for ev in evs), key=lambda e: e.seq)
    handles: dict[int, int] = {}
    sizes: dict[int, int] = {}
    live = 0
    with arenas.Allocator(**(tunables or {})) as alloc:
        for ev in events:
            old = None
            if ev.frees >= 0:
                old = handles.pop(ev.frees)
                live -= sizes.pop(ev.frees)
            new = perform(ev, old, alloc)
            if ev.alloc < 0 or new is None:
                continue
            handles[ev.alloc] = new
            sizes[ev.alloc] = ev.size
            live += ev.size
            if live == plan.peak_live:
                return _split(Path(path).name, alloc.stats(), sizes.values(), live)
    return Breakdown(Path(path).name, 0, 0, dict.fromkeys(PARTS, 0))  # nothing allocated


def _split(name: str, st: arenas.Stats, sizes: Iterable[int], live: int) -> Breakdown:
    slab_requests = sum(s for s in sizes if s <= SLAB_MAX)
    top = sum(a.top_bytes for a in st.arenas)
    headers = st.slabs * CHUNK_HDR_SZ  # slab_bytes counts each slab's chunk header
    parts = {
        "class rounding": st.slab_live_bytes - slab_requests,
        "partial slabs": st.slab_bytes - headers - st.slab_live_bytes - st.tcache_bytes,
        "thread caches": st.tcache_bytes,
        # in use beyond the requests of live chunks and the slabs' blocks
        "chunk overhead": st.in_use_bytes - (st.slab_bytes - headers) - (live - slab_requests),
        "free chunks": st.fordblks - top,
        "top": top,
    }
    return Breakdown(name, live, st.system_bytes, parts)


def table(rows: list[Breakdown]) -> str:
    head = "| trace | live at peak | footprint / live | " + " | ".join(PARTS) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(PARTS)]
    for row in rows:
        cells = " | ".join(f"{row.parts[p] / row.peak_live:+.3f}" for p in PARTS)
        lines.append(f"| {row.trace} | {row.peak_live:,} | {row.ratio:.3f} | {cells} |")
    return "\n".join(lines)


def _tunables(text: str) -> dict[str, Any]:
    try:
        tunables = parse_tunables(text)
        validate(tunables)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return tunables


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m stress where", description=__doc__)
    p.add_argument("traces", nargs="+", metavar="TRACE", help="a trace, or a directory of them")
    p.add_argument(
        "--tunables",
        type=_tunables,
        default={},
        help="arenas tunables, as ARENAS_TUNABLES takes them (a=1:b=2)",
    )
    args = p.parse_args(argv)
    paths = [
        found
        for given in map(Path, args.traces)
        for found in (sorted(given.glob("*.trace*")) if given.is_dir() else [given])
    ]
    rows = [breakdown(path, args.tunables) for path in paths]
    print(
        "footprint at the live peak, in parts, as fractions of live bytes"
        " (one thread, the trace's global order):"
    )
    print(table(rows))
    return 0
