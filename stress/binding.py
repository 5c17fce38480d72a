"""Binding: how the hot path is reached decides whether threads scale.

On free-threaded CPython an object that several threads use on every call
costs them its reference count, even if they only read it.  This benchmark
runs one hit path (the thread cache's: pop a block of the request's class
and record it live; pop the entry and push the block back) reached three
ways, each thread with state of its own, so that only the binding differs:

* ``copy``:    a copy of the module-level hit path with globals of its own
  naming one ``threading.local`` (``arenas.hotpath.HotPath``): what
  ``arenas.malloc`` and ``Allocator().malloc`` are;
* ``method``:  a method of one object shared by the threads, reaching the
  thread-local through ``self``;
* ``closure``: one closure shared by the threads, holding the thread-local
  in a cell (what ``Allocator`` bound before this release).

``copy`` runs the real hit path of ``arenas/hotpath.py``; ``method`` and
``closure`` are its lines rebound.  Aggregate
malloc+free pairs per second at 1 and 2 threads, the median of
``--rounds`` interleaved rounds.  On the GIL build all four stay flat: the
point is the free-threaded column.

Run: ``python -m stress binding`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
from collections.abc import Callable
from typing import Any

from arenas import hotpath
from arenas.slab import CLASS_OF, NCLASSES

from .harness import interpreter_name, run_in_threads

Pair = tuple[Callable[[int], int], Callable[[int], None]]


class _State:
    """One thread's cache, as the hit path sees a ``ThreadCache``: full bins, room to spare."""

    __slots__ = ("bins", "class_of", "counts", "live")

    def __init__(self, seed: int) -> None:
        base = 1 << 40 | seed << 32
        self.bins = [[base + (c << 20) + (k << 4) for k in range(64)] for c in range(NCLASSES)]
        self.class_of = CLASS_OF
        self.counts = [1 << 20] * NCLASSES
        self.live: dict[int, int] = {}


def _miss(arg: Any) -> Any:
    raise AssertionError(f"the binding benchmark never misses ({arg!r})")


class _Shared:
    """The method variant: one object all threads call into."""

    def __init__(self) -> None:
        self.tls = threading.local()

    def malloc(self, size: int) -> int:
        cache = self.tls.cache
        cls = cache.class_of[size]
        cached = cache.bins[cls]
        if not cached:
            cls += 1
            cached = cache.bins[cls]
        addr: int = cached.pop()
        cache.live[addr] = cls
        return addr

    def free(self, addr: int) -> None:
        cache = self.tls.cache
        cls = cache.live.pop(addr, None)
        cached = cache.bins[cls]
        if len(cached) < cache.counts[cls] and addr.__class__ is int:
            cached.append(addr)


def _closures() -> tuple[threading.local, Pair]:
    """The closure variant: one pair of closures all threads call."""
    tls = threading.local()

    def malloc(size: int) -> int:
        cache = tls.cache
        cls = cache.class_of[size]
        cached = cache.bins[cls]
        if not cached:
            cls += 1
            cached = cache.bins[cls]
        addr: int = cached.pop()
        cache.live[addr] = cls
        return addr

    def free(addr: int) -> None:
        cache = tls.cache
        cls = cache.live.pop(addr, None)
        cached = cache.bins[cls]
        if len(cached) < cache.counts[cls] and addr.__class__ is int:
            cached.append(addr)

    return tls, (malloc, free)


def _variants() -> dict[str, tuple[threading.local, Pair]]:
    copy_tls = threading.local()
    copy = hotpath.HotPath(copy_tls, _miss, _miss, module=__name__, owner="Copy")
    shared = _Shared()
    return {
        "copy": (copy_tls, (copy.malloc, copy.free)),
        "method": (shared.tls, (shared.malloc, shared.free)),
        "closure": _closures(),
    }


def pairs_in_threads(n_threads: int, steps: int, tls: threading.local, pair: Pair) -> float:
    """Aggregate malloc+free pairs per second, ``steps`` shared among the threads."""
    thread_numbers = itertools.count()

    def bind() -> Pair:
        tls.cache = _State(next(thread_numbers))  # this thread's own state, made by this thread
        return pair

    # seed 0: thread k draws from random.Random(k), as this benchmark always has
    return run_in_threads(n_threads, steps, "pairs", bind, seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress binding", description=__doc__)
    parser.add_argument("-n", type=int, default=300_000, help="pairs per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="the median of this many rounds")
    args = parser.parse_args(argv)
    if args.n < 1000 or args.rounds < 1:
        parser.error("-n must be at least 1000 and --rounds at least 1")
    variants = _variants()
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, (tls, pair) in variants.items():
            for n in (1, 2):
                runs.setdefault((name, n), []).append(pairs_in_threads(n, args.n, tls, pair))
    print(f"{interpreter_name()}: aggregate malloc+free pairs/s (median of {args.rounds})")
    print("| binding | 1 thread | 2 threads | 2 / 1 |")
    print("|---|---:|---:|---:|")
    for name in variants:
        one = statistics.median(runs[(name, 1)])
        two = statistics.median(runs[(name, 2)])
        print(f"| {name} | {one:,.0f} | {two:,.0f} | {two / one:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
