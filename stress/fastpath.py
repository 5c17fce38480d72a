"""The fast-path benchmark: how close a pure-Python allocator gets to a native call.

Six measurements, all taken in one run, so the figures that matter are ratios
between allocators measured side by side on the same (shared, noisy) machine:

1. **pairs**: one thread, ``free(malloc(n))`` with n drawn from 16..1024;
2. **churn**: one thread, 1,000 live blocks, each step frees a random one and
   allocates a new random size in its slot (larson-like);
3. **bursts**: one thread allocates 10,000 blocks, then frees them all in
   random order, and again: the refill and flush paths, where new slabs are
   carved and emptied ones released (no target; it guards their speed);
4. **handoff**: bursts of 1,000 blocks, each burst freed either by the
   thread that allocated it (*batches*) or by a second thread it is handed
   to (*handoff*), so that every free is a cross-thread free;
5. **threads**: the churn loop in 8 threads at once, aggregate throughput
   against the same total work in 1 thread;
6. **memory**: on the churn loop, the allocator's peak footprint divided by
   the peak of live (requested) bytes; glibc's measured natively, the same
   draws replayed in C (:func:`glibc_footprint_ratio`).

Competitors: ``arenas`` through its module-level int API (the same objects
whether imported before or after the first call), an ``Allocator()``'s own
methods, glibc's ``malloc``/``free`` through ``ctypes``, ``multiprocessing.heap.Heap``, and the
floor, a bare Python call that pops and appends a list.

Run: ``python -m stress fastpath`` (or ``python -m stress.fastpath``).
``ARENAS_TUNABLES`` (``tcache_count=16``, say) sets the tunables of every
arenas allocator measured.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.heap import Heap
from typing import Any

import arenas
from arenas.cliargs import writable_file
from arenas.trace import Call, write_calls
from arenas.tunables import parse_tunables

from .harness import (
    CHUNK_LIVE,
    LIVE,
    Free,
    Malloc,
    chunk_draws,
    churn_draws,
    churn_loop,
    floor_functions,
    glibc_functions,
    pairs_loop,
    raise_mmap_threshold,
    run_in_threads,
)
from .native import NativeUnavailable, native_replay


def _mp_heap() -> tuple[Malloc, Free]:
    heap = Heap()
    return heap.malloc, heap.free


def _floor() -> tuple[Malloc, Free]:
    return floor_functions(BURST)


def _arenas() -> tuple[Malloc, Free]:
    return arenas.malloc, arenas.free


_instance: list[arenas.Allocator] = []


def _arenas_instance() -> tuple[Malloc, Free]:
    """An ``Allocator()``'s own malloc and free: the same hit path, bound to it."""
    if not _instance:
        _instance.append(arenas.Allocator())
    return _instance[0].malloc, _instance[0].free


COMPETITORS: dict[str, Callable[[], tuple[Malloc, Free]]] = {
    "arenas": _arenas,
    "arenas Allocator()": _arenas_instance,
    "glibc-ctypes": glibc_functions,
    "mp-heap": _mp_heap,
    "floor": _floor,
}


BURST = 10_000
HANDOFF = 1_000


def free_order(burst: int, seed: int) -> list[int]:
    """The order in which :func:`bursts` frees a burst of ``burst`` blocks: drawn from ``seed``."""
    order = list(range(burst))
    random.Random(seed).shuffle(order)
    return order


