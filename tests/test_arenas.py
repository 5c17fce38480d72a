"""Issue 3: per-thread arenas, the arena limit and reuse, cross-thread frees,
fallback to the main arena, thread exit and fork."""

from __future__ import annotations

import ctypes
import os
import queue
import random
import threading
import time
from typing import Any

import pytest
from helpers import assert_disjoint, child_exit_code, run_threads, wait_child

from arenas import Allocator, OutOfMemory
from arenas.chunk import request2size

SMALL_HEAPS = {"heap_max_size": 1 << 20, "top_pad": 0, "tcache_count": 8}


@pytest.mark.parametrize(
    ("threads", "arena_max", "tunables"),
    [
        (16, 4, {}),
        (32, 8, {}),
        (24, 64, {}),
        (16, 3, SMALL_HEAPS),
        (16, 4, {"policy": "glibc"}),
        (24, 3, {**SMALL_HEAPS, "policy": "glibc", "tcache_count": 7}),
    ],
)
def test_many_threads_with_handoff(threads: int, arena_max: int, tunables: dict[str, Any]) -> None:
    # With SMALL_HEAPS the arenas chain and trim several 1 MiB heaps, and
    # refills carve slabs from holes that freed chunks leave in any of them.
    with Allocator(arena_max=arena_max, **tunables) as alloc:
        handoff: queue.Queue[tuple[int, bytes]] = queue.Queue()
        survivors: dict[int, bytes] = {}
        arenas_used: set[int | None] = set()
        lock = threading.Lock()
        start = threading.Barrier(threads)

        def work(k: int) -> None:
            rng = random.Random(k)
            live: dict[int, bytes] = {}
            start.wait()
            for _ in range(400):
                r = rng.random()
                if r < 0.45 or not live:
                    size = rng.choice([rng.randint(0, 300), rng.randint(0, 9000), 70_000])
                    if r < 0.04:
                        addr = alloc.memalign(rng.choice([64, 4096]), size)
                    elif r < 0.08:
                        addr = alloc.calloc(1, size)
                        assert ctypes.string_at(addr, size) == bytes(size)
                    else:
                        addr = alloc.malloc(size)
                    pattern = bytes([rng.randrange(256)]) * size
                    ctypes.memmove(addr, pattern, size)
                    live[addr] = pattern
                    with lock:
                        arenas_used.add(alloc.arena_for(addr))
                elif r < 0.46:
                    alloc.trim()
                elif r < 0.6:
                    addr = rng.choice(list(live))
                    pattern = live.pop(addr)
                    size = rng.randint(1, 12_000)
                    new = alloc.realloc(addr, size)
                    kept = pattern[:size]
                    assert ctypes.string_at(new, len(kept)) == kept
                    pattern = bytes([rng.randrange(256)]) * size
                    ctypes.memmove(new, pattern, size)
                    live[new] = pattern
                elif r < 0.75:
                    addr = rng.choice(list(live))
                    handoff.put((addr, live.pop(addr)))  # someone else frees it
                else:
                    addr = rng.choice(list(live))
                    assert ctypes.string_at(addr, len(live[addr])) == live.pop(addr)
                    alloc.free(addr)
                while rng.random() < 0.4:
                    try:
                        addr, pattern = handoff.get_nowait()
                    except queue.Empty:
                        break
                    assert ctypes.string_at(addr, len(pattern)) == pattern
                    alloc.free(addr)
            with lock:
                survivors.update(live)

        run_threads(threads, work)
        while not handoff.empty():
            addr, pattern = handoff.get()
            survivors[addr] = pattern
        assert_disjoint(alloc, survivors)
        alloc.check()
        registry = alloc._registry
        assert len(arenas_used - {None}) > 1
        if "heap_max_size" in tunables:
            assert max(len(arena.heaps) for arena in registry.arenas) > 1
        assert len(alloc.stats().arenas) <= arena_max
        for addr in survivors:
            alloc.free(addr)
        alloc.check()


