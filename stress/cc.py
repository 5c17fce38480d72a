"""Building the stress suite's C programs with the machine's C compiler, once.

Two parts of the suite are C, kept as source strings in their modules: the
``LD_PRELOAD`` recorder (:mod:`stress.record`) and the native replayer
(:mod:`stress.native`).  :func:`build` compiles such a source with ``$CC``
(or ``cc``, or ``gcc``) and keeps the result in a cache directory named by a
hash of the compiler, its flags and the source, so a campaign that replays
a dozen traces compiles once, and a changed source is never served stale.
The cache is ``$XDG_CACHE_HOME/arenas-stress`` (``~/.cache/arenas-stress``),
or a temporary directory for the process when that cannot be written.

Locking: none in the process (a build is idempotent); between processes,
each compiles into a file of its own and renames it into place, so a
reader never sees half a binary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CompilerUnavailable", "build", "compiler"]


class CompilerUnavailable(RuntimeError):
    """There is no C compiler, or it could not build the source."""


def compiler() -> str:
    """The C compiler's path: ``$CC``, else ``cc``, else ``gcc``."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CompilerUnavailable("no C compiler found (cc or gcc)")
    return cc


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    root = Path(base) / "arenas-stress"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root):
            pass
    except OSError:
        return Path(tempfile.mkdtemp(prefix="arenas-stress-"))
    return root


def build(source: str, name: str, flags: list[str], libs: list[str]) -> Path:
    """The program or library ``name`` built from C ``source``: ``cc FLAGS -o name src LIBS``.

    Compiled once per distinct compiler, flags and source; raises
    :class:`CompilerUnavailable` with the compiler's messages if it fails.
    """
    cc = compiler()
    key = hashlib.sha256("\0".join([cc, *flags, *libs, source]).encode()).hexdigest()[:16]
    directory = _cache_root() / key
    target = directory / name
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f"{name}.{os.getpid()}.c"
    partial = directory / f"{name}.{os.getpid()}.partial"
    src.write_text(source)
    try:
        try:
            proc = subprocess.run(
                [cc, *flags, "-o", str(partial), str(src), *libs], capture_output=True, text=True
            )
        except OSError as exc:
            raise CompilerUnavailable(f"cannot run the C compiler {cc!r}: {exc}") from None
        if proc.returncode:
            raise CompilerUnavailable(f"compiling {name} failed:\n{proc.stderr}")
        os.replace(partial, target)
    finally:
        src.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return target