def bursts(
    malloc: Malloc, free: Free, sizes: list[int], order: list[int], handoff: bool = False
) -> float:
    """Allocate ``len(order)`` blocks, free them in ``order`` (a permutation), repeat;
    operations per second.

    With ``handoff`` a second thread frees each burst: the allocating thread
    hands it over through a queue that holds one burst at most, so the two
    threads take turns, and the clock stops when the last burst is freed.
    """
    burst = len(order)

    def free_burst(blocks: list[Any]) -> None:
        for i in order:
            free(blocks[i])

    def free_handed() -> None:
        while (blocks := handed.get()) is not None:
            free_burst(blocks)

    handed: queue.Queue[list[Any] | None] = queue.Queue(maxsize=1)
    freer = threading.Thread(target=free_handed)
    dispose: Callable[[list[Any]], None] = handed.put if handoff else free_burst
    if handoff:
        freer.start()
    start = time.perf_counter()
    for lo in range(0, len(sizes) - burst + 1, burst):
        dispose([malloc(size) for size in sizes[lo : lo + burst]])
    if handoff:
        handed.put(None)
        freer.join()
    done = len(sizes) // burst * burst
    return 2 * done / (time.perf_counter() - start)


def pairs(malloc: Malloc, free: Free, sizes: list[int]) -> float:
    """malloc+free pairs per second."""
    start = time.perf_counter()
    pairs_loop(malloc, free, sizes)
    return len(sizes) / (time.perf_counter() - start)


def churn(malloc: Malloc, free: Free, sizes: list[int], slots: list[int], live: int) -> float:
    """Replace a random one of ``live`` blocks per step; steps per second."""
    blocks = [malloc(size) for size in sizes[:live]]
    start = time.perf_counter()
    churn_loop(malloc, free, blocks, sizes, slots)
    elapsed = time.perf_counter() - start
    for block in blocks:
        free(block)
    return len(sizes) / elapsed


def chunk_rates(malloc: Malloc, free: Free, n: int, seed: int) -> tuple[float, float]:
    """``(pairs/s, churn steps/s)`` of chunk-path requests: ``n`` pairs while
    ``CHUNK_LIVE`` chunks are held, then ``n`` churn steps over that many chunks
    (after :func:`stress.harness.raise_mmap_threshold`)."""
    raise_mmap_threshold(malloc, free)
    sizes, slots = chunk_draws(n, seed)
    held = [malloc(size) for size in sizes[-CHUNK_LIVE:]]
    pair_rate = pairs(malloc, free, sizes)
    for block in held:
        free(block)
    return pair_rate, churn(malloc, free, sizes, slots, CHUNK_LIVE)


