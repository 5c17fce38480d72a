"""Adversarial tests: races, fork, stale references, huge sizes (issue 18).

Each case is a way a user once crashed, hung or silently broke the allocator.
Every race runs both sides for real in two threads released by one barrier,
many rounds, with a tiny switch interval on the GIL build; the rule checked is
always the same: exactly one of two destructive calls on one block wins, the
loser gets a typed error, nothing crashes, and ``check()`` is clean after.

The bounded runs here are part of the default suite; ``pytest -m stress``
runs the race families longer (``ARENAS_HUNT_SECONDS`` in all, default 60;
``make hunt``).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from helpers import run_threads, usable_for, wait_child

import arenas
from arenas import (
    Allocator,
    AllocatorError,
    DoubleFree,
    InvalidPointer,
    OutOfMemory,
    fork,
    hooks,
)
from arenas.chunk import MALLOC_ALIGNMENT, MAX_REQUEST
from arenas.debug import Debugger

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads

# Block sizes of each kind: a slab block, a chunk of an arena, a mapping of its own.
SIZES = {"slab": 48, "chunk": 100_000, "mapped": 1 << 20}
MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "perturb": {"perturb": 0x5A},
    "debug": {"debug": True},
    "no-cache": {"tcache_count": 0},
}
TYPED = (AllocatorError, ValueError, TypeError)


@contextmanager
def fast_switching() -> Iterator[None]:
    """On the GIL build, switch threads as often as CPython allows (races happen)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def race(first: Callable[[], object], second: Callable[[], object]) -> list[BaseException | None]:
    """Run both at once (one barrier); what each raised, or None."""
    barrier = threading.Barrier(2)
    outcome: list[BaseException | None] = [None, None]

    def run(k: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # (reported to the caller)
            outcome[k] = exc

    threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def _realloc_into(moved: list[int], alloc: Allocator, addr: int, size: int) -> None:
    moved.append(alloc.realloc(addr, size))


def one_wins(outcome: list[BaseException | None]) -> None:
    """Exactly one side succeeded; the other got a typed error saying why."""
    errors = [e for e in outcome if e is not None]
    assert len(errors) == 1, outcome
    assert isinstance(errors[0], (DoubleFree, InvalidPointer)), repr(errors[0])


# ====================================================== 1. stale references
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("kind", list(SIZES))
def test_a_stale_reference_never_reaches_a_closed_allocator(kind: str, debug: bool) -> None:
    alloc = Allocator(debug=debug)
    m, f, r, v = alloc.malloc, alloc.free, alloc.realloc, alloc.view
    live = m(SIZES[kind])
    p = m(SIZES[kind])
    f(p)  # a slab block now waits in this thread's cache
    alloc.close()
    calls: list[Callable[[], object]] = [
        partial(m, SIZES[kind]),  # (it used to hand out p again, in an unmapped heap)
        partial(f, live),
        partial(r, live, 10),
        partial(v, live),
        partial(alloc.usable_size, live),
    ]
    for call in calls:
        with pytest.raises(AllocatorError):
            call()


def test_module_functions_taken_early_follow_a_new_default_allocator() -> None:
    from arenas import free, malloc  # the names a program binds once, at import

    p = malloc(64)
    old = arenas.default_allocator()
    free(p)
    old.close()
    q = malloc(64)  # a new default allocator serves it, not the closed heaps
    assert arenas.default_allocator() is not old
    ctypes.memset(q, 0xAB, 64)
    free(q)
    arenas.default_allocator().check()


# ============================================================ 2, 3. races
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(SIZES))
def test_two_threads_free_one_block(kind: str, mode: str) -> None:
    rounds = 12 if kind == "mapped" else 40
    with Allocator(**MODES[mode]) as alloc, fast_switching():
        for _ in range(rounds):
            p = alloc.malloc(SIZES[kind])
            one_wins(race(partial(alloc.free, p), partial(alloc.free, p)))
        alloc.check()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(SIZES))
