"""Checks on the command lines' outputs, shared by ``python -m arenas.timeline``
and ``python -m stress``.

A benchmark or a replay may run for minutes before it writes its JSON, plots
or page; a path that cannot be written should stop it at once, with one
line, rather than with a traceback after the work is done.  These are
argparse ``type=`` functions: argparse turns their ``ArgumentTypeError``
into a usage message and exit code 2.  Each one tries the real operation,
since permission bits alone do not tell (root passes them on a read-only
or virtual file system).  :func:`needs` stops the same way, before any
work, when an option given needs a module that is not installed.  No lock:
they run before any thread starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

__all__ = ["needs", "writable_dir", "writable_file"]


def needs(parser: argparse.ArgumentParser, module: str, given: dict[str, object]) -> None:
    """A usage error (exit 2) if an option of ``given`` (name -> value) was given and
    needs ``module``, which is not installed."""
    used = [name for name, value in given.items() if value]
    if used and importlib.util.find_spec(module) is None:
        verb = "needs" if len(used) == 1 else "need"
        parser.error(f"{' and '.join(used)} {verb} {module}: pip install {module}")


def writable_file(text: str) -> str:
    """``text`` if a file can be written there; an existing file is left as it is."""
    path = Path(text)
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {exc.strerror}") from None
    if not existed:
        os.unlink(path)
    return text


def writable_dir(text: str) -> str:
    """``text`` once it is a directory that can be written into (made if missing)."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".arenas-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write into {text!r}: {exc.strerror}") from None
    return text
