"""Free-threaded CPython (3.13t and later): the GIL stays off, and the hot path is one.

Speed on free-threaded builds is measured by ``python -m stress scaling``
(docs/benchmarks.md), never here; these tests pin the structure that speed
rests on, and run under both builds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from helpers import run_threads

import arenas
from arenas import Allocator, hotpath

FREE_THREADED = getattr(sys, "_is_gil_enabled", lambda: True)() is False


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded interpreter")
def test_importing_the_package_and_the_stress_suite_keeps_the_gil_off() -> None:
    code = (
        "import sys, arenas, arenas.inspect, arenas.timeline, arenas.hooks\n"
        "import stress, stress.__main__, stress.fastpath, stress.scaling, stress.workloads\n"
        "print(sys._is_gil_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "False", out.stderr


def test_every_entry_point_runs_the_same_hit_path() -> None:
    from arenas import free, malloc  # as a program writes it, before any call

    alloc = Allocator()
    try:
        for fn in (malloc, free):
            assert fn is getattr(arenas, fn.__name__)  # never rebound
        assert malloc.__code__ is alloc.malloc.__code__ is hotpath.malloc.__code__
        assert free.__code__ is alloc.free.__code__ is hotpath.free.__code__
        # functions, not bound methods or closures: nothing per call, nothing shared
        assert malloc.__closure__ is None and alloc.malloc.__closure__ is None
    finally:
        alloc.close()


def test_each_thread_records_its_blocks_in_a_table_of_its_own() -> None:
    with Allocator() as alloc:
        tables: dict[int, int] = {}
        blocks: dict[int, list[int]] = {}
        all_attached = threading.Barrier(8)

        def work(k: int) -> None:
            blocks[k] = [alloc.malloc(32 + k) for _ in range(10)]
            tables[k] = id(alloc.caches.current().live)
            all_attached.wait()  # (a thread that ended would hand its table on)

        run_threads(8, work)
        assert len(set(tables.values())) == 8  # eight threads, eight tables
        # a remote free finds the block in its owner's table; a second one cannot
        for mine in blocks.values():
            for p in mine:
                alloc.free(p)
            with pytest.raises(arenas.DoubleFree):
                alloc.free(mine[0])
        alloc.check()
        assert alloc.stats().slab_blocks_live == 0


def test_an_ended_threads_table_is_adopted_not_grown() -> None:
    with Allocator() as alloc:
        kept: list[int] = []
        for round_ in range(20):  # short-lived threads, each leaving a block live
            t = threading.Thread(target=lambda: kept.append(alloc.malloc(64)))
            t.start()
            t.join()
            assert len(alloc.caches.live_tables) <= 2, round_  # (this thread never attached)
        for p in kept:
            alloc.free(p)
        alloc.check()