def test_realloc_racing_free_of_the_same_block(kind: str, mode: str) -> None:
    rounds = 12 if kind == "mapped" else 40
    grown = {"slab": 5000, "chunk": 300_000, "mapped": 4 << 20}[kind]
    with Allocator(**MODES[mode]) as alloc, fast_switching():
        for _ in range(rounds):
            p = alloc.malloc(SIZES[kind])
            ctypes.memset(p, 0x11, SIZES[kind])
            moved: list[int] = []
            outcome = race(partial(_realloc_into, moved, alloc, p, grown), partial(alloc.free, p))
            if moved and moved[0] == p:  # grown in place: p stayed live, and free freed it
                assert outcome == [None, None]
                continue
            one_wins(outcome)
            if moved:  # realloc won: the copy is whole, and the new block is ours
                assert ctypes.string_at(moved[0], SIZES[kind]) == b"\x11" * SIZES[kind]
                alloc.free(moved[0])
        alloc.check()


def _staggered(first: Callable[[], object], second: Callable[[], object]) -> list[Any]:
    """``second`` starts 2 ms after ``first``: long calls overlap in their middles."""

    def later() -> object:
        time.sleep(0.002)
        return second()

    return race(first, later)


def test_two_threads_free_a_big_mapping_with_perturb_ms_apart() -> None:
    """The fill of a freed block runs while the block is the freeing thread's alone:
    the other free cannot unmap it under the fill (this crashed 5 runs of 5)."""
    with Allocator(perturb=0x5A) as alloc:
        for _ in range(5):
            p = alloc.malloc(32 << 20)
            one_wins(_staggered(partial(alloc.free, p), partial(alloc.free, p)))
        alloc.check()


def test_debug_realloc_racing_free_of_a_big_block_ms_apart() -> None:
    """The debugger claims the old block before it copies: the free that loses the
    race gets an error, and no copy reads memory given back (this crashed at once)."""
    with Allocator(debug=True) as alloc:
        for _ in range(5):
            p = alloc.malloc(8 << 20)
            moved: list[int] = []
            outcome = _staggered(
                partial(_realloc_into, moved, alloc, p, 16 << 20), partial(alloc.free, p)
            )
            one_wins(outcome)
            for q in moved:
                alloc.free(q)
        alloc.check()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(SIZES))
def test_two_threads_realloc_one_block(kind: str, mode: str) -> None:
    rounds = 8 if kind == "mapped" else 30
    with Allocator(**MODES[mode]) as alloc, fast_switching():
        for _ in range(rounds):
            p = alloc.malloc(SIZES[kind])
            ctypes.memset(p, 0x22, SIZES[kind])
            moved: list[int] = []
            grow = partial(_realloc_into, moved, alloc, p, 3 * SIZES[kind])
            outcome = race(grow, grow)
            kept = [q for q in moved if q == p]
            if len(kept) == 2:  # both grew it in place: one block, still live
                alloc.free(p)
                continue
            one_wins(outcome)
            assert ctypes.string_at(moved[0], SIZES[kind]) == b"\x22" * SIZES[kind]
            alloc.free(moved[0])
        alloc.check()


@pytest.mark.parametrize("kind", list(SIZES))
def test_reads_racing_a_free_raise_or_read_never_crash(kind: str) -> None:
    with Allocator(perturb=0x5A) as alloc, fast_switching():
        for _ in range(20):
            p = alloc.malloc(SIZES[kind])
            for read in (alloc.usable_size, alloc.view):
                outcome = race(partial(read, p), partial(alloc.free, p))
                assert outcome[1] is None  # the free always wins
                assert outcome[0] is None or isinstance(outcome[0], InvalidPointer)
                p = alloc.malloc(SIZES[kind])
            alloc.free(p)
        alloc.check()