def test_thread_exit_churn_never_passes_arena_max() -> None:
    """glibc's tst-malloc-thread-exit: outer threads keep starting and joining inner
    threads, half of which allocate before a barrier and half after it."""
    arena_max = 4
    with Allocator(arena_max=arena_max) as alloc:
        alloc.free(alloc.malloc(1))
        baseline = alloc.stats()
        peak_arenas = 0
        peak_lock = threading.Lock()

        def inner(barrier: threading.Barrier, before: bool) -> None:
            if before:
                alloc.free(alloc.malloc(100))
                alloc.free(alloc.malloc(90_000))
            barrier.wait()
            if not before:
                blocks = [alloc.malloc(n) for n in (10, 3000, 70_000)]
                for addr in blocks:
                    alloc.free(addr)

        def outer(_: int) -> None:
            nonlocal peak_arenas
            for _round in range(8):
                barrier = threading.Barrier(4)
                kids = [
                    threading.Thread(target=inner, args=(barrier, k % 2 == 0)) for k in range(4)
                ]
                for t in kids:
                    t.start()
                for t in kids:
                    t.join()
                with peak_lock:
                    peak_arenas = max(peak_arenas, len(alloc._registry.arenas))

        run_threads(4, outer)
        after = alloc.stats()
        assert peak_arenas <= arena_max
        assert len(alloc._registry.arenas) <= arena_max
        # every thread that ended was detached and its cache flushed
        assert sum(a.attached_threads for a in after.arenas) == 1  # this thread only
        assert after.tcache_blocks == baseline.tcache_blocks
        assert after.slab_blocks_live == baseline.slab_blocks_live
        assert after.hblks == 0
        alloc.check()


def test_lowering_arena_max_at_run_time_keeps_the_arenas_and_makes_no_more() -> None:
    # As in glibc, mallopt(M_ARENA_MAX) limits the making of arenas; an arena,
    # once made, lives as long as its allocator.
    with Allocator(arena_max=8) as alloc:
        alloc.free(alloc.malloc(1))  # this thread takes the main arena

        def at_once(n: int) -> set[int]:
            gate = threading.Barrier(n)
            used: set[int] = set()

            def work(_: int) -> None:
                addr = alloc.malloc(100)
                used.add(alloc.thread_arena())
                gate.wait()  # all n threads are attached at the same time
                alloc.free(addr)

            run_threads(n, work)
            return used

        at_once(4)
        assert len(alloc._registry.arenas) == 5
        alloc.mallopt("arena_max", 2)
        alloc.check()  # five arenas under a limit of two are not corruption
        assert at_once(6) <= set(range(5))
        assert len(alloc._registry.arenas) == 5
        alloc.mallopt("arena_max", 7)
        at_once(8)
        assert len(alloc._registry.arenas) == 7
        alloc.check()


def test_an_exiting_thread_returns_its_arena_to_the_free_list() -> None:
    with Allocator() as alloc:
        alloc.free(alloc.malloc(1))  # this thread: arena 0
        seen: list[int] = []
        run_threads(1, lambda _: seen.append(alloc.thread_arena()))
        run_threads(1, lambda _: seen.append(alloc.thread_arena()))
        assert seen == [1, 1]  # the second thread reused the first one's arena
        alloc.stats()  # (a report, like a new thread's attach, reaps threads that ended)
        registry = alloc._registry
        assert registry.arenas[1] in registry.free_list
        assert registry.arenas[1].attached_threads == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_raises_is_detached() -> None:
    with Allocator() as alloc:
        alloc.free(alloc.malloc(1))

        def crash() -> None:
            alloc.malloc(64)
            raise RuntimeError("boom")

        t = threading.Thread(target=crash)
        t.start()
        t.join()
        assert [a.attached_threads for a in alloc.stats().arenas] == [1, 0]
        alloc.check()


def test_arena_max_one_shares_the_main_arena() -> None:
    with Allocator(arena_max=1) as alloc:
        where: set[int] = set()
        lock = threading.Lock()
        gate = threading.Barrier(8)

        def work(_: int) -> None:
            gate.wait()
            with lock:
                where.add(alloc.thread_arena())
            gate.wait()

        run_threads(8, work)
        assert where == {0}


def test_reused_arena_shares_arenas_beyond_the_limit() -> None:
    with Allocator(arena_max=2) as alloc:
        where: list[int] = []
        lock = threading.Lock()
        gate = threading.Barrier(6)

        def work(_: int) -> None:
            gate.wait()
            index = alloc.thread_arena()
            with lock:
                where.append(index)
            gate.wait()  # all six attached at once
            if index == 0:
                with lock:
                    attached = sum(a.attached_threads for a in alloc.stats().arenas)
                assert attached == 6
            gate.wait()

        run_threads(6, work)
        assert set(where) == {0, 1}


def test_a_cross_thread_free_goes_to_the_owning_arena() -> None:
    with Allocator(arena_max=4) as alloc:
        alloc.free(alloc.malloc(1))  # this thread: arena 0
        made: list[int] = []
        ready, done = threading.Event(), threading.Event()

        def owner() -> None:
            made.extend(alloc.malloc(80_000) for _ in range(5))  # chunks, not slabs
            ready.set()
            done.wait()  # stay alive: its arena stays attached

        t = threading.Thread(target=owner)
        t.start()
        ready.wait()
        owning = alloc.arena_for(made[0])
        assert owning == 1
        before = alloc.stats().arenas
        for addr in made:
            alloc.free(addr)  # freed by this thread, whose arena is 0
        after = alloc.stats().arenas
        assert after[1].in_use_bytes == before[1].in_use_bytes - 5 * request2size(80_000)
        assert after[0].in_use_bytes == before[0].in_use_bytes
        done.set()
        t.join()
        alloc.check()


