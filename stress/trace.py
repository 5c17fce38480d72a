"""Traces in the stress suite: replaying them through any adapter, and synthetic ones.

The format, its reader and writer, its resolution into allocation ids and
the threaded driver are :mod:`arenas.trace`'s.  What is the stress suite's
is here: :func:`replay` runs a trace through an adapter
(:mod:`stress.adapters`) with one :class:`~stress.workloads.Worker` per
traced thread, so every replayed block is stamped and checked like any
workload's, and measures it (:mod:`stress.metrics`: throughput, latency,
footprint at the live peak).  :func:`synthesize` writes a synthetic trace,
to test the tools at scale.

Locking: none of its own.  :func:`arenas.trace.drive` coordinates the
replay's threads (see its module); each worker writes only its own
:class:`~stress.metrics.ThreadMetrics`, guarded as :mod:`stress.metrics` says.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arenas.trace import Call, Event, Plan, TraceError, drive, parse, perform, write_calls

from .adapters import Adapter, make_adapter
from .metrics import Recorder, RunResult
from .workloads import Block, Worker

__all__ = ["TraceError", "replay", "synthesize"]  # TraceError: what the command line catches


def synthesize(path: str | Path, events: int, threads: int = 4, seed: int = 7) -> int:
    """Write a synthetic trace: ``threads`` threads, each keeping up to 2,000 live blocks
    of mixed sizes (8..512, 512..9000, 70..120 KB), freeing at random.  For testing the
    tools at scale (a million events); the shipped traces are real programs.
    Returns the number of events written."""
    rng = random.Random(seed)

    def calls() -> Iterator[Call]:
        next_addr = 0x10000
        live: dict[int, list[int]] = {t: [] for t in range(threads)}
        for _ in range(events):
            t = rng.randrange(threads)
            mine = live[t]
            if mine and (rng.random() < 0.5 or len(mine) > 2000):
                yield Call(t, "f", (mine.pop(rng.randrange(len(mine))),))
                continue
            size = rng.choice(
                [rng.randint(8, 512), rng.randint(512, 9000), rng.randint(70_000, 120_000)]
            )
            mine.append(next_addr)
            yield Call(t, "m", (size, next_addr))
            next_addr += 16 * ((size + 31) // 16)

    return write_calls(path, calls())


def replay(
    path: str | Path,
    allocator: str | Adapter,
    timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    paced: bool = False,
) -> tuple[RunResult, Plan, int]:
    """Replay a trace; return the run's metrics, the plan, and the bytes left live.

    Every replayed block is stamped and checked (see :class:`Worker`).  The
    bytes left live must equal ``plan.live_bytes_at_end``: every allocation is
    either freed by the trace or reported live (and then freed here, so the
    adapter ends clean).  ``paced`` keeps the trace's global order (see
    :func:`arenas.trace.drive`).
    """
    plan = parse(path)
    adapter = make_adapter(allocator) if isinstance(allocator, str) else allocator
    try:
        # Exact peak: a trace's peak can be a single short-lived buffer.
        with Recorder(adapter.footprint, exact_peak=True) as recorder:

            def thread_step(tid: int) -> Callable[[Event, Any], Any]:
                worker = Worker(adapter, recorder.thread(), tid)
                return lambda ev, old: perform(ev, old, worker)

            left: list[Block] = drive(plan, thread_step, timeout, progress, paced)
        result = recorder.result(
            Path(path).name, adapter.name, len(plan.threads), adapter.arena_stats()
        )
        cleaner = Worker(adapter, recorder.thread(), 0)
        for block in left:
            cleaner.free(block)
        return result, plan, sum(b[1] for b in left)
    finally:
        if isinstance(allocator, str):
            adapter.close()
