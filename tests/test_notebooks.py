"""The notebook conventions of CONTRIBUTING.md, each a test that fails when a notebook breaks it."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import tomllib
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_code_fits_the_page(path):
    """The HTML book cuts code lines longer than the page (about 88 characters) behind a scroll bar."""
    long = [(i, line) for i, cell in enumerate(code_cells(read(path)))
            for line in cell.source.splitlines() if len(line) > 88]
    assert not long, f"code lines over 88 characters (cell, line): {long[:5]}"


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


def test_bootstrap_looks_for_the_books_distribution_not_for_any_utils():
    """Any project may install a top-level `utils`: only the book's distribution (pyproject.toml's name)
    says that the book is installed. tests/test_bootstrap_install.py runs the cell for real."""
    name = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    source = notebooks.bootstrap_source(root=ROOT)
    assert f'BOOK = "{name}"' in source
    assert "importlib.metadata.version(BOOK)" in source and "except importlib.metadata.PackageNotFoundError" in source
    assert "find_spec" not in source, "a module named utils may be another project's"
    ast.parse(source)


# The bootstrap is the first cell a reader meets in every notebook (folded in the HTML book, open on Colab and in
# JupyterLab): short, and within the page's width like every notebook line.
BOOTSTRAP_MAX_LINES = 20
BOOTSTRAP_MAX_LINE_LENGTH = 88


def test_bootstrap_is_short_folded_and_fits_the_page():
    lines = notebooks.bootstrap_source(root=ROOT).splitlines()
    assert len(lines) <= BOOTSTRAP_MAX_LINES, f"the bootstrap cell has {len(lines)} lines"
    too_long = [line for line in lines if len(line) > BOOTSTRAP_MAX_LINE_LENGTH]
    assert not too_long, f"bootstrap lines over {BOOTSTRAP_MAX_LINE_LENGTH} characters: {too_long}"
    assert "hide-input" in notebooks.BOOTSTRAP_TAGS


CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_each_chapter_states_its_own_measured_cost_under_the_set_up(path):
    cells = read(path).cells
    assert "**Cost:**" in cells[0].source and "make bench-notebooks" in cells[0].source
    assert cells[2].cell_type == "code" and f'costs.notebook_cost("book/{path.stem}")' in cells[2].source


@pytest.mark.parametrize("path", notebooks.notebooks(), ids=lambda p: p.name)
def test_committed_notebook_is_what_strip_writes(path):
    """make test executes the notebooks in place and strips them again: that must give back the committed
    file byte for byte, or every make test leaves the tree modified."""
    nb = nbformat.read(path, as_version=4)
    assert path.read_text(encoding="utf-8") == json.dumps(notebooks.strip(nb), indent=1, ensure_ascii=False) + "\n", \
        f"{path.name} is not as `make strip` writes it: run make strip and commit"