def test_heap_for_ptr_is_a_mask_for_non_main_arenas() -> None:
    with Allocator(arena_max=4) as alloc:
        alloc.free(alloc.malloc(1))
        got: list[int] = []
        run_threads(1, lambda _: got.extend(alloc.malloc(n) for n in (40, 5000, 80_000)))
        mask = ~(alloc.params["heap_max_size"] - 1)
        for addr in got:
            assert alloc.heap_for_ptr(addr) == addr & mask
            header = ctypes.c_uint64.from_address(addr - 8).value
            if alloc.usable_size(addr) > 65536:  # a chunk: NON_MAIN_ARENA is set
                assert header & 0x4
        main_block = alloc.malloc(80_000)
        assert not ctypes.c_uint64.from_address(main_block - 8).value & 0x4
        assert alloc.arena_for(main_block) == 0


def test_fallback_to_the_main_arena_then_out_of_memory() -> None:
    cap = 24 << 20
    with Allocator(arena_max=4, max_heap_bytes=cap, top_pad=0) as alloc:
        main_blocks = [alloc.malloc(100_000) for _ in range(40)]  # ~4 MiB in arena 0
        for addr in main_blocks[::2]:
            alloc.free(addr)  # holes in the main arena: free memory there
        outcome: dict[str, object] = {}

        def greedy(_: int) -> None:
            mine = []
            try:
                while True:
                    mine.append(alloc.malloc(100_000))
            except OutOfMemory as exc:
                outcome["error"] = exc
            outcome["arenas"] = {alloc.arena_for(a) for a in mine}
            outcome["blocks"] = mine

        run_threads(1, greedy)
        assert isinstance(outcome["error"], OutOfMemory)
        used = outcome["arenas"]
        assert isinstance(used, set)
        assert 0 in used and len(used) > 1  # its own arena first, then the main arena's holes
        assert alloc.stats().max_system_bytes <= cap
        alloc.check()
        blocks = outcome["blocks"]
        assert isinstance(blocks, list)
        for addr in blocks:
            alloc.free(addr)
        again: list[int] = []
        run_threads(1, lambda _: again.append(alloc.malloc(100_000)))
        alloc.free(again[0])
        alloc.check()


def test_stats_per_arena() -> None:
    with Allocator(arena_max=3) as alloc:
        alloc.free(alloc.malloc(1))
        hold = threading.Event()
        started = threading.Barrier(3)

        def work(_: int) -> None:
            alloc.malloc(80_000)
            started.wait()
            hold.wait()

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        started.wait()
        st = alloc.stats()
        assert [a.index for a in st.arenas] == [0, 1, 2]
        assert [a.attached_threads for a in st.arenas] == [1, 1, 1]
        for a in st.arenas[1:]:
            # its thread's one chunk, cut from its top
            assert a.heaps == 1 and a.in_use_bytes == request2size(80_000)
            assert a.in_use_chunks == 1
            assert a.system_bytes == a.in_use_bytes + a.free_bytes
        hold.set()
        for t in threads:
            t.join()


# ---------------------------------------------------------------- fork
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_fork_while_threads_allocate() -> None:
    """glibc's tst-mallocfork2 idea: fork while other threads hammer the allocator."""
    with Allocator(arena_max=4) as alloc:
        keep = {alloc.malloc(n): n for n in (10, 5000, 80_000, 300_000)}
        stop = threading.Event()

        def hammer(k: int) -> None:
            rng = random.Random(k)
            while not stop.is_set():
                blocks = [alloc.malloc(rng.randint(1, 90_000)) for _ in range(20)]
                for addr in blocks:
                    alloc.free(addr)

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        codes = []
        try:
            for _ in range(3):
                pid = os.fork()
                if pid == 0:  # the child: only this thread survived
                    code = 0
                    try:
                        blocks = [alloc.malloc(n) for n in (1, 100, 5000, 70_000, 500_000)]
                        for addr in blocks:
                            alloc.free(addr)
                        for addr in keep:
                            alloc.free(addr)
                        alloc.check()
                        attached = [a.attached_threads for a in alloc.stats().arenas]
                        if sorted(attached)[-1] != 1 or sum(attached) != 1:
                            code = 3
                        if alloc.stats().tcache_blocks > 64:  # the dead threads' caches came home
                            code = 4
                    except BaseException:
                        import traceback

                        traceback.print_exc()
                        code = 2
                    os._exit(code)
                codes.append(child_exit_code(pid, 30))
        finally:  # (a child that hung fails the test: the threads must stop all the same)
            stop.set()
            for t in threads:
                t.join()
        assert codes == [0, 0, 0]
        alloc.check()
        for addr in keep:
            alloc.free(addr)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_with_the_default_allocator() -> None:
    import arenas

    addr = arenas.malloc(50)
    arenas.view(addr, 5)[:] = b"hello"
    pid = os.fork()
    if pid == 0:
        ok = ctypes.string_at(addr, 5) == b"hello"
        arenas.free(addr)
        arenas.free(arenas.malloc(70_000))
        arenas.default_allocator().check()
        os._exit(0 if ok else 1)
    wait_child(pid, 30)
    assert ctypes.string_at(addr, 5) == b"hello"  # the parent's copy is its own
    arenas.free(addr)


