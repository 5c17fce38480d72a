"""The package's layers point one way, and docs/ARCHITECTURE.md's module table says so.

The table lists the modules of ``arenas/`` in layer order; a module may
import only modules listed above it (type-only imports included), so
nothing lower ever depends on anything higher.  Parsed from the sources,
never imported: the check is about what the files say.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "arenas"
TABLE_HEADER = "| module | owns | glibc counterpart | lock that guards it |"


def table_order() -> list[str]:
    """The module names of ARCHITECTURE.md's package table, top row first."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = text[text.index(TABLE_HEADER) :].split("\n\n", 1)[0].splitlines()[2:]
    return [re.match(r"\| `(\w+)\.py` \|", row).group(1) for row in rows]  # type: ignore[union-attr]


def package_imports(module: str) -> set[str]:
    """The sibling modules ``arenas/<module>.py`` imports, anywhere in the file."""
    return imports_in((PACKAGE / f"{module}.py").read_text())


def imports_in(source: str) -> set[str]:
    """The modules of the package that ``source`` imports, relatively or by full name."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("arenas."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def test_the_table_lists_every_module_once() -> None:
    order = table_order()
    assert len(order) == len(set(order))
    files = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert set(order) == files


def upward(order: list[str], imports: dict[str, set[str]]) -> list[str]:
    """Every import of a module not listed above the importer."""
    return [
        f"{module} imports {dep}"
        for rank, module in enumerate(order)
        for dep in sorted(imports[module])
        if dep not in order[:rank]
    ]


def test_every_module_imports_only_modules_above_it() -> None:
    order = table_order()
    assert upward(order, {m: package_imports(m) for m in order}) == []


def test_the_check_sees_a_type_only_upward_import() -> None:
    # A lower module naming a higher one under TYPE_CHECKING is still a circle
    # for a reader, so the parse finds it, in every spelling.
    heap = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .arena import Arena\n"
    assert imports_in(heap) == {"arena"}
    assert imports_in("from . import fork\nfrom arenas.chunk import MINSIZE\n") == {"fork", "chunk"}
    imports = {"heap": imports_in(heap), "arena": {"heap"}}
    assert upward(["heap", "arena"], imports) == ["heap imports arena"]
    assert upward(["heap", "arena"], {"heap": set(), "arena": {"heap"}}) == []


def test_nothing_in_the_package_imports_the_stress_suite() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "stress" for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert (node.module or "").split(".")[0] != "stress", path
