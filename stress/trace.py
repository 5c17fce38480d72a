"""Traces: one allocator event a line, and their replay through any adapter.

The format (gzip allowed; addresses in hex or decimal)::

    <tid> m <size> <addr>          malloc
    <tid> c <n> <size> <addr>      calloc
    <tid> r <old> <size> <new>     realloc (old 0: a malloc; size 0 and new 0: a free)
    <tid> f <addr>                 free
    <tid> a <align> <size> <addr>  memalign / posix_memalign / aligned_alloc

Thread ids are 0..N-1, 0 being the main thread.  The file's order is a valid
global order of the events (the recorder logs under one lock), so a first
pass resolves every free and realloc to the allocation it refers to, even
though addresses are reused.  :func:`replay` then runs one Python thread per
traced thread, keeping each thread's order, and a free waits until the
allocation it frees has happened (it may be in another thread).  A *paced*
replay keeps the file's global order as well: each event waits for the one
before it, whichever thread that was, so every allocator sees the very same
interleaving, the one the program had, and the live peak falls at the same
event in every run.  Every
replayed block is stamped and checked like any workload's.

Locking: the resolved plan is read-only while replaying; each allocation has
its own ``threading.Event`` that its owner sets once the block exists.  In a
paced replay each thread has a gate (a ``threading.Event``) that only the
thread whose turn it is sets, for the thread of the next event.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .adapters import Adapter, make_adapter
from .metrics import Recorder, RunResult
from .workloads import Block, Worker

__all__ = [
    "Event",
    "Plan",
    "TraceError",
    "drive",
    "parse",
    "perform",
    "read_events",
    "replay",
    "synthesize",
]


class TraceError(ValueError):
    """The trace cannot be read or is not consistent."""


@dataclass(frozen=True)
class Event:
    tid: int
    op: str  # m c r f a
    size: int  # requested bytes (n * size for calloc); 0 for a free
    align: int  # memalign's alignment, else 0
    alloc: int  # id of the allocation this event creates, or -1
    frees: int  # id of the allocation this event frees, or -1
    seq: int = -1  # its place in the trace's global order


@dataclass
class Plan:
    """A trace resolved into allocation ids, per thread."""

    threads: dict[int, list[Event]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # the thread of each event, in file order
    allocations: int = 0
    events: int = 0
    live_at_end: dict[int, int] = field(default_factory=dict)  # alloc id -> size
    peak_live: int = 0

    @property
    def live_bytes_at_end(self) -> int:
        return sum(self.live_at_end.values())


def _open(path: str | Path) -> Iterator[str]:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="ascii") as fh:
                yield from fh
        else:
            with open(path, encoding="ascii") as fh:
                yield from fh
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {str(path)!r}: {exc}") from None


def read_events(path: str | Path) -> Iterator[tuple[int, str, list[int]]]:
    """Yield ``(tid, op, numbers)`` for each line, checking its shape."""
    arity = {"m": 2, "c": 3, "r": 3, "f": 1, "a": 3}
    for lineno, line in enumerate(_open(path), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            tid, op = int(fields[0]), fields[1]
            numbers = [int(x, 0) for x in fields[2:]]
        except (ValueError, IndexError):
            raise TraceError(f"{path}:{lineno}: not a trace line: {line.strip()!r}") from None
        if op not in arity or len(numbers) != arity[op] or tid < 0 or min(numbers, default=0) < 0:
            raise TraceError(f"{path}:{lineno}: malformed event: {line.strip()!r}")
        if max(numbers, default=0) >> 64:  # sizes and addresses of a 64-bit process
            raise TraceError(f"{path}:{lineno}: a number beyond 64 bits: {line.strip()!r}")
        yield tid, op, numbers


def parse(path: str | Path) -> Plan:
    """Resolve a trace: which allocation each free and realloc refers to."""
    plan = Plan()
    live: dict[int, tuple[int, int]] = {}  # trace address -> (alloc id, size)
    live_bytes = 0

    def new_alloc(addr: int, size: int) -> int:
        nonlocal live_bytes
        ident = plan.allocations
        plan.allocations += 1
        if addr in live:
            raise TraceError(f"{path}: address {addr:#x} allocated twice without a free")
        live[addr] = (ident, size)
        live_bytes += size
        plan.peak_live = max(plan.peak_live, live_bytes)
        return ident

    def release(addr: int, what: str) -> int:
        nonlocal live_bytes
        if addr not in live:
            raise TraceError(f"{path}: {what} of {addr:#x}, which is not live in the trace")
        ident, size = live.pop(addr)
        live_bytes -= size
        return ident

    for tid, op, nums in read_events(path):
        plan.events += 1
        if op == "m":
            event = Event(tid, op, nums[0], 0, new_alloc(nums[1], nums[0]) if nums[1] else -1, -1)
        elif op == "c":
            size = nums[0] * nums[1]
            event = Event(tid, op, size, 0, new_alloc(nums[2], size) if nums[2] else -1, -1)
        elif op == "a":
            event = Event(
                tid, op, nums[1], nums[0], new_alloc(nums[2], nums[1]) if nums[2] else -1, -1
            )
        elif op == "f":
            event = Event(tid, op, 0, 0, -1, release(nums[0], "free"))
        else:  # r
            old, size, new = nums
            if old and not new and size:
                continue  # a failed realloc: nothing changed
            frees = release(old, "realloc") if old else -1
            alloc = new_alloc(new, size) if new else -1
            event = Event(tid, op, size, 0, alloc, frees)
        plan.threads.setdefault(tid, []).append(replace(event, seq=len(plan.order)))
        plan.order.append(tid)
    plan.live_at_end = dict(live.values())
    return plan


def synthesize(path: str | Path, events: int, threads: int = 4, seed: int = 7) -> int:
    """Write a synthetic trace: ``threads`` threads, each keeping up to 2,000 live blocks
    of mixed sizes (8..512, 512..9000, 70..120 KB), freeing at random.  For testing the
    tools at scale (a million events); the shipped traces are real programs.
    Returns the number of events written."""
    import random

    rng = random.Random(seed)
    next_addr = 0x10000
    live: dict[int, list[int]] = {t: [] for t in range(threads)}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="ascii") as out:
        for _ in range(events):
            t = rng.randrange(threads)
            mine = live[t]
            if mine and (rng.random() < 0.5 or len(mine) > 2000):
                out.write(f"{t} f {mine.pop(rng.randrange(len(mine))):#x}\n")
                continue
            size = rng.choice(
                [rng.randint(8, 512), rng.randint(512, 9000), rng.randint(70_000, 120_000)]
            )
            mine.append(next_addr)
            out.write(f"{t} m {size} {next_addr:#x}\n")
            next_addr += 16 * ((size + 31) // 16)
    return events


def perform(
    ev: Event,
    old: Any,
    malloc: Callable[[int], Any],
    memalign: Callable[[int, int], Any],
    realloc: Callable[[Any, int], Any],
    free: Callable[[Any], None],
) -> Any:
    """Do what ``ev`` did, with these functions; return the new handle, or None."""
    if old is not None and (ev.op == "f" or (ev.op == "r" and ev.alloc < 0)):
        free(old)  # a free, or realloc(p, 0)
        return None
    if ev.alloc < 0:
        return None  # an allocation that failed in the trace
    if ev.op == "r" and old is not None:
        return realloc(old, ev.size)
    if ev.op == "a" and ev.align > 16:
        return memalign(ev.align, ev.size)
    return malloc(ev.size)


def drive(
    plan: Plan,
    thread_step: Callable[[int], Callable[[Event, Any], Any]],
    timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    paced: bool = False,
) -> list[Any]:
    """Run ``plan`` with one thread per traced thread; return the handles left live.

    ``thread_step(tid)`` is called in the new thread and returns
    ``step(event, old)``.  ``old`` is the handle the event frees or resizes
    (None if it frees nothing); ``step`` returns the new handle when the event
    allocates.  Each thread keeps its events' order, and an event that frees
    a block waits until the allocation that made it has happened, whichever
    thread made it.  With ``paced``, every event also waits for the event
    before it in the trace.  ``progress(done, total)``, if given, is called
    twice a second once the replay has run for two seconds.
    """
    handles: list[Any] = [None] * plan.allocations
    done = dict.fromkeys(plan.threads, 0)  # events done, per traced thread
    ready = [threading.Event() for _ in range(plan.allocations)]
    gates = {tid: threading.Event() for tid in plan.threads}
    if plan.order:
        gates[plan.order[0]].set()
    last = len(plan.order) - 1
    errors: list[BaseException] = []

    def run(tid: int, events: list[Event]) -> None:
        try:
            step = thread_step(tid)
            gate = gates[tid]
            for ev in events:
                if paced and not gate.wait(timeout):
                    raise TraceError(f"paced replay stalled before event {ev.seq}")
                old = None
                if ev.frees >= 0:
                    if not ready[ev.frees].wait(timeout):
                        raise TraceError(f"replay stalled waiting for allocation {ev.frees}")
                    old = handles[ev.frees]
                    handles[ev.frees] = None
                new = step(ev, old)
                if ev.alloc >= 0:
                    handles[ev.alloc] = new
                    ready[ev.alloc].set()
                done[tid] += 1  # only this thread writes its own count
                if paced and ev.seq < last and plan.order[ev.seq + 1] != tid:
                    gate.clear()  # before the hand-over: only the next thread may set it again
                    gates[plan.order[ev.seq + 1]].set()
        except BaseException as exc:
            errors.append(exc)
            for other in gates.values():  # nobody waits for a turn that will not come
                other.set()

    pool = [
        threading.Thread(target=run, args=(tid, events))
        for tid, events in sorted(plan.threads.items())
    ]
    for t in pool:
        t.start()
    if progress is not None:
        total = sum(len(events) for events in plan.threads.values())
        began = time.monotonic()
        while any(t.is_alive() for t in pool):
            pool[0].join(0.5)
            if time.monotonic() - began > 2.0:
                progress(sum(done.values()), total)
        if time.monotonic() - began > 2.0:
            progress(total, total)
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return [h for h in handles if h is not None]


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
    :func:`drive`).
    """
    plan = parse(path)
    adapter = make_adapter(allocator) if isinstance(allocator, str) else allocator
    try:
        # Exact peak: a trace's peak can be a single short-lived buffer.
        with Recorder(adapter.footprint, exact_peak=True) as recorder:

            def thread_step(tid: int) -> Callable[[Event, Any], Any]:
                w = Worker(adapter, recorder.thread(), tid)
                return lambda ev, old: perform(ev, old, w.malloc, w.memalign, w.realloc, w.free)

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
