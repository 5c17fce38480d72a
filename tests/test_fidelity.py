"""Placement fidelity (stress/fidelity.py) and the heap base it measures from.

The recorder's ``# sbrk-base`` header, written and read back; the base
derived for traces without one; the measurement on traces whose recorded
placements are known (a replay's own, written out as a recording), and on
copies with one block moved; bad input.  Recording needs the machine's C
compiler, and its test is skipped without one.
"""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import run_module

from arenas import Allocator
from arenas.trace import (
    Call,
    Event,
    TraceError,
    drive,
    parse,
    perform,
    read_calls,
    trace_header,
    write_calls,
)
from stress.fidelity import (
    CONTEXT,
    DIVERGENCES,
    FidelityError,
    FidelityResult,
    derive_base,
    fidelity,
    main_heap_base,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "stress" / "traces").glob("*.trace.gz"))
FIDELITY = sorted((ROOT / "stress" / "traces" / "fidelity").glob("*.trace.gz"))
HAS_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
BASE = 0x5555_5000_0000  # a brk-like main heap base for the traces made here


# ============================================================ the header
def test_a_header_is_written_before_the_calls_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t.trace.gz"
    calls = [Call(0, "m", (24, BASE + 0x2A0)), Call(0, "f", (BASE + 0x2A0,))]
    assert write_calls(path, calls, {"sbrk-base": f"{BASE:#x}", "note": "x"}) == 2
    with gzip.open(path, "rt") as fh:
        assert fh.readline() == f"# sbrk-base {BASE:#x}\n"
    assert trace_header(path) == {"sbrk-base": f"{BASE:#x}", "note": "x"}
    assert [c._replace(line=0) for c in read_calls(path)] == calls
    assert parse(path).events == 2
    assert main_heap_base(path) == (BASE, "header")


def test_only_the_comments_before_the_first_call_are_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    path.write_text("# a free-form comment here\n\n#k 1\n0 m 24 0x10\n# late 2\n")
    assert trace_header(path) == {"k": "1"}  # (three words: a comment, not a key)
    with pytest.raises(TraceError, match="one word and one value"):
        write_calls(tmp_path / "u.trace", [], {"two words": "1"})


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_the_recorder_writes_the_break_before_the_first_malloc(tmp_path: Path) -> None:
    from stress.cc import build
    from stress.record import record

    # It writes the break it sees before its first malloc, and that malloc's block, into
    # argv[1] (with no malloc of its own); a forked child's trace must carry the same
    # base, the heap being the parent's.
    prog = build(
        r"""
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/wait.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            char line[64];
            void *brk = sbrk(0);
            void *volatile p = malloc(24);
            int n = snprintf(line, sizeof line, "%p %p\n", brk, p);
            int fd = argc > 1 ? open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
            if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
            pid_t child = fork();
            if (child == 0) { void *volatile q = malloc(100); free(q); _exit(0); }
            waitpid(child, NULL, 0);
            free(p);
            return 0;
        }
        """,
        "fidelity-probe",
        ["-O1"],
        [],
    )
    out = tmp_path / "probe.trace.gz"
    seen = tmp_path / "seen"
    rec = record(out, [str(prog), str(seen)])
    brk, first = (int(word, 16) for word in seen.read_text().split())
    assert rec.exit_code == 0 and len(rec.others) == 1
    assert trace_header(out) == {"sbrk-base": f"{brk:#x}"}
    assert trace_header(rec.others[0]) == {"sbrk-base": f"{brk:#x}"}
    assert next(read_calls(out)).args == (24, first)
    assert first == brk + 0x2A0  # glibc's tcache_perthread_struct first, then the block
    assert derive_base(out) == brk


