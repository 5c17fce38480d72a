"""Race hunting: many threads doing everything at once, then every byte accounted for.

Threads allocate blocks of every kind (slab blocks, chunks, mappings), write a
pattern unique to each block, verify it before every free and realloc, free
their own blocks and each other's (handed over through a shared pool),
realloc blocks another thread allocated, race double frees on purpose (of
two frees of one block exactly one may win), and end mid-flight while new
threads start.  A control thread forks now and then; the child allocates,
checks and exits.  On the GIL build the switch interval is made tiny, so
that threads interleave as finely as CPython allows; on free-threaded
CPython they run at once.

Afterwards: no two live blocks overlap, every pattern is intact, ``check()``
is clean, and once every block is freed the allocator holds no live block.

The default suite runs each tunable set for about a second; ``pytest -m
stress`` runs them for ``ARENAS_HUNT_SECONDS`` in all (default 60), which
``.ci/run`` does under free-threaded CPython.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys
import threading
import time
from typing import Any

import pytest
from helpers import assert_disjoint, wait_child
from readerwriterlock import rwlock

from arenas import Allocator, DoubleFree, InvalidPointer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads

TUNABLE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "perturb": {"perturb": 0x5A},
    "debug": {"debug": True},
    "no-cache": {"tcache_count": 0},
    "one-arena": {"arena_max": 1},
    "tiny-heaps": {"arena_max": 3, "heap_max_size": 1 << 20, "mmap_threshold": 200_000},
    "small-cache": {"tcache_count": 2, "top_pad": 0, "trim_threshold": 0},
}
KINDS = [(16, 1024), (1025, 65536), (70_000, 160_000), (300_000, 700_000)]
WEIGHTS = [60, 20, 15, 5]


class Pool:
    """Blocks on their way between threads: address -> pattern (test-side lock), and
    the gate a raced double free closes (no other worker allocates meanwhile)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks: dict[int, bytes] = {}
        self.gate = rwlock.RWLockWrite()

    # Threads that end hand their blocks over; past this many waiting, they free
    # them instead, so that a long hunt's live memory stays bounded (a 10-minute
    # hunt with one arena otherwise filled its 1 GiB main heap: OutOfMemory).
    LIMIT = 2000

    def put(self, addr: int, pattern: bytes) -> None:
        with self.lock:
            self.blocks[addr] = pattern

    def offer(self, addr: int, pattern: bytes) -> bool:
        """:meth:`put`, unless the pool is full: then False, and the caller keeps it."""
        with self.lock:
            if len(self.blocks) >= self.LIMIT:
                return False
            self.blocks[addr] = pattern
            return True

    def take(self) -> tuple[int, bytes] | None:
        with self.lock:
            if not self.blocks:
                return None
            return self.blocks.popitem()


