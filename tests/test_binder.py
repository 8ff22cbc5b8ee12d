"""The Binder (and JupyterHub) path, run for real. repo2docker builds the reader's image from binder/ alone:
it installs binder/requirements.txt, then runs binder/postBuild from the repository root; the reader then
opens a notebook in book/ or labs/, whose kernel starts in the notebook's own folder, not at the root.

Here a fresh venv stands in for the image after its requirements: it sees the third-party packages of this
project's venv (which `make install` built from the same pins) but not the book itself. postBuild runs
as repo2docker runs it, in a copy of the working tree; then a notebook is executed from its own folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat
import pytest

from tests.test_bootstrap_install import clean_env, new_venv
from utils import notebooks

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
pytestmark = pytest.mark.slow

# The probe a reader's first cells amount to: the bootstrap (a no-op off Colab), then the book's imports.
PROBE = textwrap.dedent("""
    import importlib.metadata
    import sys
    import utils
    from utils import tb
    from utils.paths import repo_root
    print("PREFIX:", sys.prefix)
    print("UTILS:", utils.__file__)
    print("TB:", tb.__file__)
    print("ROOT:", repo_root())
    print("DIST:", importlib.metadata.version("{distribution}"))
""")

EXECUTE = textwrap.dedent("""
    import sys
    import nbclient
    import nbformat
    path, folder = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": folder}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, path)
""")


def copy_of_working_tree(target: Path) -> Path:
    """The repository's files (tracked and new, not ignored ones) copied to ``target``, as repo2docker
    copies a repository into the image; nothing is built or written in the real working tree."""
    git = ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(git, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file another change has just deleted is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run_post_build(venv: Path, repo: Path) -> subprocess.CompletedProcess:
    """binder/postBuild exactly as repo2docker's Dockerfile runs it: made executable, then run from the
    repository root with the image's Python first on PATH."""
    return subprocess.run(["bash", "-c", "chmod +x binder/postBuild && ./binder/postBuild"], cwd=repo,
                          env=clean_env(venv), capture_output=True, text=True, timeout=300)


def run_notebook_from_its_folder(venv: Path, folder: Path) -> tuple[subprocess.CompletedProcess, str]:
    """A notebook written into ``folder`` (the bootstrap cell, then ``PROBE``), executed by the venv's
    Python and kernel with ``folder`` as the working directory; the result and the cells' printed output."""
    probe = PROBE.format(distribution=pyproject()["name"])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(notebooks.bootstrap_source(root=ROOT)),
                                         nbformat.v4.new_code_cell(probe)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "binder_probe.ipynb"
    nbformat.write(nb, path)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", EXECUTE, str(path), str(folder)], cwd=folder,
                            env=clean_env(venv), capture_output=True, text=True, timeout=600)
    executed = nbformat.read(path, as_version=4)
    printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    return result, printed


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def printed_value(printed: str, key: str) -> str:
    return next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith(f"{key}: "))


@pytest.fixture(scope="module")
def binder_image(tmp_path_factory) -> tuple[Path, Path]:
    """(venv, repository copy) after binder/postBuild has run."""
    parent = tmp_path_factory.mktemp("binder")
    venv, repo = new_venv(parent), copy_of_working_tree(parent / "repo")
    result = run_post_build(venv, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv, repo


def test_binder_folder_is_self_sufficient():
    """With binder/ present repo2docker ignores the root's requirements.txt and pyproject.toml: binder/ names
    the Python version, the requirements, and the install of the book's package."""
    python = f"python-{sys.version_info.major}.{sys.version_info.minor}"  # the Python `make install` used
    assert (BINDER / "runtime.txt").read_text().strip() == python
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    assert {"-r ../requirements.txt", "-c ../constraints.txt"} <= set(lines)
    post_build = (BINDER / "postBuild").read_text()
    assert post_build.startswith("#!/bin/bash\n") and "set -euo pipefail" in post_build
    assert "pip install" in post_build and "--no-deps" in post_build


def test_binder_requirements_are_the_books_pins():
    """pip reads binder/requirements.txt (its -r/-c paths relative to the file) from the repository root, as
    repo2docker does: offline, every requirement is already satisfied by the venv `make install` built."""
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps"]
    result = subprocess.run([*pip, "-r", "binder/requirements.txt"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would install" not in result.stdout, f"run `make install`: {result.stdout}"


def test_without_post_build_a_notebook_cannot_import_utils(tmp_path):
    """The control: the fresh venv does not see the book, and a notebook's folder is not the root."""
    venv, repo = new_venv(tmp_path), copy_of_working_tree(tmp_path / "repo")
    result, printed = run_notebook_from_its_folder(venv, repo / "labs")
    assert result.returncode != 0
    assert "No module named 'utils'" in result.stderr + printed


@pytest.mark.parametrize("folder", ["labs", "book"])
def test_after_post_build_a_notebook_imports_this_repositorys_utils(binder_image, folder):
    venv, repo = binder_image
    result, printed = run_notebook_from_its_folder(venv, repo / folder)
    assert result.returncode == 0, result.stdout + result.stderr + printed
    assert printed_value(printed, "PREFIX") == str(venv), "the kernel must be the image's Python"
    assert printed_value(printed, "UTILS") == str(repo / "utils" / "__init__.py")
    assert printed_value(printed, "TB").startswith(str(repo / "utils" / "tb"))
    assert printed_value(printed, "ROOT") == str(repo)
    assert printed_value(printed, "DIST") == pyproject()["version"]
