"""What any slab allocator pays on the churn loop: an idealized model.

The fast-path benchmark's memory target asks for a peak footprint of at most
1.25x the peak live bytes on the churn loop (1,000 live blocks of 16..1024
bytes, one replaced at random per step).  This model shows how much of that
a *segregated* design, one where a block lives in a slab of its own size
class, must pay whatever its implementation.  It replays the same draws
through bookkeeping alone and is idealized in every way it can be:

* no thread cache: a freed block is at once reusable by its class;
* perfect reuse of released memory: a slab that empties costs nothing from
  that moment, as if the heap coalesced and reused it for any size at once;
* the real allocator's class table and slab geometry (``arenas.slab``: a
  slab is its 16-byte header and ``blocks_for(size)`` blocks), and its
  policy: refills take the fullest partial slab of the class.

So a real slab allocator with the same table and geometry can only do
worse.  The first table's rows:

* **class waste**: the peak of live blocks rounded to their classes, over
  the peak live bytes: what even a compacting allocator with these classes
  would pay;
* **per-class high water**: each class's most blocks ever live at once,
  summed: the footprint if no slab were ever given back;
* **slabs**: the simulated footprint, for class tables of 1, 2, 4 or 8
  classes per doubling above 256 bytes, and with *spilling*: a request whose
  class has no partial slab may take a free block of one of the next
  ``spill`` classes, instead of carving a new slab (the block then wastes
  more, but a hole is filled).

The second table varies the blocks per slab (small classes still get at
least 512 bytes of blocks, as the allocator's do) with the allocator's class
table: a slab goes back only when all its blocks are free, so the more
blocks, the more a class pins beyond its live ones.

Run: ``python -m stress slabmodel`` (about 45 s; ``-n`` for fewer steps).
"""

from __future__ import annotations

import argparse
import sys
from bisect import bisect_left
from dataclasses import dataclass

from arenas.chunk import CHUNK_HDR_SZ
from arenas.slab import CLASS_SIZES, SLAB_BLOCKS, blocks_for, class_sizes

from .harness import LIVE, churn_draws

NOTES = {1: " (balloc's, above 256 B)", 4: " (arenas)"}


@dataclass(frozen=True)
class Bounds:
    class_waste: float
    high_water: float


def bounds(sizes: list[int], slots: list[int], table: tuple[int, ...]) -> Bounds:
    """The class-waste and per-class high-water ratios of the churn draws (see module doc)."""
    cls_of = [bisect_left(table, n) for n in range(max(sizes) + 1)]
    held = sizes[:LIVE]
    count = [0] * len(table)
    for n in held:
        count[cls_of[n]] += 1
    high = list(count)
    live = peak_live = sum(held)
    rounded = peak_rounded = sum(table[cls_of[n]] for n in held)
    for n, slot in zip(sizes, slots, strict=True):
        old = held[slot]
        held[slot] = n
        c_old, c_new = cls_of[old], cls_of[n]
        count[c_old] -= 1
        count[c_new] += 1
        if count[c_new] > high[c_new]:
            high[c_new] = count[c_new]
        live += n - old
        rounded += table[c_new] - table[c_old]
        peak_live = max(peak_live, live)
        peak_rounded = max(peak_rounded, rounded)
    high_bytes = sum(h * size for h, size in zip(high, table, strict=True))
    return Bounds(peak_rounded / peak_live, high_bytes / peak_live)


