"""Issue 19: ``Allocator(policy="glibc")`` puts every chunk where glibc 2.36 puts it.

* each fixture of tests/fixtures/glibc (one ptmalloc rule each, glibc's own
  placements measured by the native replayer) replays to exactly glibc's
  placements, heap by heap and offset by offset;
* every shipped trace replays with every block where the recorded program
  got it from glibc (the differential test): the thirteen of stress/traces
  whole, the four 300,000-event traces of stress/traces/fidelity on their
  first 40,000 events here and whole under ``-m stress``;
* glibc's own checks are typed exceptions, raised before anything changes,
  for every double free (glibc catches some); bad input is refused; and the
  classic attacks on the bins' links find no links in the heap to forge.

The stateful model test and the many-threads test run the glibc policy too
(tests/test_statemachine.py, tests/test_arenas.py).
"""

from __future__ import annotations

import ctypes
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from arenas import Allocator, DoubleFree, HeapCorruption, InvalidPointer
from arenas.trace import parse
from stress.fidelity import fidelity, replay_placements

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "glibc"
SHIPPED = sorted((ROOT / "stress" / "traces").glob("*.trace.gz"))
LONG = sorted((ROOT / "stress" / "traces" / "fidelity").glob("*.trace.gz"))
# glibc's tunables the fixtures set, by their arenas names.
GLIBC_NAMES = {"arena_max", "arena_test", "tcache_count", "mxfast", "top_pad"}


def tunables_of(env: dict[str, str]) -> dict[str, Any]:
    """The fixture's GLIBC_TUNABLES (``glibc.malloc.NAME=VALUE:...``) as arenas tunables."""
    out: dict[str, Any] = {}
    for item in filter(None, env.get("GLIBC_TUNABLES", "").split(":")):
        name, _, value = item.partition("=")
        short = name.rsplit(".", 1)[-1]
        assert short in GLIBC_NAMES, f"a fixture sets {name}, which this test cannot map"
        out[short] = int(value, 0)
    return out


def expected(entry: dict[str, Any]) -> tuple[str, int, int]:
    """A fixture placement as (kind, heap number, offset)."""
    offset = int(entry["offset"], 16)
    heap = entry["heap"]
    if heap == "mmap":
        return "mapped", 0, offset
    return ("main", 0, offset) if heap == 0 else ("heap", heap, offset)


FIXTURE_FILES = sorted(FIXTURES.glob("*.offsets.json"))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name.split(".")[0])
def test_each_rule_places_every_block_where_glibc_did(path: Path) -> None:
    fixture = json.loads(path.read_text())
    plan = parse(FIXTURES / fixture["trace"])
    with Allocator(policy="glibc", **tunables_of(fixture["env"])) as alloc:
        # The native replayer keeps every thread to the end: so does this replay.
        placed = replay_placements(plan, alloc, end_threads=False)
        alloc.check()
    got = {seq: (p.kind, p.number, p.offset) for seq, p in enumerate(placed) if p is not None}
    want = {entry["event"]: expected(entry) for entry in fixture["placements"]}
    assert got == want, fixture["rule"]


def test_the_fixtures_cover_every_rule_the_issue_names() -> None:
    names = {path.name.split(".")[0] for path in FIXTURE_FILES}
    for rule in (
        "tcache-fill",
        "fastbin-consolidate",
        "unsorted-0x420",
        "smallbin-fifo",
        "last-remainder",
        "largebin-best-fit",
        "top-consolidate",
        "trim",
        "sbrk-growth",
        "mmap-threshold",
        "realloc-grow-top",
        "realloc-grow-next",
        "realloc-shrink",
        "memalign",
        "calloc",
        "threads-arenas",
        "threads-arena-max",
    ):
        assert rule in names


@pytest.mark.parametrize("trace", SHIPPED, ids=lambda p: p.name.split(".")[0])
def test_every_shipped_trace_replays_block_for_block(trace: Path) -> None:
    result = fidelity(trace, policy="glibc")
    assert result.identical == result.blocks > 0, result.report()


@pytest.mark.parametrize("trace", LONG, ids=lambda p: p.name.split(".")[0])
def test_the_long_traces_start_block_for_block(trace: Path) -> None:
    result = fidelity(trace, policy="glibc", events=40_000)
    assert result.identical == result.blocks > 10_000, result.report()


@pytest.mark.stress
@pytest.mark.parametrize("trace", LONG, ids=lambda p: p.name.split(".")[0])
def test_the_long_traces_replay_block_for_block(trace: Path) -> None:
    result = fidelity(trace, policy="glibc", events=300_000)
    assert result.events == 300_000
    assert result.identical == result.blocks > 150_000, result.report()


def test_the_default_policy_is_not_glibc() -> None:
    """The measurement can fail: the default policy places blocks its own way."""
    result = fidelity(SHIPPED[0], policy="default", events=2_000)
    assert result.identical < result.blocks // 10


# ================================================================ glibc's checks
def glibc() -> Allocator:
    return Allocator(policy="glibc")


def test_a_tcache_double_free_is_caught_as_glibc_words_it() -> None:
    with glibc() as alloc:
        p = alloc.malloc(40)
        q = alloc.malloc(40)
        alloc.free(p)
        alloc.free(q)
        with pytest.raises(DoubleFree, match=r"free\(\): double free detected in tcache 2"):
            alloc.free(p)  # not at the bin's head: glibc's key finds it too
        alloc.check()
        assert alloc.malloc(40) == q and alloc.malloc(40) == p


