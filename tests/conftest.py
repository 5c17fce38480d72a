"""What every test gets without asking: each allocator it makes is checked, then closed.

:func:`checked_allocators` (autouse) records every :class:`arenas.Allocator`
constructed while a test runs: the test's own, the default allocator of the
module-level functions, those made inside replacements, the stress suite's
adapters and the timeline.  When the test ends, each one still open is walked
by ``check()`` (which raises ``HeapCorruption`` on damage), then closed.  A
test cannot forget it, and needs no fixture of its own for it.

* By then the test's threads are done, so the check runs with ``quiet=True``:
  the slab accounting across the threads' caches (every slab block live,
  cached or free, exactly once) runs too.  If a thread the test started is
  still alive, the check runs with ``quiet=False`` (each arena exact under its
  own lock, no accounting across caches) and a failure names the thread.
* A test that damages a heap on purpose and leaves it damaged (to show that
  the damage is detected) says so with ``@pytest.mark.corrupts_heap``: its
  allocators are closed unchecked.
* A test that failed already is not checked again (its allocators are closed):
  the first failure is the one to read.
* What a test leaves in the module-level functions is undone: replacement
  functions still installed (``set_mem_functions``) are uninstalled, and the
  default allocator, if the test made it, is checked and closed like any
  other, so the next test that calls ``arenas.malloc`` gets a fresh one
  (``arenas.dispatch`` makes a new default allocator when the old one is
  closed).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from arenas import Allocator, dispatch, set_mem_functions

pytest_plugins = ["pytester"]  # (tests/test_conftest.py runs a suite under this file)

CORRUPTS_HEAP = "corrupts_heap"
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def checked_allocators(request: pytest.FixtureRequest) -> Iterator[list[Allocator]]:
    """Every Allocator made during the test; each still open at the end is checked
    (``check(quiet=True)`` once the test's threads are done) and closed."""
    made: list[Allocator] = []
    original = Allocator.__init__

    @functools.wraps(original)
    def recording_init(self: Allocator, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)  # (list.append is atomic: allocators made in threads count too)

    threads_before = set(threading.enumerate())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Allocator, "__init__", recording_init)
        yield made

    _restore_module_functions()
    node = request.node
    check = node.get_closest_marker(CORRUPTS_HEAP) is None and not node.stash.get(_FAILED, False)
    running = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    failures: list[str] = []
    first: BaseException | None = None
    for k, alloc in enumerate(made):
        if alloc.closed:
            continue
        try:
            if check:
                alloc.check(quiet=not running)
        except Exception as exc:
            first = first or exc
            failures.append(f"allocator #{k} {alloc.params}: {type(exc).__name__}: {exc}")
        finally:
            alloc.close()
    if failures:
        still = f"; threads still running: {[t.name for t in running]}" if running else ""
        raise AssertionError(
            f"check() after the test failed for {len(failures)} of the {len(made)}"
            f" allocators it made (#k: in the order made){still}:\n  " + "\n  ".join(failures)
        ) from first


def _restore_module_functions() -> None:
    """``arenas.malloc`` and friends back on the default allocator's hit path.

    ``set_mem_functions(None, None, None)`` uninstalls a replacement.  A set
    that still owned blocks when it was replaced is *retired*, and as long as
    it owns one the module functions stay on their slow, replaced path (a
    program frees them by installing the same functions again), so a test
    that leaves one would slow down, and change the code path of, every later
    test in the process.  Its blocks live in allocators this test made, all
    closed by the time it ends: the record of them is dropped (under the
    dispatch table's lock; no public call forgets live blocks, on purpose).
    """
    if dispatch.replaced():
        set_mem_functions(None, None, None)
    if dispatch.replaced():
        with dispatch._lock:
            dispatch._retired.clear()
            dispatch._update()