def test_many_threads_write_through_views_of_one_arena() -> None:
    """Views have buffers of their own: 8 threads slicing views of one heap at once
    lose no export count (on 3.13t, slices of one shared view did)."""
    with Allocator(arena_max=1) as alloc:

        def work(k: int) -> None:
            for i in range(1500):
                size = 16 + (i * 7 + k) % 200
                p = alloc.malloc(size)
                v = alloc.view(p, size)
                v[:] = bytes([k]) * size
                assert v[size // 2 : size].tobytes() == bytes([k]) * (size - size // 2)
                del v
                alloc.free(p)

        run_threads(8, work)
        alloc.check()


def test_blocks_passed_between_threads_with_views_alive() -> None:
    """A Block made in one thread and freed in another; its views dropped in a third."""
    with Allocator() as alloc:
        blocks = [alloc.alloc(64) for _ in range(400)]
        views = [b.view[:8] for b in blocks[::2]]
        for b in blocks[::2]:
            with pytest.raises(BufferError):
                b.free()  # a slice of its view is alive
        holder: list[Any] = [views]

        def drop() -> None:
            holder.clear()

        dropper = threading.Thread(target=drop)
        del views
        dropper.start()
        dropper.join()

        def free_all() -> None:
            for b in blocks:
                b.free()

        freer = threading.Thread(target=free_all)
        freer.start()
        freer.join()
        assert all(b.freed for b in blocks)
        alloc.check()


# ======================================================= boundary sizes
BOUNDARY = [0, 1, 24, 1024, 65_535, 65_536, 65_537, 131_071, 131_072, 131_073, 4 << 20]


@pytest.mark.parametrize("mode", list(MODES))
def test_boundary_sizes_through_every_entry_point(mode: str) -> None:
    with Allocator(**MODES[mode]) as alloc:
        for size in BOUNDARY:
            makers: list[tuple[int, Callable[[], int]]] = [
                (MALLOC_ALIGNMENT, partial(alloc.malloc, size)),
                (MALLOC_ALIGNMENT, partial(alloc.calloc, 1, size)),
                (64, partial(alloc.memalign, 64, size)),
                (MALLOC_ALIGNMENT, partial(alloc.realloc, 0, size)),
            ]
            for alignment, make in makers:
                p = make()
                # debug mode: exactly what was asked; else what the size rules give
                usable = size if mode == "debug" else usable_for(alloc, p, size, alignment)
                assert alloc.usable_size(p) == usable
                with alloc.view(p, size) as view:
                    view[:] = b"\x5c" * size
                held = size
                for grown in (size // 2, size + 1, 2 * size + 70_000):
                    p = alloc.realloc(p, grown)
                    kept = min(held, grown)
                    assert ctypes.string_at(p, kept) == b"\x5c" * kept
                    ctypes.memset(p, 0x5C, grown)
                    held = grown
                alloc.free(p)
        alloc.check()


# ================================================================ 4. fork
def _fork_child_ok(
    work: Callable[[], None], timeout: float = 20.0, forks: int = 6, threads: int = 4
) -> None:
    """Fork while ``work`` runs in ``threads`` threads; each child must run it, check, exit."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                work()
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        for _ in range(forks):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:  # the child: only this thread exists here
                code = 1
                try:
                    work()
                    arenas.default_allocator().check()
                    code = 0
                finally:
                    os._exit(code)
            wait_child(pid, timeout)
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("mode", list(MODES))
def test_fork_while_threads_allocate_in_every_mode(mode: str) -> None:
    with Allocator(**MODES[mode]) as alloc:

        def work() -> None:
            blocks = [alloc.malloc(size) for size in (24, 700, 90_000, 200_000)]
            alloc.free(alloc.realloc(blocks.pop(), 300_000))
            for p in blocks:
                alloc.free(p)
            alloc.check(quiet=False)

        _fork_child_ok(work)


@pytest.mark.parametrize("wrapper", ["counting", "tracing", "debugging"])
def test_fork_while_threads_allocate_through_replacements(wrapper: str, tmp_path: Any) -> None:
    inner = Allocator()
    made: hooks.Counting | hooks.Tracing | Debugger
    if wrapper == "counting":
        made = hooks.counting(inner)
    elif wrapper == "tracing":
        made = hooks.tracing(str(tmp_path / "trace"), inner)
    else:
        made = hooks.debugging(inner)
    arenas.set_mem_functions(made.malloc, made.realloc, made.free)
    try:

        def work() -> None:
            blocks = [arenas.malloc(size) for size in (24, 700, 90_000)]
            arenas.free(arenas.realloc(blocks.pop(), 5000))
            for p in blocks:
                arenas.free(p)

        _fork_child_ok(work)
    finally:
        arenas.set_mem_functions(None, None, None)
        if isinstance(made, hooks.Tracing):
            made.close()
        inner.close()


# ============================================================ 6. errors
def test_a_full_cap_is_out_of_memory_and_tells_on_oom_each_time() -> None:
    told: list[int] = []
    with Allocator(max_heap_bytes=1 << 20, on_oom=told.append) as alloc:
        blocks = []
        with pytest.raises(OutOfMemory):
            while True:
                blocks.append(alloc.malloc(4000))
        assert told == [4000]
        # a new thread's first malloc shares an arena (glibc's reused_arena)
        # instead of failing to make one: no heap fits under the cap any more
        for p in blocks[:8]:
            alloc.free(p)
        alloc.trim()  # (this thread's cache goes home: the main arena has room)
        got: list[int] = []
        th = threading.Thread(target=lambda: got.append(alloc.malloc(4000)))
        th.start()
        th.join()
        assert [alloc.arena_for(p) for p in got] == [0]  # served by the main arena
        assert len(alloc.stats().arenas) == 1  # no second arena could be made
        alloc.free(got[0])
        for p in blocks[8:]:
            alloc.free(p)
        alloc.check()


HUGE = [MAX_REQUEST, 2**63 - 4096, 2**62, 2**47 + 4096]


@pytest.mark.parametrize("size", HUGE)
def test_huge_requests_leave_nothing_taken(size: int) -> None:
    told: list[int] = []
    with Allocator(max_heap_bytes=64 << 20, on_oom=told.append) as alloc:
        calls: list[Callable[[], object]] = [
            partial(alloc.malloc, size),
            partial(alloc.calloc, 1, size),
            partial(alloc.memalign, 4096, size),
            partial(alloc.realloc, alloc.malloc(16), size),
        ]
        for call in calls:
            with pytest.raises(OutOfMemory):
                call()
        assert told == [size] * 4  # once per failed call
        # (an arena may be made for the retry, as glibc's arena_get_retry does)
        assert alloc.stats().max_system_bytes <= 1 << 20  # no budget left taken
        p = alloc.malloc(1 << 20)  # the cap still has room for ordinary requests
        alloc.free(p)
        alloc.check()


def test_argument_errors_never_call_on_oom() -> None:
    told: list[int] = []
    with Allocator(on_oom=told.append) as alloc:
        p = alloc.malloc(100)
        with pytest.raises(ValueError, match="exceeds"):
            alloc.view(p, 2**63)
        with pytest.raises(ValueError, match="exceeds"):
            alloc.view(p, 200)
        system = alloc.stats().arena
        alloc.trim(2**63)  # a pad larger than every top: no top gives back a byte
        assert alloc.stats().arena == system
        # (it advised away the resident pages of free memory, if any: none are left now)
        assert alloc.trim(2**63) == 0
        for bad in (-1, True, 1.5, "8", None):
            with pytest.raises((TypeError, ValueError)):
                alloc.malloc(bad)  # type: ignore[arg-type]
            if bad is not None:  # (view's None means the whole block)
                with pytest.raises((TypeError, ValueError)):
                    alloc.view(p, bad)  # type: ignore[arg-type]
        assert told == []
        alloc.free(p)
        alloc.check()


# ============================================ finalizers that run anywhere
def test_a_cache_finalized_under_the_registry_lock_does_not_deadlock() -> None:
    """The cyclic GC may finalize a dead thread's cache at any allocation, even
    one made while this thread holds the registry's write lock (making an
    arena does): the finalizer must take no lock."""
    with Allocator() as alloc:
        kept: list[Any] = []
        th = threading.Thread(target=lambda: kept.append(alloc.caches.current()))
        th.start()
        th.join()
        finished = threading.Event()

        def drop_under_the_lock() -> None:
            with alloc.caches.registry.writing():
                kept.clear()  # the thread's cache is finalized here
            finished.set()

        dropper = threading.Thread(target=drop_under_the_lock, daemon=True)
        dropper.start()
        dropper.join(timeout=10)
        assert finished.is_set(), "a finalizer waited for a lock its own thread held"
        st = alloc.stats()  # the report reaps the ended thread: its arena is free again
        assert sum(a.attached_threads for a in st.arenas) == 0
        alloc.check()


# ========================================= fork while a lock is held
def _hold_briefly(lock: Any) -> None:
    lock.acquire()
    time.sleep(0.05)
    lock.release()


def test_fork_while_another_thread_holds_each_lock_of_the_package(tmp_path: Any) -> None:
    """Every registered lock, held by another thread when fork() is called: the fork
    waits for it (it is among the locks the fork takes), and the child, which
    then uses every kind of lock, finishes."""
    alloc = Allocator(debug=True)
    counter = hooks.counting(Allocator())
    tracer = hooks.tracing(str(tmp_path / "t"), Allocator())
    arenas.free(arenas.malloc(8))  # the default allocator exists
    try:
        for level, participant in fork.participants():
            for lock in participant.fork_locks():
                holder = threading.Thread(target=_hold_briefly, args=(lock,))
                holder.start()
                time.sleep(0.01)  # (it holds the lock now)
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        for a in (alloc, counter, tracer):
                            p = a.malloc(100)
                            a.free(a.realloc(p, 200_000))
                        arenas.free(arenas.malloc(300_000))
                        alloc.check()
                        code = 0
                    finally:
                        os._exit(code)
                holder.join()
                wait_child(pid, 20, f"the child forked while a level-{level} lock was held")
    finally:
        tracer.close()
        alloc.close()


# ================================================================ long run
@pytest.mark.stress
@pytest.mark.parametrize("mode", list(MODES))
def test_race_families_long(mode: str) -> None:
    """The race pairs above, over and over, for ARENAS_HUNT_SECONDS / 4 per mode."""
    seconds = float(os.environ.get("ARENAS_HUNT_SECONDS", "60")) / len(MODES)
    deadline = time.monotonic() + seconds
    with Allocator(**MODES[mode]) as alloc, fast_switching():
        while time.monotonic() < deadline:
            for kind, size in SIZES.items():
                p = alloc.malloc(size)
                one_wins(race(partial(alloc.free, p), partial(alloc.free, p)))
                p = alloc.malloc(size)
                moved: list[int] = []
                outcome = race(
                    partial(_realloc_into, moved, alloc, p, 3 * size), partial(alloc.free, p)
                )
                if not (moved and moved[0] == p):
                    one_wins(outcome)
                    for q in moved:
                        alloc.free(q)
                p = alloc.malloc(size)
                for read in (alloc.usable_size, alloc.view):
                    outcome = race(partial(read, p), partial(alloc.free, p))
                    assert outcome[1] is None, (kind, outcome)
                    p = alloc.malloc(size)
                alloc.free(p)
            alloc.check()


# ------------------------------------------- per-object locks across a fork (3.13t)
LOCK_FREE_READS_SURVIVE_A_FORK = """
import os, signal, sys, threading, time
table = {k: k for k in range(64)}
stop = False

def popper():  # what remote frees do to a live table, and dict.get to any table
    n = 0
    while not stop:
        k = n & 63
        table.get(k)
        v = table.pop(k, None)
        if v is not None:
            table[k] = v
        n += 1

threads = [threading.Thread(target=popper) for _ in range(8)]
for t in threads:
    t.start()
hung = 0
for _ in range(int(sys.argv[1])):
    time.sleep(0.005)
    pid = os.fork()
    if pid == 0:  # only what fork.lookup and ThreadCaches.fork_child do
        rebuilt = {k: table[k] for k in range(64) if k in table}
        os._exit(0)
    deadline = time.monotonic() + 5
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            hung += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.002)
stop = True
for t in threads:
    t.join()
print(hung)
"""


def test_reads_that_take_no_lock_survive_a_fork_amid_pops() -> None:
    # What the fork safety of the live tables rests on (see arenas/fork.py): in a
    # child, `in` and a subscript never wait for a dict lock a lost thread held.
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", LOCK_FREE_READS_SURVIVE_A_FORK, "60"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"


def test_fork_while_threads_free_each_others_blocks_and_chunks() -> None:
    # Remote frees pop other threads' live tables and chunk frees read the heap
    # table, all without a lock of the allocator's, while the main thread forks.
    with Allocator(arena_max=4) as alloc:
        handed: list[int] = []
        sizes = (24, 200, 1000, 90_000, 70_000)

        def work() -> None:
            mine = [alloc.malloc(size) for size in sizes]
            handed.extend(mine)  # (list.extend and pop are atomic)
            for _ in range(len(mine)):
                try:
                    alloc.free(handed.pop(0))
                except IndexError:
                    break

        _fork_child_ok(work, forks=40, threads=8)
        for addr in handed:
            alloc.free(addr)