def test_a_fastbin_double_free_is_caught_even_where_glibc_misses_it() -> None:
    with glibc() as alloc:
        chunks = [alloc.malloc(40) for _ in range(10)]
        for p in chunks[:7]:
            alloc.free(p)  # the tcache bin is full now
        a, b = chunks[7], chunks[8]
        alloc.free(a)
        with pytest.raises(DoubleFree, match=r"double free or corruption \(fasttop\)"):
            alloc.free(a)
        alloc.free(b)
        # glibc compares only the fastbin's head: fastbin dup passes there.
        with pytest.raises(DoubleFree, match="in a fastbin"):
            alloc.free(a)
        alloc.check()


def test_a_chunk_freed_twice_into_the_bins_or_the_top() -> None:
    with glibc() as alloc:
        big, guard = alloc.malloc(5000), alloc.malloc(24)
        alloc.free(big)
        with pytest.raises(DoubleFree):
            alloc.free(big)
        alloc.free(guard)
        last = alloc.malloc(5000)
        alloc.free(last)  # back into the top
        with pytest.raises(DoubleFree):
            alloc.free(last)
        alloc.check()


def test_an_overrun_header_is_refused_before_anything_changes() -> None:
    with glibc() as alloc:
        p, q, guard = alloc.malloc(200), alloc.malloc(200), alloc.malloc(24)
        size_word = ctypes.c_uint64.from_address(q - 8)
        saved = size_word.value
        size_word.value = 0x1234560  # as an overrun of p would leave it
        with pytest.raises(HeapCorruption, match="invalid size"):
            alloc.free(q)
        size_word.value = saved
        alloc.check()
        for block in (p, q, guard):
            alloc.free(block)
        alloc.check()


def test_a_forged_tcache_link_never_becomes_an_allocation() -> None:
    """tcache poisoning: in glibc, the first 8 bytes of a freed tcache chunk are the link
    to the next; forge it and the second malloc returns the forged address.  Here the
    links are not in the heap: the forged word is just bytes."""
    with glibc() as alloc:
        target = ctypes.create_string_buffer(64)
        a, b = alloc.malloc(40), alloc.malloc(40)
        alloc.free(a)
        alloc.free(b)
        ctypes.c_uint64.from_address(b).value = ctypes.addressof(target)  # a use after free
        with pytest.raises(InvalidPointer, match="use after free"):
            alloc.view(b)
        assert {alloc.malloc(40), alloc.malloc(40)} == {a, b}
        alloc.check()


def test_a_forged_chunk_cannot_be_unlinked() -> None:
    """unsafe unlink: forge a free chunk inside a live one, clear the next chunk's
    PREV_INUSE, free the next; glibc unlinks the fake chunk through its forged fd/bk.
    Here the fake chunk is not in the bins' records, so the free is refused."""
    with glibc() as alloc:
        p = alloc.malloc(0x420 - 8)
        q = alloc.malloc(0x420 - 8)
        alloc.malloc(24)  # (keeps q off the top)
        head = ctypes.c_uint64.from_address(q - 8)
        prev_size = ctypes.c_uint64.from_address(q - 16)
        prev_size.value = 0x410  # "the chunk before q is free, 0x410 bytes"
        head.value &= ~1
        with pytest.raises(HeapCorruption, match=r"corrupted size vs\. prev_size"):
            alloc.free(q)
        head.value |= 1
        alloc.free(p)
        alloc.check()


# ================================================================ input and threads
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"policy": "ptmalloc"}, ValueError, "unknown policy"),
        ({"policy": 2}, TypeError, "policy must be a str"),
        ({"mxfast": 64}, ValueError, "mxfast applies to policy='glibc' only"),
        ({"policy": "glibc", "mxfast": 161}, ValueError, "mxfast=161 is out of range"),
        ({"policy": "glibc", "tcache_max_bytes": 2000}, ValueError, "up to 1032 bytes"),
    ],
)
def test_bad_policies_and_tunables_are_refused(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        Allocator(**kwargs)


def test_glibc_defaults_and_mallopt() -> None:
    with glibc() as alloc:
        params = alloc.params
        assert (params["tcache_count"], params["tcache_max_bytes"]) == (7, 1032)
        assert (params["top_pad"], params["mxfast"]) == (128 << 10, 128)
        alloc.mallopt(1, 0)  # M_MXFAST 0: no fastbins
        p = [alloc.malloc(24) for _ in range(9)]
        for block in p:
            alloc.free(block)
        assert not alloc.arena(0).bins.fast_sizes  # type: ignore[attr-defined]
        alloc.check()
    with pytest.raises(ValueError, match="M_MXFAST does not apply"):
        Allocator().mallopt(1, 64)


def test_a_thread_that_ends_gives_its_tcache_and_arena_back() -> None:
    with glibc() as alloc:
        keep = alloc.malloc(24)  # this thread: the main arena (its tcache stays empty)
        seen: list[int] = []

        def work() -> None:
            blocks = [alloc.malloc(100) for _ in range(5)]
            for block in blocks:
                alloc.free(block)
            seen.append(alloc.thread_arena())
            alloc.thread_exit()

        for _ in range(3):
            t = threading.Thread(target=work)
            t.start()
            t.join()
        # Each new thread finds the last one's arena on the free list.
        assert seen == [1, 1, 1] and len(alloc.arena_list()) == 2
        assert not alloc.glibc.tcached  # type: ignore[union-attr]
        alloc.free(keep)
        alloc.check()
