"""Metrics: what a run measured, collected without slowing the run much.

* operations are counted per thread (no shared counter on the hot path);
* latency is *sampled*: every ``SAMPLE_EVERY``-th operation is timed;
* live bytes are kept per thread, and a sampler thread sums them every few
  milliseconds together with the allocator's footprint and the process's
  resident memory, giving the peaks and a timeline for the plots;
* fragmentation is footprint / live at the moment live bytes peaked.

Locking: each thread writes only its own :class:`ThreadMetrics`; the sampler
only reads them (reading an int attribute is atomic under the GIL).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["SAMPLE_EVERY", "Recorder", "RunResult", "ThreadMetrics", "rss_bytes"]

SAMPLE_EVERY = 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ThreadMetrics:
    """One thread's counters: only that thread writes them.

    ``shared``, when set, is told of every change in live bytes, for an exact
    live peak (see :meth:`Recorder.moved`).
    """

    __slots__ = ("latencies", "live", "ops", "shared")

    def __init__(self, shared: Recorder | None = None) -> None:
        self.ops = 0
        self.live = 0
        self.latencies: list[float] = []
        self.shared = shared


@dataclass
class RunResult:
    workload: str
    allocator: str
    threads: int
    seconds: float
    ops: int
    ops_per_s: float
    p50_ns: float
    p99_ns: float
    p999_ns: float
    peak_live: int
    peak_footprint: int
    fragmentation: float
    peak_rss: int
    arenas: list[dict[str, int]] | None = None
    timeline: list[tuple[float, int, int]] = field(default_factory=list)


class Recorder:
    """Per-thread metrics plus a sampler thread for live bytes, footprint and RSS."""

    def __init__(
        self, footprint: Callable[[], int], period: float = 0.005, exact_peak: bool = False
    ) -> None:
        self._footprint = footprint
        self.exact_peak = exact_peak
        self._live = 0
        self._period = period
        self.threads: list[ThreadMetrics] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self.timeline: list[tuple[float, int, int]] = []
        self.peak_live = 0
        self.footprint_at_peak = 0
        self.peak_footprint = 0
        self.peak_rss = 0
        self._t0 = 0.0

    def thread(self) -> ThreadMetrics:
        metrics = ThreadMetrics(self if self.exact_peak else None)
        with self._lock:
            self.threads.append(metrics)
        return metrics

    def __enter__(self) -> Recorder:
        self._t0 = time.perf_counter()
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self.seconds = time.perf_counter() - self._t0
        self._take()

    def moved(self, delta: int) -> None:
        """Live bytes changed by ``delta``; read the footprint at each new peak.

        A peak counts as new once it passes the last one by more than 1%, which
        bounds the footprint reads to a few thousand however long the run.
        """
        with self._lock:
            self._live += delta
            live = self._live
            if live <= self.peak_live * 1.01 or live <= self.peak_live:
                return
            self.peak_live = live
            self.footprint_at_peak = self._footprint()
            self.peak_footprint = max(self.peak_footprint, self.footprint_at_peak)

    def _take(self) -> None:
        live = sum(m.live for m in list(self.threads))
        footprint = self._footprint()
        self.timeline.append((time.perf_counter() - self._t0, live, footprint))
        if live >= self.peak_live and not self.exact_peak:
            self.peak_live = live
            self.footprint_at_peak = footprint
        self.peak_footprint = max(self.peak_footprint, footprint)
        self.peak_rss = max(self.peak_rss, rss_bytes())

    def _sample(self) -> None:
        while not self._stop.wait(self._period):
            self._take()

    def result(
        self, workload: str, allocator: str, threads: int, arenas: list[dict[str, int]] | None
    ) -> RunResult:
        ops = sum(m.ops for m in self.threads)
        lat = sorted(x for m in self.threads for x in m.latencies)

        def pct(q: float) -> float:
            return lat[min(int(q * len(lat)), len(lat) - 1)] * 1e9 if lat else 0.0

        peak_rss = max(self.peak_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return RunResult(
            workload=workload,
            allocator=allocator,
            threads=threads,
            seconds=self.seconds,
            ops=ops,
            ops_per_s=ops / self.seconds if self.seconds else 0.0,
            p50_ns=pct(0.50),
            p99_ns=pct(0.99),
            p999_ns=pct(0.999),
            peak_live=self.peak_live,
            peak_footprint=self.peak_footprint,
            fragmentation=self.footprint_at_peak / self.peak_live if self.peak_live else 0.0,
            peak_rss=peak_rss,
            arenas=arenas,
            timeline=self.timeline,
        )
