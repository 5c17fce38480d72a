"""Workloads: the allocation patterns of mimalloc-bench and glibc's benchmarks, scaled for Python.

Every workload writes into the bytes it gets and checks them before it frees
them: each block carries a tag in its first and last 8 bytes, unique to that
block, so an allocator that hands out overlapping blocks, or loses bytes,
fails loudly with :class:`BlockDamaged`.

======================  ==================================================================
``larson``              per-thread slots replaced at random (8..1000 bytes); each round a
                        thread hands its slots to its successor, so frees cross threads
``xmalloc``             producer threads allocate batches, consumer threads free them
``mstress``             retained and transferred blocks, rare very large ones (1..4 MiB)
``rptest``              random sizes 8..16000, half sent to another thread to free
``alloc-test``          Pareto 80/20 slot choice, sizes 5..1024
``glibc-simple``        batches of 16/32/64-byte blocks freed FIFO, then LIFO
``glibc-thread``        inverse-square sizes 4..32768 in a working set
``sh6bench``            a ring buffer per thread, FIFO and LIFO frees
``sh8bench``            sh6bench plus foreign frees: rings traded between threads
``mleak``               many short-lived threads; what they leave is freed by others
``malloc-large``        5..25 MiB blocks
======================  ==================================================================

``scale`` multiplies the number of operations (1.0: the default campaign).

Locking: each worker touches only its own blocks; blocks that move between
threads travel through ``queue.Queue`` objects or lists guarded by locks.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .adapters import Adapter, make_adapter
from .metrics import SAMPLE_EVERY, Recorder, RunResult, ThreadMetrics

__all__ = ["WORKLOADS", "BlockDamaged", "Worker", "run_workload"]

Block = tuple[int, int, bytes]  # (addr, size, tag)


class BlockDamaged(AssertionError):
    """A block did not hold the bytes written into it: the allocator is broken."""


class Worker:
    """One thread's view of a run: allocation with tags, checks and metrics."""

    _seq = 0
    _seq_lock = threading.Lock()

    def __init__(self, adapter: Adapter, metrics: ThreadMetrics, seed: int) -> None:
        self.adapter = adapter
        self.m = metrics
        self.rng = random.Random(seed)
        with Worker._seq_lock:
            Worker._seq += 1
            self._tag_base = Worker._seq << 32
        self._n = 0

    def _tag(self) -> bytes:
        self._n += 1
        return ((self._tag_base | self._n) * 0x9E3779B97F4A7C15 % (1 << 64)).to_bytes(8, "little")

    def _stamp(self, addr: int, size: int, tag: bytes) -> None:
        write = self.adapter.write
        write(addr, tag[: min(size, 8)])
        if size >= 16:
            write(addr, tag, size - 8)

    def check(self, block: Block) -> None:
        addr, size, tag = block
        read = self.adapter.read
        if read(addr, min(size, 8)) != tag[: min(size, 8)] or (
            size >= 16 and read(addr, 8, size - 8) != tag
        ):
            raise BlockDamaged(
                f"{self.adapter.name}: block {addr:#x} of {size} bytes lost its contents"
                " (overlapping blocks?)"
            )

    def _timed(self, fn: Callable[[], int]) -> int:
        m = self.m
        m.ops += 1
        if m.ops % SAMPLE_EVERY:
            return fn()
        start = time.perf_counter()
        out = fn()
        m.latencies.append(time.perf_counter() - start)
        return out

    def malloc(self, size: int) -> Block:
        adapter = self.adapter
        return self._adopt(self._timed(lambda: adapter.malloc(size)), size, "malloc")

    def memalign(self, alignment: int, size: int) -> Block:
        adapter = self.adapter
        addr = self._timed(lambda: adapter.memalign(alignment, size))
        if adapter.real_addresses and addr % alignment:
            raise BlockDamaged(f"{adapter.name}: memalign({alignment}) gave {addr:#x}")
        return self._adopt(addr, size, "memalign")

    def _adopt(self, addr: int, size: int, what: str) -> Block:
        if not addr:
            raise MemoryError(f"{self.adapter.name}: {what}({size}) failed")
        tag = self._tag()
        self._stamp(addr, size, tag)
        self._live(size)
        return (addr, size, tag)

    def _live(self, delta: int) -> None:
        m = self.m
        m.live += delta
        if m.shared is not None:
            m.shared.moved(delta)

    def free(self, block: Block) -> None:
        self.check(block)
        free = self.adapter.free
        addr = block[0]
        m = self.m
        m.ops += 1
        if m.ops % SAMPLE_EVERY:
            free(addr)
        else:
            start = time.perf_counter()
            free(addr)
            m.latencies.append(time.perf_counter() - start)
        self._live(-block[1])

    def realloc(self, block: Block, size: int) -> Block:
        self.check(block)
        adapter = self.adapter
        addr = self._timed(lambda: adapter.realloc(block[0], size))
        keep = min(size, block[1], 8)
        if adapter.read(addr, keep) != block[2][:keep]:
            raise BlockDamaged(f"{adapter.name}: realloc lost the bytes of {block[0]:#x}")
        tag = self._tag()
        self._stamp(addr, size, tag)
        self._live(size - block[1])
        return (addr, size, tag)


