"""The snippets of the guided docs run, and print what the docs say they print."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page", ["tutorial.md", "heap-bugs.md"])
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
