"""Placement fidelity: does an allocator put each block where glibc put it?

``python -m stress replay TRACE --fidelity [--policy NAME] [--events N]``
replays a recorded trace, paced (every event in the recorded global order,
one Python thread per traced thread, as :func:`arenas.trace.drive` runs
it), through an :class:`arenas.Allocator` (``policy=NAME`` passed only when
given), and compares, for every block the program got back (a malloc, a
calloc, a realloc's new address, a memalign), where glibc placed it with
where the replay placed it.  A *placement* is which heap the block lies in
and its offset from that heap's base:

* the **main heap** (glibc's ``sbrk`` area, the main arena's only heap):
  the offset from the heap's base;
* a **non-main heap**: glibc's are ``HEAP_MAX_SIZE`` (64 MiB) aligned, so a
  recorded block's heap is ``addr & ~(64 MiB - 1)``; recorded heaps and the
  replay's are matched by first appearance (the first block placed in
  recorded heap R and replayed heap H pairs them for good; a later block in
  R placed outside H, or in H outside R, is divergent);
* a **mapping** of its own (an mmapped chunk): only the offset in its page
  (``addr & 0xfff``) can be compared, since the kernel picks the page.

Traced thread 0 is the program's main thread, which lived until the end:
its replay thread stays alive to the end too (``linger``), so that its
arena is never handed to a thread that starts after its last call.  The
other threads end after their last call, the earliest their real ones can
have ended; one that lived on, idle, while a new thread started may show
as a ``heap`` divergence that is the replay's, not the policy's.

The replay's side is read through the public API: ``arena_for(addr)``
(None for a mapped chunk, 0 for the main arena) and ``heap_for_ptr(addr)``
(the heap's base), asked right after each block is made.  A calloc is
replayed as a calloc, not a malloc of its size, because glibc's calloc
skips the thread cache and so may place a block elsewhere.

How the recorded main heap's base is known.  A trace recorded by
:mod:`stress.record` carries it in its header: ``# sbrk-base 0x...``, the
program break before the process's first malloc, where glibc's heap starts
(its first chunk is the thread cache's ``tcache_perthread_struct``, 0x290
bytes, so the first small block is at base + 0x2a0).  An older trace has no
header; its base is *derived* (:func:`derive_base`): the page holding the
first returned block that is not a mapped chunk.  That is sound because
glibc makes its thread cache, and so the heap, at the process's first
malloc, in the main arena, and the tcache chunk ends well inside the
heap's first page (brk starts page-aligned), so the first heap block shares
that page whatever came before it.  A block is taken as a mapped chunk when
it could be one in glibc 2.36 with default tunables: its request (for a
memalign, plus the alignment and ``MINSIZE`` that glibc asks for) is at
least the mmap threshold's floor, 128 KiB, and it sits where glibc's mmap
path puts a block in its page (16 bytes past the page's start for a
malloc; further on for a memalign).  The first heap block never looks so,
as it is 0x2a0 into its page.  On every shipped trace the first block is at
its page + 0x2a0 (``tests/test_fidelity.py`` checks it), and on the traces
with a header the derived base is the recorded one.

Recorded blocks outside the main heap are told apart the same way: a block
in a 64 MiB region where a heap block was seen before is a heap block
(a mapping cannot lie inside a live heap's reservation); otherwise one that
looks mapped is mapped, and anything else starts a new heap.  The main heap
is taken to span 1 TiB from its base: on x86-64 the break sits near the
program and the mmap area tens of TiB above it.  A glibc that could not
grow the break and fell back to mmap for its main arena would show those
blocks as a non-main heap's.

Locking: the replay's threads are :func:`arenas.trace.drive`'s, paced, so
one event runs at a time; each writes only its own events' slots of the
result table, which is read after every thread has been joined.  The
comparison runs in the calling thread.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from arenas import Allocator
from arenas.trace import Event, Plan, drive, format_call, parse, perform, read_calls, trace_header

from .native import NativeUnavailable, native_replay

__all__ = [
    "CONTEXT",
    "DIVERGENCES",
    "Divergence",
    "FidelityError",
    "FidelityResult",
    "Placement",
    "Row",
    "TableRow",
    "derive_base",
    "fidelity",
    "live_peak",
    "main_heap_base",
    "replay_placements",
    "table",
    "table_row",
]

PAGE = 4096
MMAP_THRESHOLD = 128 * 1024  # glibc's M_MMAP_THRESHOLD at start; it only rises by itself
HEAP_MAX_SIZE = 64 << 20  # glibc's non-main heaps on a 64-bit machine
MAIN_HEAP_SPAN = 1 << 40  # the break and the mmap area lie tens of TiB apart on x86-64
MINSIZE = 32  # glibc's smallest chunk
CONTEXT = 5  # events shown on each side of the first divergent block

Kind = Literal["main", "heap", "mapped"]

#: The ways a block can be misplaced, as :attr:`FidelityResult.divergent` counts them.
DIVERGENCES: dict[str, str] = {
    "kind": "one of main heap, non-main heap and mapping recorded, another replayed",
    "heap": "in a heap other than the one paired with the recorded block's heap",
    "offset": "in the paired heap, at another offset",
    "page offset": "both mapped, at another offset in the page",
}


class FidelityError(ValueError):
    """The measurement cannot be made: no block to compare, no base, or a policy refused."""


@dataclass(frozen=True)
class Placement:
    """Where one block is: the kind of place, that heap's base, the offset from it.

    ``heap`` is the heap's base address (0 for a mapping, whose ``offset``
    is the one in its page); ``number`` counts non-main heaps in order of
    first appearance on their own side (1, 2, ...), for the report.
    """

    kind: Kind
    heap: int
    offset: int
    number: int = 0

    def __str__(self) -> str:
        label = {"main": "main", "mapped": "mmap"}.get(self.kind, f"heap{self.number}")
        return f"{label}+{self.offset:#x}"


@dataclass(frozen=True)
class Row:
    """One event of the report's window: the trace line and, for a block, both answers."""

    seq: int  # the event's place in the trace's order (0-based)
    line: int  # its line in the file (1-based)
    call: str  # the line as the trace has it
    recorded: Placement | None  # None for a free
    replayed: Placement | None
    divergence: str | None  # a key of DIVERGENCES, or None


