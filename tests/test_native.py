"""The native replayer (stress/native.py): exact counts, its own memory kept out, bad traces.

Every test needs the machine's C compiler and is skipped without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_module

from arenas.trace import TraceError, parse
from stress.fidelity import fidelity
from stress.native import (
    MMAPPED,
    OFFSETS_HEADER,
    NativeUnavailable,
    Placement,
    native_offsets,
    native_replay,
    preloadable,
    replayer,
)
from stress.report import TraceRow, trace_table

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
    reason="no C compiler",
)

ROOT = Path(__file__).resolve().parent.parent
TRACES = sorted((ROOT / "stress" / "traces").glob("*.trace.gz"))
GIT_LOG = ROOT / "stress" / "traces" / "git-log.trace.gz"  # 2 MB live at the peak
SORT = ROOT / "stress" / "traces" / "sort-numbers.trace.gz"  # the smallest
PIGZ = ROOT / "stress" / "traces" / "pigz.trace.gz"  # 6 threads, 1,452 events
PAGE = os.sysconf("SC_PAGESIZE")
NO_PAD = {"GLIBC_TUNABLES": "glibc.malloc.top_pad=0:glibc.malloc.trim_threshold=0"}

# Live bytes after each line: 100, 300, 200, 4200, 4400, 4600 (the peak), 4200, 4200,
# 4200 (a failed malloc: no change), 4200 (a failed realloc: no call).
ONE_THREAD = """\
# a comment, then a blank line

0 m 100 0x1000
0 c 10 20 0x2000
0 f 0x1000
0 a 64 4000 0x3000
0 r 0 200 0x4000
0 r 0x2000 400 0x5000
0 r 0x5000 0 0
0 f 0x4000
0 m 50 0
0 r 0x3000 9000 0
"""

# Three threads; blocks freed by other threads than made them.  Live: 1000, 3000,
# 2000, 2500, 7500 (the peak), 6500, 1500, 1000.
THREE_THREADS = """\
0 m 1000 0x10
1 m 2000 0x20
2 f 0x10
1 m 500 0x30
2 m 5000 0x40
0 f 0x20
1 f 0x40
2 f 0x30
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_one_thread_counts_are_exact(tmp_path: Path) -> None:
    trace = write(tmp_path, "one.trace", ONE_THREAD)
    result = native_replay(trace)
    plan = parse(trace)
    assert (result.events, result.threads, result.peak_live) == (10, 1, 4600)
    assert (plan.events, len(plan.threads), plan.peak_live) == (10, 1, 4600)
    assert result.calls == 8  # the failed malloc and realloc call nothing
    assert result.footprint_method in ("mallinfo2", "mallinfo")
    assert result.footprint_at_peak >= result.peak_live > 0
    assert result.fragmentation == result.footprint_at_peak / result.peak_live
    assert result.ns_per_call > 0 and result.peak_rss > 0


def test_threads_are_replayed_in_the_global_order(tmp_path: Path) -> None:
    trace = write(tmp_path, "three.trace", THREE_THREADS)
    result = native_replay(trace)
    assert (result.events, result.threads, result.peak_live, result.calls) == (8, 3, 7500, 8)
    assert result.footprint_at_peak >= result.peak_live


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.name)
def test_shipped_traces_resolve_as_parse_does(trace: Path) -> None:
    plan = parse(trace)
    result = native_replay(trace)
    assert (result.events, result.threads, result.peak_live) == (
        plan.events,
        len(plan.threads),
        plan.peak_live,
    )
    assert result.footprint_at_peak >= result.peak_live


def test_the_replayers_own_memory_is_not_in_the_footprint(tmp_path: Path) -> None:
    # 20,000 calls with one 16-byte block live at a time, then a 32-byte block: the
    # peak is the last event.  Had the replayer's tables (about 2 MB for this trace)
    # been malloc'd, or their pages touched during the replay, they would show here.
    lines = [
        f"0 m 16 {0x1000 + 16 * (i % 7):#x}\n0 f {0x1000 + 16 * (i % 7):#x}\n"
        for i in range(10_000)
    ]
    trace = write(tmp_path, "tiny.trace", "".join(lines) + "0 m 32 0x9000\n")
    result = native_replay(trace, env=NO_PAD)
    assert result.peak_live == 32
    assert 32 <= result.footprint_at_peak <= 2 * PAGE  # one heap page, nothing else
    assert result.anonymous_growth_at_peak <= 16 * PAGE
    default = native_replay(trace)  # glibc's own minimum heap: 128 KiB of top pad and a page
    assert default.footprint_at_peak <= 128 * 1024 + 2 * PAGE


