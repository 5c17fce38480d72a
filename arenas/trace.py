"""The trace format: one allocator call a line; reading it, writing it, replaying it.

This module is the format's one owner.  :func:`arenas.hooks.tracing` writes
it, :func:`arenas.timeline.from_trace` replays it through an
:class:`arenas.Allocator`, and the stress suite (``stress/``, in the
repository, not installed) records real programs into it and replays them
through other allocators.

The format: one line per call, its fields separated by spaces; the file is
gzip-compressed when its name ends in ``.gz``::

    <tid> m <size> <addr>          malloc
    <tid> c <n> <size> <addr>      calloc
    <tid> r <old> <size> <new>     realloc (old 0: a malloc; size 0 and new 0: a free)
    <tid> f <addr>                 free
    <tid> a <align> <size> <addr>  memalign / posix_memalign / aligned_alloc

``tid`` is the calling thread, a decimal number from 0 to N-1 (0 being the
main thread, or the first thread that called).  After the op, sizes, counts
and alignments are written in decimal and addresses in hex (``0x7f3a...``);
a reader takes either for any of them.  An address of 0 is an allocation
that failed; a realloc with a size and a new address of 0 failed too, and
left the old block as it was.  Blank lines and lines that start with ``#``
are skipped.  :data:`FIELDS` is the same table in code, and
:func:`format_call` and :func:`read_calls` are the only code that writes
and reads a line.

A trace may open with *header* lines, comments of the form ``# KEY VALUE``
before its first call, which say something about the recording as a whole
(a reader that does not know a key skips the line, as any comment)::

    # sbrk-base 0x55aa953b5000     the program break (sbrk(0)) of the recorded
                                   process before its first malloc, in hex:
                                   where glibc's main heap starts

``stress/record.py`` writes ``sbrk-base``.  :func:`trace_header` reads the
header, and :func:`write_calls` writes one; other comments are dropped when
a trace is rewritten.

The file's order is a valid global order of the calls (every writer logs
under one lock), so a first pass, :func:`parse`, resolves each free and
realloc to the allocation it refers to, even though addresses are reused.
:func:`drive` then runs one Python thread per traced thread, keeping each
thread's order; a free waits until the allocation it frees has happened (it
may be in another thread).  A *paced* replay keeps the file's global order
as well: each event waits for the one before it, whichever thread that was,
so every allocator sees the interleaving the program had; a thread may
also be kept alive until every thread is done (``linger``), so that it
keeps its arena.  :func:`perform`
does one event against a :class:`Target`, such as an ``Allocator``.

Locking: reading and writing share nothing (a writer used by several
threads, like :class:`arenas.hooks.Tracing`, serialises its lines under its
own lock).  During :func:`drive` the resolved plan is read-only; each
allocation has its own ``threading.Event``, set once by the thread that
makes the block, and its handle slot is written by that thread before the
event is set and read by the freeing thread after it.  In a paced replay
each thread has a gate (a ``threading.Event``) that only the thread whose
turn it is sets, for the thread of the next event.  The count of threads
still doing events has its own lock; the last one to finish sets the event
that lingering threads wait for.
"""

from __future__ import annotations

import gzip
import itertools
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol, TextIO, TypeVar

__all__ = [
    "ADDRESS_FIELDS",
    "FIELDS",
    "Call",
    "Event",
    "Plan",
    "Target",
    "TraceError",
    "drive",
    "format_call",
    "open_trace",
    "parse",
    "perform",
    "read_calls",
    "trace_header",
    "write_calls",
]

#: Each op's fields after ``<tid> <op>``, in the order they are written;
#: those in :data:`ADDRESS_FIELDS` are written in hex, the others in decimal.
FIELDS: dict[str, tuple[str, ...]] = {
    "m": ("size", "addr"),
    "c": ("n", "size", "addr"),
    "r": ("old", "size", "new"),
    "f": ("addr",),
    "a": ("align", "size", "addr"),
}
ADDRESS_FIELDS = frozenset({"addr", "old", "new"})
_IN_HEX = {op: tuple(name in ADDRESS_FIELDS for name in names) for op, names in FIELDS.items()}


class TraceError(ValueError):
    """A trace cannot be read, or is not consistent; names the file and line when known."""

    def __init__(self, message: str, path: str | Path | None = None, line: int = 0) -> None:
        if path is None:
            super().__init__(message)
        else:
            super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line


class Call(NamedTuple):
    """One line of a trace: the thread, the op, and its numbers in :data:`FIELDS` order."""

    tid: int
    op: str
    args: tuple[int, ...]
    line: int = 0  # the line it was read from (1-based); 0 when it was not read