@dataclass(frozen=True)
class Divergence:
    """The first divergent block, and the events around it."""

    seq: int
    line: int
    call: str
    what: str  # a key of DIVERGENCES
    recorded: Placement
    replayed: Placement
    window: tuple[Row, ...]  # up to CONTEXT events before it, it, and up to CONTEXT after


@dataclass(frozen=True)
class FidelityResult:
    """What :func:`fidelity` measured on one trace."""

    trace: str
    policy: str | None  # as passed to the Allocator; None: not passed
    events: int  # events replayed
    threads: int
    base: int  # the recorded main heap's base
    base_from: Literal["header", "derived"]
    blocks: int  # blocks returned and compared
    identical: int
    divergent: dict[str, int] = field(default_factory=dict)  # DIVERGENCES key -> blocks
    first: Divergence | None = None
    replay_seconds: float = 0.0  # the paced replay alone (wall clock), bookkeeping included
    peak_live: int = 0  # the most requested bytes live at once
    peak_footprint: int = 0  # the allocator's system bytes right after the event of that peak

    @property
    def percent_identical(self) -> float:
        """Identical blocks in percent, cut (not rounded) to 3 decimals: 100.0 means all."""
        return self.identical * 100_000 // self.blocks / 1000 if self.blocks else 0.0

    def report(self) -> str:
        """The result as the command line prints it."""
        policy = "" if self.policy is None else f"policy={self.policy!r}"
        source = (
            "the trace's sbrk-base header"
            if self.base_from == "header"
            else "derived: the page of its first heap block"
        )
        threads = f"{self.threads} thread" + ("s" if self.threads != 1 else "")
        lines = [
            f"{self.trace}: {self.events:,} events in {threads},"
            f" replayed paced through arenas.Allocator({policy})",
            f"recorded main heap base {self.base:#x} ({source})",
            f"blocks returned: {self.blocks:,}; placed identically: {self.identical:,}"
            f" ({self.percent_identical:.3f}%)",
            "divergent: "
            + ", ".join(f"{what} {self.divergent.get(what, 0):,}" for what in DIVERGENCES),
        ]
        first = self.first
        if first is None:
            return "\n".join([*lines, "no divergent block"])
        lines += [
            f"first divergent block: event {first.seq:,} (line {first.line:,}): {first.call}",
            f"  recorded {first.recorded}, replayed {first.replayed}"
            f" ({first.what}: {DIVERGENCES[first.what]})",
            f"  {'':1} {'event':>9} {'line':>9}  {'call':<42} {'recorded':<20} replayed",
        ]
        for row in first.window:
            mark = ">" if row.seq == first.seq else ("*" if row.divergence else " ")
            recorded = "" if row.recorded is None else str(row.recorded)
            replayed = "" if row.replayed is None else str(row.replayed)
            lines.append(
                f"  {mark} {row.seq:>9,} {row.line:>9,}  {row.call:<42} {recorded:<20} {replayed}"
            )
        lines.append("  (> the first divergent block, * a later one)")
        return "\n".join(lines)