# ------------------------------------------------------------------ driving
class Run:
    """Starts workload threads, each with its own Worker, and collects their errors."""

    def __init__(self, adapter: Adapter, recorder: Recorder, seed: int) -> None:
        self.adapter = adapter
        self.recorder = recorder
        self.seed = seed
        self.errors: list[BaseException] = []
        self._n = 0
        self._lock = threading.Lock()

    def worker(self) -> Worker:
        with self._lock:
            self._n += 1
            n = self._n
        return Worker(self.adapter, self.recorder.thread(), self.seed * 1000 + n)

    def threads(self, n: int, body: Callable[[int, Worker], None]) -> None:
        """Run ``body(k, worker)`` in ``n`` threads that start together."""
        gate = threading.Barrier(n)

        def main(k: int) -> None:
            try:
                w = self.worker()
                gate.wait()
                body(k, w)
            except BaseException as exc:
                with self._lock:
                    self.errors.append(exc)
                gate.abort()

        pool = [threading.Thread(target=main, args=(k,), name=f"w{k}") for k in range(n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if self.errors:
            raise self.errors[0]


def _free_shared(w: Worker, shared: list[Block], lock: threading.Lock) -> None:
    """Take everything left on a list other threads share, and free it here."""
    with lock:
        blocks = shared[:]
        shared.clear()
    for block in blocks:
        w.free(block)


def _steps(base: int, scale: float) -> int:
    return max(int(base * scale), 4)


# ---------------------------------------------------------------- workloads
def larson(run: Run, threads: int, scale: float) -> None:
    slots, rounds, steps = 100, 3, _steps(1500, scale)
    handoff: list[list[Block]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def body(k: int, w: Worker) -> None:
        mine = [w.malloc(w.rng.randint(8, 1000)) for _ in range(slots)]
        for _ in range(rounds):
            for _ in range(steps // rounds):
                i = w.rng.randrange(slots)
                w.free(mine[i])
                mine[i] = w.malloc(w.rng.randint(8, 1000))
            handoff[(k + 1) % threads] = mine  # a successor frees these
            barrier.wait()
            mine = handoff[k]
            barrier.wait()
        for block in mine:
            w.free(block)

    run.threads(threads, body)


def xmalloc(run: Run, threads: int, scale: float) -> None:
    batches = _steps(60, scale)
    if threads == 1:
        # One thread plays both parts: it frees each batch it made.
        def solo(k: int, w: Worker) -> None:
            for _ in range(batches):
                for block in [w.malloc(w.rng.randint(16, 512)) for _ in range(32)]:
                    w.free(block)

        run.threads(1, solo)
        return
    producers = threads // 2
    consumers = threads - producers
    channel: queue.Queue[list[Block] | None] = queue.Queue(maxsize=64)
    produced = threading.Barrier(producers)

    def body(k: int, w: Worker) -> None:
        if k < producers:
            for _ in range(batches):
                channel.put([w.malloc(w.rng.randint(16, 512)) for _ in range(32)])
            if produced.wait() == 0:  # the last producer tells every consumer
                for _ in range(consumers):
                    channel.put(None)
        else:
            while (batch := channel.get()) is not None:
                for block in batch:
                    w.free(block)

    run.threads(threads, body)


def mstress(run: Run, threads: int, scale: float) -> None:
    steps = _steps(1500, scale)
    transfer: list[Block] = []
    lock = threading.Lock()

    def body(k: int, w: Worker) -> None:
        retained: list[Block] = []
        rng = w.rng
        for i in range(steps):
            big = rng.random() < 0.001
            size = rng.randint(1 << 20, 4 << 20) if big else rng.randint(8, 2048)
            retained.append(w.malloc(size))
            if len(retained) > 200:
                victim = retained.pop(rng.randrange(len(retained)))
                w.free(victim)
            if i % 100 == 99:
                with lock:
                    transfer.extend(retained[:20])
                    picked = transfer[:20] if len(transfer) > 40 else []
                    del transfer[: len(picked)]
                del retained[:20]
                for block in picked:
                    w.free(block)
        for block in retained:
            w.free(block)
        _free_shared(w, transfer, lock)

    run.threads(threads, body)


def rptest(run: Run, threads: int, scale: float) -> None:
    steps = _steps(1500, scale)
    inboxes: list[queue.Queue[Block]] = [queue.Queue() for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def drain(k: int, w: Worker) -> None:
        while True:
            try:
                block = inboxes[k].get_nowait()
            except queue.Empty:
                return
            w.free(block)

    def body(k: int, w: Worker) -> None:
        rng = w.rng
        held: list[Block] = []
        for _ in range(steps):
            block = w.malloc(rng.randint(8, 16000))
            if rng.random() < 0.5:
                inboxes[rng.randrange(threads)].put(block)
            else:
                held.append(block)
            if len(held) > 64:
                w.free(held.pop(rng.randrange(len(held))))
            drain(k, w)
        for block in held:
            w.free(block)
        barrier.wait()
        drain(k, w)

    run.threads(threads, body)


def alloc_test(run: Run, threads: int, scale: float) -> None:
    slots, steps = 500, _steps(2500, scale)

    def body(k: int, w: Worker) -> None:
        rng = w.rng
        hot = slots // 5
        mine: list[Block | None] = [None] * slots
        for _ in range(steps):
            # Pareto 80/20: four picks in five go to a fifth of the slots.
            i = rng.randrange(hot) if rng.random() < 0.8 else rng.randrange(hot, slots)
            old = mine[i]
            if old is not None:
                w.free(old)
            mine[i] = w.malloc(rng.randint(5, 1024))
        for block in mine:
            if block is not None:
                w.free(block)

    run.threads(threads, body)


def glibc_simple(run: Run, threads: int, scale: float) -> None:
    rounds = _steps(8, scale)

    def body(k: int, w: Worker) -> None:
        for r in range(rounds):
            size = (16, 32, 64)[r % 3]
            batch = [w.malloc(size) for _ in range(250)]
            order = batch if r % 2 == 0 else reversed(batch)  # FIFO, then LIFO
            for block in order:
                w.free(block)

    run.threads(threads, body)


def _inverse_square(rng: random.Random, lo: int, hi: int) -> int:
    # pdf proportional to 1/size^2 on [lo, hi], by inverting its CDF
    u = rng.random()
    return int(1 / (1 / lo - u * (1 / lo - 1 / hi)))


def glibc_thread(run: Run, threads: int, scale: float) -> None:
    working_set, steps = 128, _steps(2500, scale)

    def body(k: int, w: Worker) -> None:
        rng = w.rng
        mine = [w.malloc(_inverse_square(rng, 4, 32768)) for _ in range(working_set)]
        for _ in range(steps):
            i = rng.randrange(working_set)
            w.free(mine[i])
            mine[i] = w.malloc(_inverse_square(rng, 4, 32768))
        for block in mine:
            w.free(block)

    run.threads(threads, body)


def _shbench(run: Run, threads: int, scale: float, foreign: bool) -> None:
    ring, rounds = 256, _steps(8, scale)
    rings: list[list[Block]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def body(k: int, w: Worker) -> None:
        rng = w.rng
        for r in range(rounds):
            blocks = [w.malloc(rng.randint(1, 1000)) for _ in range(ring)]
            if foreign:
                rings[(k + 1) % threads] = blocks  # the neighbour frees these
                barrier.wait()
                blocks = rings[k]
                barrier.wait()
            order = blocks if r % 2 == 0 else list(reversed(blocks))
            for block in order:
                w.free(block)

    run.threads(threads, body)


def sh6bench(run: Run, threads: int, scale: float) -> None:
    _shbench(run, threads, scale, foreign=False)


def sh8bench(run: Run, threads: int, scale: float) -> None:
    _shbench(run, threads, scale, foreign=True)


def mleak(run: Run, threads: int, scale: float) -> None:
    generations = _steps(6, scale)
    left: list[Block] = []
    lock = threading.Lock()

    def short_lived(w: Worker) -> None:
        blocks = [w.malloc(w.rng.randint(16, 4096)) for _ in range(40)]
        for block in blocks[5:]:
            w.free(block)
        with lock:
            left.extend(blocks[:5])  # freed later by another thread

    def body(k: int, w: Worker) -> None:
        for _ in range(generations):
            kid = run.worker()
            t = threading.Thread(target=short_lived, args=(kid,))
            t.start()
            t.join()
        _free_shared(w, left, lock)

    run.threads(threads, body)


def malloc_large(run: Run, threads: int, scale: float) -> None:
    count = _steps(3, scale)

    def body(k: int, w: Worker) -> None:
        for _ in range(count):
            block = w.malloc(w.rng.randint(5 << 20, 25 << 20))
            w.free(block)

    run.threads(threads, body)


WORKLOADS: dict[str, Callable[[Run, int, float], None]] = {
    "larson": larson,
    "xmalloc": xmalloc,
    "mstress": mstress,
    "rptest": rptest,
    "alloc-test": alloc_test,
    "glibc-simple": glibc_simple,
    "glibc-thread": glibc_thread,
    "sh6bench": sh6bench,
    "sh8bench": sh8bench,
    "mleak": mleak,
    "malloc-large": malloc_large,
}


def run_workload(
    workload: str,
    allocator: str | Adapter,
    threads: int = 1,
    scale: float = 1.0,
    seed: int = 1,
) -> RunResult:
    """Run one workload on one allocator; raise if any block was damaged."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    adapter = make_adapter(allocator) if isinstance(allocator, str) else allocator
    try:
        with Recorder(adapter.footprint) as recorder:
            WORKLOADS[workload](Run(adapter, recorder, seed), threads, scale)
        stats: Any = adapter.arena_stats()
        return recorder.result(workload, adapter.name, threads, stats)
    finally:
        if isinstance(allocator, str):
            adapter.close()
