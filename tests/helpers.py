"""Helpers shared by the multi-threaded tests."""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from collections.abc import Callable

from arenas import Allocator


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


def wait_child(pid: int, timeout: float, what: str = "the forked child") -> None:
    """Wait for a forked child to exit 0; kill it and fail if it hangs (a lock a lost
    thread held) or fails."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, f"{what} failed"
            return
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} hung after fork: a lock held by a lost thread?")
        time.sleep(0.005)