def simulate(
    sizes: list[int],
    slots: list[int],
    table: tuple[int, ...],
    spill: int = 0,
    blocks: int | None = None,
) -> float:
    """Peak footprint / peak live of idealized slabs on the churn draws (see module doc).

    ``blocks`` sets the blocks per slab (at least MIN_SLAB_BYTES of blocks, as
    the allocator does); None takes the allocator's own (SLAB_BLOCKS).
    """
    caps = [blocks_for(size, blocks or SLAB_BLOCKS) for size in table]
    lengths = [CHUNK_HDR_SZ + cap * size for cap, size in zip(caps, table, strict=True)]
    cls_of = [bisect_left(table, n) for n in range(max(sizes) + 1)]
    nclasses = len(table)
    used: dict[int, int] = {}  # slab id -> live blocks
    slab_class: dict[int, int] = {}
    partial: list[dict[int, None]] = [{} for _ in table]  # slabs with a free block, per class
    next_id = 0
    footprint = 0

    def alloc(n: int) -> int:
        nonlocal next_id, footprint
        want = cls_of[n]
        for cls in range(want, min(want + spill + 1, nclasses)):
            holes = partial[cls]
            if holes:
                slab = max(holes, key=used.__getitem__)  # the fullest first
                used[slab] += 1
                if used[slab] == caps[cls]:
                    del holes[slab]
                return slab
        slab = next_id
        next_id += 1
        used[slab] = 1
        slab_class[slab] = want
        footprint += lengths[want]
        if caps[want] > 1:
            partial[want][slab] = None
        return slab

    def free(slab: int) -> None:
        nonlocal footprint
        cls = slab_class[slab]
        used[slab] -= 1
        if used[slab]:
            partial[cls][slab] = None
            return
        partial[cls].pop(slab, None)
        del used[slab], slab_class[slab]
        footprint -= lengths[cls]

    held = [(n, alloc(n)) for n in sizes[:LIVE]]
    live = peak_live = sum(n for n, _ in held)
    peak_footprint = footprint
    for n, slot in zip(sizes, slots, strict=True):
        old, slab = held[slot]
        free(slab)
        held[slot] = (n, alloc(n))
        live += n - old
        peak_live = max(peak_live, live)
        peak_footprint = max(peak_footprint, footprint)
    return peak_footprint / peak_live


def report(
    steps: int, seeds: list[int], spills: list[int], tables: list[int], blocks: list[int]
) -> str:
    draws = [churn_draws(steps, LIVE, seed) for seed in seeds]

    def mean(values: list[float]) -> str:
        return f"{sum(values) / len(values):.3f}"

    lines = [
        f"churn loop: {LIVE:,} live blocks of 16..1024 B, {steps:,} steps, seeds {seeds}; "
        "peak footprint / peak live, mean over the seeds",
        "",
        "| class table | class waste | per-class high water | "
        + " | ".join(f"slabs, spill {k}" for k in spills)
        + " |",
        "|---|---:|---:|" + "---:|" * len(spills),
    ]
    for per_doubling in tables:
        table = class_sizes(per_doubling)
        found = [bounds(sizes, slots, table) for sizes, slots in draws]
        cells = [
            mean([b.class_waste for b in found]),
            mean([b.high_water for b in found]),
        ]
        for k in spills:
            cells.append(mean([simulate(sizes, slots, table, k) for sizes, slots in draws]))
        label = f"{per_doubling} per doubling" + NOTES.get(per_doubling, "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| blocks per slab | slabs, spill 0 |", "|---:|---:|"]
    for k in blocks:
        ratio = mean([simulate(sizes, slots, CLASS_SIZES, 0, k) for sizes, slots in draws])
        lines.append(f"| {k}{' (arenas)' if k == SLAB_BLOCKS else ''} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress slabmodel", description=__doc__)
    parser.add_argument("-n", type=int, default=200_000, help="churn steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--spill", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--per-doubling", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 16])
    args = parser.parse_args(argv)
    bad_table = any(p not in (1, 2, 4, 8) for p in args.per_doubling)
    if args.n < LIVE or min(args.spill) < 0 or min(args.blocks) < 1 or bad_table:
        parser.error(
            "-n must be at least 1000, --spill >= 0, --blocks >= 1, --per-doubling one of 1 2 4 8"
        )
    print(report(args.n, args.seeds, args.spill, args.per_doubling, args.blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
