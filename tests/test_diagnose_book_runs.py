"""``utils.diagnose`` on every run the book writes, judged by what each run *is*: a run built with a fault
must get a finding that names that fault, and a healthy run must get none. Not a snapshot of what the tool
said on one machine: the same assertions hold under the robustness matrix's seeds, threads and CPU kernels
(``benchmarks/robustness.py --keep-runs`` keeps those runs; ``tests/diagnose_matrix.py`` checks them).

It reads the ``runs/`` tree that the notebooks write (``make test`` executes every notebook first). A
chapter that adds a run on purpose adds one line to ``BUILT``: run (relative to ``runs/``) -> the fault it
was built with. Every run not listed is healthy. Labs 0-5 write runs only once solved (``if ready(...)``),
all healthy; labs 4b and 8 write their runs as shipped, so they are listed here.
"""

from __future__ import annotations

import pytest

from tests.book_runs import BUILT, FAULT_NAMES, TRUE_OBSERVATIONS, verdicts
from utils import diagnose, paths


@pytest.fixture(scope="module")
def reports() -> dict[str, diagnose.RunReport]:
    root = paths.runs_dir()
    if not root.is_dir() or not any(root.iterdir()):
        pytest.fail(f"no runs under {root}: run make book first (it executes every notebook, which write "
                    "their runs there)")
    return {report.run: report for report in diagnose.diagnose(root)}


def test_every_listed_run_was_written(reports):
    missing = sorted(run for run in [*BUILT, *TRUE_OBSERVATIONS] if run not in reports)
    assert not missing, f"runs listed in tests/book_runs.py but not under runs/: {missing}"


def test_the_fault_table_names_only_real_rules():
    unknown = {rule for rules in FAULT_NAMES.values() for rule in rules} - set(diagnose.RULES)
    assert not unknown, f"FAULT_NAMES lists rules the tool does not have: {sorted(unknown)}"
    assert {fault for fault, _ in BUILT.values()} <= set(FAULT_NAMES) | {"invisible"}


def test_each_run_gets_what_it_is(reports):
    wrong = verdicts(reports)
    assert not wrong, "\n".join(wrong)
