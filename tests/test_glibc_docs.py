"""What docs/glibc.md quotes from real glibc is what tests/fixtures/glibc stores.

The page quotes glibc in ``glibc`` blocks, each right after a comment that
names its source::

    <!-- glibc: NAME -->             the trace fixture NAME.trace / NAME.offsets.json
    <!-- glibc: programs/NAME -->    the program programs/NAME.c, its output and end

Lines starting with ``#`` are captions.  Every other line must say what the
source says:

* a trace's: ``line N: OP(SIZE) -> heapH+0xOFF`` (or ``mmap+0xOFF``), optionally
  followed by `` (chunk 0xC)``: the placement of the event on line N of the
  trace, its call, size, heap, offset (and chunk size);
* a program's: a line of its standard output (the quoted ones in the order it
  printed them), ``stderr: LINE`` a line of its standard error, ``exit: 0`` or
  ``exit: SIGABRT`` how it ended (``programs/results.json``).

The fixtures themselves are glibc's answers, measured again by
tests/test_glibc_fixtures.py where glibc 2.36 runs; the page's own snippets
(what arenas does) run as doctests in tests/test_doc_blocks.py.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "glibc.md"
FIXTURES = ROOT / "tests" / "fixtures" / "glibc"
sys.path.insert(0, str(FIXTURES))
import make  # noqa: E402  (tests/fixtures/glibc/make.py, which writes the fixtures)

_QUOTE = re.compile(
    r"^<!-- glibc: (?P<source>[\w/.-]+) -->\n```glibc\n(?P<body>.*?)^```$", re.S | re.M
)
_PLACEMENT = re.compile(
    r"line (?P<line>\d+): (?P<call>malloc|calloc|realloc|memalign)\((?P<size>\d+)\)"
    r" -> (?:heap(?P<heap>\d+)|(?P<mmap>mmap))\+(?P<offset>0x[0-9a-f]+)"
    r"(?: \(chunk (?P<chunk>0x[0-9a-f]+)\))?"
)
_OPS = {"malloc": "m", "calloc": "c", "realloc": "r", "memalign": "a"}


@dataclass(frozen=True)
class Quote:
    source: str
    line: int  # where the block starts in the page
    lines: list[str]  # its quoted lines, captions dropped

    def __str__(self) -> str:
        return f"{self.source}@{self.line}"


def quotes(text: str) -> list[Quote]:
    found = []
    for m in _QUOTE.finditer(text):
        body = [ln for ln in m["body"].splitlines() if ln.strip() and not ln.startswith("#")]
        found.append(Quote(m["source"], text.count("\n", 0, m.start()) + 1, body))
    return found


QUOTES = quotes(PAGE.read_text())


def test_every_glibc_block_names_its_source() -> None:
    text = PAGE.read_text()
    assert text.count("```glibc\n") == len(QUOTES), "a glibc block without its <!-- glibc: -->"
    assert all(q.lines for q in QUOTES)


def test_the_page_quotes_each_lesson() -> None:
    # (so that the checks below cannot pass by finding nothing)
    assert {q.source for q in QUOTES} >= {
        "tcache-perthread",
        "tcache-fill",
        "unsorted-0x420",
        "top-consolidate",
        "fastbin-consolidate",
        "threads-arenas",
        "threads-arena-max",
        "programs/tcache-double-free",
        "programs/fastbin-double-free",
        "programs/fastbin-dup",
        "programs/non-main-heap",
        "programs/tcache-poison-raw",
        "programs/tcache-poison-encoded",
        "programs/unsafe-unlink",
    }


def check_trace_quote(name: str, lines: list[str]) -> None:
    offsets = FIXTURES / f"{name}.offsets.json"
    assert offsets.exists(), f"no fixture {name}"
    placements = {p["line"]: p for p in json.loads(offsets.read_text())["placements"]}
    for text in lines:
        m = _PLACEMENT.fullmatch(text)
        assert m is not None, f"not a placement: {text!r}"
        p = placements.get(int(m["line"]))
        assert p is not None, f"{name}.trace line {m['line']} returned no block"
        said = (_OPS[m["call"]], int(m["size"]), "mmap" if m["mmap"] else int(m["heap"]))
        assert said == (p["op"], p["size"], p["heap"]), text
        assert int(m["offset"], 16) == int(p["offset"], 16), f"{text}: glibc said {p['offset']}"
        if m["chunk"]:
            assert int(m["chunk"], 16) == int(p["chunk"], 16), f"{text}: glibc said {p['chunk']}"


def check_program_quote(name: str, lines: list[str]) -> None:
    programs = {p.name: p for p in make.programs()}
    assert name in programs, f"no program {name}"
    outcome = make.stored_outcome(programs[name])
    stdout = outcome.stdout.splitlines()
    at = 0
    for text in lines:
        if text.startswith("stderr: "):
            assert text.removeprefix("stderr: ") in outcome.stderr.splitlines(), text
        elif text.startswith("exit: "):
            assert text.removeprefix("exit: ") == str(outcome.exit), text
        else:
            assert text in stdout[at:], f"not printed (after the lines quoted before): {text!r}"
            at = stdout.index(text, at) + 1


@pytest.mark.parametrize("quote", QUOTES, ids=str)
def test_each_quote_is_what_glibc_said(quote: Quote) -> None:
    if quote.source.startswith("programs/"):
        check_program_quote(quote.source.removeprefix("programs/"), quote.lines)
    else:
        check_trace_quote(quote.source, quote.lines)


def test_a_drifted_quote_fails() -> None:
    with pytest.raises(AssertionError, match="glibc said 0x360"):
        check_trace_quote("tcache-fill", ["line 22: malloc(24) -> heap0+0x380"])
    with pytest.raises(AssertionError, match="returned no block"):
        check_trace_quote("tcache-fill", ["line 12: malloc(24) -> heap0+0x2a0"])
    with pytest.raises(AssertionError):
        check_program_quote("fastbin-dup", ["malloc(24) #3 -> b"])
    with pytest.raises(AssertionError):
        check_program_quote("tcache-double-free", ["exit: 0"])
    # the output's own order
    with pytest.raises(AssertionError, match="not printed"):
        check_program_quote("fastbin-dup", ["malloc(24) #2 -> b", "malloc(24) #1 -> a"])