# ============================================================ lines
def open_trace(path: str | Path, mode: Literal["r", "w"]) -> TextIO:
    """Open a trace file as ASCII text, through gzip when its name ends in ``.gz``."""
    zipped = str(path).endswith(".gz")
    if mode == "r":
        return gzip.open(path, "rt", encoding="ascii") if zipped else open(path, encoding="ascii")
    return gzip.open(path, "wt", encoding="ascii") if zipped else open(path, "w", encoding="ascii")


def format_call(tid: int, op: str, *args: int) -> str:
    """One line of the format, newline included: ``format_call(0, "m", 24, addr)``."""
    in_hex = _IN_HEX.get(op)
    if in_hex is None or len(args) != len(in_hex):
        raise TraceError(f"no trace line for {op!r} with {len(args)} numbers (see FIELDS)")
    numbers = " ".join(
        f"{n:#x}" if hexed else str(n) for n, hexed in zip(args, in_hex, strict=True)
    )
    return f"{tid} {op} {numbers}\n"


def write_calls(
    path: str | Path, calls: Iterable[Call], header: Mapping[str, str] | None = None
) -> int:
    """Write ``calls`` to a new trace at ``path``, after a ``# KEY VALUE`` line for each
    item of ``header``; return how many calls were written."""
    written = 0
    with open_trace(path, "w") as out:
        for key, value in (header or {}).items():
            if not key or not value or len(f"{key} {value}".split()) != 2:
                raise TraceError(f"a header is one word and one value, not {key!r} {value!r}")
            out.write(f"# {key} {value}\n")
        for call in calls:
            out.write(format_call(call.tid, call.op, *call.args))
            written += 1
    return written


def _lines(path: str | Path) -> Iterator[str]:
    try:
        with open_trace(path, "r") as fh:
            yield from fh
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise TraceError(f"cannot read trace {str(path)!r}: {exc}") from None


def trace_header(path: str | Path) -> dict[str, str]:
    """The header of the trace at ``path``: its ``# KEY VALUE`` lines before the first call.

    A comment of any other shape there is skipped; so is everything after
    the first call (the header is read from the file's first lines only).
    """
    header: dict[str, str] = {}
    for text in _lines(path):
        fields = text.split()
        if not fields:
            continue
        if not fields[0].startswith("#"):
            break
        words = text.lstrip()[1:].split()
        if len(words) == 2:
            header[words[0]] = words[1]
    return header


def read_calls(path: str | Path) -> Iterator[Call]:
    """Yield each line of the trace at ``path`` as a :class:`Call`, checking its shape.

    A line that is not ``<tid> <op> <numbers>``, an op that is not in
    :data:`FIELDS`, the wrong count of numbers, or a negative number or one
    beyond 64 bits raises :class:`TraceError` naming the file and the line.
    """
    for lineno, text in enumerate(_lines(path), 1):
        fields = text.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            tid, op = int(fields[0]), fields[1]
            args = tuple(int(x, 0) for x in fields[2:])
        except (ValueError, IndexError):
            raise TraceError(f"not a trace line: {text.strip()!r}", path, lineno) from None
        names = FIELDS.get(op)
        if names is None or len(args) != len(names) or tid < 0 or min(args, default=0) < 0:
            raise TraceError(f"malformed event: {text.strip()!r}", path, lineno)
        if max(args, default=0) >> 64:  # sizes and addresses of a 64-bit process
            raise TraceError(f"a number beyond 64 bits: {text.strip()!r}", path, lineno)
        yield Call(tid, op, args, lineno)


# ============================================================ resolution
@dataclass(frozen=True)
class Event:
    """One call of a trace, its addresses resolved into allocation ids."""

    tid: int
    op: str  # m c r f a
    size: int  # requested bytes (n * size for calloc); 0 for a free
    align: int  # memalign's alignment, else 0
    alloc: int  # id of the allocation this event creates, or -1
    frees: int  # id of the allocation this event frees, or -1
    seq: int = -1  # its place in the trace's global order
    line: int = 0  # the line it was read from (1-based)


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


