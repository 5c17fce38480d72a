"""Issue 7: the stress suite's workloads, adapters, traces, recorder and command line."""

from __future__ import annotations

import argparse
import ast
import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import replay, run_module, run_workload

from arenas.cliargs import writable_dir, writable_file
from arenas.trace import Event, drive, parse
from stress.adapters import ADAPTERS, BytearrayAdapter
from stress.fastpath import bursts
from stress.harness import LOOPS, churn_draws, run_in_threads
from stress.slabmodel import bounds, simulate
from stress.trace import synthesize
from stress.workloads import WORKLOADS, BlockDamaged

ROOT = Path(__file__).resolve().parent.parent
TRACES = sorted((ROOT / "stress" / "traces").glob("*.trace.gz"))
GIT_LOG = ROOT / "stress" / "traces" / "git-log.trace.gz"


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_each_workload_on_each_adapter(workload: str) -> None:
    for allocator in ADAPTERS:
        threads = 1 if workload == "malloc-large" else 3
        result = run_workload(workload, allocator, threads=threads, scale=0.02)
        assert result.ops > 0 and result.ops_per_s > 0
        assert result.allocator == allocator
        if allocator.startswith("arenas"):
            assert result.arenas  # the per-arena distribution is reported


class OverlappingAdapter(BytearrayAdapter):
    """A broken allocator: every other block is the previous block again."""

    name = "broken"

    def __init__(self) -> None:
        super().__init__()
        self.last = 0
        self.count = 0

    def malloc(self, size: int) -> int:
        self.count += 1
        if self.count % 2 == 0 and self.last and len(self._live[self.last]) >= size:
            return self.last
        self.last = super().malloc(size)
        return self.last

    def free(self, addr: int) -> None:
        if addr in self._live:
            super().free(addr)


def test_a_broken_allocator_is_caught() -> None:
    with pytest.raises(BlockDamaged, match="lost its contents"):
        run_workload("glibc-simple", OverlappingAdapter(), threads=1, scale=0.05)


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.name)
def test_shipped_traces_replay_with_exact_accounting(trace: Path) -> None:
    plan = parse(trace)
    assert plan.events > 0 and plan.allocations > 0
    for allocator in ("arenas", "glibc"):
        result, plan, left = replay(trace, allocator)
        assert left == plan.live_bytes_at_end  # every block freed, or live as the trace says
        replayable = [e for events in plan.threads.values() for e in events]
        skipped = sum(1 for e in replayable if e.alloc < 0 and e.frees < 0)
        assert result.ops == len(replayable) - skipped  # every event replayed once
    assert sum(f.stat().st_size for f in TRACES) < 5 << 20


def test_a_trace_too_big_to_serve_is_one_line_and_exit_1(tmp_path: Path) -> None:
    trace = tmp_path / "huge.trace"
    trace.write_text(f"0 m {1 << 62} 0x1000\n0 f 0x1000\n")
    proc = run_cli("replay", str(trace))
    assert proc.returncode == 1
    assert "out of memory: cannot allocate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cross_thread_frees_wait_for_their_allocation(tmp_path: Path) -> None:
    trace = tmp_path / "x.trace"
    trace.write_text("0 m 100 0xa0\n1 f 0xa0\n1 m 50 0xa0\n0 r 0xa0 80 0xb0\n0 f 0xb0\n")
    _, plan, left = replay(trace, "arenas")
    assert left == 0 and plan.allocations == 3 and len(plan.threads) == 2


