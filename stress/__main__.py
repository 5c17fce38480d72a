"""``python -m stress``: drive allocators hard and report what happened.

Commands (``python -m stress COMMAND --help`` for each):

  campaign   (the default) workloads x allocators x thread counts, then the
             shipped traces replayed through arenas, glibc via ctypes (speed),
             and natively through glibc and any preloadable allocator
             (footprint); tables, and optionally JSON and PNG plots
  list       the workloads, allocators and shipped traces
  run        one workload on chosen allocators and thread counts
  record     record a program's malloc calls:  record -o FILE -- COMMAND...
  replay     replay a trace through an allocator (and glibc, for comparison);
             with --fidelity, whether arenas puts every block where glibc did
  native     replay a trace in C through glibc or a preloaded allocator; with
             --offsets OUT, where glibc put each block (heap and offset)
  synth      write a synthetic trace (e.g. a million events, to test the tools at scale)
  fastpath   the fast-path benchmark (arenas vs glibc via ctypes, per call)
  scaling    throughput at 1..16 threads, many arenas against one, GIL and free-threaded
  binding    how the hot path is bound decides whether threads scale (3.13t)
  instructions  machine instructions per call, arenas against glibc (valgrind)
  slabmodel  what an idealized slab allocator's footprint would be on the churn loop
  fidelity   the glibc policy on traces: blocks placed where glibc did, and replay time
  where      where arenas' memory goes at a trace's live peak (rounding, slabs, caches, top)

Bad arguments and unreadable traces print one line and exit with code 2;
anything else that goes wrong is a bug, and ends in a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from arenas.cliargs import needs, writable_dir, writable_file

from . import binding, fastpath, instructions, scaling, slabmodel, where
from . import fidelity as fidelity_table
from .adapters import ADAPTERS
from .fidelity import FidelityError, fidelity
from .metrics import RunResult
from .native import (
    NativeResult,
    NativeUnavailable,
    native_offsets,
    native_replay,
    preloadable,
)
from .record import RecordError, record
from .report import (
    GLIBC_FOOTPRINT_NOTE,
    TraceRow,
    arena_distribution,
    plot,
    plot_traces,
    summary,
    table,
    to_json,
    trace_summary,
    trace_table,
)
from .trace import TraceError, replay, synthesize
from .workloads import WORKLOADS, run_workload

TRACES = Path(__file__).parent / "traces"
DEFAULT_ALLOCATORS = list(ADAPTERS)


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


# A command's arguments (those after its name) -> its exit code.
Handler = Callable[[list[str]], int]


_quarters_shown: dict[int, int] = {}  # total -> quarters already logged


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty():  # a log file: a line each time a quarter is passed, no bar
        quarter = 4 * done // max(total, 1)
        if quarter > _quarters_shown.get(total, -1):
            _quarters_shown[total] = quarter
            print(f"{done}/{total} {label}", file=sys.stderr, flush=True)
        return
    width = 30
    filled = width * done // total
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}",
        end="" if done < total else "\n",
        file=sys.stderr,
        flush=True,
    )


def _csv(text: str, known: Sequence[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in known]
    if bad or not items:
        raise UsageError(
            f"unknown {what} {', '.join(bad) or repr(text)}; known: {', '.join(known)}"
        )
    return items


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # (so that nan fails too)
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _threads(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--threads needs comma-separated integers, not {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 256:
        raise UsageError("thread counts must be between 1 and 256")
    return counts


def _runs(
    workloads: list[str], allocators: list[str], threads: list[int], scale: float
) -> list[RunResult]:
    total = len(workloads) * len(allocators) * len(threads)
    results: list[RunResult] = []
    done = 0
    for wl in workloads:
        for n in threads:
            for alloc in allocators:
                _progress(done, total, f"{wl} / {alloc} / {n} threads")
                results.append(run_workload(wl, alloc, n, scale))
                done += 1
    _progress(total, total, "done")
    return results


def _emit(results: list[RunResult], args: argparse.Namespace) -> None:
    print(table(results))
    if any(r.allocator == "glibc" for r in results):
        print(GLIBC_FOOTPRINT_NOTE)
    spread = arena_distribution(results)
    if spread:
        print("\nHow the arenas allocators spread over their arenas:")
        print(spread)
    if any(r.allocator == "glibc" for r in results):
        print()
        print(summary(results))
    if args.json:
        to_json(results, args.json)
        print(f"\nJSON: {args.json}")
    if args.plots:
        for path in plot(results, args.plots):
            print(f"plot: {path}")


# ------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    print("workloads:  " + ", ".join(WORKLOADS))
    print("allocators: " + ", ".join(ADAPTERS))
    traces = sorted(p.name for p in TRACES.glob("*.trace*"))
    print("traces:     " + (", ".join(traces) or "(none)"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    workloads = _csv(args.workload, list(WORKLOADS), "workload")
    allocators = _csv(args.allocator, list(ADAPTERS), "allocator")
    _emit(_runs(workloads, allocators, _threads(args.threads), args.scale), args)
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    scale = 0.05 if args.quick else args.scale
    threads = _threads(args.threads)  # checked even when --quick replaces it
    if args.quick:
        threads = [1, 2]
    started = time.perf_counter()
    results = _runs(list(WORKLOADS), DEFAULT_ALLOCATORS, threads, scale)
    _emit(results, args)
    traces = sorted(TRACES.glob("*.trace*"))
    if traces:
        native = ["glibc", *preloadable()]
        rows: list[TraceRow] = []
        missing = ""
        for path in traces[:1] if args.quick else traces:
            ours, plan, _ = replay(path, "arenas", paced=True)
            theirs, _, _ = replay(path, "glibc", paced=True)  # for its speed only
            row = TraceRow(
                path.name,
                plan.events,
                len(plan.threads),
                ours.ops_per_s,
                theirs.ops_per_s,
                ours.fragmentation,
            )
            for name in native:
                try:
                    result = native_replay(path, name)
                except NativeUnavailable as exc:
                    missing = str(exc).splitlines()[0]
                    row.native_fragmentation[name] = None
                    continue
                row.native_fragmentation[name] = result.fragmentation
                if name == "glibc":
                    row.glibc_native_ns_per_call = result.ns_per_call
            rows.append(row)
        print(
            "\nShipped traces, replayed in their recorded global order (paced);"
            " fragmentation = footprint / live at the live peak.\n"
            "Speed: arenas through its Python API, glibc-ctypes through ctypes, in the"
            " same Python loop (every block stamped and checked).\n"
            "Native: the trace replayed in C (python -m stress native); glibc's footprint"
            " read by mallinfo2, a preloaded allocator's as the growth of resident"
            " anonymous memory."
        )
        print(trace_table(rows, native))
        print(trace_summary(rows))
        if missing:
            print(f"native columns empty: {missing}")
        if args.plots:
            print(f"plot: {plot_traces(rows, args.plots)}")
    print(f"\ncampaign took {time.perf_counter() - started:.0f} s")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        rec = record(args.output, command)
    except RecordError as exc:
        raise UsageError(str(exc)) from None
    print(f"{rec.path}: {rec.events:,} events, {rec.threads} threads (exit code {rec.exit_code})")
    for other in rec.others:
        print(f"  another process: {other}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if args.fidelity:
        return _fidelity(args)
    if args.policy is not None or args.events is not None:
        raise UsageError("--policy and --events go with --fidelity")
    allocator = _csv(args.allocator, list(ADAPTERS), "allocator")[0]
    result, plan, left = replay(
        args.trace,
        allocator,
        progress=lambda done, total: _progress(done, total, "events"),
        paced=args.paced,
    )
    if left != plan.live_bytes_at_end:
        raise RuntimeError(
            f"accounting mismatch: {left} bytes left live, trace says {plan.live_bytes_at_end}"
        )
    if args.json == "-":
        print(json.dumps({**asdict(result), "timeline": [], "events": plan.events}))
        return 0
    print(
        f"{Path(args.trace).name} through {allocator}: {plan.events:,} events in"
        f" {len(plan.threads)} threads, {result.ops_per_s:,.0f} ops/s; peak live"
        f" {result.peak_live:,} B, footprint there {result.fragmentation:.2f}x;"
        f" {len(plan.live_at_end)} blocks ({left:,} B) left live by the trace, as it says"
    )
    if args.compare_glibc and allocator != "glibc":
        theirs, _, _ = replay(args.trace, "glibc", paced=args.paced)
        print(
            f"glibc called from Python (ctypes, the same loop): {theirs.ops_per_s:,.0f} ops/s"
            f" ({allocator} / glibc-ctypes = {result.ops_per_s / theirs.ops_per_s:.2f})"
        )
        try:
            print(_native_line(native_replay(args.trace, "glibc")))
        except NativeUnavailable as exc:
            print(f"glibc natively: not measured, {str(exc).splitlines()[0]}")
    if args.json:
        to_json([result], args.json)
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    if args.allocator != "arenas" or args.compare_glibc or args.paced:
        raise UsageError("--fidelity replays through arenas, paced; it takes --policy and --events")
    try:
        result = fidelity(
            args.trace,
            policy=args.policy,
            events=args.events,
            progress=lambda done, total: _progress(done, total, "events"),
        )
    except FidelityError as exc:
        raise UsageError(str(exc)) from None
    if args.json == "-":
        print(json.dumps({**asdict(result), "percent_identical": result.percent_identical}))
        return 0
    print(result.report())
    if args.json:
        Path(args.json).write_text(
            json.dumps({**asdict(result), "percent_identical": result.percent_identical}) + "\n"
        )
    return 0  # a divergent replay is a measurement, not a failure


def _native_line(result: NativeResult) -> str:
    return (
        f"{result.allocator} natively (paced, in C): footprint {result.fragmentation:.2f}x live"
        f" at the live peak ({result.footprint_at_peak:,} B for {result.peak_live:,} B,"
        f" {result.footprint_method}), {result.ns_per_call:,.1f} ns per call"
    )


def cmd_native(args: argparse.Namespace) -> int:
    known = ["glibc", *preloadable()]
    allocators = _csv(args.allocator, known, "allocator (installed here)")
    if args.offsets:
        if allocators != ["glibc"]:
            raise UsageError("--offsets reads glibc's chunk headers: --allocator glibc only")
        return _native_offsets(args)
    try:
        results = [native_replay(args.trace, name) for name in allocators]
    except NativeUnavailable as exc:
        raise UsageError(str(exc)) from None
    if args.json == "-":
        for result in results:
            print(json.dumps({**asdict(result), "fragmentation": result.fragmentation}))
        return 0
    first = results[0]
    print(f"{Path(args.trace).name}: {first.events:,} events in {first.threads} threads")
    for result in results:
        print(_native_line(result))
    return 0


def _native_offsets(args: argparse.Namespace) -> int:
    try:
        found = native_offsets(args.trace)  # GLIBC_TUNABLES and MALLOC_* pass through
    except NativeUnavailable as exc:
        raise UsageError(str(exc)) from None
    if args.offsets == "-":
        print(found.text(), end="")
        return 0
    Path(args.offsets).write_text(found.text())
    if args.json == "-":
        result = found.result
        print(json.dumps({**asdict(result), "fragmentation": result.fragmentation}))
        return 0
    print(
        f"{Path(args.trace).name}: {found.result.events:,} events in {found.result.threads} threads"
    )
    print(_native_line(found.result))
    print(f"where glibc put each of {len(found.placements):,} blocks: {args.offsets}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    if args.events < 1 or not 1 <= args.threads <= 256:
        raise UsageError("--events must be >= 1 and --threads 1..256")
    n = synthesize(args.output, args.events, args.threads, args.seed)
    print(f"{args.output}: {n:,} events, {args.threads} threads")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("list", help="workloads, allocators, traces")

    def outputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--json", metavar="FILE", type=writable_file, help="write the results as JSON"
        )
        sp.add_argument(
            "--plots", metavar="DIR", type=writable_dir, help="write PNG plots into DIR"
        )

    run = sub.add_parser("run", help="one workload (or a comma list)")
    run.add_argument("workload")
    run.add_argument("--allocator", default=",".join(DEFAULT_ALLOCATORS))
    run.add_argument("--threads", default="1,4")
    run.add_argument("--scale", type=_positive, default=1.0)
    outputs(run)

    camp = sub.add_parser("campaign", help="the default campaign (about a minute)")
    camp.add_argument("--threads", default="1,4")
    camp.add_argument("--scale", type=_positive, default=4.0)
    camp.add_argument("--quick", action="store_true", help="a tiny version, for tests")
    outputs(camp)

    rec = sub.add_parser("record", help="record -o FILE -- COMMAND...")
    rec.add_argument("-o", "--output", required=True, type=writable_file)
    rec.add_argument("command", nargs=argparse.REMAINDER)

    rep = sub.add_parser("replay", help="replay a trace")
    rep.add_argument("trace")
    rep.add_argument("--allocator", default="arenas")
    rep.add_argument("--compare-glibc", action="store_true")
    rep.add_argument(
        "--paced",
        action="store_true",
        help="keep the trace's global order across threads (same interleaving for every allocator)",
    )
    rep.add_argument(
        "--json",
        metavar="FILE",
        type=lambda text: text if text == "-" else writable_file(text),
        help="FILE, or - for one JSON line on stdout",
    )
    rep.add_argument(
        "--fidelity",
        action="store_true",
        help="compare every block's placement (heap and offset) with the recorded one",
    )
    rep.add_argument(
        "--policy", metavar="NAME", help="with --fidelity: arenas.Allocator(policy=NAME)"
    )
    rep.add_argument(
        "--events", metavar="N", type=int, help="with --fidelity: replay the first N events only"
    )

    nat = sub.add_parser("native", help="replay a trace in C (glibc, jemalloc, ...)")
    nat.add_argument("trace")
    nat.add_argument(
        "--allocator",
        default="glibc",
        help="glibc, or any of jemalloc, tcmalloc, mimalloc installed here (a comma list)",
    )
    nat.add_argument("--json", choices=["-"], help="- for one JSON line per allocator")
    nat.add_argument(
        "--offsets",
        metavar="OUT",
        type=lambda text: text if text == "-" else writable_file(text),
        help="write where glibc put each block returned (heap, offset; see stress/native.py)"
        " to OUT, or - for stdout",
    )

    syn = sub.add_parser("synth", help="write a synthetic trace")
    syn.add_argument("-o", "--output", required=True, type=writable_file)
    syn.add_argument("--events", type=int, default=1_000_000)
    syn.add_argument("--threads", type=int, default=4)
    syn.add_argument("--seed", type=int, default=7)

    sub.add_parser("fastpath", help="the fast-path benchmark", add_help=False)
    sub.add_parser("scaling", help="arena scaling benchmark", add_help=False)
    sub.add_parser("binding", help="hot-path bindings under threads", add_help=False)
    sub.add_parser("instructions", help="instructions per call (valgrind)", add_help=False)
    sub.add_parser("slabmodel", help="the footprint floor of any slab allocator", add_help=False)
    sub.add_parser("where", help="where arenas' memory goes at a trace's live peak", add_help=False)
    sub.add_parser(
        "fidelity", help="the glibc policy's fidelity and replay time, per trace", add_help=False
    )
    return p


def _parsed(name: str, command: Callable[[argparse.Namespace], int]) -> Handler:
    """A command whose arguments :func:`parser` reads (the benchmarks read their own)."""

    def handle(rest: list[str]) -> int:
        p = parser()
        args = p.parse_args([name, *rest])
        needs(p, "matplotlib", {"--plots": getattr(args, "plots", None)})
        return command(args)

    return handle


COMMANDS: dict[str, Handler] = {
    "campaign": _parsed("campaign", cmd_campaign),
    "list": _parsed("list", cmd_list),
    "run": _parsed("run", cmd_run),
    "record": _parsed("record", cmd_record),
    "replay": _parsed("replay", cmd_replay),
    "native": _parsed("native", cmd_native),
    "synth": _parsed("synth", cmd_synth),
    "fastpath": fastpath.main,
    "scaling": scaling.main,
    "binding": binding.main,
    "instructions": instructions.main,
    "slabmodel": slabmodel.main,
    "where": where.main,
    "fidelity": fidelity_table.main,
}


def main(argv: list[str]) -> int:
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["campaign", *argv]  # options alone: the default campaign's
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser().parse_args(argv)  # --help, or no such command: argparse says so, and exits
    try:
        return COMMANDS[name](rest)
    except (UsageError, TraceError) as exc:
        print(f"python -m stress {name}: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # a trace (or a scale) bigger than the allocator can serve
        print(f"python -m stress {name}: out of memory: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