def parse(path: str | Path, limit: int | None = None) -> Plan:
    """Resolve a trace: which allocation each free and realloc refers to.

    With ``limit``, only the first ``limit`` calls are read (the blocks
    live after them are left live, as at the end of a trace cut there).
    A free or realloc of an address that is not live at that point, or an
    allocation at an address that is still live, raises :class:`TraceError`
    naming the line.
    """
    plan = Plan()
    live: dict[int, tuple[int, int]] = {}  # trace address -> (alloc id, size)
    live_bytes = 0

    def new_alloc(addr: int, size: int, line: int) -> int:
        nonlocal live_bytes
        if not addr:
            return -1  # the allocation failed
        if addr in live:
            raise TraceError(f"address {addr:#x} allocated twice without a free", path, line)
        ident = plan.allocations
        plan.allocations += 1
        live[addr] = (ident, size)
        live_bytes += size
        plan.peak_live = max(plan.peak_live, live_bytes)
        return ident

    def release(addr: int, what: str, line: int) -> int:
        nonlocal live_bytes
        if addr not in live:
            raise TraceError(f"{what} of {addr:#x}, which is not live in the trace", path, line)
        ident, size = live.pop(addr)
        live_bytes -= size
        return ident

    for tid, op, args, line in itertools.islice(read_calls(path), limit):
        plan.events += 1
        seq = len(plan.order)
        if op == "m":
            size, addr = args
            event = Event(tid, op, size, 0, new_alloc(addr, size, line), -1, seq, line)
        elif op == "c":
            count, each, addr = args
            event = Event(
                tid, op, count * each, 0, new_alloc(addr, count * each, line), -1, seq, line
            )
        elif op == "a":
            align, size, addr = args
            event = Event(tid, op, size, align, new_alloc(addr, size, line), -1, seq, line)
        elif op == "f":
            event = Event(tid, op, 0, 0, -1, release(args[0], "free", line), seq, line)
        else:  # r
            old, size, new = args
            if old and not new and size:
                continue  # a failed realloc: nothing changed
            frees = release(old, "realloc", line) if old else -1
            event = Event(tid, op, size, 0, new_alloc(new, size, line), frees, seq, line)
        plan.threads.setdefault(tid, []).append(event)
        plan.order.append(tid)
    plan.live_at_end = dict(live.values())
    return plan


# ============================================================ replay
Handle = TypeVar("Handle")


class Target(Protocol[Handle]):
    """What a trace is performed against: an :class:`arenas.Allocator` (its handles are
    addresses), or anything with these four calls and handles of its own."""

    def malloc(self, size: int, /) -> Handle: ...
    def memalign(self, alignment: int, size: int, /) -> Handle: ...
    def realloc(self, handle: Handle, size: int, /) -> Handle: ...
    def free(self, handle: Handle, /) -> None: ...


def perform(ev: Event, old: Handle | None, target: Target[Handle]) -> Handle | None:
    """Do what ``ev`` did, against ``target``; return the new handle, or None.

    ``old`` is the handle of the block the event frees or resizes (None if
    it frees nothing).  A calloc is replayed as a malloc of its total size,
    and an alignment of 16 or less as a plain malloc (malloc's own).
    """
    if old is not None and (ev.op == "f" or (ev.op == "r" and ev.alloc < 0)):
        target.free(old)  # a free, or realloc(p, 0)
        return None
    if ev.alloc < 0:
        return None  # an allocation that failed in the trace
    if ev.op == "r" and old is not None:
        return target.realloc(old, ev.size)
    if ev.op == "a" and ev.align > 16:
        return target.memalign(ev.align, ev.size)
    return target.malloc(ev.size)


def drive(
    plan: Plan,
    thread_step: Callable[[int], Callable[[Event, Handle | None], Handle | None]],
    timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    paced: bool = False,
    linger: Collection[int] = (),
) -> list[Handle]:
    """Run ``plan`` with one thread per traced thread; return the handles left live.

    ``thread_step(tid)`` is called in the new thread and returns
    ``step(event, old)``.  ``old`` is the handle the event frees or resizes
    (None if it frees nothing); ``step`` returns the new handle when the event
    allocates.  Each thread keeps its events' order, and an event that frees
    a block waits until the allocation that made it has happened, whichever
    thread made it.  With ``paced``, every event also waits for the event
    before it in the trace.  ``progress(done, total)``, if given, is called
    twice a second once the replay has run for two seconds.  A wait longer
    than ``timeout`` seconds raises :class:`TraceError`.

    The thread of a traced thread in ``linger`` stays alive, after its last
    event, until every thread has done its events: an allocator may hand a
    thread's arena to another once the thread ends, and a traced thread
    (the main one above all) may have lived on after its last call.
    """
    handles: list[Handle | None] = [None] * plan.allocations
    done = dict.fromkeys(plan.threads, 0)  # events done, per traced thread
    ready = [threading.Event() for _ in range(plan.allocations)]
    gates = {tid: threading.Event() for tid in plan.threads}
    if plan.order:
        gates[plan.order[0]].set()
    last = len(plan.order) - 1
    errors: list[BaseException] = []
    running = [len(plan.threads)]  # threads whose events are not all done, under count_lock
    count_lock = threading.Lock()
    all_done = threading.Event()

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
            with count_lock:
                running[0] -= 1
                if not running[0]:
                    all_done.set()
            if tid in linger:
                all_done.wait()
        except BaseException as exc:
            errors.append(exc)
            all_done.set()  # (a lingering thread waits no more either)
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
