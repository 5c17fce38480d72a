"""Helpers shared by the tests: threads, forked children, the stress suite's runs, and the
exact sizes the allocator's rules give."""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from arenas import Allocator
from arenas.chunk import (
    CHUNK_HDR_SZ,
    MALLOC_ALIGNMENT,
    MINSIZE,
    SIZE_BITS,
    SIZE_SZ,
    request2size,
)
from arenas.memory import PAGE_SIZE, page_align
from arenas.slab import CLASS_OF, CLASS_SIZES, SLAB_MAX
from arenas.trace import Plan
from stress import trace, workloads
from stress.adapters import Adapter, ArenasAdapter, make_adapter
from stress.metrics import RunResult


def assert_disjoint(alloc: Allocator, blocks: dict[int, bytes]) -> None:
    """No two live blocks overlap, and every block still holds its pattern."""
    spans = sorted((addr, addr + alloc.usable_size(addr)) for addr in blocks)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"blocks overlap at {start:#x}"
    for addr, pattern in blocks.items():
        assert ctypes.string_at(addr, len(pattern)) == pattern, f"block {addr:#x} damaged"


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(k)`` for k in 0..n-1, each in a thread of its own; re-raise the first error."""
    errors: list[BaseException] = []

    def body(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def child_exit_code(pid: int, timeout: float, what: str = "the forked child") -> int:
    """Wait for a forked child; return its exit code.

    A child that hangs (on a lock a lost thread held) fails the test.  It is sent
    SIGABRT first: faulthandler, which pytest turns on and a forked child inherits,
    then prints where each of its threads stands (on the worker's standard error);
    then it is killed.
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGABRT)
            aborted = time.monotonic() + 10
            while not os.waitpid(pid, os.WNOHANG)[0]:
                if time.monotonic() > aborted:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
            raise AssertionError(
                f"{what} hung after fork: a lock held by a lost thread? (SIGABRT made"
                " faulthandler print its threads' stacks on standard error)"
            )
        time.sleep(0.005)


def wait_child(pid: int, timeout: float, what: str = "the forked child") -> None:
    """Wait for a forked child to exit 0; fail if it fails or hangs (see child_exit_code)."""
    code = child_exit_code(pid, timeout, what)
    assert code == 0, f"{what} failed (exit code {code})"


# ------------------------------------------------------------ the stress suite's runs
def _checked_run(allocator: str | Adapter, run: Callable[[Adapter], object]) -> object:
    """``run(adapter)`` on ``allocator`` (an adapter made here from its name, or the caller's);
    then, the run's threads all joined, the arenas allocator's ``check()`` with the slab
    accounting across caches (``quiet=True``); then close what was made here."""
    adapter = make_adapter(allocator) if isinstance(allocator, str) else allocator
    try:
        out = run(adapter)
        if isinstance(adapter, ArenasAdapter):
            adapter.alloc.check(quiet=True)
        return out
    finally:
        if isinstance(allocator, str):
            adapter.close()


def run_workload(
    workload: str, allocator: str | Adapter, threads: int = 1, scale: float = 1.0
) -> RunResult:
    """:func:`stress.workloads.run_workload`, then ``check()`` once its threads have joined."""
    out = _checked_run(
        allocator, lambda a: workloads.run_workload(workload, a, threads=threads, scale=scale)
    )
    assert isinstance(out, RunResult)
    return out


def replay(
    path: str | Path, allocator: str | Adapter, paced: bool = False
) -> tuple[RunResult, Plan, int]:
    """:func:`stress.trace.replay`, then ``check()`` once its threads have joined."""
    out = _checked_run(allocator, lambda a: trace.replay(path, a, paced=paced))
    assert isinstance(out, tuple)
    return out


# ----------------------------------------------------------- what the rules give
def usable_for(alloc: Allocator, addr: int, size: int, alignment: int = MALLOC_ALIGNMENT) -> int:
    """The usable size the allocator's rules give block ``addr``, served for a request of
    ``size`` bytes aligned to ``alignment`` (not in debug mode):

    * a slab block (``malloc`` of at most ``SLAB_MAX`` bytes): the size of its class;
    * a mapping of its own: the mapping (``page_align(nb + header + slack)``, the slack
      being the alignment when it is over 16) less the lead before the chunk and the
      header; the lead is 0, or ``alignment - 16`` when the alignment is at most a page
      (a mapping starts on a page), and above a page it is read from the chunk's
      ``prev_size``, where the code keeps it;
    * a chunk of a heap: its size less the 8 bytes of the size word; that size, read from
      the in-band header, must be ``nb`` exactly, or ``nb + 16`` when a split would have
      left a remainder under ``MINSIZE`` (a chunk cannot be that small); under the glibc
      policy an aligned chunk may keep ``nb + 32`` too (glibc's ``_int_memalign`` splits
      the tail only when it is *more* than ``MINSIZE``).

    The glibc policy has no slabs: every block is a chunk.
    """
    nb = request2size(size)
    glibc = alloc.policy == "glibc"
    if alignment <= MALLOC_ALIGNMENT and size <= SLAB_MAX and not glibc:
        cls = alloc.caches.find(addr)
        assert cls == CLASS_OF[size], (addr, size, cls)
        return CLASS_SIZES[cls]
    prev_size, head = (ctypes.c_uint64 * 2).from_address(addr - CHUNK_HDR_SZ)
    if alloc.arena_for(addr) is None:
        slack = alignment if alignment > MALLOC_ALIGNMENT else 0
        length = page_align(nb + CHUNK_HDR_SZ + slack)
        lead = prev_size
        if alignment <= PAGE_SIZE:  # the mapping starts on a page: the lead is known
            assert lead == (slack and alignment - CHUNK_HDR_SZ), (addr, lead)
        else:
            assert lead < alignment, (addr, lead)
        assert head & SIZE_BITS == length - lead, (addr, head)
        return length - lead - CHUNK_HDR_SZ
    chunk = head & SIZE_BITS
    most = nb + MINSIZE if glibc and alignment > MALLOC_ALIGNMENT else nb + MINSIZE - 1
    assert nb <= chunk <= most and chunk % MALLOC_ALIGNMENT == 0, (addr, size, chunk)
    return chunk - SIZE_SZ


def cached_after_churn(n: int, count: int) -> int:
    """Blocks a thread's cache holds of one class after ``n`` mallocs, then ``n`` frees, of
    that class (no block of the next class cached meanwhile), by arenas/tcache.py's rules:

    * a malloc that finds the bin empty refills it (``ThreadCaches._refill``): one block
      the first time, twice as many each time after, up to half the bin's limit plus one;
    * a free into a full bin keeps its older half and sends the rest home, the freed block
      with it (``ThreadCaches.free_popped``).
    """
    most = (count >> 1) + 1
    fill = 1
    cached = 0
    for _ in range(n):
        if not cached:
            want = fill
            if want < most:
                fill = min(want * 2, most)
            else:
                want = most
            cached = want
        cached -= 1
    for _ in range(n):
        cached = cached + 1 if cached < count else cached >> 1
    return cached


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` from the repository's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=timeout,
    )