def test_check_while_threads_allocate_and_when_quiet() -> None:
    from arenas import HeapCorruption
    from arenas.slab import CLASS_OF

    with Allocator(arena_max=4) as alloc:
        stop = threading.Event()

        def churn(k: int) -> None:
            rng = random.Random(k)
            live: list[int] = []
            while not stop.is_set():
                if live and rng.random() < 0.5:
                    alloc.free(live.pop(rng.randrange(len(live))))
                else:
                    live.append(alloc.malloc(rng.choice([rng.randint(1, 2000), 90_000])))
            for addr in live:
                alloc.free(addr)

        workers = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
        for t in workers:
            t.start()
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                alloc.check()  # per-arena invariants, exact under each lock: never a false alarm
                alloc.stats()
                alloc.trim()
        finally:
            stop.set()
            for t in workers:
                t.join()
        alloc.check()  # quiet now: the slab accounting across caches runs too
        # and that accounting does catch a block that went missing
        addr = alloc.malloc(48)
        cls = alloc.caches.claim(addr)  # lost: neither live, cached, nor free
        assert cls == CLASS_OF[48]
        with pytest.raises(HeapCorruption, match=r"held \+ \d+ free != \d+ blocks"):
            alloc.check()
        alloc.caches.unclaim(alloc.caches.current(), addr, cls)  # found again
        alloc.free(addr)
        alloc.check(quiet=True)


def test_threads_reuse_the_main_arenas_freed_memory_while_it_is_busy() -> None:
    # The main thread keeps allocating in arena 0 while 8 threads outgrow
    # their own arenas' first heaps and take slabs from arena 0's holes.
    with Allocator(tcache_count=4) as alloc:
        burst = [alloc.malloc(3000) for _ in range(3000)]  # ~9 MB in arena 0
        assert alloc.thread_arena() == 0
        pins = burst[::300]
        for addr in burst:
            if addr not in pins:
                alloc.free(addr)
        survivors: dict[int, bytes] = {}
        placed: list[int | None] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(k: int) -> None:
            try:
                rng = random.Random(k)
                mine: dict[int, bytes] = {}
                for _ in range(600):
                    size = rng.choice([rng.randint(16, 1024), rng.randint(1025, 6000)])
                    addr = alloc.malloc(size)
                    mine[addr] = pattern = bytes([k + 1]) * size
                    ctypes.memmove(addr, pattern, size)
                    if rng.random() < 0.3:
                        victim = rng.choice(list(mine))
                        assert ctypes.string_at(victim, len(mine[victim])) == mine.pop(victim)
                        alloc.free(victim)
                with lock:
                    survivors.update(mine)
                    placed.extend(alloc.arena_for(addr) for addr in mine)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in workers:
            t.start()
        rng = random.Random(99)
        mine: dict[int, bytes] = {}
        while any(t.is_alive() for t in workers):  # the main thread churns arena 0 meanwhile
            if len(mine) < 200:
                size = rng.randint(16, 4000)
                addr = alloc.malloc(size)
                mine[addr] = pattern = bytes([rng.randrange(256)]) * size
                ctypes.memmove(addr, pattern, size)
            else:
                addr = rng.choice(list(mine))
                assert ctypes.string_at(addr, len(mine[addr])) == mine.pop(addr)
                alloc.free(addr)
        for t in workers:
            t.join()
        assert not errors, errors[0]
        survivors.update(mine)
        assert 0 in placed and len(set(placed)) > 1  # some in arena 0's holes, some at home
        assert_disjoint(alloc, survivors)
        alloc.check()
        for addr in [*survivors, *pins]:
            alloc.free(addr)
        alloc.check()
