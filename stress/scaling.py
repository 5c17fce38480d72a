"""Scaling: aggregate throughput at 1..16 threads, with and without the GIL.

Per-thread arenas and caches exist so that threads allocating at once do not
queue behind one lock.  With the GIL threads never run at once, so there the
best an allocator can do is not to lose throughput as threads are added; on
free-threaded CPython (3.13t and later) they do, and aggregate throughput
should grow with the cores.  This benchmark measures both, on the
interpreter that runs it and, with ``--with-python``, on another one in the
same run (the GIL build and 3.13t side by side).

Loops (each thread draws its own sizes and slots, so the threads share no
Python object but the allocator itself):

* ``pairs``:  ``free(malloc(n))``, n uniform in 16..1024;
* ``churn``:  1,000 live blocks per thread, each step frees a random one and
  allocates a new random size in its slot;
* ``chunks``: the churn with 64 live blocks of 70..120 KB, glibc's
  ``_int_malloc`` path: every call takes an arena lock, which is where one
  arena for all threads shows.

Allocators:

* ``arenas``: the module-level API, as a program writes it
  (``from arenas import malloc, free`` at import, before the first call);
* ``arenas arena_max=1``: one arena for every thread (``Allocator(arena_max=1)``,
  whose ``malloc`` and ``free`` run the same hit path);
* ``glibc-ctypes``: glibc's malloc and free through ``ctypes``, each thread
  with function objects of its own;
* ``mp-heap``: ``multiprocessing.heap.Heap`` (pairs and churn only: it is
  slow enough that the chunk loop would take minutes);
* ``floor``: no allocator at all, each thread popping and appending a list
  of its own: what this machine gives Python code that shares nothing.  Its
  ratio of 2 threads to 1 is the most any allocator can reach in that run
  (this machine's second core is shared, and that ratio moves from run to
  run), so the report also gives each allocator's ratio as a share of it.

Each figure is the median of ``--rounds`` measurements, interleaved round by
round across loops, allocators and thread counts, so that a busy spell of
this shared machine hits them all alike.  A measurement runs a fixed total
of steps split among the threads, between two barriers; only that time
counts.

Run: ``python -m stress scaling`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.heap import Heap
from pathlib import Path
from typing import Any

import arenas
from arenas import free as arenas_free
from arenas import malloc as arenas_malloc
from arenas.cliargs import needs, writable_file

from .harness import (
    LOOPS,
    Binder,
    Free,
    Malloc,
    floor_functions,
    glibc_functions,
    interpreter_name,
    run_in_threads,
)

# How many steps a measurement runs, relative to -n, per loop and allocator:
# the slow ones run fewer, so that every measurement takes about as long.
WORK: dict[str, float] = {"pairs": 1.0, "churn": 1.0, "chunks": 0.1}
SLOW = {"mp-heap": 0.1}


def _module_api() -> tuple[Malloc, Free]:
    return arenas_malloc, arenas_free


class _OneArena:
    """``Allocator(arena_max=1)``, made afresh for each measurement."""

    def __init__(self) -> None:
        self.alloc = arenas.Allocator(arena_max=1)

    def bind(self) -> tuple[Malloc, Free]:
        return self.alloc.malloc, self.alloc.free

    def close(self) -> None:
        self.alloc.close()


class _MpHeap:
    def __init__(self) -> None:
        self.heap = Heap()

    def bind(self) -> tuple[Malloc, Free]:
        return self.heap.malloc, self.heap.free

    def close(self) -> None:
        pass


class _Plain:
    def __init__(self, bind: Binder) -> None:
        self.bind = bind

    def close(self) -> None:
        pass


ALLOCATORS: dict[str, Callable[[], Any]] = {
    "arenas": lambda: _Plain(_module_api),
    "arenas arena_max=1": _OneArena,
    "glibc-ctypes": lambda: _Plain(glibc_functions),
    "mp-heap": _MpHeap,
    "floor": lambda: _Plain(floor_functions),
}
SKIP = {("chunks", "mp-heap")}


@dataclass
class Point:
    interpreter: str
    loop: str
    allocator: str
    threads: int
    ops_per_s: float  # median over the rounds
    runs: list[float]


def run(
    thread_counts: list[int],
    steps: int,
    rounds: int,
    seed: int,
    loops: list[str],
    allocators: list[str],
    progress: bool = True,
) -> list[Point]:
    runs: dict[tuple[str, str, int], list[float]] = {}
    plan = [
        (loop, name, n)
        for loop in loops
        for name in allocators
        if (loop, name) not in SKIP
        for n in thread_counts
    ]
    arenas_free(arenas_malloc(1))  # the default allocator exists before any timing
    for r in range(rounds):
        for done, (loop, name, n) in enumerate(plan, 1):
            if progress:
                print(
                    f"\r  scaling round {r + 1}/{rounds}: {done}/{len(plan)}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            made = ALLOCATORS[name]()
            try:
                work = int(steps * WORK[loop] * SLOW.get(name, 1.0))
                rate = run_in_threads(n, work, loop, made.bind, seed + r)
            finally:
                made.close()
            runs.setdefault((loop, name, n), []).append(rate)
    if progress:
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr)
    who = interpreter_name()
    return [
        Point(who, loop, name, n, statistics.median(figures), figures)
        for (loop, name, n), figures in runs.items()
    ]


def report(points: list[Point], thread_counts: list[int]) -> str:
    lines: list[str] = []
    for who in dict.fromkeys(p.interpreter for p in points):
        for loop in dict.fromkeys(p.loop for p in points):
            table = {
                (p.allocator, p.threads): p
                for p in points
                if (p.interpreter, p.loop) == (who, loop)
            }
            names = list(dict.fromkeys(name for name, _ in table))
            lo, hi, live = LOOPS[loop]
            what = f"{live:,} live blocks" if live else "malloc+free pairs"
            lines.append(f"\n{who}: {loop} ({lo}..{hi} bytes, {what}), aggregate ops/s (median)")
            lines.append("| allocator | " + " | ".join(f"{n} thr" for n in thread_counts) + " |")
            lines.append("|---|" + "---:|" * len(thread_counts))
            for name in names:
                cells = [f"{table[(name, n)].ops_per_s:,.0f}" for n in thread_counts]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            for name in names:
                one = table[(name, thread_counts[0])].ops_per_s
                ratios = [f"{table[(name, n)].ops_per_s / one:.2f}" for n in thread_counts]
                lines.append(
                    f"| {name}, / {thread_counts[0]} thread | " + " | ".join(ratios) + " |"
                )
            if ("floor", thread_counts[0]) in table:
                floor_one = table[("floor", thread_counts[0])].ops_per_s
                floor = [table[("floor", n)].ops_per_s / floor_one for n in thread_counts]
                for name in names:
                    if name != "floor":
                        one = table[(name, thread_counts[0])].ops_per_s
                        share = [
                            f"{table[(name, n)].ops_per_s / one / f:.2f}"
                            for n, f in zip(thread_counts, floor, strict=True)
                        ]
                        lines.append(f"| {name}, scaling / floor's | " + " | ".join(share) + " |")
            if ("arenas", thread_counts[0]) in table and (
                "glibc-ctypes",
                thread_counts[0],
            ) in table:
                ours = [table[("arenas", n)].ops_per_s for n in thread_counts]
                theirs = [table[("glibc-ctypes", n)].ops_per_s for n in thread_counts]
                cells = [f"{a / g:.2f}" for a, g in zip(ours, theirs, strict=True)]
                lines.append("| arenas / glibc-ctypes | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: list[Point], path: str) -> None:
    """One panel per loop: aggregate throughput against threads, a line per
    (interpreter, allocator); solid lines free-threaded, dashed with the GIL.
    The floor is left out: it runs several times faster than any allocator,
    and would flatten them all (the table has it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loops = list(dict.fromkeys(p.loop for p in points))
    fig, axes = plt.subplots(1, len(loops), figsize=(6 * len(loops), 4.5), squeeze=False)
    colours = dict(
        zip(ALLOCATORS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:gray"), strict=True)
    )
    for ax, loop in zip(axes[0], loops, strict=True):
        for who in dict.fromkeys(p.interpreter for p in points):
            free_threaded = who.endswith("free-threaded")
            for name in ALLOCATORS:
                if name == "floor":
                    continue
                line = sorted(
                    (
                        p
                        for p in points
                        if (p.interpreter, p.loop, p.allocator) == (who, loop, name)
                    ),
                    key=lambda p: p.threads,
                )
                if line:
                    ax.plot(
                        [p.threads for p in line],
                        [p.ops_per_s / 1e6 for p in line],
                        marker="o",
                        linestyle="-" if free_threaded else "--",
                        color=colours[name],
                        label=f"{name} ({'3.13t' if free_threaded else 'GIL'})",
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("threads")
        ax.set_ylabel("aggregate million ops/s")
        ax.set_title(loop)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _other_interpreter(python: str, argv: list[str]) -> list[Point]:
    """The same measurement under ``python`` (it must have arenas installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "points.json"
        subprocess.run(
            [python, "-m", "stress", "scaling", *argv, "--json", str(out)],
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
        )
        return [Point(**p) for p in json.loads(out.read_text())["points"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress scaling", description=__doc__)
    parser.add_argument("--threads", default="1,2,4,8,16", help="comma-separated thread counts")
    parser.add_argument("-n", type=int, default=200_000, help="steps per measurement (pairs)")
    parser.add_argument("--rounds", type=int, default=3, help="the median of this many rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    parser.add_argument(
        "--allocators", default=",".join(ALLOCATORS), help="comma-separated allocators"
    )
    parser.add_argument(
        "--with-python",
        metavar="PYTHON",
        help="also measure under this interpreter (e.g. a free-threaded 3.13t with arenas"
        " installed), in the same run",
    )
    parser.add_argument("--json", metavar="FILE", type=writable_file)
    parser.add_argument("--plot", metavar="FILE.png", type=writable_file)
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, not {args.threads!r}")
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    allocators = [x.strip() for x in args.allocators.split(",") if x.strip()]
    if not counts or min(counts) < 1 or args.n < 100 or args.rounds < 1:
        parser.error("thread counts must be >= 1, -n >= 100 and --rounds >= 1")
    if not loops or any(x not in LOOPS for x in loops):
        parser.error(f"--loops takes some of {', '.join(LOOPS)}")
    if not allocators or any(x not in ALLOCATORS for x in allocators):
        parser.error(f"--allocators takes some of {', '.join(ALLOCATORS)}")
    needs(parser, "matplotlib", {"--plot": args.plot})
    points = run(counts, args.n, args.rounds, args.seed, loops, allocators)
    if args.with_python:
        passed = [
            f"--threads={args.threads}",
            f"-n={args.n}",
            f"--rounds={args.rounds}",
            f"--seed={args.seed}",
            f"--loops={args.loops}",
            f"--allocators={args.allocators}",
        ]
        points += _other_interpreter(args.with_python, passed)
    print(report(points, counts))
    if args.json:
        meta = {"machine": platform.machine(), "processor": platform.processor()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "points": [asdict(p) for p in points]}, fh, indent=2)
    if args.plot:
        plot(points, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
