"""The Colab bootstrap cell, run for real: in a fresh virtual environment, with Colab's marker module faked,
it installs this repository's `utils` from a local clone through the same pip command (a git+file://localhost/... URL: pip 23 rejects an empty host),
offline; outside Colab it does nothing."""

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


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv without this project, seeing the already installed third-party packages (standing in for
    what Colab ships) through a .pth file: a .pth line adds a path but does not run the .pth files inside it,
    so the editable install of `utils` in .venv stays invisible."""
    venv = tmp_path_factory.mktemp("colab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    (target / "colab_stand_in.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def run_in(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # offline: nothing from an index
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_outside_colab_the_bootstrap_does_nothing(fresh_venv, tmp_path):
    result = run_in(fresh_venv, notebooks.bootstrap_source(root=ROOT) + REPORT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "UTILS: None" in result.stdout


def test_on_colab_the_bootstrap_installs_utils_from_the_repository(fresh_venv, tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    cell = notebooks.bootstrap_source(url=f"file://localhost{ROOT}", ref=head)
    assert cell.replace(f"file://localhost{ROOT}", "URL").replace(head, "REF") == \
        notebooks.bootstrap_source(url="URL", ref="REF")  # the same cell as in every notebook, but for the URL
    result = run_in(fresh_venv, FAKE_COLAB + cell + REPORT + "import utils.tb, utils.env\n", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    origin = result.stdout.split("UTILS:")[1].strip()
    assert origin.startswith(str(fresh_venv)), f"utils imported from {origin}, not from the fresh venv"
    installed = Path(origin).parent
    assert (installed / "tb.py").is_file() and (installed / "checks" / "lab00.py").is_file()
