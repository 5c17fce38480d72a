"""Docs that cannot drift: every code block of docs/ and the README runs, or is checked.

* ``python`` blocks run: a page's doctest blocks through ``doctest`` (as
  ``python -m doctest docs/PAGE.md`` would), its other blocks in order in one
  fresh interpreter, as a reader pasting them one after the other would;
* a section a command prints is that command's output now
  (``docs/generated.py``, which ``make docs`` uses to rewrite them);
* a shell block's ``make`` targets exist, and each ``python -m`` command's
  options are ones its ``--help`` lists;
* what docs/heap-bugs.md says glibc does is what this machine's glibc does.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(page: Path, language: str) -> list[str]:
    return [m[2] for m in _BLOCK.finditer(page.read_text()) if m[1] == language]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def generated() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generated", ROOT / "docs" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks itself up there)
    spec.loader.exec_module(module)
    return module


# heap-bugs.md leaves a debug allocator with an overrun guard byte: what it shows.
DOCTEST_PAGES = [
    pytest.param(p, marks=pytest.mark.corrupts_heap) if p.name == "heap-bugs.md" else p
    for p in PAGES
    if any(">>> " in b for b in blocks(p, "python"))
]
SCRIPT_PAGES = [p for p in PAGES if any(">>> " not in b for b in blocks(p, "python"))]


@pytest.mark.parametrize("page", DOCTEST_PAGES, ids=page_id)
def test_doctest_blocks_pass(page: Path) -> None:  # (python -m doctest docs/PAGE.md)
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} examples of {page.name} failed"


@pytest.mark.parametrize("page", SCRIPT_PAGES, ids=page_id)
def test_script_blocks_run_in_order(page: Path, tmp_path: Path) -> None:
    script = "\n\n".join(b for b in blocks(page, "python") if ">>> " not in b)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_generated_sections_are_what_their_commands_print() -> None:
    stale = generated().stale()
    assert [f"{s.page.name}:{s.line}: {s.command}" for s, _ in stale] == []


def test_the_generated_sections_are_found() -> None:
    # (so that the test above cannot pass by finding nothing)
    found = {s.page.name for p in PAGES for s in generated().sections(p)}
    assert {"slabs.md", "memory.md"} <= found


# ------------------------------------------------------------------ commands
def shell_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``make`` or ``python -m`` line of a plain block."""
    found = []
    for page in PAGES:
        for block in blocks(page, ""):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                command = line.split("#", 1)[0].strip()
                if re.match(r"(make|(\.venv[^ ]*/bin/)?python3? -m) ", command):
                    found.append((page_id(page), command))
    return found


MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize(("page", "command"), shell_commands())
def test_shell_commands_name_what_exists(page: str, command: str) -> None:
    argv = shlex.split(command)
    if argv[0] == "make":
        targets = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        assert set(targets) <= MAKE_TARGETS, f"{page}: {command}"
        return
    module = argv[2]
    words = argv[3:]
    sub: list[str] = []
    if module == "stress":  # a subcommand, or the campaign it runs by default
        sub = [words[0]] if words and not words[0].startswith("-") else ["campaign"]
    helped = subprocess.run(
        [sys.executable, "-m", module, *sub, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0, f"{page}: {command}: {helped.stderr[-1000:]}"
    options = {w.split("=", 1)[0] for w in words if w.startswith("-")}
    missing = [
        o for o in sorted(options) if not re.search(rf"(^|[\s,\[]){re.escape(o)}\b", helped.stdout)
    ]
    assert missing == [], f"{page}: {command}: {missing} not in --help"


def test_the_command_lines_are_found() -> None:
    assert len(shell_commands()) >= 10


# ------------------------------------------------------------------ glibc
DOUBLE_FREE = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    void *p[9];
    for (int i = 0; i < 9; i++) p[i] = malloc(40);
    if (argc > 1) for (int i = 0; i < 7; i++) free(p[i]);  /* a full tcache bin */
    void *a = p[7], *b = p[8];
    free(a); free(b); free(a);
    fprintf(stderr, "went through\n");
    free(malloc(100000));  /* a large request consolidates the fastbins */
    return 0;
}
"""


def test_glibc_double_free_behaves_as_heap_bugs_says(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the glibc example with")
    source = tmp_path / "double_free.c"
    source.write_text(DOUBLE_FREE)
    binary = tmp_path / "double_free"
    subprocess.run([compiler, "-O0", "-o", str(binary), str(source)], check=True, timeout=120)
    text = (ROOT / "docs" / "heap-bugs.md").read_text()

    into_tcache = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert into_tcache.returncode != 0
    assert "free(): double free detected in tcache 2" in into_tcache.stderr
    assert "went through" not in into_tcache.stderr

    into_fastbin = subprocess.run([str(binary), "full"], capture_output=True, text=True, timeout=60)
    assert "went through" in into_fastbin.stderr  # not caught at the free itself
    assert into_fastbin.returncode != 0  # but later, in another call
    later = into_fastbin.stderr.split("went through", 1)[1].strip()
    assert later in text, f"heap-bugs.md should quote {later!r}"
