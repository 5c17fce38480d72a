"""Instructions per call: the fast path measured by a count that does not move.

Timings on a shared machine move by tens of percent between runs; the number
of machine instructions a loop executes does not (``valgrind --tool=callgrind``
counts the same total twice, whatever else the machine does).  This command
runs each loop once per allocator in a process of its own under callgrind,
and once with no loop at all (the interpreter, the imports, the draws),
and reports the difference per operation:

* ``pairs``: ``free(malloc(n))``, n uniform in 16..1024;
* ``churn``: 1,000 live blocks, each step frees a random one and allocates
  a new random size in its slot.

With ``--chunks``, the same two loops over 66..400 KB requests instead (100
chunks held during the pairs; 100 live in the churn), after one freed
mapping has raised the mmap threshold past them: the arena's chunk path.

Allocators: ``arenas`` through ``from arenas import malloc, free`` written
before the first call, as a program writes it; an ``Allocator()``'s own
methods; glibc's malloc and free through ``ctypes``; and the floor, a list
popped and appended.  Each loop runs 20,000 warm-up pairs first.

Run: ``python -m stress instructions`` (needs valgrind; a few minutes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

from .harness import (
    CHUNK_LIVE,
    LIVE,
    Free,
    Malloc,
    chunk_draws,
    churn_draws,
    churn_loop,
    glibc_functions,
    pairs_loop,
    raise_mmap_threshold,
)

WARM = 20_000
ALLOCATORS = ("arenas", "arenas Allocator()", "glibc-ctypes", "floor")
LOOPS = ("pairs", "churn")
CHUNK_LOOPS = ("chunk pairs", "chunk churn")


def _functions(name: str) -> tuple[Malloc, Free]:
    if name == "arenas":
        from arenas import free, malloc  # before any call, as a program writes it

        return malloc, free
    if name == "arenas Allocator()":
        import arenas

        alloc = arenas.Allocator()
        return alloc.malloc, alloc.free
    if name == "glibc-ctypes":
        return glibc_functions()
    stack = list(range(1 << 40, (1 << 40) + 2048))
    return (lambda size: stack.pop()), stack.append


def child(name: str, loop: str, n: int) -> None:
    """The measured process: the draws, then (unless ``name`` is "none") the loop."""
    import arenas  # (imported by every run alike, the baseline's included)

    chunks = loop.startswith("chunk")
    sizes, slots = chunk_draws(n, seed=1) if chunks else churn_draws(n, LIVE, seed=1)
    live = CHUNK_LIVE if chunks else LIVE
    del arenas
    if name == "none":
        return
    malloc, free = _functions(name)
    if chunks:
        raise_mmap_threshold(malloc, free)
    pairs_loop(malloc, free, sizes[: _warm(loop)])
    if loop.endswith("pairs"):
        held = [malloc(size) for size in sizes[:live]] if chunks else []
        pairs_loop(malloc, free, sizes)
        for block in held:
            free(block)
    else:
        churn_loop(malloc, free, [malloc(size) for size in sizes[:live]], sizes, slots)


def _warm(loop: str) -> int:
    return WARM // 10 if loop.startswith("chunk") else WARM


def count(name: str, loop: str, n: int) -> int:
    """Instructions of one child process under callgrind."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "stress.instructions",
            "--child",
            name,
            loop,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress instructions", description=__doc__)
    parser.add_argument("-n", type=int, default=100_000, help="operations per loop")
    parser.add_argument(
        "--chunks", action="store_true", help="66..400 KB requests: the arena's chunk path"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("ALLOCATOR", "LOOP", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    if args.n < 1000:
        parser.error("-n must be at least 1000")
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (apt-get install valgrind)")
    loops = CHUNK_LOOPS if args.chunks else LOOPS
    per_op: dict[tuple[str, str], float] = {}
    for loop in loops:
        live = CHUNK_LIVE if args.chunks else 0 if loop == "pairs" else LIVE  # (held, too)
        ops = args.n + _warm(loop) + live
        base = count("none", loop, args.n)
        for name in ALLOCATORS:
            per_op[(name, loop)] = (count(name, loop, args.n) - base) / ops
    print("instructions per operation (a malloc+free pair, or a churn step), loop included")
    print("| allocator | " + " | ".join(loops) + " |")
    print("|---|" + "---:|" * len(loops))
    for name in ALLOCATORS:
        print(f"| {name} | " + " | ".join(f"{per_op[(name, lp)]:,.0f}" for lp in loops) + " |")
    for name in ("arenas", "arenas Allocator()"):
        ratios = [per_op[("glibc-ctypes", lp)] / per_op[(name, lp)] for lp in loops]
        print(f"| glibc-ctypes / {name} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
