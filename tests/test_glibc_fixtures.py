"""glibc's answers (tests/fixtures/glibc): stored, readable, documented, and still glibc's.

The stored files are checked for shape everywhere.  Whether they are glibc's
answer is checked by measuring it again: each trace replayed natively and each
program run, on this machine, which needs a C compiler and glibc 2.36 (the
version the answers came from); without them those tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from arenas.trace import Event, parse

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glibc"
sys.path.insert(0, str(FIXTURES))
import make  # noqa: E402  (tests/fixtures/glibc/make.py, which writes them)

ALL_FIXTURES = make.fixtures()
ALL_PROGRAMS = make.programs()
PLACEMENT_KEYS = {"event", "line", "tid", "op", "size", "heap", "offset", "chunk", "brk"}


def _why_not_measurable() -> str | None:
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler to build the native replayer and the programs"
    version = make.glibc_version()
    if version != make.GLIBC:
        return f"the stored answers are {make.GLIBC}'s; this is {version or 'not glibc'}"
    return None


measured = pytest.mark.skipif(_why_not_measurable() is not None, reason=str(_why_not_measurable()))


def by_name(items: list[make.Fixture] | list[make.Program]) -> list[str]:
    return [item.name for item in items]


def events_of(fixture: make.Fixture) -> dict[int, Event]:
    plan = parse(fixture.trace)
    return {ev.seq: ev for events in plan.threads.values() for ev in events}


# ------------------------------------------------------------------ stored
def test_the_set_of_fixtures() -> None:
    assert 15 <= len(ALL_FIXTURES) <= 25
    for fixture in ALL_FIXTURES:
        events = events_of(fixture)
        assert 5 <= len(events) <= 60, fixture.name
        threads = {ev.tid for ev in events.values()}
        assert (len(threads) > 1) == fixture.name.startswith("threads-"), fixture.name
        assert "\n" not in fixture.rule and fixture.rule[0].islower(), fixture.name


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=by_name(ALL_FIXTURES))
def test_stored_offsets_parse_and_follow_the_trace(fixture: make.Fixture) -> None:
    doc = json.loads(fixture.offsets.read_text())
    assert doc["schema"] == make.SCHEMA and doc["glibc"] == make.GLIBC
    assert (doc["name"], doc["trace"]) == (fixture.name, fixture.trace.name)
    assert (doc["rule"], doc["env"]) == (fixture.rule, fixture.env)
    assert doc["replay"] == make.replay_command(fixture)
    events = events_of(fixture)
    assert doc["events"] == len(events)
    assert doc["threads"] == len({ev.tid for ev in events.values()})
    placements = doc["placements"]
    # one placement for each event that returns a block, in trace order
    assert [p["event"] for p in placements] == sorted(s for s, e in events.items() if e.alloc >= 0)
    for p in placements:
        assert set(p) == PLACEMENT_KEYS
        ev = events[p["event"]]
        assert (p["tid"], p["op"], p["size"]) == (ev.tid, ev.op, ev.size)
        assert p["heap"] == "mmap" or (isinstance(p["heap"], int) and p["heap"] >= 0)
        offset, chunk, brk = (int(p[key], 16) for key in ("offset", "chunk", "brk"))
        assert offset % 16 == 0 and chunk >= 0x20 and chunk % 16 == 0 and brk > 0
        if p["heap"] == 0:
            assert offset + chunk - 0x10 <= brk  # inside the heap (the top's header after it)
    text = fixture.trace.read_text().splitlines()
    assert all(text[p["line"] - 1].split()[:2] == [str(p["tid"]), p["op"]] for p in placements)


def test_stored_offsets_are_as_make_writes_them() -> None:
    for fixture in ALL_FIXTURES:
        stored = fixture.offsets.read_text()
        assert make.render(json.loads(stored)) == stored, fixture.name


def test_stored_program_results() -> None:
    results = json.loads(make.RESULTS.read_text())
    assert results["glibc"] == make.GLIBC
    assert sorted(results["programs"]) == by_name(ALL_PROGRAMS)
    for program in ALL_PROGRAMS:
        outcome = make.stored_outcome(program)
        assert outcome.exit in ("SIGABRT", 0), program.name
        assert outcome.stdout.endswith("\n"), program.name
        if outcome.exit == "SIGABRT":  # the message glibc printed, and nothing else
            assert outcome.stderr.count("\n") == 1, program.name


def test_the_messages_the_docs_teach() -> None:
    said = {p.name: make.stored_outcome(p) for p in ALL_PROGRAMS}
    assert said["fastbin-double-free"].stderr == "double free or corruption (fasttop)\n"
    assert said["tcache-double-free"].stderr == "free(): double free detected in tcache 2\n"
    assert said["tcache-poison-raw"].stderr == "malloc(): unaligned tcache chunk detected\n"
    assert said["tcache-poison-encoded"].stdout.endswith("malloc(24) -> &target\n")
    assert "#3 -> a\n" in said["fastbin-dup"].stdout  # a twice: the dup succeeded


def test_the_readme_lists_every_fixture_and_program() -> None:
    readme = make.README.read_text()
    for name in [*by_name(ALL_FIXTURES), *by_name(ALL_PROGRAMS)]:
        assert f"- [`{name}`](" in readme, name
    outcomes = {p.name: make.stored_outcome(p) for p in ALL_PROGRAMS}
    assert make.readme_text(readme, ALL_FIXTURES, outcomes) == readme, (
        "README.md's lists are out of date: python tests/fixtures/glibc/make.py"
    )


# ------------------------------------------------------------------ measured again
@measured
@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=by_name(ALL_FIXTURES))
def test_glibc_still_places_every_block_as_stored(fixture: make.Fixture) -> None:
    fresh = make.offsets_document(fixture)
    stored = json.loads(fixture.offsets.read_text())
    assert fresh["placements"] == stored["placements"]
    assert make.render(fresh) == fixture.offsets.read_text()


@measured
def test_the_first_block_comes_after_the_tcache_chunk() -> None:
    # What makes heap 0's offsets glibc's own: nothing allocated before the first event.
    (fixture,) = [f for f in ALL_FIXTURES if f.name == "tcache-perthread"]
    placements = make.offsets_document(fixture)["placements"]
    assert isinstance(placements, list)
    first = next(p for p in placements if p["heap"] == 0)
    assert (first["offset"], first["chunk"]) == ("0x2a0", "0x20")


@measured
@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=by_name(ALL_PROGRAMS))
def test_glibc_still_prints_what_is_stored(program: make.Program) -> None:
    assert make.run_program(program) == make.stored_outcome(program)