Answer = tuple[Placement, Placement, str | None] | None  # recorded, replayed, divergence


# ============================================================ the recorded side
def _request(op: str, args: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(bytes asked, alignment, address returned) of a call that returned a block, else None."""
    if op == "m":
        size, addr = args
        return (size, 0, addr) if addr else None
    if op == "c":
        n, size, addr = args
        return (n * size, 0, addr) if addr else None
    if op == "a":
        align, size, addr = args
        return (size, align, addr) if addr else None
    if op == "r":
        _, size, new = args
        return (size, 0, new) if new else None
    return None


def _looks_mapped(size: int, align: int, addr: int) -> bool:
    """Whether glibc 2.36, default tunables, could have served this block by mmap."""
    if align <= 16:
        return size >= MMAP_THRESHOLD and addr % PAGE == 16
    # _int_memalign asks for size + align + MINSIZE, then moves the block up to the first
    # aligned place that leaves a lead of at least MINSIZE: 64 bytes in for 32, else align in.
    in_page = 64 if align <= MINSIZE else align % PAGE
    return size + align + MINSIZE >= MMAP_THRESHOLD and addr % PAGE == in_page


def derive_base(path: str | Path) -> int:
    """The main heap's base, from the calls alone: the page of the first block not mapped.

    Raises :class:`FidelityError` when the trace returned no block that is
    not a mapped chunk (see the module's docstring for why the rule holds).
    """
    for call in read_calls(path):
        request = _request(call.op, call.args)
        if request is not None and not _looks_mapped(*request):
            return request[2] & ~(PAGE - 1)
    raise FidelityError(f"{path}: no heap block in the trace, so no main heap base to derive")


def main_heap_base(path: str | Path) -> tuple[int, Literal["header", "derived"]]:
    """The recorded main heap's base: from the ``sbrk-base`` header, else derived."""
    text = trace_header(path).get("sbrk-base")
    if text is None:
        return derive_base(path), "derived"
    try:
        base = int(text, 0)
    except ValueError:
        raise FidelityError(f"{path}: sbrk-base {text!r} is not a number") from None
    if base <= 0 or base % 16:
        raise FidelityError(f"{path}: sbrk-base {text} cannot be a heap's start")
    return base, "header"


class _Recorded:
    """Places recorded blocks, learning the non-main heaps as they appear."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.heaps: dict[int, int] = {}  # region -> its number, in order of appearance

    def place(self, size: int, align: int, addr: int) -> Placement:
        if self.base <= addr < self.base + MAIN_HEAP_SPAN:
            return Placement("main", self.base, addr - self.base)
        region = addr & ~(HEAP_MAX_SIZE - 1)
        if region not in self.heaps and _looks_mapped(size, align, addr):
            return Placement("mapped", 0, addr % PAGE)
        number = self.heaps.setdefault(region, len(self.heaps) + 1)
        return Placement("heap", region, addr - region, number)


# ============================================================ the replay
def _allocator(policy: str | None) -> Allocator:
    kwargs: dict[str, Any] = {} if policy is None else {"policy": policy}
    try:
        return Allocator(**kwargs)
    except (TypeError, ValueError) as exc:
        raise FidelityError(f"arenas.Allocator(policy={policy!r}) refused: {exc}") from None


def replay_placements(
    plan: Plan,
    alloc: Allocator,
    progress: Callable[[int, int], None] | None = None,
    end_threads: bool = True,
) -> list[Placement | None]:
    """Replay ``plan`` paced through ``alloc``; return where each event's block went
    (None for an event that made none), non-main heaps numbered as they appear.

    With ``end_threads``, every traced thread but the main one ends right after its
    last call (see :func:`_replay`); without, every thread lives to the end, as the
    native replayer's ``--offsets`` keeps them.
    """
    made = _replay(plan, alloc, progress, end_threads)
    numbers: dict[int, int] = {}
    return [
        None if addr == 0 else _replayed(addr, arena, heap, numbers) for addr, arena, heap in made
    ]


def live_peak(plan: Plan) -> tuple[int, int]:
    """``(seq, bytes)``: the first event after which the requested bytes live are at their
    most, as the native replayer finds it (the footprint is read right after it)."""
    sizes: dict[int, int] = {}
    live = peak = 0
    at = -1
    for ev in sorted((ev for evs in plan.threads.values() for ev in evs), key=lambda e: e.seq):
        if ev.frees >= 0:
            live -= sizes.pop(ev.frees, 0)
        if ev.alloc >= 0:
            sizes[ev.alloc] = ev.size
            live += ev.size
        if live > peak:
            at, peak = ev.seq, live
    return at, peak


def _replay(
    plan: Plan,
    alloc: Allocator,
    progress: Callable[[int, int], None] | None,
    end_threads: bool = True,
    footprint: list[int] | None = None,
) -> list[tuple[int, int | None, int]]:
    """Run the plan paced; return, per event, (address, arena, heap base) of the block it
    made (zeros for an event that made none).  ``footprint``, if given, receives the
    allocator's system bytes right after the live-peak event (:func:`live_peak`)."""
    made: list[tuple[int, int | None, int]] = [(0, None, 0)] * len(plan.order)
    peak_seq = live_peak(plan)[0] if footprint is not None else -1
    # A traced thread other than the main one ends after its last call: the trace
    # cannot say when it really ended, and just after its last call is the best
    # guess.  Its end (glibc: the tcache freed, the arena detached) happens at
    # that point in the paced order, not whenever Python reclaims the thread.
    ends = (
        {events[-1].seq for tid, events in plan.threads.items() if tid != 0 and events}
        if end_threads
        else set()
    )

    def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
        def step(ev: Event, old: int | None) -> int | None:
            if ev.op == "c" and ev.alloc >= 0:
                new: int | None = alloc.calloc(1, ev.size)
            else:
                new = perform(ev, old, alloc)
            if new is not None:  # asked now: once freed, the address says nothing
                arena = alloc.arena_for(new)
                made[ev.seq] = (new, arena, 0 if arena is None else alloc.heap_for_ptr(new))
            if ev.seq == peak_seq and footprint is not None:
                footprint.append(alloc.system_bytes())
            if ev.seq in ends:
                alloc.thread_exit()
            return new

        return step

    drive(
        plan,
        thread_step,
        progress=progress,
        paced=True,
        linger=(0,) if end_threads else plan.threads,
    )
    return made


def _replayed(addr: int, arena: int | None, heap: int, numbers: dict[int, int]) -> Placement:
    if arena is None:
        return Placement("mapped", 0, addr % PAGE)
    if arena == 0:
        return Placement("main", heap, addr - heap)
    return Placement("heap", heap, addr - heap, numbers.setdefault(heap, len(numbers) + 1))


def _compare(
    recorded: Placement, replayed: Placement, pairs: dict[int, int], paired: dict[int, int]
) -> str | None:
    """The divergence between two placements (a key of DIVERGENCES), or None.

    Pairs the two heaps if neither is paired yet; ``pairs`` maps recorded
    heaps to replayed ones, ``paired`` the other way.
    """
    if recorded.kind != replayed.kind:
        return "kind"
    if recorded.kind == "mapped":
        return None if recorded.offset == replayed.offset else "page offset"
    mine, theirs = pairs.get(recorded.heap), paired.get(replayed.heap)
    if mine is None and theirs is None:
        pairs[recorded.heap], paired[replayed.heap] = replayed.heap, recorded.heap
    elif mine != replayed.heap or theirs != recorded.heap:
        return "heap"
    return None if recorded.offset == replayed.offset else "offset"


def _window(path: str | Path, events: list[Event], answers: list[Answer], at: int) -> list[Row]:
    """The rows of events ``at - CONTEXT`` to ``at + CONTEXT``, their lines read again."""
    seqs = range(max(0, at - CONTEXT), min(len(events), at + CONTEXT + 1))
    wanted = {events[seq].line: seq for seq in seqs}
    rows: list[Row] = []
    for call in itertools.islice(read_calls(path), max(wanted)):
        seq = wanted.get(call.line)
        if seq is None:
            continue
        text = format_call(call.tid, call.op, *call.args).rstrip()
        answer = answers[seq]
        if answer is None:
            rows.append(Row(seq, call.line, text, None, None, None))
        else:
            rows.append(Row(seq, call.line, text, *answer))
    return rows


# ============================================================ the measurement


def fidelity(
    path: str | Path,
    policy: str | None = None,
    events: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FidelityResult:
    """Replay the trace at ``path`` (its first ``events`` events, if given) through
    ``arenas.Allocator(policy=policy)`` (``Allocator()`` when ``policy`` is None) and
    compare every returned block's placement with the recorded one.

    ``progress(done, total)`` is :func:`arenas.trace.drive`'s.  Raises
    :class:`arenas.trace.TraceError` for a trace that cannot be read or
    resolved, and :class:`FidelityError` for one with no block to compare,
    no way to its main heap's base, or a policy the allocator refuses.
    """
    if events is not None and events < 1:
        raise FidelityError(f"the events to replay must be at least 1, not {events}")
    plan = parse(path, events)
    ordered = sorted((ev for evs in plan.threads.values() for ev in evs), key=lambda e: e.seq)
    if not any(ev.alloc >= 0 for ev in ordered):
        raise FidelityError(f"{path}: the trace returns no block, so there is nothing to compare")
    base, base_from = main_heap_base(path)
    requests: dict[int, tuple[int, int, int]] = {}  # line -> what the call asked and got
    for call in itertools.islice(read_calls(path), events):
        request = _request(call.op, call.args)
        if request is not None:
            requests[call.line] = request

    with _allocator(policy) as alloc:
        at_peak: list[int] = []
        began = time.perf_counter()
        made = _replay(plan, alloc, progress, footprint=at_peak)
        replay_seconds = time.perf_counter() - began

    placer = _Recorded(base)
    numbers: dict[int, int] = {}  # replayed non-main heap -> its number
    pairs: dict[int, int] = {}
    paired: dict[int, int] = {}
    answers: list[Answer] = [None] * len(ordered)
    divergent = dict.fromkeys(DIVERGENCES, 0)
    identical = 0
    first = -1
    for ev in ordered:
        if ev.alloc < 0:
            continue
        recorded = placer.place(*requests[ev.line])
        replayed = _replayed(*made[ev.seq], numbers)
        what = _compare(recorded, replayed, pairs, paired)
        answers[ev.seq] = (recorded, replayed, what)
        if what is None:
            identical += 1
        else:
            divergent[what] += 1
            if first < 0:
                first = ev.seq

    divergence = None
    if first >= 0:
        window = _window(path, ordered, answers, first)
        at = next(row for row in window if row.seq == first)
        assert at.recorded is not None and at.replayed is not None and at.divergence is not None
        divergence = Divergence(
            first, at.line, at.call, at.divergence, at.recorded, at.replayed, tuple(window)
        )
    return FidelityResult(
        trace=Path(path).name,
        policy=policy,
        events=plan.events,
        threads=len(plan.threads),
        base=base,
        base_from=base_from,
        blocks=sum(answer is not None for answer in answers),
        identical=identical,
        divergent=divergent,
        first=divergence,
        replay_seconds=replay_seconds,
        peak_live=live_peak(plan)[1],
        peak_footprint=at_peak[0] if at_peak else 0,
    )


# ============================================================ the table
@dataclass(frozen=True)
class TableRow:
    """One trace of :func:`table`: its fidelity under the glibc policy, and the replay's
    time under each policy (the same paced replay, one after the other; parsing the trace
    and comparing placements are left out)."""

    result: FidelityResult
    glibc_seconds: float
    default_seconds: float
    native_footprint: int  # glibc's own, at the same event (0: not measured)

    @property
    def time_ratio(self) -> float:
        """The glibc policy's replay time over the default policy's (issue 19: at most 1.5)."""
        return self.glibc_seconds / self.default_seconds

    @property
    def footprint_ratio(self) -> float:
        """The glibc policy's footprint at the live peak over glibc's own (issue 19: within
        1%); 0.0 when glibc's was not measured."""
        if not self.native_footprint:
            return 0.0
        return self.result.peak_footprint / self.native_footprint


def table_row(path: str | Path, events: int | None = None) -> TableRow:
    result = fidelity(path, policy="glibc", events=events)
    default = fidelity(path, policy="default", events=events)
    native = 0
    if events is None:  # (the native replayer replays whole traces)
        try:
            native = native_replay(path, "glibc").footprint_at_peak
        except NativeUnavailable:
            pass
    return TableRow(result, result.replay_seconds, default.replay_seconds, native)


def table(rows: list[TableRow]) -> str:
    lines = [
        f"{'trace':<26} {'threads':>7} {'events':>8} {'blocks':>8} {'identical':>10}"
        f" {'glibc s':>8} {'default s':>9} {'ratio':>6} {'footprint':>10} {'/ native':>8}"
    ]
    for row in rows:
        r = row.result
        lines.append(
            f"{r.trace.removesuffix('.trace.gz'):<26} {r.threads:>7} {r.events:>8,} {r.blocks:>8,}"
            f" {r.percent_identical:>9.3f}% {row.glibc_seconds:>8.1f} {row.default_seconds:>9.1f}"
            f" {row.time_ratio:>6.2f} {r.peak_footprint:>10,}"
            + (f" {row.footprint_ratio:>8.4f}" if row.native_footprint else f" {'-':>8}")
        )
    blocks = sum(row.result.blocks for row in rows)
    same = sum(row.result.identical for row in rows)
    worst = max((row.time_ratio for row in rows), default=0.0)
    measured = [abs(row.footprint_ratio - 1) for row in rows if row.native_footprint]
    lines.append(
        f"all {len(rows)} traces: {same:,} of {blocks:,} blocks identical;"
        f" glibc policy / default policy replay time at most {worst:.2f}"
        + (
            f"; footprint at the live peak within {100 * max(measured):.2f}% of glibc's own"
            f" on {len(measured)}"
            if measured
            else ""
        )
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stress fidelity",
        description="Replay traces through the glibc policy: how many blocks land where the"
        " recorded program's glibc put them, and the replay's time against the default"
        " policy's (both replayed paced, with the same bookkeeping).",
    )
    p.add_argument("traces", nargs="+", metavar="TRACE", help="a trace, or a directory of them")
    p.add_argument("--events", type=int, metavar="N", help="only the first N events of each")
    args = p.parse_args(argv)
    paths = [
        found
        for given in map(Path, args.traces)
        for found in (sorted(given.glob("*.trace*")) if given.is_dir() else [given])
    ]
    rows = []
    for path in paths:
        rows.append(table_row(path, args.events))
        print(f"{path.name}: done", file=sys.stderr)
    print(table(rows))
    return 0