# ============================================================ derived bases
@pytest.mark.parametrize("trace", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_trace_s_first_block_is_0x2a0_into_the_derived_base(trace: Path) -> None:
    assert trace_header(trace) == {}
    base, source = main_heap_base(trace)
    first = next(call for call in read_calls(trace) if call.op != "f")
    assert source == "derived" and base % 4096 == 0
    assert first.args[-1] == base + 0x2A0


@pytest.mark.parametrize("trace", FIDELITY, ids=lambda p: p.name)
def test_a_fidelity_trace_has_its_base_and_300000_events_of_one_thread(trace: Path) -> None:
    base, source = main_heap_base(trace)
    assert source == "header"
    assert derive_base(trace) == base  # the rule for older traces agrees with the recorder
    with gzip.open(trace, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == f"# sbrk-base {base:#x}"
    assert len(lines) == 300_001
    assert {line.split(" ", 1)[0] for line in lines[1:]} == {"0"}


def test_there_are_four_fidelity_traces_and_the_campaign_does_not_see_them() -> None:
    assert len(FIDELITY) >= 4
    import stress.__main__ as cli

    assert not set(cli.TRACES.glob("*.trace*")) & set(FIDELITY)


# ============================================================ known placements
def _hand_trace(path: Path) -> None:
    """Two threads: small and large blocks, calloc, realloc, memalign, mappings, frees,
    one of them across threads.  The addresses are placeholders, each used once."""
    fake = (0x100000 * k for k in itertools.count(1))
    calls: list[Call] = []
    live: dict[int, list[int]] = {0: [], 1: []}

    def alloc(tid: int, op: str, *args: int) -> None:
        addr = next(fake)
        calls.append(Call(tid, op, (*args, addr)))
        live[tid].append(addr)

    for i in range(12):
        tid = i % 2
        for size in (24, 100, 700, 3000, 20000):
            alloc(tid, "m", size + i)
        alloc(tid, "c", 3, 40 + i)
        alloc(tid, "a", 64, 300 + i)
        if i % 4 == 0:
            alloc(tid, "m", 200_000)  # a mapping of its own, in glibc and arenas alike
        old = live[tid].pop(1)
        new = next(fake)
        calls.append(Call(tid, "r", (old, 900 + i, new)))
        live[tid].append(new)
        calls.extend(Call(tid, "f", (live[tid].pop(0),)) for _ in range(3))
        if i % 3 == 2:  # a block made by the other thread
            calls.append(Call(tid, "f", (live[1 - tid].pop(),)))
    write_calls(path, calls)


Move = Callable[[int], int]  # recorded address -> the address written instead


def _as_recorded(src: Path, dst: Path, moves: dict[int, Move] | None = None) -> dict[str, int]:
    """Replay ``src`` paced through a fresh Allocator and write ``dst``: ``src``'s calls
    with the replay's addresses, the main heap moved to BASE (where glibc's brk heap
    would be), non-main heaps and mappings where they were; the block made by event
    ``seq`` moved by ``moves[seq]``.  Returns how many blocks landed in each kind."""
    moves = moves or {}
    plan = parse(src)
    addr_of: dict[int, int] = {}  # allocation id -> its address in dst
    kinds = dict.fromkeys(("main", "heap", "mapped"), 0)

    with Allocator() as alloc:

        def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
            def step(ev: Event, old: int | None) -> int | None:
                new = alloc.calloc(1, ev.size) if ev.op == "c" else perform(ev, old, alloc)
                if new is not None:
                    arena = alloc.arena_for(new)
                    kind = "mapped" if arena is None else "main" if arena == 0 else "heap"
                    kinds[kind] += 1
                    shown = BASE + new - alloc.heap_for_ptr(new) if kind == "main" else new
                    move = moves.get(ev.seq)
                    addr_of[ev.alloc] = shown if move is None else move(shown)
                return new

            return step

        drive(plan, thread_step, paced=True)

    events = sorted((ev for evs in plan.threads.values() for ev in evs), key=lambda e: e.seq)

    def rewritten() -> Iterator[Call]:
        for call, ev in zip(read_calls(src), events, strict=True):
            new = addr_of.get(ev.alloc, 0)
            old = addr_of.get(ev.frees, 0)
            if call.op == "f":
                yield call._replace(args=(old,))
            elif call.op == "r":
                yield call._replace(args=(old, call.args[1], new))
            else:  # the address is the last field
                yield call._replace(args=(*call.args[:-1], new))

    write_calls(dst, rewritten(), {"sbrk-base": f"{BASE:#x}"})
    return kinds


@pytest.fixture
def hand(tmp_path: Path) -> Path:
    path = tmp_path / "hand.trace"
    _hand_trace(path)
    return path


def test_a_replay_s_own_placements_are_identical(hand: Path, tmp_path: Path) -> None:
    recorded = tmp_path / "recorded.trace"
    kinds = _as_recorded(hand, recorded)
    assert all(kinds.values()), kinds  # main heap, a non-main heap and mappings all compared
    result = fidelity(recorded)
    assert (result.blocks, result.identical) == (sum(kinds.values()),) * 2
    assert result.divergent == dict.fromkeys(DIVERGENCES, 0) and result.first is None
    assert (result.base, result.base_from) == (BASE, "header")
    assert result.events == parse(hand).events and result.threads == 2
    assert result.percent_identical == 100.0
    assert "(100.000%)" in result.report() and "no divergent block" in result.report()


def _seq_of(path: Path, kind: str, nth: int = 0) -> int:
    """The event that made the ``nth`` block of ``kind`` placed by a replay of ``path``."""
    plan = parse(path)
    seen: list[int] = []
    with Allocator() as alloc:

        def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
            def step(ev: Event, old: int | None) -> int | None:
                new = alloc.calloc(1, ev.size) if ev.op == "c" else perform(ev, old, alloc)
                if new is not None:
                    arena = alloc.arena_for(new)
                    if (arena == 0) == (kind == "main") and arena is not None:
                        seen.append(ev.seq)
                return new

            return step

        drive(plan, thread_step, paced=True)
    return seen[nth]


@pytest.mark.parametrize(
    "kind, move, what",
    [
        ("main", lambda a: a + (1 << 30), "offset"),  # further into the same main heap
        ("heap", lambda a: a + (1 << 40), "heap"),  # into a heap never seen before
        ("main", lambda a: 0x7E00_0000_0000 + (a & 0xFFFF), "kind"),  # out of the main heap
    ],
)
def test_one_moved_block_diverges_there_and_nowhere_else(
    hand: Path, tmp_path: Path, kind: str, move: Move, what: str
) -> None:
    seq = _seq_of(hand, kind, nth=7)
    recorded = tmp_path / "moved.trace.gz"
    kinds = _as_recorded(hand, recorded, {seq: move})
    result = fidelity(recorded)
    blocks = sum(kinds.values())
    assert (result.blocks, result.identical) == (blocks, blocks - 1)
    assert result.divergent == {**dict.fromkeys(DIVERGENCES, 0), what: 1}
    first = result.first
    assert first is not None and (first.seq, first.what) == (seq, what)
    assert first.line == seq + 2  # the header line, then one line per event
    assert [row.seq for row in first.window] == list(range(seq - CONTEXT, seq + CONTEXT + 1))
    assert [row.divergence for row in first.window].count(what) == 1
    assert first.recorded != first.replayed
    # cut, not rounded: one block in 100 or so off is below 100%
    assert result.percent_identical == (blocks - 1) * 100_000 // blocks / 1000 < 100


def test_the_report_names_the_first_divergent_block(hand: Path, tmp_path: Path) -> None:
    seq = _seq_of(hand, "main", nth=3)
    recorded = tmp_path / "moved.trace"
    _as_recorded(hand, recorded, {seq: lambda a: a + 0x40})
    result = fidelity(recorded)
    assert result.first is not None
    text = result.report()
    lines = recorded.read_text().splitlines()
    assert f"first divergent block: event {seq} (line {seq + 2}): {lines[seq + 1]}" in text
    first = result.first
    assert f"recorded {first.recorded}, replayed {first.replayed} (offset:" in text
    assert first.recorded.offset == first.replayed.offset + 0x40
    marked = [line for line in text.splitlines() if line.startswith("  > ")]
    assert len(marked) == 1 and str(first.recorded) in marked[0] and lines[seq + 1] in marked[0]
    for row in first.window:  # every event around it, a free without answers
        assert row.call in text
        assert (row.recorded is None) == (row.call.split()[1] == "f")


def test_events_limits_the_replay_to_the_first_n(hand: Path, tmp_path: Path) -> None:
    recorded = tmp_path / "recorded.trace"
    _as_recorded(hand, recorded)
    result = fidelity(recorded, events=20)
    made = sum(call.op != "f" for call in itertools.islice(read_calls(recorded), 20))
    assert (result.events, result.blocks, result.identical) == (20, made, made)


def test_percentages_are_cut_so_100_means_every_block() -> None:
    def result(identical: int, blocks: int) -> FidelityResult:
        return FidelityResult("t", None, 1, 1, BASE, "header", blocks, identical)

    assert f"{result(999_999, 1_000_000).percent_identical:.3f}" == "99.999"
    assert f"{result(1_000_000, 1_000_000).percent_identical:.3f}" == "100.000"
    assert f"{result(2, 3).percent_identical:.3f}" == "66.666"


# ============================================================ bad input
def test_bad_input_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        fidelity(tmp_path / "missing.trace")
    mapped = tmp_path / "mapped.trace"
    mapped.write_text("0 m 200000 0x7f0000001010\n0 f 0x7f0000001010\n")
    with pytest.raises(FidelityError, match="no heap block"):
        fidelity(mapped)
    frees_only = tmp_path / "failed.trace"
    frees_only.write_text("# sbrk-base 0x1000\n0 m 50 0x0\n")
    with pytest.raises(FidelityError, match="returns no block"):
        fidelity(frees_only)
    bad_base = tmp_path / "bad-base.trace"
    bad_base.write_text("# sbrk-base nowhere\n0 m 50 0x10\n")
    with pytest.raises(FidelityError, match="not a number"):
        fidelity(bad_base)
    good = tmp_path / "good.trace"
    good.write_text("0 m 50 0x50002a0\n")
    assert fidelity(good).blocks == 1
    with pytest.raises(FidelityError, match="policy='no-such-policy'"):
        fidelity(good, policy="no-such-policy")


def test_the_command_line_measures_and_reports(hand: Path, tmp_path: Path) -> None:
    recorded = tmp_path / "moved.trace"
    _as_recorded(hand, recorded, {_seq_of(hand, "main", nth=2): lambda a: a + 0x40})
    ok = run_module("stress", "replay", str(recorded), "--fidelity", "--events", "40")
    assert ok.returncode == 0, ok.stderr  # divergent, and still a measurement
    assert "first divergent block: event" in ok.stdout and "40 events" in ok.stdout
    missing = run_module("stress", "replay", str(tmp_path / "none.trace"), "--fidelity")
    assert missing.returncode == 2 and "cannot read trace" in missing.stderr
    alone = run_module("stress", "replay", str(recorded), "--policy", "glibc")
    assert alone.returncode == 2 and "go with --fidelity" in alone.stderr
    assert "Traceback" not in missing.stderr + alone.stderr
