"""The parts of docs/ that a command prints: find them, run the command, compare or rewrite.

A generated section is marked in the Markdown source, with the command that
prints it in the opening marker::

    <!-- output of: python -c "from arenas.slab import waste_report; print(waste_report())" -->
    ...exactly what the command prints...
    <!-- end of output -->

The text between the markers is the command's standard output, verbatim;
if it opens with a code fence, the fence is kept and the output goes inside
it.  ``python`` in a command is the interpreter running this script, and
commands run from the repository's root.

    python docs/generated.py --check   # exit 1, naming each stale section
    python docs/generated.py --write   # rewrite them (``make docs`` runs this)

``tests/test_doc_blocks.py`` runs ``--check``'s logic in the suite, so a
table that drifts from its command fails a test.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_SECTION = re.compile(
    r"<!-- output of: (?P<command>.+?) -->\n(?P<body>.*?)<!-- end of output -->", re.S
)
_FENCE = "```\n"


@dataclass(frozen=True)
class Section:
    """One generated section: where it is, its command, and the text it holds now."""

    page: Path
    line: int
    command: str
    body: str

    @property
    def fenced(self) -> bool:
        return self.body.startswith(_FENCE)

    @property
    def shown(self) -> str:
        """The output as the page shows it (inside its fence, if it has one)."""
        if self.fenced:
            return self.body[len(_FENCE) :].removesuffix(_FENCE)
        return self.body

    def dress(self, output: str) -> str:
        """``output`` as this section holds it."""
        if not output.endswith("\n"):
            output += "\n"
        return _FENCE + output + _FENCE if self.fenced else output


def sections(page: Path) -> list[Section]:
    text = page.read_text()
    return [
        Section(page, text.count("\n", 0, m.start()) + 1, m["command"], m["body"])
        for m in _SECTION.finditer(text)
    ]


def run(command: str) -> str:
    """What ``command`` prints, run from the repository's root with this interpreter."""
    argv = shlex.split(command)
    if argv[0] != "python":
        raise ValueError(f"a generated section's command must start with python: {command}")
    proc = subprocess.run(
        [sys.executable, *argv[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def stale(pages: list[Path] = PAGES) -> list[tuple[Section, str]]:
    """Every section whose text is not what its command prints now, with the new output."""
    out = []
    for page in pages:
        for section in sections(page):
            output = run(section.command)
            if section.shown.rstrip("\n") != output.rstrip("\n"):
                out.append((section, output))
    return out


def rewrite(page: Path) -> int:
    """Put each section's current output into ``page``; returns how many changed."""
    text = page.read_text()
    changed = 0

    def fresh(match: re.Match[str]) -> str:
        nonlocal changed
        section = Section(page, 0, match["command"], match["body"])
        body = section.dress(run(section.command))
        changed += body != section.body
        return f"<!-- output of: {section.command} -->\n{body}<!-- end of output -->"

    new = _SECTION.sub(fresh, text)
    if changed:
        page.write_text(new)
    return changed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python docs/generated.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list stale sections; exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite stale sections in place")
    args = parser.parse_args(argv)
    if args.write:
        for page in PAGES:
            if rewrite(page):
                print(f"rewrote {page.relative_to(ROOT)}")
        return 0
    found = stale()
    for section, _ in found:
        print(f"{section.page.relative_to(ROOT)}:{section.line}: stale: {section.command}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