def test_the_churn_sampling_reads_after_the_same_steps(tmp_path: Path) -> None:
    from stress.fastpath import churn_calls, footprint, glibc_footprint_ratio

    assert [c.op for c in churn_calls(3, 2, seed=1)] == ["m", "m", "f", "m", "f", "m", "f", "m"]
    ours = footprint(5000, 300, seed=3)
    theirs = glibc_footprint_ratio(5000, 300, seed=3)
    assert 1.0 <= theirs < 2.0  # both over the same peak live bytes
    assert (
        ours.peak_live == native_replay(write_churn(tmp_path, 5000, 300, 3), env=NO_PAD).peak_live
    )


def write_churn(tmp_path: Path, steps: int, live: int, seed: int) -> Path:
    from arenas.trace import write_calls
    from stress.fastpath import churn_calls

    path = tmp_path / "churn.trace"
    write_calls(path, churn_calls(steps, live, seed))
    return path


BAD = [
    ("0 m 16 0x10\nhello\n", 2, "not a trace line: 'hello'"),
    ("0\n", 1, "not a trace line: '0'"),
    ("0 q 1 2\n", 1, "malformed event: '0 q 1 2'"),
    ("0 m 1\n", 1, "malformed event: '0 m 1'"),
    ("0 m -1 0x10\n", 1, "malformed event: '0 m -1 0x10'"),
    ("0 m 99999999999999999999999 0x10\n", 1, "a number beyond 64 bits: "),
    ("0 m 1 0x10\n1 m 2 0x10\n", 2, "address 0x10 allocated twice without a free"),
    ("0 m 1 0x10\n0 f 0x20\n", 2, "free of 0x20, which is not live in the trace"),
    ("0 r 0x30 5 0x40\n", 1, "realloc of 0x30, which is not live in the trace"),
    ("0 m 010 0x10\n", 1, "not a trace line: '0 m 010 0x10'"),
    ("0 m 1 0x10\r0 f 0x10\r\n0 f 0x10\n", 3, "free of 0x10, which is not live"),
]


