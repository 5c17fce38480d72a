"""Arena scaling: aggregate throughput at 1..16 threads, many arenas against one.

Every thread runs the same churn loop (a set of live slots, each step frees
one at random and allocates a new block in its place) between two barriers;
only the time between the barriers counts.  Two size mixes:

* ``small``: 16..1024 bytes, served by the thread caches and slabs, so the
  arena lock is taken only on refills and flushes;
* ``chunks``: 70..120 KB, glibc's ``_int_malloc`` path, so every call takes
  the arena lock: this is where one arena for all threads shows.

Each configuration is measured in the same run, several rounds, best kept;
the figures that matter are ratios between configurations.

Run: ``python -m stress scaling`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import arenas
from arenas.cliargs import writable_file

from .fastpath import churn_in_threads

MIXES = {"small": (16, 1024), "chunks": (70_000, 120_000)}
CONFIGS: dict[str, dict[str, Any]] = {"arenas": {}, "arenas arena_max=1": {"arena_max": 1}}


@dataclass
class Point:
    mix: str
    config: str
    threads: int
    ops_per_s: float
    arenas_used: int


def measure(mix: str, tunables: dict[str, Any], threads: int, steps: int, seed: int) -> Point:
    live = 64 if mix == "chunks" else 256
    with arenas.Allocator(**tunables) as alloc:
        rate = churn_in_threads(threads, steps, live, MIXES[mix], alloc.malloc, alloc.free, seed)
        used = sum(1 for a in alloc.stats().arenas if a.max_system_bytes > 0)
    config = next(name for name, tun in CONFIGS.items() if tun == tunables)
    return Point(mix, config, threads, rate, used)


def run(thread_counts: list[int], steps: int, rounds: int, seed: int) -> list[Point]:
    best: dict[tuple[str, str, int], Point] = {}
    total = len(MIXES) * len(CONFIGS) * len(thread_counts) * rounds
    done = 0
    for r in range(rounds):
        for mix in MIXES:
            for config, tunables in CONFIGS.items():
                for n in thread_counts:
                    done += 1
                    print(f"\r  scaling {done}/{total}", end="", file=sys.stderr, flush=True)
                    mix_steps = steps // 10 if mix == "chunks" else steps
                    point = measure(mix, tunables, n, mix_steps, seed + r)
                    key = (mix, config, n)
                    if key not in best or point.ops_per_s > best[key].ops_per_s:
                        best[key] = point
    print("\r" + " " * 30 + "\r", end="", file=sys.stderr)
    return list(best.values())


def report(points: list[Point], thread_counts: list[int]) -> str:
    lines: list[str] = []
    for mix in MIXES:
        lines.append(f"\n{mix} ({MIXES[mix][0]}..{MIXES[mix][1]} bytes), aggregate ops/s")
        lines.append("| config | " + " | ".join(f"{n} thr" for n in thread_counts) + " |")
        lines.append("|---|" + "---:|" * len(thread_counts))
        table = {(p.config, p.threads): p for p in points if p.mix == mix}
        for config in CONFIGS:
            cells = [f"{table[(config, n)].ops_per_s:,.0f}" for n in thread_counts]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        ratio = [
            table[("arenas", n)].ops_per_s / table[("arenas arena_max=1", n)].ops_per_s
            for n in thread_counts
        ]
        lines.append("| many / one arena | " + " | ".join(f"{x:.2f}" for x in ratio) + " |")
        used = [str(table[("arenas", n)].arenas_used) for n in thread_counts]
        lines.append("| arenas used (default) | " + " | ".join(used) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress scaling", description=__doc__)
    parser.add_argument("--threads", default="1,2,4,8,16", help="comma-separated thread counts")
    parser.add_argument("-n", type=int, default=100_000, help="steps per measurement (small mix)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", type=writable_file)
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, not {args.threads!r}")
    if not counts or min(counts) < 1 or args.n < 100 or args.rounds < 1:
        parser.error("thread counts must be >= 1, -n >= 100 and --rounds >= 1")
    points = run(counts, args.n, args.rounds, args.seed)
    print(report(points, counts))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([p.__dict__ for p in points], fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
