"""The snippets of the guided docs run, and print what the docs say they print."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(
    "page",
    # heap-bugs.md leaves a debug allocator with an overrun guard byte: what it shows.
    ["tutorial.md", pytest.param("heap-bugs.md", marks=pytest.mark.corrupts_heap)],
)
def test_doc_snippets(page: str) -> None:
    result = doctest.testfile(
        str(DOCS / page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted > 10
    assert result.failed == 0, f"{result.failed} snippets of {page} failed (run doctest on it)"
