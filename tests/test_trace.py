"""The trace format (arenas.trace): written and read back, and bad input named by its line."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from arenas.trace import (
    FIELDS,
    Call,
    Event,
    TraceError,
    drive,
    format_call,
    parse,
    read_calls,
    write_calls,
)

CALLS = [
    Call(0, "m", (24, 0x7F00_0010)),
    Call(1, "c", (3, 8, 0x7F00_0040)),
    Call(0, "r", (0x7F00_0010, 48, 0x7F00_0080)),
    Call(1, "a", (64, 100, 0x7F00_0100)),
    Call(0, "m", (1 << 40, 0)),  # failed
    Call(1, "f", (0x7F00_0080,)),
    Call(0, "r", (0x7F00_0040, 0, 0)),  # realloc(p, 0): a free
]


@pytest.mark.parametrize("name", ["t.trace", "t.trace.gz"])
def test_calls_written_read_back_as_they_were(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_calls(path, CALLS) == len(CALLS)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = list(read_calls(path))
    assert [call._replace(line=0) for call in back] == CALLS
    assert [call.line for call in back] == list(range(1, len(CALLS) + 1))
    plan = parse(path)
    assert plan.allocations == 4 and plan.live_at_end == {3: 100}


def test_addresses_are_written_in_hex_the_rest_in_decimal() -> None:
    assert format_call(2, "r", 0x10, 32, 0) == "2 r 0x10 32 0x0\n"
    assert format_call(0, "c", 10, 16, 4096) == "0 c 10 16 0x1000\n"
    assert format_call(1, "a", 64, 100, 4096) == "1 a 64 100 0x1000\n"
    for op, names in FIELDS.items():
        assert len(format_call(0, op, *range(len(names))).split()) == 2 + len(names)


@pytest.mark.parametrize("op, args", [("m", (24,)), ("f", (1, 2)), ("x", (1,))])
def test_a_call_the_format_has_no_line_for_is_refused(op: str, args: tuple[int, ...]) -> None:
    with pytest.raises(TraceError, match="no trace line"):
        format_call(0, op, *args)


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ("0 z 1 2", "malformed event"),
        ("0 m 10", "malformed event"),
        ("0 m -1 0x10", "malformed event"),
        ("-1 f 0x10", "malformed event"),
        ("main m 10 0x10", "not a trace line"),
        ("0 m ten 0x10", "not a trace line"),
        ("0", "not a trace line"),
        (f"0 m {1 << 64} 0x10", "a number beyond 64 bits"),
    ],
)
def test_a_malformed_line_is_named_by_its_number(tmp_path: Path, bad: str, complaint: str) -> None:
    path = tmp_path / "bad.trace"
    path.write_text(f"# recorded by hand\n\n0 m 10 0x10\n{bad}\n0 f 0x10\n")
    with pytest.raises(TraceError, match=f"^{re.escape(str(path))}:4: {complaint}") as info:
        parse(path)
    assert info.value.line == 4 and info.value.path == path


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("0 m 10 0x10\n0 f 0x20\n", "2: free of 0x20, which is not live"),
        ("0 m 10 0x10\n0 r 0x20 5 0x30\n", "2: realloc of 0x20, which is not live"),
        ("0 m 10 0x10\n1 m 20 0x10\n", "2: address 0x10 allocated twice"),
    ],
)
def test_an_inconsistent_trace_is_named_by_its_line(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "bad.trace"
    path.write_text(text)
    with pytest.raises(TraceError, match=re.escape(f"{path}:{complaint}")):
        parse(path)


def test_an_unreadable_trace_is_a_trace_error(tmp_path: Path) -> None:
    (tmp_path / "notgz.trace.gz").write_text("plain")
    with pytest.raises(TraceError, match="cannot read"):
        parse(tmp_path / "notgz.trace.gz")
    with pytest.raises(TraceError, match="cannot read"):
        parse(tmp_path / "missing.trace")
    (tmp_path / "binary.trace").write_bytes(b"0 m 10 \xff\n")
    with pytest.raises(TraceError, match="cannot read"):
        parse(tmp_path / "binary.trace")


def test_the_format_module_loads_on_its_own() -> None:
    """No ctypes (the rest of arenas loads libc), no stress suite, no other arenas module."""
    module = Path(__file__).resolve().parent.parent / "arenas" / "trace.py"
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('trace_alone', {str(module)!r})\n"
        "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if m == 'ctypes' or m.split('.')[0] in"
        " ('arenas', 'stress')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_lingering_thread_outlives_its_last_event(tmp_path: Path) -> None:
    """Thread 0's last event comes before thread 1's first (paced, so thread 1 waits for
    it); kept alive, thread 0's Python thread is still running when thread 1's run."""
    path = tmp_path / "t.trace"
    write_calls(path, [Call(0, "m", (8, 0x10)), Call(1, "m", (8, 0x20)), Call(1, "f", (0x20,))])
    plan = parse(path)
    threads: dict[int, threading.Thread] = {}
    alive_then: list[bool] = []

    def thread_step(tid: int) -> Callable[[Event, int | None], int | None]:
        threads[tid] = threading.current_thread()

        def step(ev: Event, old: int | None) -> int | None:
            if tid == 1:
                threads[0].join(0.2)  # (time enough for a thread that was done to end)
                alive_then.append(threads[0].is_alive())
            return ev.alloc

        return step

    left = drive(plan, thread_step, paced=True, linger=(0,))
    assert alive_then == [True, True] and left == [0]
    assert not threads[0].is_alive()  # and it did end with the replay
