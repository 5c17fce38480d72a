"""What the benchmarks share: the loops they time, the draws that feed them, and glibc.

``fastpath``, ``scaling``, ``binding``, ``instructions`` and ``slabmodel``
run the same few loops through different allocators, and
``docs/benchmarks.md`` compares their figures; so each loop, its draws and
each allocator binding they have in common is written here once, and a
benchmark module imports this one, never another benchmark.

* draws: :func:`draw`, :func:`churn_draws` and :func:`chunk_draws`, request
  sizes and the slot each churn step replaces (:func:`raise_mmap_threshold`
  puts the chunk sizes below the mmap threshold);
* loops: :func:`pairs_loop` (``free(malloc(n))``) and :func:`churn_loop`
  (free one of the live blocks, allocate a new size in its slot).  They
  read no clock: each caller keeps its own (``perf_counter`` around the
  call, the workers' own stamps, callgrind's count);
* :func:`run_in_threads`: a loop in several threads at once, timed by the
  workers' own clocks;
* glibc through ``ctypes``: :func:`glibc` (new function objects for any of
  the malloc family), :func:`glibc_functions` (its malloc and free).  Not
  its footprint: in a Python process the interpreter's own objects live in
  glibc's heap too, so :mod:`stress.native` measures it, natively;
* :func:`floor_functions`: no allocator at all, only the calls and the loop;
* :func:`interpreter_name`: which interpreter ran them.
"""

from __future__ import annotations

import ctypes
import platform
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Malloc = Callable[[int], Any]
Free = Callable[[Any], None]
# Called in each worker thread: the malloc and free that thread uses.
Binder = Callable[[], tuple[Malloc, Free]]

LIVE = 1000  # the churn loop's live blocks (per thread, when threaded)
LOOPS: dict[str, tuple[int, int, int]] = {  # name -> (smallest, largest size, live blocks)
    "pairs": (16, 1024, 0),
    "churn": (16, 1024, LIVE),
    "chunks": (70_000, 120_000, 64),
}


# ----------------------------------------------------------------- the draws
def draw(
    rng: random.Random, steps: int, lo: int, hi: int, live: int
) -> tuple[list[int], list[int]]:
    """``steps`` request sizes in ``lo..hi``, then (if ``live``) the slot each step replaces."""
    sizes = [rng.randint(lo, hi) for _ in range(steps)]
    slots = [rng.randrange(live) for _ in range(steps)] if live else []
    return sizes, slots


def churn_draws(steps: int, live: int, seed: int) -> tuple[list[int], list[int]]:
    """The churn loop's request sizes (16..1024) and the slot each step replaces."""
    lo, hi, _ = LOOPS["churn"]
    return draw(random.Random(seed), steps, lo, hi, live)


# The chunk path's draws: above the slab range, below the mmap threshold once
# raise_mmap_threshold has run; CHUNK_LIVE chunks are held while pairs run,
# and are the churn's live chunks.
CHUNK_SIZES = (66_000, 400_000)
CHUNK_LIVE = 100


def chunk_draws(steps: int, seed: int) -> tuple[list[int], list[int]]:
    """Chunk-path request sizes (66..400 KB) and the slot each churn step replaces."""
    return draw(random.Random(seed), steps, *CHUNK_SIZES, CHUNK_LIVE)


def raise_mmap_threshold(malloc: Malloc, free: Free) -> None:
    """Free one mapping of twice the largest chunk size: glibc's dynamic mmap
    threshold (and arenas', which follows glibc's) rises past every chunk size,
    so both serve them from a heap, as after a program's first big free."""
    free(malloc(2 * CHUNK_SIZES[1]))


# ----------------------------------------------------------------- the loops
# Everything the loops touch is a parameter, so a local: the figures are the
# cost of the calls, not of looking the allocator up.
def pairs_loop(malloc: Malloc, free: Free, sizes: list[int]) -> None:
    """``free(malloc(size))`` for each size."""
    for size in sizes:
        free(malloc(size))


