"""Reports: a table for the terminal, JSON for machines, PNG plots for people.

Locking: none; reports are built after the runs finish.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .metrics import RunResult

__all__ = ["plot", "table", "to_json"]


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
        frag = f"{r.fragmentation:.2f}" if r.fragmentation else "-"
        lines.append(
            f"| {r.workload} | {r.allocator} | {r.threads} | {r.ops_per_s:,.0f}"
            f" | {r.p50_ns:,.0f} | {r.p99_ns:,.0f} | {r.p999_ns:,.0f}"
            f" | {_mib(r.peak_live)} | {_mib(r.peak_footprint)} | {frag} | {_mib(r.peak_rss)} |"
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
        if r.workload == busiest.workload and r.threads == busiest.threads and r.timeline:
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
