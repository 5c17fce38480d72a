"""Reports: a table for the terminal, JSON for machines, PNG plots for people.

Two kinds of run are reported: the workloads' (:class:`~stress.metrics.RunResult`,
one per workload, allocator and thread count) and the shipped traces'
(:class:`TraceRow`: arenas replayed through its Python API, glibc through
``ctypes`` for speed, and glibc and the preloadable allocators natively,
:mod:`stress.native`, for footprint).

Locking: none; reports are built after the runs finish.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .metrics import RunResult

__all__ = [
    "GLIBC_FOOTPRINT_NOTE",
    "TraceRow",
    "plot",
    "plot_traces",
    "table",
    "to_json",
    "trace_summary",
    "trace_table",
]

#: The table's note on glibc in the workloads (see :func:`table`).
GLIBC_FOOTPRINT_NOTE = (
    "glibc's footprint is not measured in the workloads: through ctypes, the"
    " interpreter's own objects share its heap. The traces below measure it natively."
)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def table(results: Sequence[RunResult]) -> str:
    """One row per run: throughput, latency percentiles, memory and fragmentation."""
    head = (
        "| workload | allocator | thr | ops/s | p50 ns | p99 ns | p99.9 ns "
        "| live MiB | footprint MiB | frag | RSS MiB |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        measured = r.peak_footprint > 0  # (not for glibc: see GLIBC_FOOTPRINT_NOTE)
        frag = f"{r.fragmentation:.2f}" if measured and r.fragmentation else "-"
        footprint = _mib(r.peak_footprint) if measured else "-"
        lines.append(
            f"| {r.workload} | {r.allocator} | {r.threads} | {r.ops_per_s:,.0f}"
            f" | {r.p50_ns:,.0f} | {r.p99_ns:,.0f} | {r.p999_ns:,.0f}"
            f" | {_mib(r.peak_live)} | {footprint} | {frag} | {_mib(r.peak_rss)} |"
        )
    return "\n".join(lines)


@dataclass
class TraceRow:
    """One shipped trace in the campaign: speeds through Python, footprints natively."""

    trace: str
    events: int
    threads: int
    arenas_ops_per_s: float  # arenas through its Python API, paced, every block checked
    glibc_ctypes_ops_per_s: float  # glibc through ctypes, in the same Python loop
    arenas_fragmentation: float  # footprint / live at the live peak
    # allocator -> footprint / live at the live peak, replayed natively; None: not measured
    native_fragmentation: dict[str, float | None] = field(default_factory=dict)
    glibc_native_ns_per_call: float | None = None

    @property
    def speed_ratio(self) -> float:
        """arenas / glibc-ctypes replay speed (0 if glibc's was not measured)."""
        if not self.glibc_ctypes_ops_per_s:
            return 0.0
        return self.arenas_ops_per_s / self.glibc_ctypes_ops_per_s


def trace_table(rows: Sequence[TraceRow], native: Sequence[str]) -> str:
    """The traces' table: speeds, then arenas' and each ``native`` allocator's fragmentation."""
    head = (
        "| trace | events | threads | arenas ops/s | glibc-ctypes ops/s | arenas / glibc-ctypes"
        " | glibc native ns/call | arenas frag |"
        + "".join(f" {name} native frag |" for name in native)
    )
    lines = [head, "|---|" + "---:|" * (7 + len(native))]
    for r in rows:
        ns = r.glibc_native_ns_per_call
        cells = [
            r.trace,
            f"{r.events:,}",
            str(r.threads),
            f"{r.arenas_ops_per_s:,.0f}",
            f"{r.glibc_ctypes_ops_per_s:,.0f}",
            f"{r.speed_ratio:.2f}",
            "" if ns is None else f"{ns:,.0f}",
            f"{r.arenas_fragmentation:.3f}",
        ]
        for name in native:
            frag = r.native_fragmentation.get(name)
            cells.append("" if frag is None else f"{frag:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_summary(rows: Sequence[TraceRow]) -> str:
    """Issue 15's targets, as the traces' table has them: arenas' footprint against
    glibc's native one on every trace and on average, and the replays' speed ratio."""
    pairs = [
        (r.arenas_fragmentation, glibc)
        for r in rows
        if (glibc := r.native_fragmentation.get("glibc")) and r.arenas_fragmentation
    ]
    speeds = [r.speed_ratio for r in rows if r.glibc_ctypes_ops_per_s]
    lines = []
    if pairs:
        ratios = [ours / glibc for ours, glibc in pairs]
        lines.append(
            f"footprint, arenas / glibc native: at or below glibc on"
            f" {sum(r <= 1.0 for r in ratios)} of {len(ratios)} traces;"
            f" mean {sum(ratios) / len(ratios):.3f}, worst {max(ratios):.3f}"
        )
    if speeds:
        lines.append(
            f"replay speed, arenas / glibc-ctypes: at or above 1.0 on"
            f" {sum(x >= 1.0 for x in speeds)} of {len(speeds)} traces;"
            f" from {min(speeds):.2f} to {max(speeds):.2f}"
        )
    return "\n".join(lines)


def arena_distribution(results: Sequence[RunResult]) -> str:
    """For each multi-threaded arenas run: how much each arena held at its peak."""
    lines = [
        "| workload | allocator | thr | peak MiB held, arena by arena |",
        "|---|---|---:|---|",
    ]
    for r in results:
        if r.arenas and r.threads > 1:
            cells = ", ".join(f"#{a['index']}: {_mib(a['peak'])}" for a in r.arenas)
            lines.append(f"| {r.workload} | {r.allocator} | {r.threads} | {cells} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def summary(results: Sequence[RunResult], baseline: str = "glibc") -> str:
    """Throughput of each allocator relative to ``baseline``, per workload (geometric mean)."""
    by: dict[tuple[str, int], dict[str, float]] = {}
    for r in results:
        by.setdefault((r.workload, r.threads), {})[r.allocator] = r.ops_per_s
    allocators = sorted({r.allocator for r in results})
    ratios: dict[str, list[float]] = {a: [] for a in allocators}
    for row in by.values():
        if baseline in row and row[baseline] > 0:
            for a in allocators:
                if a in row:
                    ratios[a].append(row[a] / row[baseline])
    lines = [f"| allocator | throughput / {baseline} (geometric mean over runs) |", "|---|---:|"]
    for a in allocators:
        xs = ratios[a]
        if xs:
            product = 1.0
            for x in xs:
                product *= x
            lines.append(f"| {a} | {product ** (1 / len(xs)):.2f} |")
    return "\n".join(lines)


def to_json(results: Sequence[RunResult], path: str | Path) -> None:
    payload = [asdict(r) for r in results]
    Path(path).write_text(json.dumps(payload, indent=1))


def plot(results: Sequence[RunResult], directory: str | Path) -> list[Path]:
    """Throughput against threads per allocator; live and footprint over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    workloads = sorted({r.workload for r in results})
    cols = min(4, len(workloads))
    rows = -(-len(workloads) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(workloads) :]:
        ax.set_visible(False)
    for ax, wl in zip(flat, workloads, strict=False):
        for alloc in sorted({r.allocator for r in results if r.workload == wl}):
            pts = sorted(
                (r.threads, r.ops_per_s)
                for r in results
                if (r.workload, r.allocator) == (wl, alloc)
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=alloc)
        ax.set_title(wl, fontsize=9)
        ax.set_xlabel("threads")
        ax.set_ylabel("ops/s")
    flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    busiest = max(results, key=lambda r: r.peak_live)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for r in results:
        measured = r.timeline and r.peak_footprint
        if r.workload == busiest.workload and r.threads == busiest.threads and measured:
            t = [p[0] for p in r.timeline]
            ax.plot(t, [p[2] / (1 << 20) for p in r.timeline], label=f"{r.allocator} footprint")
    if busiest.timeline:
        ax.plot(
            [p[0] for p in busiest.timeline],
            [p[1] / (1 << 20) for p in busiest.timeline],
            "k--",
            label="live bytes",
        )
    ax.set_title(f"{busiest.workload}, {busiest.threads} threads: memory over time", fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "memory.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)
    return written


def plot_traces(rows: Sequence[TraceRow], directory: str | Path) -> Path:
    """Footprint / live at the live peak, per trace: arenas and each native allocator
    side by side (``traces.png``); an allocator not measured has no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["arenas", *dict.fromkeys(n for r in rows for n in r.native_fragmentation)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 3.4))
    for k, name in enumerate(names):
        xs: list[float] = []
        heights: list[float] = []
        for i, r in enumerate(rows):
            value = r.arenas_fragmentation if name == "arenas" else r.native_fragmentation[name]
            if value is not None:
                xs.append(i + (k - (len(names) - 1) / 2) * width)
                heights.append(value)
        label = name if name == "arenas" else f"{name} (native)"
        ax.bar(xs, heights, width, label=label)
    ax.axhline(1.0, color="k", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.trace.split(".trace")[0] for r in rows], fontsize=8)
    ax.set_ylabel("footprint / live at the live peak")
    ax.set_title("Shipped traces, paced: what each allocator holds for the live bytes", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(directory) / "traces.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