def _pattern(rng: random.Random, size: int) -> bytes:
    head = rng.randbytes(8)
    return (head * (size // 8 + 1))[:size]


def _write(addr: int, pattern: bytes) -> None:
    ctypes.memmove(addr, pattern, len(pattern))


def _intact(addr: int, pattern: bytes) -> None:
    got = ctypes.string_at(addr, len(pattern))
    assert got == pattern, f"block {addr:#x} lost its bytes"


def _worker(
    alloc: Allocator, pool: Pool, seed: int, steps: int, errors: list[BaseException]
) -> None:
    rng = random.Random(seed)
    mine: dict[int, bytes] = {}
    try:
        for _ in range(steps):
            op = rng.random()
            if 0.84 <= op < 0.90 and mine:
                with pool.gate.gen_wlock():
                    _race_a_double_free(alloc, *mine.popitem())
                continue
            with pool.gate.gen_rlock():
                _step(alloc, pool, rng, op, mine)
        for addr, pattern in mine.items():  # end mid-flight: hand the rest over
            if not pool.offer(addr, pattern):
                _intact(addr, pattern)
                alloc.free(addr)
    except BaseException as exc:  # (reported by the caller)
        errors.append(exc)


def _race_a_double_free(alloc: Allocator, addr: int, pattern: bytes) -> None:
    """Two threads free one block at once: exactly one wins."""
    _intact(addr, pattern)
    outcome: list[BaseException | None] = []
    barrier = threading.Barrier(2)

    def free_it() -> None:
        barrier.wait()
        try:
            alloc.free(addr)
            outcome.append(None)
        except BaseException as exc:  # (anything but the loser's typed error fails below)
            outcome.append(exc)

    other = threading.Thread(target=free_it)
    other.start()
    free_it()
    other.join()
    assert sum(e is None for e in outcome) == 1, outcome
    assert all(e is None or isinstance(e, (DoubleFree, InvalidPointer)) for e in outcome), outcome


def _step(
    alloc: Allocator, pool: Pool, rng: random.Random, op: float, mine: dict[int, bytes]
) -> None:
    """One operation of a worker (the pool's gate held for reading)."""
    if op < 0.40 or not mine:
        lo, hi = rng.choices(KINDS, WEIGHTS)[0]
        size = rng.randint(lo, hi)
        addr = alloc.malloc(size)
        pattern = _pattern(rng, size)
        _write(addr, pattern)
        mine[addr] = pattern
    elif op < 0.60:
        addr, pattern = mine.popitem()
        _intact(addr, pattern)
        alloc.free(addr)
    elif op < 0.72:  # hand one over; take one handed over by someone else
        addr, pattern = mine.popitem()
        pool.put(addr, pattern)
        got = pool.take()
        if got is not None:
            mine[got[0]] = got[1]
    elif op < 0.84:  # realloc a block, maybe one another thread allocated
        addr, pattern = mine.popitem()
        _intact(addr, pattern)
        size = max(1, int(len(pattern) * rng.choice((0.5, 1.5, 3.0))))
        new = alloc.realloc(addr, size)
        _intact(new, pattern[:size])
        pattern = _pattern(rng, size)
        _write(new, pattern)
        mine[new] = pattern
    else:  # read through a view, as a program would
        addr, pattern = next(iter(mine.items()))
        view = alloc.view(addr, len(pattern))
        assert view[: len(pattern)].tobytes() == pattern
        del view


def _fork_and_check(alloc: Allocator) -> None:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            blocks = [alloc.malloc(n) for n in (40, 3000, 90_000, 400_000)]
            for p in blocks:
                alloc.free(p)
            alloc.check()
            code = 0
        finally:
            os._exit(code)
    wait_child(pid, 30)


def hunt(tunables: dict[str, Any], seconds: float, threads: int = 12, seed: int = 1) -> int:
    """Run the hunt for ``seconds``; return how many worker threads ran."""
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    ran = 0
    try:
        with Allocator(**tunables) as alloc:
            pool = Pool()
            errors: list[BaseException] = []
            deadline = time.monotonic() + seconds
            running: list[threading.Thread] = []
            forks = 0
            while time.monotonic() < deadline and not errors:
                running = [t for t in running if t.is_alive()]
                while len(running) < threads:  # threads end mid-flight; new ones start
                    t = threading.Thread(
                        target=_worker,
                        args=(alloc, pool, seed * 10_000 + ran, 300, errors),
                    )
                    t.start()
                    running.append(t)
                    ran += 1
                if forks < 3 and time.monotonic() > deadline - seconds * (3 - forks) / 4:
                    _fork_and_check(alloc)
                    forks += 1
                time.sleep(0.01)
            for t in running:
                t.join()
            assert not errors, repr(errors[0])
            left = dict(pool.blocks)
            assert_disjoint(alloc, left)
            alloc.check()
            for addr, pattern in left.items():
                _intact(addr, pattern)
                alloc.free(addr)
            alloc.check()
            st = alloc.stats()
            assert st.slab_blocks_live == 0 and st.hblks == 0
            assert sum(a.in_use_chunks for a in st.arenas) == st.slabs  # only slabs remain
    finally:
        sys.setswitchinterval(old_interval)
    return ran


@pytest.mark.parametrize("name", list(TUNABLE_SETS))
def test_hunt_briefly(name: str) -> None:
    assert hunt(TUNABLE_SETS[name], seconds=1.0, threads=8) >= 8


@pytest.mark.stress
@pytest.mark.parametrize("name", list(TUNABLE_SETS))
def test_hunt_long(name: str) -> None:
    total = float(os.environ.get("ARENAS_HUNT_SECONDS", "60"))
    hunt(TUNABLE_SETS[name], seconds=total / len(TUNABLE_SETS), threads=16, seed=7)
