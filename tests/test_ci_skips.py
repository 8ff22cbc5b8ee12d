"""``tests/conftest.py``: with ``CI=true`` a skipped test fails the session (a pinned package that no longer
imports would otherwise turn its tests into skips and the run green); without it a skip is only reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def _session(tmp_path: Path, ci: str | None, body: str) -> subprocess.CompletedProcess:
    folder = tmp_path / f"ci-{ci}"
    folder.mkdir()
    shutil.copy(CONFTEST, folder / "conftest.py")
    (folder / "test_example.py").write_text(body)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(folder), "-c", os.devnull, str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


SKIPS = "import pytest\n\ndef test_runs():\n    pass\n\ndef test_skips():\n    pytest.skip('gone')\n"
PASSES = "import pytest\n\ndef test_runs():\n    pass\n\n@pytest.mark.xfail(strict=True)\ndef test_known():\n    raise ValueError\n"


@pytest.mark.parametrize(("ci", "code"), [("true", 1), (None, 0), ("false", 0)])
def test_a_skip_fails_the_session_in_ci_only(tmp_path, ci, code):
    done = _session(tmp_path, ci, SKIPS)
    assert done.returncode == code, done.stdout + done.stderr
    assert ("skipped test(s) fail the run" in done.stdout) == (code == 1)


def test_no_skip_in_ci_passes(tmp_path):
    done = _session(tmp_path, "true", PASSES)  # an expected failure is not a skip
    assert done.returncode == 0, done.stdout + done.stderr