def chunk_figures(n: int, rounds: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best of ``rounds`` :func:`chunk_rates` for arenas and glibc, in turns."""
    best_pairs: dict[str, float] = {}
    best_churn: dict[str, float] = {}
    for _ in range(rounds):
        for name in ("arenas", "glibc-ctypes"):
            pair_rate, churn_rate = chunk_rates(*COMPETITORS[name](), n, seed)
            best_pairs[name] = max(best_pairs.get(name, 0.0), pair_rate)
            best_churn[name] = max(best_churn.get(name, 0.0), churn_rate)
    return best_pairs, best_churn


def chunks_report(chunk_pairs: dict[str, float], chunk_churn: dict[str, float]) -> list[str]:
    return [
        f"chunks (66..400 KB), pairs/s: arenas {chunk_pairs['arenas']:,.0f},"
        f" glibc-ctypes {chunk_pairs['glibc-ctypes']:,.0f}:"
        f" ratio {chunk_pairs['arenas'] / chunk_pairs['glibc-ctypes']:.2f}",
        f"chunks (66..400 KB), churn steps/s: arenas {chunk_churn['arenas']:,.0f},"
        f" glibc-ctypes {chunk_churn['glibc-ctypes']:,.0f}:"
        f" ratio {chunk_churn['arenas'] / chunk_churn['glibc-ctypes']:.2f}",
    ]


def crowded_handoff(sizes: list[int], order: list[int], crowd: int = 30) -> float:
    """The handoff run in a fresh allocator to which ``crowd`` idle threads attached
    first, each still holding a block: the remote frees look past their tables."""
    with arenas.Allocator() as alloc:
        attached = threading.Barrier(crowd + 1)
        done = threading.Event()

        def idle() -> None:
            block = alloc.malloc(64)
            attached.wait()
            done.wait()
            alloc.free(block)

        threads = [threading.Thread(target=idle) for _ in range(crowd)]
        for t in threads:
            t.start()
        attached.wait()
        try:
            return bursts(alloc.malloc, alloc.free, sizes, order, handoff=True)
        finally:
            done.set()
            for t in threads:
                t.join()


@dataclass
class Result:
    pairs: dict[str, float]
    churn: dict[str, float]
    bursts: dict[str, float]
    batches: dict[str, float]
    handoff: dict[str, float]
    crowded: float
    threads_1: float
    threads_8: float
    memory: Footprint
    glibc_footprint_ratio: float | None  # None: no C compiler to measure it natively
    chunk_pairs: dict[str, float]
    chunk_churn: dict[str, float]

    def ratios(self) -> dict[str, float]:
        p, c = self.pairs, self.churn
        return {
            "pairs arenas/mp-heap": p["arenas"] / p["mp-heap"],
            "pairs arenas/glibc": p["arenas"] / p["glibc-ctypes"],
            "pairs Allocator()/module": p["arenas Allocator()"] / p["arenas"],
            "churn arenas/mp-heap": c["arenas"] / c["mp-heap"],
            "churn arenas/glibc": c["arenas"] / c["glibc-ctypes"],
            "churn Allocator()/module": c["arenas Allocator()"] / c["arenas"],
            "bursts arenas/glibc": self.bursts["arenas"] / self.bursts["glibc-ctypes"],
            "batches arenas/glibc": self.batches["arenas"] / self.batches["glibc-ctypes"],
            "handoff arenas/glibc": self.handoff["arenas"] / self.handoff["glibc-ctypes"],
            "handoff, 32 threads attached / 2": self.crowded / self.handoff["arenas"],
            "8 threads / 1 thread": self.threads_8 / self.threads_1,
            "peak footprint / peak live": self.memory.ratio,
            **(
                {"footprint ratio arenas/glibc native": self.memory.ratio / glibc}
                if (glibc := self.glibc_footprint_ratio)
                else {}
            ),
            "chunk pairs arenas/glibc": self.chunk_pairs["arenas"]
            / self.chunk_pairs["glibc-ctypes"],
            "chunk churn arenas/glibc": self.chunk_churn["arenas"]
            / self.chunk_churn["glibc-ctypes"],
        }


def thread_scaling(n_threads: int, steps: int, seed: int) -> float:
    """The churn loop (1,000 live blocks per thread) through the module-level API,
    in ``n_threads`` threads (see :func:`stress.harness.run_in_threads`)."""
    return run_in_threads(n_threads, steps, "churn", lambda: (arenas.malloc, arenas.free), seed)


Measure = Callable[[], tuple[int, int]]


@dataclass
class Footprint:
    ratio: float  # peak footprint (top chunk excluded) / peak live
    ratio_with_top: float
    peak_live: int
    peak_footprint: int
    parts: dict[str, int]  # where the footprint went, at its peak


def footprint(steps: int, live: int, seed: int) -> Footprint:
    """Peak footprint / peak live bytes on the churn loop, with a fresh allocator.

    Footprint is what the allocator holds from the system in heaps and
    mappings, less the untouched part of the top chunk (the "wilderness",
    reserved by top_pad but never written, so never resident).  The ratio
    including the top is given too, and the parts of the footprint at its
    peak.  ``ARENAS_TUNABLES`` applies here as it does to the default
    allocator.
    """
    tunables = parse_tunables(os.environ.get("ARENAS_TUNABLES", ""))
    parts: dict[str, int] = {}
    with arenas.Allocator(**tunables) as alloc:

        def measure() -> tuple[int, int]:
            st = alloc.stats()
            top = sum(a.top_bytes for a in st.arenas)
            fp = st.system_bytes - top
            if fp > sum(parts.values()):
                parts.clear()
                parts["live blocks, rounded up to their classes"] = st.slab_live_bytes
                parts["blocks in thread caches"] = st.tcache_bytes
                parts["the rest of the slabs (free blocks, headers, never used)"] = (
                    st.slab_bytes - st.slab_live_bytes - st.tcache_bytes
                )
                parts["free chunks in the heaps"] = st.fordblks - top
                parts["chunks in use outside slabs"] = st.in_use_bytes - st.slab_bytes
            return fp, st.system_bytes

        found = _footprint(*churn_draws(steps, live, seed), live, alloc.malloc, alloc.free, measure)
    return Footprint(*found, parts=parts)


#: glibc's settings for the churn's native replay: its heap grows only as far
#: as it is used, and gives a free page at its top back at once.
GLIBC_NO_PAD = "glibc.malloc.top_pad=0:glibc.malloc.trim_threshold=0"


def churn_calls(steps: int, live: int, seed: int) -> list[Call]:
    """The churn loop as a trace: ``live`` mallocs, then a free and a malloc per step.

    The same draws as :func:`footprint` runs (:func:`churn_draws`); each slot
    has an address of its own, reused as the loop reuses the slot.
    """
    sizes, slots = churn_draws(steps, live, seed)
    calls = [Call(0, "m", (size, 16 * (slot + 1))) for slot, size in enumerate(sizes[:live])]
    for size, slot in zip(sizes, slots, strict=True):
        calls.append(Call(0, "f", (16 * (slot + 1),)))
        calls.append(Call(0, "m", (size, 16 * (slot + 1))))
    return calls


def glibc_footprint_ratio(steps: int, live: int, seed: int) -> float:
    """glibc's peak footprint / peak live on the same churn, replayed natively.

    The draws are written as a trace (:func:`churn_calls`) and replayed by
    :mod:`stress.native`, whose process holds nothing else in glibc's heap.
    What is counted is ``mallinfo2``'s ``arena + hblkhd``: the main arena's
    heap, its top chunk included (which :data:`GLIBC_NO_PAD` keeps under a
    page, as arenas' figure leaves its top out), read after the same steps as
    arenas' (every 64th step's malloc, from the first), the most of those
    readings over the peak of live bytes.  ``GLIBC_TUNABLES`` in the
    environment is kept (``glibc.malloc.tcache_count=0``, say).

    Raises :class:`~stress.native.NativeUnavailable` without a C compiler.
    """
    tunables = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), GLIBC_NO_PAD]))
    with tempfile.TemporaryDirectory(prefix="arenas-churn-") as tmp:
        trace = os.path.join(tmp, "churn.trace")
        write_calls(trace, churn_calls(steps, live, seed))
        # the footprint() loop reads after step s's malloc (event live + 2s + 1), s % 64 == 0
        result = native_replay(
            trace, "glibc", env={"GLIBC_TUNABLES": tunables}, sample=(128, live + 1)
        )
    return result.sampled_peak_footprint / result.peak_live


def _footprint(
    sizes: list[int],
    slots: list[int],
    live: int,
    malloc: Malloc,
    free: Free,
    measure: Measure,
) -> tuple[float, float, int, int]:
    held = list(sizes[:live])
    blocks: list[Any] = [0] * live
    for slot, size in enumerate(held):
        blocks[slot] = malloc(size)
    live_bytes = sum(held)
    peak_live = live_bytes
    peak_fp = peak_fp_top = 0
    for step, (size, slot) in enumerate(zip(sizes, slots, strict=True)):
        free(blocks[slot])
        live_bytes += size - held[slot]
        held[slot] = size
        blocks[slot] = malloc(size)
        peak_live = max(peak_live, live_bytes)
        if step % 64 == 0:
            fp, fp_top = measure()
            peak_fp = max(peak_fp, fp)
            peak_fp_top = max(peak_fp_top, fp_top)
    for block in blocks:
        free(block)
    return peak_fp / peak_live, peak_fp_top / peak_live, peak_live, peak_fp


def run(n: int, rounds: int, seed: int, progress: bool = True) -> Result:
    sizes, slots = churn_draws(n, LIVE, seed)
    best_pairs: dict[str, float] = {}
    best_churn: dict[str, float] = {}
    best_bursts: dict[str, float] = {}
    best_batches: dict[str, float] = {}
    best_handoff: dict[str, float] = {}
    order = free_order(min(BURST, n), seed)  # (-n below BURST: one burst of n blocks)
    batch_order = free_order(HANDOFF, seed)
    arenas.free(arenas.malloc(1))  # attach this thread before timing
    for r in range(rounds):
        for name, make in COMPETITORS.items():
            if progress:
                print(f"\r  round {r + 1}/{rounds}: {name:<14}", end="", file=sys.stderr)
            malloc, free = make()
            best_pairs[name] = max(best_pairs.get(name, 0.0), pairs(malloc, free, sizes))
            best_churn[name] = max(
                best_churn.get(name, 0.0), churn(malloc, free, sizes, slots, LIVE)
            )
            best_bursts[name] = max(best_bursts.get(name, 0.0), bursts(malloc, free, sizes, order))
            best_batches[name] = max(
                best_batches.get(name, 0.0), bursts(malloc, free, sizes, batch_order)
            )
            best_handoff[name] = max(
                best_handoff.get(name, 0.0), bursts(malloc, free, sizes, batch_order, handoff=True)
            )
    crowded = 0.0
    for _ in range(rounds):
        crowded = max(crowded, crowded_handoff(sizes, batch_order))
    t1 = t8 = 0.0
    for _ in range(rounds):  # interleaved, so that a busy spell of the machine hits both
        t1 = max(t1, thread_scaling(1, n, seed))
        t8 = max(t8, thread_scaling(8, n, seed))
    memory = footprint(n, LIVE, seed)
    glibc_ratio = _glibc_ratio_if_possible(n, LIVE, seed)
    chunk_pairs, chunk_churn = chunk_figures(max(n // 4, 1000), rounds, seed)
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    return Result(
        best_pairs,
        best_churn,
        best_bursts,
        best_batches,
        best_handoff,
        crowded,
        t1,
        t8,
        memory,
        glibc_ratio,
        chunk_pairs,
        chunk_churn,
    )


def _glibc_ratio_if_possible(steps: int, live: int, seed: int) -> float | None:
    try:
        return glibc_footprint_ratio(steps, live, seed)
    except NativeUnavailable:
        return None


def memory_report(memory: Footprint, glibc_ratio: float | None) -> list[str]:
    glibc = "not measured (no C compiler)" if glibc_ratio is None else f"ratio {glibc_ratio:.3f}"
    return [
        f"peak live {memory.peak_live:,} B, peak footprint {memory.peak_footprint:,} B"
        f" (top chunk excluded): ratio {memory.ratio:.3f};"
        f" with the top: {memory.ratio_with_top:.2f}",
        "at the footprint's peak:",
        *(f"  {part}: {size:,} B" for part, size in memory.parts.items()),
        "glibc natively on the same churn (replayed in C; mallinfo2, top_pad and"
        f" trim_threshold 0, read after the same steps): {glibc}",
    ]


def report(result: Result) -> str:
    lines = ["| workload | " + " | ".join(COMPETITORS) + " |"]
    lines.append("|---|" + "---:|" * len(COMPETITORS))
    rows = (
        ("pairs/s", result.pairs),
        ("churn steps/s", result.churn),
        ("burst operations/s", result.bursts),
        ("batch operations/s, freed by the same thread", result.batches),
        ("batch operations/s, freed by another thread", result.handoff),
    )
    for label, figures in rows:
        lines.append(f"| {label} | " + " | ".join(f"{figures[n]:,.0f}" for n in COMPETITORS) + " |")
    lines.append("")
    lines.append(f"arenas churn, 1 thread: {result.threads_1:,.0f} steps/s")
    lines.append(f"arenas churn, 8 threads: {result.threads_8:,.0f} steps/s (aggregate)")
    lines.extend(memory_report(result.memory, result.glibc_footprint_ratio))
    lines.extend(chunks_report(result.chunk_pairs, result.chunk_churn))
    lines.append("")
    lines.append("| ratio | measured | target |")
    lines.append("|---|---:|---:|")
    targets = {
        "pairs arenas/mp-heap": ">= 8",
        "pairs arenas/glibc": ">= 1.3",
        "pairs Allocator()/module": "0.9-1.1",
        "churn arenas/mp-heap": ">= 8",
        "churn arenas/glibc": ">= 1.3",
        "churn Allocator()/module": "0.9-1.1",
        "bursts arenas/glibc": ">= 1.0",
        "batches arenas/glibc": ">= 1.0",
        "handoff arenas/glibc": ">= 1.0",
        "handoff, 32 threads attached / 2": "-",
        "8 threads / 1 thread": ">= 0.9",
        "peak footprint / peak live": "<= 1.25",
        "footprint ratio arenas/glibc native": "-",
        "chunk pairs arenas/glibc": "-",
        "chunk churn arenas/glibc": "-",
    }
    for name, value in result.ratios().items():
        lines.append(f"| {name} | {value:.2f} | {targets[name]} |")
    return "\n".join(lines)


TIMED = ("pairs", "churn", "bursts", "batches", "handoff")


def _rows(path: str) -> dict[str, float]:
    """The timed figures of one ``--json`` file, by row (``pairs/arenas``, ``crowded``)."""
    with open(path) as fh:
        data = json.load(fh)
    rows = {f"{name}/{who}": rate for name in TIMED for who, rate in data[name].items()}
    rows.update({name: data[name] for name in ("crowded", "threads_1", "threads_8")})
    return rows


def compare(before: list[str], after: list[str]) -> str:
    """A table of every row: best of ``before`` runs, best of ``after``, and their ratios
    (runs taken in turn in one session, so the machine's noise falls on both)."""
    old = [_rows(p) for p in before]
    new = [_rows(p) for p in after]
    lines = [
        f"| row | before, best of {len(old)} | after, best of {len(new)}"
        " | best after/before | median after/before |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in old[0]:
        b = [r[row] for r in old]
        a = [r[row] for r in new]
        lines.append(
            f"| {row} | {max(b):,.0f} | {max(a):,.0f} | {max(a) / max(b):.3f}"
            f" | {statistics.median(a) / statistics.median(b):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress fastpath", description=__doc__)
    parser.add_argument("-n", type=int, default=200_000, help="operations per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--json", metavar="FILE", type=writable_file, help="also write the figures as JSON"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the footprint (deterministic, seconds)"
    )
    parser.add_argument(
        "--chunks-only", action="store_true", help="only the chunk-path rows (66..400 KB)"
    )
    parser.add_argument(
        "--before", nargs="+", metavar="JSON", help="with --after: measure nothing, compare"
    )
    parser.add_argument(
        "--after", nargs="+", metavar="JSON", help="earlier --json files, row by row"
    )
    args = parser.parse_args(argv)
    if bool(args.before) != bool(args.after):
        parser.error("--before and --after go together")
    if args.before:
        print(compare(args.before, args.after))
        return 0
    if args.n < 1000 or args.rounds < 1:
        parser.error("-n must be at least 1000 and --rounds at least 1")
    if args.memory_only:
        memory = footprint(args.n, LIVE, args.seed)
        glibc_ratio = _glibc_ratio_if_possible(args.n, LIVE, args.seed)
        print("\n".join(memory_report(memory, glibc_ratio)))
        return 0
    if args.chunks_only:
        print("\n".join(chunks_report(*chunk_figures(args.n // 4, args.rounds, args.seed))))
        return 0
    result = run(args.n, args.rounds, args.seed)
    print(report(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**asdict(result), "ratios": result.ratios()}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
