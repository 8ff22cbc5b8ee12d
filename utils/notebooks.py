"""The book's notebook conventions, as code that the Makefile and the tests share.

- ``bootstrap_source``: the first code cell of every notebook, rendered from ``_config.yml`` (the repository
  URL is written once, there). ``python -m utils.notebooks sync-bootstrap`` rewrites the cell in every
  notebook; a test fails when a notebook's cell differs.
- ``strip``: outputs and execution counts removed, as notebooks are committed.
- ``toc_files``: the files ``_toc.yml`` lists.

A lab's cells are tagged ``exercise`` (a stub that raises NotImplementedError with a hint) and ``check``
(the cell right after it: ``check("<lab>.<exercise>", answer)`` from ``utils.checks.run``). The notebooks
in ``labs/`` hold no solution: the reference solutions are ``labs/solutions/<lab>.py``, which
``tests/test_labs.py`` substitutes for the stubs to prove that every lab passes when solved.
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

EXERCISE_TAG = "exercise"
CHECK_TAG = "check"

_BOOTSTRAP_TEMPLATE = '''\
# Set-up. On Colab: install what Colab lacks, tensorboardX and this book's `utils`
# (from the repository, at the ref below); Colab's own torch and TensorFlow are kept.
# Elsewhere (`make lab`, Binder) the book is installed already and this does nothing.
import importlib.metadata
import subprocess
import sys

BOOK_REPOSITORY = "{url}"
BOOK_REF = "{ref}"
BOOK = "{distribution}"  # the book's own package: another `utils` may be installed
PIP = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation"]
try:
    importlib.metadata.version(BOOK)
except importlib.metadata.PackageNotFoundError:
    if "google.colab" in sys.modules:
        package = f"{{BOOK}} @ git+{{BOOK_REPOSITORY}}@{{BOOK_REF}}"
        subprocess.run([*PIP, package], check=True)
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


def book_distribution(root: Path | None = None) -> str:
    """The book's distribution name, ``[project] name`` of ``pyproject.toml`` (what pip installs)."""
    import tomllib

    root = root or repo_root()
    if root is None:
        raise FileNotFoundError("not inside the book's repository: no _config.yml and _toc.yml above here")
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]


def bootstrap_source(url: str | None = None, ref: str | None = None, root: Path | None = None) -> str:
    """The bootstrap cell's source, for ``url``/``ref`` (default: ``repository.url``/``branch`` of
    ``_config.yml``); the distribution it looks for is ``pyproject.toml``'s."""
    if url is None or ref is None:
        repository = book_config(root)["repository"]
        url = url or repository["url"]
        ref = ref or repository["branch"]
    return _BOOTSTRAP_TEMPLATE.format(url=url, ref=ref, distribution=book_distribution(root))


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
    if "language_info" in nb.metadata:  # an execution adds the kernel's version and lexer: keep the name
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    return nb


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("strip", help="strip outputs and execution counts from every notebook, in place")
    sub.add_parser("sync-bootstrap", help="rewrite the first code cell of every notebook from _config.yml")
    args = parser.parse_args(argv)

    root = repo_root()
    if root is None:
        parser.error("run this inside the book's repository")
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
