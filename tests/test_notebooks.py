"""The notebook conventions of CONTRIBUTING.md, each a test that fails when a notebook breaks it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest

import utils
from utils import notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks.notebooks(ROOT)
IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def python_source(cell: nbformat.NotebookNode) -> str:
    """A code cell's source with IPython magics and shell escapes blanked out, so that ``ast`` can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())


def utils_exports() -> dict[str, str]:
    """Every public top-level name defined in a ``utils`` module -> the module defining it."""
    exported: dict[str, str] = {}
    for info in pkgutil.walk_packages(utils.__path__, "utils."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__:
                exported[name] = info.name
    return exported


def test_there_are_notebooks():
    assert any(p.parent.name == "book" for p in NOTEBOOKS) and any(p.parent.name == "labs" for p in NOTEBOOKS)


def test_toc_lists_every_notebook_and_every_entry_exists():
    listed = notebooks.toc_files(ROOT)
    missing = [str(p.relative_to(ROOT)) for p in listed if not p.is_file()]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    unlisted = sorted(set(NOTEBOOKS) - set(listed))
    assert not unlisted, f"notebooks missing from _toc.yml: {[str(p.relative_to(ROOT)) for p in unlisted]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_stripped_with_python3_kernel(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} have outputs or execution counts: run `make strip`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_shared_bootstrap(path):
    expected = notebooks.bootstrap_source(root=ROOT)
    first = code_cells(read(path))[0]
    assert first.source == expected, "run `make sync-bootstrap`"
    assert first.metadata.get("tags") == notebooks.BOOTSTRAP_TAGS, "run `make sync-bootstrap`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_seeded_through_utils_and_ends_with_assertions(path):
    cells = code_cells(read(path))
    sources = "\n".join(cell.source for cell in cells)
    assert "seed_everything(" in sources, "seed once, through utils.env.seed_everything"
    last = ast.parse(python_source(cells[-1]))
    assert any(isinstance(node, ast.Assert) for node in ast.walk(last)) or "assert_logged(" in cells[-1].source, \
        "the last code cell must assert what the notebook's prose claims"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_star_imports_and_no_redefinition_of_utils_names(path):
    exported = utils_exports()
    problems = []
    for index, cell in enumerate(code_cells(read(path))):
        tree = ast.parse(python_source(cell))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                problems.append(f"cell {index}: star import from {node.module}")
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            problems += [f"cell {index}: redefines {name} (exported by {exported[name]}): import it instead"
                         for name in names if name in exported]
    assert not problems, "\n".join(problems)


def test_utils_has_no_star_imports():
    offenders = [str(p) for p in (ROOT / "utils").rglob("*.py") if re.search(r"^from \S+ import \*", p.read_text(), re.M)]
    assert not offenders


LABS = [p for p in NOTEBOOKS if p.parent.name == "labs"]


@pytest.mark.parametrize("path", LABS, ids=[str(p.relative_to(ROOT)) for p in LABS])
def test_lab_cells_follow_exercise_solution_check(path):
    cells = code_cells(read(path))
    tags = [cell.metadata.get("tags", []) for cell in cells]
    exercises = [i for i, t in enumerate(tags) if notebooks.EXERCISE_TAG in t]
    assert exercises, "a lab needs at least one cell tagged 'exercise'"
    for i in exercises:
        assert "raise NotImplementedError(" in cells[i].source, f"exercise cell {i} must be a stub raising NotImplementedError"
        assert i + 2 < len(cells), f"exercise cell {i} needs a solution and a check cell after it"
        assert {notebooks.SOLUTION_TAG, "hide-input"} <= set(tags[i + 1]), \
            f"cell {i + 1} after exercise {i} must be tagged 'solution' and 'hide-input'"
        assert notebooks.CHECK_TAG in tags[i + 2], f"cell {i + 2} after solution {i + 1} must be tagged 'check'"
        stub_names = {n.name for n in ast.parse(cells[i].source).body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        solution_names = {n.name for n in ast.parse(cells[i + 1].source).body
                          if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        assert stub_names and stub_names <= solution_names, f"solution {i + 1} must define what stub {i} defines"


def test_student_copy_has_no_solutions():
    for path in LABS:
        copy = notebooks.student_copy(read(path))
        assert not [c for c in copy.cells if notebooks.SOLUTION_TAG in c.metadata.get("tags", [])]
        assert [c for c in copy.cells if notebooks.EXERCISE_TAG in c.metadata.get("tags", [])]


def test_strip_removes_outputs_and_counts():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", execution_count=3, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="1")])])
    stripped = notebooks.strip(nb)
    assert stripped.cells[0].outputs == [] and stripped.cells[0].execution_count is None
    assert nb.cells[0].execution_count == 3  # the original is left alone


def test_bootstrap_uses_the_repository_url_of_config():
    config = notebooks.book_config(ROOT)
    source = notebooks.bootstrap_source(root=ROOT)
    assert f'BOOK_REPOSITORY = "{config["repository"]["url"]}"' in source
    assert f'BOOK_REF = "{config["repository"]["branch"]}"' in source
    # Colab ships torch and TensorFlow: the bootstrap must never (re)install them
    assert not re.search(r"\b(torch|tensorflow)\b", source.split("BOOK_REF")[1])
