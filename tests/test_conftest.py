"""tests/conftest.py itself: a damaged heap left by a test fails it at teardown, unless
the test is marked ``corrupts_heap``; what a test leaves in the module functions is undone."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

INNER = """
import ctypes

import pytest

import arenas
from arenas import Allocator, hooks


def damage(alloc):
    addr = alloc.malloc(70_000)
    ctypes.c_uint64.from_address(addr - 8).value ^= 1 << 20  # its size word
    return addr


def test_left_damaged():
    damage(Allocator())


@pytest.mark.corrupts_heap
def test_left_damaged_on_purpose():
    damage(Allocator())


def test_left_whole_and_open():
    alloc = Allocator()
    alloc.free(alloc.malloc(100))
    arenas.free(arenas.malloc(100))  # the default allocator, made now
    hooks.counting(Allocator()).install()  # left installed
    mine = arenas.malloc(10)
    arenas.set_mem_functions(None, None, None)  # retired, owning a block it cannot free
    assert arenas.dispatch.replaced() and mine


def test_after_that():
    assert not arenas.dispatch.replaced()  # the module functions are plain again
    assert arenas.default_allocator().stats().in_use_bytes == 0  # and a fresh default
"""


def test_what_a_test_leaves_is_checked_closed_and_undone(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    corrupts_heap: damaged on purpose\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_left_damaged*",
            "*check() after the test failed for 1 of the 1 allocators it made*",
            "*HeapCorruption*",
        ]
    )
