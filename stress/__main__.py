"""Entry point: ``python -m stress [command] [options]``.

Commands:
  fastpath   (default) the fast-path benchmark: arenas against glibc through
             ctypes, multiprocessing.heap.Heap and a bare Python call, plus
             thread scaling and footprint (see stress/fastpath.py)
  scaling    aggregate throughput at 1..16 threads, many arenas against
             arena_max=1 (see stress/scaling.py)
"""

from __future__ import annotations

import sys

from . import fastpath, scaling

COMMANDS = {"fastpath": fastpath.main, "scaling": scaling.main}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command = "fastpath"
    if argv and not argv[0].startswith("-"):
        command, argv = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"python -m stress: unknown command {command!r}; try --help", file=sys.stderr)
        return 2
    return COMMANDS[command](argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