@pytest.mark.parametrize(("text", "line", "says"), BAD)
def test_the_binary_rejects_what_parse_rejects(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    path = write(tmp_path, "bad.trace", text)
    with pytest.raises(TraceError) as parsed:
        parse(path)
    proc = subprocess.run(
        [str(replayer()), str(path), "heap"], input=text.encode(), capture_output=True
    )
    message = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b""
    assert message == f"{path}:{line}: {says}" + message[len(f"{path}:{line}: {says}") :]
    assert message.count("\n") == 1 and message.strip() == str(parsed.value)


def test_the_binary_rejects_bytes_that_are_not_ascii() -> None:
    proc = subprocess.run(
        [str(replayer()), "t.trace", "heap"], input=b"0 m 1 0x10\n\xe9\n", capture_output=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.decode() == "cannot read trace 't.trace': byte 0xe9 at offset 11 is not ASCII\n"
    )


def test_a_bad_trace_through_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.trace", "0 m 1 0x10\n0 f 0x20\n")
    proc = run_module("stress", "native", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"python -m stress native: {path}:2: free of 0x20, which is not live in the trace\n"
    )
    good = run_module("stress", "native", str(SORT), "--allocator", "glibc")
    assert good.returncode == 0, good.stderr
    assert "glibc natively (paced, in C): footprint 1." in good.stdout


def test_no_compiler_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(NativeUnavailable, match="cannot run the C compiler"):
        native_replay(SORT)
    env = {**os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "stress", "native", str(SORT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 2 and "cannot run the C compiler" in proc.stderr


def test_the_traces_table_leaves_an_unmeasured_column_empty() -> None:
    row = TraceRow("t.trace", 10, 1, 100.0, 50.0, 1.5, {"glibc": None, "jemalloc": 1.25})
    assert trace_table([row], ["glibc", "jemalloc"]).splitlines()[-1] == (
        "| t.trace | 10 | 1 | 100 | 50 | 2.00 |  | 1.500 |  | 1.250 |"
    )


@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc", "mimalloc"])
def test_preloaded_allocators(tmp_path: Path, allocator: str) -> None:
    if allocator not in preloadable():
        pytest.skip(f"{allocator} is not installed")
    trace = GIT_LOG
    result = native_replay(trace, allocator)
    assert result.footprint_method == "anonymous-rss"
    assert result.footprint_at_peak == result.anonymous_growth_at_peak
    assert result.peak_live == parse(trace).peak_live
    assert result.footprint_at_peak >= result.peak_live  # every byte was written
    threaded = native_replay(write(tmp_path, "three.trace", THREE_THREADS), allocator)
    assert (threaded.threads, threaded.peak_live) == (3, 7500)


# Thread 1 ends after event 2, before thread 2 starts: glibc puts its arena on the free
# list, and thread 2's first call takes it.  Live: 16, 116, 16, 216 (the peak), 200, 0.
THREAD_ENDS = """\
0 m 16 0x5000010
1 m 100 0x5000030
1 f 0x5000030
2 m 200 0x50000a0
0 f 0x5000010
2 f 0x50000a0
"""


def test_a_thread_ends_before_the_next_event(tmp_path: Path) -> None:
    trace = write(tmp_path, "ends.trace", THREAD_ENDS)
    ended = {native_replay(trace).footprint_at_peak for _ in range(5)}
    # the offsets build keeps thread 1 alive: thread 2 makes a third arena
    alive = native_offsets(trace)
    assert [p.heap for p in alive.placements] == [0, 1, 2]
    assert len(ended) == 1 and ended.pop() < alive.result.footprint_at_peak
    # (when thread 1 ended on its own, after posting thread 2's turn, about one run in
    # four read the offsets build's figure)
    assert native_replay(trace).footprint_at_peak == (
        fidelity(trace, policy="glibc").peak_footprint
    )


def test_the_replayers_own_threads_are_not_in_the_footprint(tmp_path: Path) -> None:
    # pthread_create callocs each thread's dtv before the first event; served by glibc,
    # 63 of them took 5 pages of its brk heap.  The offsets build keeps them out (see
    # test_offsets_replay_the_trace_and_keep_the_replayers_own_calls_out): so does the
    # plain one.  No thread ends before the peak, the last malloc.
    lines = [f"{t} m 16 {0x5000000 + 0x100 * t:#x}\n" for t in range(1, 64)]
    lines += ["0 m 16 0x4000000\n"] + [f"{t} f {0x5000000 + 0x100 * t:#x}\n" for t in range(1, 64)]
    trace = write(tmp_path, "many.trace", "".join(lines))
    plain = native_replay(trace, env=NO_PAD)
    assert (plain.threads, plain.peak_live) == (64, 64 * 16)
    assert plain.footprint_at_peak == native_offsets(trace, NO_PAD).result.footprint_at_peak


def test_pigz_footprint_is_the_glibc_policys() -> None:
    # 6 threads, which end (in both replays) right after their last events, in the
    # paced order: the footprint at the live peak repeats, and the glibc policy, which
    # places every block of this trace where glibc did, holds the same bytes there.
    footprints = {native_replay(PIGZ).footprint_at_peak for _ in range(3)}
    assert len(footprints) == 1
    assert footprints.pop() == fidelity(PIGZ, policy="glibc").peak_footprint


def test_offsets_replay_the_trace_and_keep_the_replayers_own_calls_out(tmp_path: Path) -> None:
    trace = write(tmp_path, "three.trace", THREE_THREADS)
    found = native_offsets(trace)
    plain = native_replay(trace)
    assert (found.result.events, found.result.threads, found.result.peak_live) == (8, 3, 7500)
    assert found.result.calls == plain.calls
    # pthread_create's calloc of each new thread's dtv, served by the replayer itself
    assert found.replayer_allocations == 2
    placed = [(p.event, p.line, p.tid, p.op) for p in found.placements]
    assert placed == [(0, 1, 0, "m"), (1, 2, 1, "m"), (3, 4, 1, "m"), (4, 5, 2, "m")]
    assert [p.heap for p in found.placements] == [0, 1, 1, 2]  # an arena per thread
    assert all(p.offset % 16 == 0 and p.chunk >= 32 for p in found.placements)
    assert found.text().splitlines() == [OFFSETS_HEADER, *(p.text() for p in found.placements)]
    assert [Placement.parse(p.text()) for p in found.placements] == found.placements


def test_offsets_take_malloc_settings_from_env_or_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = write(tmp_path, "three.trace", THREE_THREADS)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert {p.heap for p in native_offsets(trace).placements} == {0}  # one arena for all
    assert {p.heap for p in native_offsets(trace, inherit_malloc_env=False).placements} == {0, 1, 2}
    one = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    assert {p.heap for p in native_offsets(trace, one, inherit_malloc_env=False).placements} == {0}
    mapped = write(tmp_path, "big.trace", "0 m 24 0x1\n0 m 300000 0x2\n")
    assert [p.heap for p in native_offsets(mapped).placements] == [0, MMAPPED]


def test_offsets_through_the_command_line(tmp_path: Path) -> None:
    trace = write(tmp_path, "three.trace", THREE_THREADS)
    out = tmp_path / "offsets.txt"
    proc = run_module("stress", "native", str(trace), "--offsets", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "glibc natively (paced, in C)" in proc.stdout and f"4 blocks: {out}" in proc.stdout
    assert out.read_text().splitlines()[0] == OFFSETS_HEADER
    assert len(out.read_text().splitlines()) == 5
    listed = run_module("stress", "native", str(trace), "--offsets", "-")
    assert listed.returncode == 0 and listed.stdout == out.read_text()
    if "jemalloc" in preloadable():
        proc = run_module(
            "stress", "native", str(trace), "--offsets", "-", "--allocator", "jemalloc"
        )
        assert proc.returncode == 2 and "--allocator glibc only" in proc.stderr
