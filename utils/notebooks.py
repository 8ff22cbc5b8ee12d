"""The book's notebook conventions, as code that the Makefile and the tests share.

- ``bootstrap_source``: the first code cell of every notebook, rendered from ``_config.yml`` (the repository
  URL is written once, there). ``python -m utils.notebooks sync-bootstrap`` rewrites the cell in every
  notebook; a test fails when a notebook's cell differs.
- ``strip``: outputs and execution counts removed, as notebooks are committed.
- ``student_copy``: a lab without its solution cells (``make student``).
- ``toc_files``: the files ``_toc.yml`` lists.

Cells are tagged: ``exercise`` (a stub that raises NotImplementedError), ``solution`` (also ``hide-input``,
so the HTML hides it behind a toggle) and ``check`` (calls a checker of ``utils.checks``).
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat

from utils.paths import repo_root

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
CHECK_TAG = "check"

_BOOTSTRAP_TEMPLATE = '''\
# Set-up. On Colab: install what Colab lacks, tensorboardX and this book's `utils`
# (from the repository, at the ref below); Colab's own torch and TensorFlow are kept.
# Anywhere else this does nothing: `make lab` has installed everything.
import importlib
import importlib.util
import subprocess
import sys

BOOK_REPOSITORY = "{url}"
BOOK_REF = "{ref}"
if "google.colab" in sys.modules and importlib.util.find_spec("utils") is None:
    package = f"llm-tb-book @ git+{{BOOK_REPOSITORY}}@{{BOOK_REF}}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation"]
    subprocess.run([*pip, package], check=True)
    importlib.invalidate_caches()'''

#: The bootstrap cell is folded away in the HTML book (a click shows it).
BOOTSTRAP_TAGS = ["hide-input"]


def book_config(root: Path | None = None) -> dict[str, Any]:
    """The parsed ``_config.yml`` of the book at ``root`` (default: the repository root)."""
    import yaml

    root = root or repo_root()
    if root is None:
        raise FileNotFoundError("not inside the book's repository: no _config.yml and _toc.yml above here")
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def bootstrap_source(url: str | None = None, ref: str | None = None, root: Path | None = None) -> str:
    """The bootstrap cell's source, for ``url``/``ref`` (default: ``repository.url``/``branch`` of
    ``_config.yml``)."""
    if url is None or ref is None:
        repository = book_config(root)["repository"]
        url = url or repository["url"]
        ref = ref or repository["branch"]
    return _BOOTSTRAP_TEMPLATE.format(url=url, ref=ref)


def toc_files(root: Path | None = None) -> list[Path]:
    """Every file ``_toc.yml`` lists (root first), resolved to an existing ``.ipynb`` or ``.md`` when one
    exists; a listed entry with neither is returned as ``<entry>.ipynb`` so that callers can report it."""
    import yaml

    root = root or repo_root()
    assert root is not None, "not inside the book's repository"
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))

    def entries(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    yield node[key]
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    yield from entries(child)
        elif isinstance(node, list):
            for child in node:
                yield from entries(child)

    found = []
    for entry in entries(toc):
        path = root / entry
        candidates = [path] if path.suffix else [path.with_suffix(".ipynb"), path.with_suffix(".md")]
        found.append(next((c for c in candidates if c.is_file()), candidates[0]))
    return found


def notebooks(root: Path | None = None) -> list[Path]:
    """Every notebook of the book and its labs (``book/*.ipynb``, ``labs/*.ipynb``), sorted."""
    root = root or repo_root()
    assert root is not None, "not inside the book's repository"
    return sorted([*root.glob("book/*.ipynb"), *root.glob("labs/*.ipynb")])


def first_code_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(cell for cell in nb.cells if cell.cell_type == "code")


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy without outputs, execution counts and per-run metadata (as every notebook is committed)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
    for key in ("widgets", "toc"):
        nb.metadata.pop(key, None)
    return nb


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A stripped copy of a lab with every ``solution`` cell removed."""
    nb = strip(nb)
    nb.cells = [cell for cell in nb.cells if SOLUTION_TAG not in cell.metadata.get("tags", [])]
    return nb


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("strip", help="strip outputs and execution counts from every notebook, in place")
    sub.add_parser("sync-bootstrap", help="rewrite the first code cell of every notebook from _config.yml")
    student = sub.add_parser("student", help="write solution-free copies of the labs")
    student.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    root = repo_root()
    if root is None:
        parser.error("run this inside the book's repository")
    if args.command == "student":
        args.out.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("labs/*.ipynb")):
            _write(student_copy(nbformat.read(path, as_version=4)), args.out / path.name)
            print(f"wrote {args.out / path.name}")
        return 0
    source = bootstrap_source(root=root)
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        if args.command == "sync-bootstrap":
            first_code_cell(nb).source = source
            first_code_cell(nb).metadata["tags"] = list(BOOTSTRAP_TAGS)
        else:
            nb = strip(nb)
        _write(nb, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