def test_a_paced_replay_keeps_the_global_order(tmp_path: Path) -> None:
    trace = tmp_path / "p.trace"
    synthesize(trace, 3000, threads=4, seed=3)
    plan = parse(trace)
    assert sorted(ev.seq for events in plan.threads.values() for ev in events) == list(
        range(plan.events)
    )
    for paced, check in ((True, True), (False, False)):
        seen: list[int] = []

        def thread_step(tid: int, seen: list[int] = seen) -> Callable[[Event, Any], Any]:
            def step(ev: Event, old: Any) -> Any:
                seen.append(ev.seq)
                return ev.alloc if ev.alloc >= 0 else None

            return step

        drive(plan, thread_step, paced=paced)
        assert sorted(seen) == list(range(plan.events))
        if check:
            assert seen == list(range(plan.events))  # the file's order, exactly
    # The same interleaving, the same memory at the live peak.  (One arena: with
    # several, a thread may find the main arena's lock taken by the sampler
    # thread reading stats, and place a slab elsewhere.)
    first, _, _ = replay(trace, "arenas-1arena", paced=True)
    again, _, _ = replay(trace, "arenas-1arena", paced=True)
    assert (first.peak_live, first.fragmentation) == (again.peak_live, again.fragmentation)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("stress", *args, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "nonsense"), "unknown workload"),
        (("run", "larson", "--allocator", "jemalloc"), "unknown allocator"),
        (("run", "larson", "--threads", "x"), "comma-separated"),
        (("run", "larson", "--scale", "-1"), "argument --scale: must be positive"),
        (("campaign", "--scale", "x"), "argument --scale: not a number"),
        (("replay", "/nonexistent.trace"), "cannot read"),
        (("record", "-o", "/tmp/x.trace"), "nothing to record"),
        (("bogus",), "invalid choice"),
        (("slabmodel", "--per-doubling", "3"), "--per-doubling one of"),
        (("slabmodel", "--blocks", "0"), "--blocks >= 1"),
        (("fastpath", "-n", "10"), "-n must be at least 1000"),
        (("campaign", "--quick", "--threads", "0"), "thread counts"),
        # An output that cannot be written stops the command before its work,
        # not with a traceback after it (README.md/x: "Not a directory", as root too).
        (("run", "larson", "--json", "README.md/x.json"), "cannot write 'README.md/x.json'"),
        (("campaign", "--plots", "README.md/plots"), "cannot write into 'README.md/plots'"),
        (("replay", "stress/traces/git-log.trace.gz", "--json", "README.md/x"), "cannot write"),
        (("synth", "-o", "README.md/x"), "cannot write"),
        (("record", "-o", "README.md/x", "--", "true"), "cannot write"),
        (("fastpath", "--json", "README.md/x"), "cannot write"),
        (("scaling", "--json", "README.md/x"), "cannot write"),
        (("scaling", "--loops", "pairs,bogus"), "--loops takes some of"),
        (("scaling", "--allocators", "jemalloc"), "--allocators takes some of"),
        (("binding", "-n", "5"), "-n must be at least 1000"),
        (("instructions", "-n", "5"), "-n must be at least 1000"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args: tuple[str, ...], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "module", "name"),
    [
        (("run", "larson", "--threads", "1"), "stress.__main__", "run_workload"),
        (("fastpath", "-n", "1000"), "stress.fastpath", "run"),
    ],
)
def test_a_value_error_while_running_is_a_traceback_not_exit_2(
    args: tuple[str, ...], module: str, name: str
) -> None:
    # Exit code 2 means "your arguments": a ValueError from a running command is a bug.
    code = (
        f"import sys, {module} as target, stress.__main__ as cli\n"
        "def fail(*args, **kwargs):\n"
        "    raise ValueError('a bug')\n"
        f"target.{name} = fail\n"
        f"sys.exit(cli.main({list(args)!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode not in (0, 2)
    assert "Traceback" in proc.stderr and "ValueError: a bug" in proc.stderr


def test_no_benchmark_imports_another() -> None:
    # What two benchmarks share lives in stress/harness.py: fastpath, say, is no library.
    benchmarks = {"fastpath", "scaling", "binding", "instructions", "slabmodel"}
    for name in benchmarks:
        imported: set[str] = set()
        for node in ast.walk(ast.parse((ROOT / "stress" / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                imported.update(part for alias in node.names for part in alias.name.split("."))
            elif isinstance(node, ast.ImportFrom):
                imported.update((node.module or "").split("."))
                imported.update(alias.name for alias in node.names)
        assert not imported & (benchmarks - {name}), name


def test_output_checks_leave_no_trace(tmp_path: Path) -> None:
    existing = tmp_path / "keep.json"
    existing.write_text("data")
    assert writable_file(str(existing)) == str(existing)
    assert existing.read_text() == "data"
    new = tmp_path / "new.json"
    writable_file(str(new))
    assert not new.exists()
    plots = tmp_path / "a" / "b"
    writable_dir(str(plots))
    assert plots.is_dir() and not any(plots.iterdir())
    with pytest.raises(argparse.ArgumentTypeError, match="cannot write"):
        writable_file(str(tmp_path))


def test_cli_list_run_and_replay(tmp_path: Path) -> None:
    listing = run_cli("list")
    assert listing.returncode == 0 and "larson" in listing.stdout and "glibc" in listing.stdout
    out = tmp_path / "r.json"
    run = run_cli(
        "run",
        "larson",
        "--allocator",
        "arenas,glibc",
        "--threads",
        "1,2",
        "--scale",
        "0.02",
        "--json",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert "| larson | arenas | 2 |" in run.stdout and out.exists()
    rep = run_cli("replay", str(GIT_LOG))
    assert rep.returncode == 0 and "left live by the trace, as it says" in rep.stdout


def test_campaign_quick_with_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    proc = run_cli("campaign", "--quick", "--plots", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "throughput / glibc" in proc.stdout
    assert (tmp_path / "throughput.png").stat().st_size > 1000
    assert (tmp_path / "memory.png").exists()
    # the workloads' table leaves glibc's footprint out: in-process, it is not glibc's
    glibc_rows = [line for line in proc.stdout.splitlines() if line.startswith("| larson | glibc")]
    assert glibc_rows and all(row.split("|")[9:11] == [" - ", " - "] for row in glibc_rows)
    # the traces' table: glibc's footprint from the native replay, one column per allocator
    lines = proc.stdout.splitlines()
    head = next(line for line in lines if "glibc native frag" in line)
    row = next(
        line for line in lines if line.startswith(f"| {TRACES[0].name} |")
    )  # --quick: the first
    cells = dict(zip(head.split("|"), row.split("|"), strict=True))
    assert "glibc-ctypes ops/s" in head and "glibc native ns/call" in head
    if shutil.which("cc") or shutil.which("gcc"):
        from stress.native import native_replay, preloadable

        native = native_replay(TRACES[0])
        assert cells[" glibc native frag "].strip() == f"{native.fragmentation:.3f}"
        for name in preloadable():
            assert float(cells[f" {name} native frag "]) >= 1.0
        # the summary of issue 15's targets, from the same figures (unrounded)
        ours = float(cells[" arenas frag "])
        summary = next(line for line in lines if line.startswith("footprint, arenas / glibc"))
        mean = float(summary.split("mean ")[1].split(",")[0])
        assert abs(mean - ours / native.fragmentation) < 2e-3
        below = ours <= native.fragmentation
        assert f"at or below glibc on {int(below)} of 1 traces" in summary or abs(mean - 1) < 2e-3
        assert any(line.startswith("replay speed, arenas / glibc-ctypes:") for line in lines)
        assert (tmp_path / "traces.png").stat().st_size > 1000


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_record_a_real_program(tmp_path: Path) -> None:
    out = tmp_path / "sort.trace.gz"
    data = tmp_path / "numbers"
    data.write_text("\n".join(str(i) for i in range(2000, 0, -1)))
    proc = run_cli(
        "record", "-o", str(out), "--", "sort", "-n", str(data), "-o", str(tmp_path / "s")
    )
    assert proc.returncode == 0, proc.stderr
    with gzip.open(out, "rt") as fh:
        header, first = fh.readline().split(), fh.readline().split()
    assert header[:2] == ["#", "sbrk-base"] and int(header[2], 16) % 4096 == 0
    assert first[0] == "0" and first[1] in "mcraf"
    plan = parse(out)
    assert plan.events > 10
    _, plan, left = replay(out, "arenas")
    assert left == plan.live_bytes_at_end


def test_record_catches_every_aligned_allocator(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "aligned.c"
    src.write_text(
        "#include <malloc.h>\n#include <stdlib.h>\n"
        "int main(void) { void *p; void *q[4];"
        " q[0] = memalign(64, 100); q[1] = aligned_alloc(128, 256);"
        " posix_memalign(&p, 32, 10); q[2] = p; q[3] = valloc(10);"
        " void *r = pvalloc(5000);"
        " for (int i = 0; i < 4; i++) free(q[i]); free(r); return 0; }\n"
    )
    program = tmp_path / "aligned"
    subprocess.run([cc, "-o", str(program), str(src)], check=True)
    out = tmp_path / "aligned.trace"
    proc = run_cli("record", "-o", str(out), "--", str(program))
    assert proc.returncode == 0, proc.stderr
    aligned = [line.split() for line in out.read_text().splitlines() if line.split()[1] == "a"]
    page = os.sysconf("SC_PAGESIZE")
    assert [(int(a[2]), int(a[3])) for a in aligned] == [
        (64, 100),
        (128, 256),
        (32, 10),
        (page, 10),
        (page, -(-5000 // page) * page),
    ]
    _, plan, left = replay(out, "arenas")
    assert left == plan.live_bytes_at_end == 0


def test_synthetic_trace_replays(tmp_path: Path) -> None:
    out = tmp_path / "synth.trace.gz"
    proc = run_cli("synth", "-o", str(out), "--events", "3000", "--threads", "3")
    assert proc.returncode == 0, proc.stderr
    plan = parse(out)
    assert plan.events == 3000 and sorted(plan.threads) == [0, 1, 2]
    _, plan, left = replay(out, "arenas")
    assert left == plan.live_bytes_at_end
    assert run_cli("synth", "-o", str(out), "--events", "0").returncode == 2


def test_the_slab_model_never_beats_its_own_floor() -> None:
    from arenas.slab import CLASS_SIZES, SLAB_BLOCKS, class_sizes

    assert class_sizes() == CLASS_SIZES  # the model runs the allocator's own table
    sizes, slots = churn_draws(20_000, 1000, seed=5)
    floor = bounds(sizes, slots, CLASS_SIZES)
    assert 1.0 < floor.class_waste < floor.high_water
    for spill in (0, 2):
        # live blocks sit in slabs: the footprint is at least their class-rounded bytes
        assert simulate(sizes, slots, CLASS_SIZES, spill) >= floor.class_waste
    # a slab goes back only when all its blocks are free: big slabs pin more
    one, many = (simulate(sizes, slots, CLASS_SIZES, 0, k) for k in (1, 16))
    assert floor.class_waste <= one < many
    coarse = bounds(sizes, slots, class_sizes(1))
    assert coarse.class_waste > floor.class_waste  # fewer classes waste more per block
    own, other = SLAB_BLOCKS, 2 * SLAB_BLOCKS
    proc = run_cli(
        "slabmodel",
        "-n",
        "3000",
        "--seeds",
        "1",
        "--spill",
        "0",
        "1",
        "--blocks",
        *map(str, (own, other)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "| 4 per doubling (arenas) |" in proc.stdout
    # the allocator's own blocks per slab is the one marked
    assert f"| {own} (arenas) |" in proc.stdout
    assert f"| {other} |" in proc.stdout


def test_churn_footprints_are_at_least_the_live_bytes() -> None:
    # A footprint below the live bytes would mean the measure misses memory
    # (as reading glibc's main arena did: the interpreter's free chunks served the loop).
    from stress.fastpath import footprint, glibc_footprint_ratio

    memory = footprint(5000, 300, seed=3)
    assert 1.0 <= memory.ratio <= memory.ratio_with_top
    assert memory.peak_footprint >= memory.peak_live
    assert sum(memory.parts.values()) == memory.peak_footprint  # the parts account for it all
    if shutil.which("cc") or shutil.which("gcc"):  # glibc's is measured natively
        assert glibc_footprint_ratio(5000, 300, seed=3) >= 1.0


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_fastpath_memory_only_prints_both_footprints() -> None:
    proc = run_cli("fastpath", "-n", "3000", "--seed", "2", "--memory-only")
    assert proc.returncode == 0, proc.stderr
    ours = re.search(r"\(top chunk excluded\): ratio (\d+\.\d+)", proc.stdout)
    glibc = re.search(r"glibc natively on the same churn .*: ratio (\d+\.\d+)", proc.stdout)
    assert ours and glibc, proc.stdout
    assert float(ours.group(1)) >= 1.0 and float(glibc.group(1)) >= 1.0
    assert "blocks in thread caches" in proc.stdout


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_fastpath_runs_end_to_end_below_one_burst() -> None:
    # -n below the 10,000-block burst: one burst of n blocks, not a division by zero
    proc = run_cli("fastpath", "-n", "2000", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    ratio = re.search(r"\| bursts arenas/glibc \| (\d+\.\d+) \|", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0, proc.stdout
    ours = re.search(r"\| peak footprint / peak live \| (\d+\.\d+) \|", proc.stdout)
    theirs = re.search(r"glibc natively on the same churn .*: ratio (\d+\.\d+)", proc.stdout)
    relative = re.search(r"\| footprint ratio arenas/glibc native \| (\d+\.\d+) \|", proc.stdout)
    assert ours and theirs and relative, proc.stdout
    expected = float(ours.group(1)) / float(theirs.group(1))
    assert abs(float(relative.group(1)) - expected) < 0.01, proc.stdout


def test_handoff_frees_every_block_once_in_another_thread() -> None:
    allocated: list[int] = []
    freed: list[tuple[int, int]] = []  # (block, freeing thread)
    here = threading.get_ident()

    def malloc(size: int) -> int:
        allocated.append(size)
        return len(allocated)

    def free(block: int) -> None:
        freed.append((block, threading.get_ident()))

    sizes = list(range(16, 16 + 2500))  # two whole bursts of 1,000; the rest is dropped
    order = [3, 0, 2, 1, *range(4, 1000)]
    assert bursts(malloc, free, sizes, order, handoff=True) > 0
    assert allocated == sizes[:2000]
    assert sorted(block for block, _ in freed) == list(range(1, 2001))
    assert [block for block, _ in freed[:4]] == [4, 1, 3, 2]  # in the given order
    assert here not in {thread for _, thread in freed}


def test_threads_each_run_their_share_with_their_own_functions() -> None:
    bound: list[int] = []
    calls = {"malloc": 0}
    lock = threading.Lock()

    def bind() -> tuple[Callable[[int], int], Callable[[int], None]]:
        bound.append(threading.get_ident())
        counter = itertools.count(1)

        def malloc(size: int) -> int:
            with lock:
                calls["malloc"] += 1
            return next(counter)

        return malloc, lambda addr: None

    for loop, live in (("pairs", 0), ("churn", 1000)):
        calls["malloc"] = 0
        bound.clear()
        rate = run_in_threads(4, 8000, loop, bind, seed=1)
        assert rate > 0
        assert calls["malloc"] == 8000 + 4 * live  # the steps, and each thread's slots
        assert len(set(bound)) == len(bound) == 4  # every thread bound its own


def test_scaling_reports_every_loop_and_allocator(tmp_path: Path) -> None:
    out = tmp_path / "points.json"
    proc = run_cli("scaling", "--threads", "1,2", "-n", "2000", "--rounds", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    points = json.loads(out.read_text())["points"]
    seen = {(p["loop"], p["allocator"], p["threads"]) for p in points}
    from stress.scaling import ALLOCATORS, SKIP

    assert seen == {
        (loop, name, n)
        for loop in LOOPS
        for name in ALLOCATORS
        if (loop, name) not in SKIP
        for n in (1, 2)
    }
    assert all(p["ops_per_s"] > 0 for p in points)
    assert "| arenas / glibc-ctypes |" in proc.stdout


def test_instructions_children_run_every_loop_on_every_allocator() -> None:
    from stress import instructions

    for name in (*instructions.ALLOCATORS, "none"):
        for loop in instructions.LOOPS:
            instructions.child(name, loop, 1000)  # (callgrind counts these; here they just run)


def test_binding_variants_run_the_real_hit_path() -> None:
    from arenas import hotpath
    from stress import binding

    variants = binding._variants()
    assert variants["copy"][1][0].__code__ is hotpath.malloc.__code__
    for tls, pair in variants.values():
        assert binding.pairs_in_threads(2, 2000, tls, pair) > 0


@pytest.mark.parametrize("args", [["--plots"], ["run", "larson", "--plots"], ["scaling", "--plot"]])
def test_plots_without_matplotlib_stop_before_any_work(
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import stress.__main__ as cli
    from stress import scaling

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (as if it were not installed)
    monkeypatch.setattr(scaling, "run", lambda *_: pytest.fail("ran"))  # (and the others
    # would run for a minute, then fail on the import: the test would fail too)
    target = str(tmp_path / ("plot.png" if args[-1] == "--plot" else "plots"))
    with pytest.raises(SystemExit) as stop:
        cli.main([*args, target])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{args[-1]} needs matplotlib: pip install matplotlib" in err
    assert "Traceback" not in err


def test_fastpath_compares_earlier_runs_row_by_row(tmp_path: Path) -> None:
    from stress import fastpath

    def run_file(name: str, rate: float) -> str:
        rows: dict[str, object] = {n: {"arenas": rate} for n in fastpath.TIMED}
        rows.update(crowded=rate, threads_1=rate, threads_8=rate)
        path = tmp_path / name
        path.write_text(json.dumps(rows))
        return str(path)

    before = [run_file("b1", 100.0), run_file("b2", 120.0)]
    after = [run_file("a1", 90.0), run_file("a2", 150.0), run_file("a3", 60.0)]
    table = fastpath.compare(before, after)
    assert "| pairs/arenas | 120 | 150 | 1.250 | 0.818 |" in table  # medians 110 and 90
    assert len(table.splitlines()) == 2 + len(fastpath.TIMED) + 3
    with pytest.raises(SystemExit):
        fastpath.main(["--before", before[0]])  # --after missing


def test_where_splits_the_footprint_at_the_live_peak_into_parts() -> None:
    from stress.where import PARTS, breakdown

    trace = ROOT / "stress" / "traces" / "gcc.trace.gz"
    found = breakdown(trace)
    assert found.peak_live == parse(trace).peak_live
    assert set(found.parts) == set(PARTS) and min(found.parts.values()) >= 0
    assert found.peak_live + sum(found.parts.values()) == found.footprint  # nothing unaccounted
    assert found.parts["class rounding"] > 0 and found.parts["thread caches"] > 0
    uncached = breakdown(trace, {"tcache_count": 0})
    assert uncached.parts["thread caches"] == 0 and uncached.peak_live == found.peak_live


def test_where_reports_a_table_and_rejects_bad_tunables() -> None:
    ok = run_cli("where", str(GIT_LOG), "--tunables", "top_pad=0")
    assert ok.returncode == 0, ok.stderr
    assert "| git-log.trace.gz | 2,136,558 |" in ok.stdout
    bad = run_cli("where", str(GIT_LOG), "--tunables", "no_such=1")
    assert bad.returncode == 2 and "no_such" in bad.stderr and "Traceback" not in bad.stderr
