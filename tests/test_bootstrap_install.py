"""The Colab bootstrap cell (rendered from the template, as `make sync-bootstrap` writes it), run for real:
in a fresh virtual environment, with Colab's marker module faked, it installs this repository's `utils` from
a local clone through the same pip command (a git+file://localhost/... URL: pip 23 rejects an empty host),
offline.
It installs whenever the book's distribution is missing, even when another top-level `utils` is importable;
it does nothing when the book is installed, and nothing outside Colab."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utils import notebooks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

FAKE_COLAB = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
REPORT = textwrap.dedent("""
    import importlib.util
    spec = importlib.util.find_spec("utils")
    print("UTILS:", spec.origin if spec else None)
""")


def third_party_packages(folder: Path) -> Path:
    """``folder`` filled with links to everything installed in this project's venv except the book itself
    (its dist-info and editable-install hooks): the packages a reader's Colab or Binder image ships."""
    book = notebooks.book_distribution(ROOT).replace("-", "_")
    folder.mkdir(parents=True)
    for site_packages in site.getsitepackages():
        for entry in Path(site_packages).iterdir():
            is_book = entry.name.startswith((f"{book}-", f"__editable__.{book}-", f"__editable___{book}_"))
            if not is_book and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def new_venv(parent: Path, *extra_paths: Path) -> Path:
    """A new venv without this project that sees the third-party packages (and ``extra_paths``) through a
    .pth file: a .pth line adds a path but does not run the .pth files inside it."""
    venv = parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    paths = [third_party_packages(parent / "third_party"), *extra_paths]
    (target / "image_stand_in.pth").write_text("".join(f"{path}\n" for path in paths))
    return venv


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment, without its Python settings, with ``venv``'s bin first on PATH, and pip
    offline (nothing from an index)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env | {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run_in(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=clean_env(venv),
                          capture_output=True, text=True, timeout=300)


def another_utils(parent: Path) -> Path:
    """A folder holding an unrelated top-level package named `utils` (as some other projects install)."""
    (parent / "other" / "utils").mkdir(parents=True)
    (parent / "other" / "utils" / "__init__.py").write_text('"""Not the book\'s utils."""\n')
    return parent / "other"


def head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def files_at_head(folder: str) -> list[str]:
    """The files under ``folder`` in the commit the bootstrap installs (package data included)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", "HEAD", folder],
                            capture_output=True, text=True, check=True).stdout.split()
    return [name for name in listed if "__pycache__" not in name]


def colab_cell(url: str) -> str:
    """The bootstrap cell as every notebook holds it, but for the repository's URL and ref."""
    ref = head()
    cell = notebooks.bootstrap_source(url=url, ref=ref, root=ROOT)
    template = notebooks.bootstrap_source(url="URL", ref="REF", root=ROOT)
    assert cell.replace(url, "URL").replace(ref, "REF") == template, "the cell may differ only in URL and ref"
    return cell


def test_outside_colab_the_bootstrap_does_nothing(tmp_path):
    venv = new_venv(tmp_path)
    result = run_in(venv, notebooks.bootstrap_source(root=ROOT) + REPORT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "UTILS: None" in result.stdout


@pytest.mark.parametrize("other_utils", [False, True], ids=["plain", "another-utils-importable"])
def test_on_colab_the_bootstrap_installs_utils_from_the_repository(tmp_path, other_utils):
    venv = new_venv(tmp_path, *([another_utils(tmp_path)] if other_utils else []))
    if other_utils:
        assert "UTILS: " + str(tmp_path / "other") in run_in(venv, REPORT, tmp_path).stdout
    cell = colab_cell(f"file://localhost{ROOT}")
    result = run_in(venv, FAKE_COLAB + cell + REPORT + "import utils.tb, utils.env\n", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    origin = result.stdout.split("UTILS:")[1].strip()
    assert origin.startswith(str(venv)), f"utils imported from {origin}, not from the fresh venv"
    installed = Path(origin).parent
    missing = [name for name in files_at_head("utils") if not (installed.parent / name).is_file()]
    assert not missing, f"not installed: {missing}"

    # Once the book is installed, the cell does nothing: a URL that cannot be installed is never tried.
    again = run_in(venv, FAKE_COLAB + colab_cell(f"file://localhost{tmp_path / 'missing'}"), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
