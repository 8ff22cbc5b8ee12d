"""The house's rooms: the library (``utils``), each chapter's experiments (``utils.chapters``), the labs'
checkers (``utils.checks``), and the edges allowed between them.

What each test guards against: a library module that reaches into a chapter's experiments or a lab's
checker (the edge that made ``distributed`` load chapter 5's code); a chapter module that builds on another
chapter's; a chapter's notebook that imports a lab's checker; a lab numbered apart from its chapter; a
module the map in ``utils/__init__.py`` or ``utils/chapters/__init__.py`` does not describe.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.notebook_code import python_source

ROOT = Path(__file__).resolve().parents[1]
UTILS = ROOT / "utils"


def _utils_imports(tree: ast.AST) -> set[str]:
    """Every ``utils...`` module a parsed file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("utils"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("utils"))
    return found


def _imports(path: Path) -> set[str]:
    return _utils_imports(ast.parse(path.read_text(encoding="utf-8")))


def _notebook_imports(path: Path) -> set[str]:
    return _utils_imports(ast.parse(python_source(path)))


LIBRARY = sorted(p for p in UTILS.rglob("*.py")
                 if p.relative_to(UTILS).parts[0] not in ("chapters", "checks"))
CHAPTERS = sorted((UTILS / "chapters").glob("ch*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_a_chapter_or_a_checker(path):
    wrong = sorted(m for m in _imports(path) if m.startswith(("utils.chapters", "utils.checks")))
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: move what it needs into the library"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_module_builds_on_the_library_only(path):
    chapter = path.name[:4]  # "ch06"
    others = sorted(m for m in _imports(path) if m.startswith("utils.checks")
                    or (m.startswith("utils.chapters.ch") and not m.split(".")[2].startswith(chapter)))
    assert not others, f"{path.name} imports {others}: another chapter's code or a checker"


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name)
def test_a_chapter_notebook_imports_no_checker(path):
    wrong = sorted(m for m in _notebook_imports(path) if m.startswith("utils.checks"))
    assert not wrong, f"{path.name} imports {wrong}: a lab's checker is not library code"


def test_each_lab_is_numbered_with_its_chapter():
    chapters = {p.name[:2]: p for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    for lab in sorted((ROOT / "labs").glob("lab*.ipynb")):
        number = re.match(r"lab(\d\d)[a-z]?_", lab.name)
        assert number and number.group(1) in chapters, f"{lab.name} is not numbered with a chapter"
        checker = UTILS / "checks" / f"{lab.stem}.py"
        assert checker.exists() or lab.stem == "lab00_first_run", f"{lab.name} has no checker {checker.name}"
        link = f"labs/{lab.name}"
        assert link in chapters[number.group(1)].read_text(encoding="utf-8"), \
            f"{chapters[number.group(1)].name} does not link to {link}"


def test_every_module_has_its_sentence_in_the_map():
    library_map = (UTILS / "__init__.py").read_text(encoding="utf-8")
    chapter_map = (UTILS / "chapters" / "__init__.py").read_text(encoding="utf-8")
    for path in sorted(UTILS.iterdir()):
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("_") or name == "data" or not (path.suffix == ".py" or (path / "__init__.py").exists()):
            continue
        assert f"``{name}``" in library_map, f"utils/__init__.py does not describe {name}"
    for path in CHAPTERS:
        assert f"``{path.stem}``" in chapter_map, f"utils/chapters/__init__.py does not describe {path.stem}"