def churn_loop(
    malloc: Malloc, free: Free, blocks: list[Any], sizes: list[int], slots: list[int]
) -> None:
    """For each step, free the block in its slot of ``blocks`` and allocate its size there."""
    for size, slot in zip(sizes, slots, strict=True):
        free(blocks[slot])
        blocks[slot] = malloc(size)


def run_in_threads(
    n_threads: int, steps: int, loop: str, bind: Binder, seed: int, live: int | None = None
) -> float:
    """Aggregate steps per second of ``loop`` in ``n_threads`` threads sharing ``steps``.

    Each thread binds its own malloc and free, draws its own sizes (thread
    ``k`` from seed ``seed * 1000 + k``), fills its live slots, waits at a
    barrier, stamps the time, runs its share, stamps it again and waits;
    then it frees what it holds.  The time is from the first worker's start
    stamp to the last worker's end stamp: the workers' own clocks, since
    under the GIL the measuring thread may not run again until they are
    done, and none of their preparation counts.
    """
    lo, hi, default_live = LOOPS[loop]
    slots_live = default_live if live is None else live
    per = max(steps // n_threads, 1)
    start_line = threading.Barrier(n_threads + 1)
    finish_line = threading.Barrier(n_threads + 1)
    starts: list[float] = []
    ends: list[float] = []
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            malloc, free = bind()
            rng = random.Random(seed * 1000 + k)
            sizes, slots = draw(rng, per, lo, hi, slots_live)
            blocks = [malloc(rng.randint(lo, hi)) for _ in range(slots_live)]
        except BaseException as exc:  # (reported below, after the barriers)
            errors.append(exc)
            sizes, slots, blocks = [], [], []
        start_line.wait()
        starts.append(time.perf_counter())
        if not errors:
            if slots_live:
                churn_loop(malloc, free, blocks, sizes, slots)
            else:
                pairs_loop(malloc, free, sizes)
        ends.append(time.perf_counter())
        finish_line.wait()
        for block in blocks:
            free(block)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    start_line.wait()
    finish_line.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return per * n_threads / (max(ends) - min(starts))


# --------------------------------------------------------- glibc via ctypes
_SIGNATURES: dict[str, tuple[Any, ...]] = {  # name -> (result type, *argument types)
    "malloc": (ctypes.c_void_p, ctypes.c_size_t),
    "free": (None, ctypes.c_void_p),
    "realloc": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t),
    "calloc": (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t),
    "memalign": (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t),
    "mallopt": (ctypes.c_int, ctypes.c_int, ctypes.c_int),
}


def glibc(*names: str) -> list[Any]:
    """New ctypes function objects for glibc's ``names`` (keys of ``_SIGNATURES``).

    New ones at every call: on free-threaded CPython, threads that call one
    shared function object contend on its reference count, so each thread
    binds its own.  The call path is ctypes' own either way.
    """
    libc = ctypes.CDLL(None)
    return [ctypes.CFUNCTYPE(*_SIGNATURES[name])((name, libc)) for name in names]


def glibc_functions() -> tuple[Malloc, Free]:
    """glibc's malloc and free as new ctypes function objects (one pair per thread)."""
    malloc, free = glibc("malloc", "free")
    return malloc, free


# ----------------------------------------------------------------- the floor
def floor_functions(blocks: int = 2048) -> tuple[Malloc, Free]:
    """A free list of the calling thread's own, of ``blocks`` handles: the cost of the
    calls and the loop, nothing more (the floor of ``fastpath`` and ``scaling``)."""
    stack = list(range(1 << 40, (1 << 40) + blocks))
    pop, push = stack.pop, stack.append

    def malloc(size: int) -> int:
        return pop()

    def free(addr: int) -> None:
        push(addr)

    return malloc, free


def interpreter_name() -> str:
    """``CPython 3.13.5 free-threaded`` or ``CPython 3.11.7``."""
    free_threaded = getattr(sys, "_is_gil_enabled", lambda: True)() is False
    suffix = " free-threaded" if free_threaded else ""
    return f"{platform.python_implementation()} {platform.python_version()}{suffix}"
