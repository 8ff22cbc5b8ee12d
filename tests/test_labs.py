"""Every lab checker rejects its unfilled stub (saying it is not implemented) and accepts its solution.

Each lab is executed in-process twice: once with the solution cells left out (every check cell must raise
``CheckFailed``), once with them (every check cell must pass). Cells before the first exercise are the lab's
set-up; after it, only exercise, solution and check cells run (the rest may use finished solutions).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import nbformat
import pytest

from utils import checks, notebooks

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted(ROOT.glob("labs/*.ipynb"))


def lab_cells(path: Path) -> list[tuple[str, str]]:
    """(role, source) of each code cell: role is 'setup', 'exercise', 'solution', 'check' or 'other'."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    roles, seen_exercise = [], False
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        role = next((r for r in (notebooks.EXERCISE_TAG, notebooks.SOLUTION_TAG, notebooks.CHECK_TAG) if r in tags),
                    "other" if seen_exercise else "setup")
        seen_exercise = seen_exercise or role == notebooks.EXERCISE_TAG
        roles.append((role, cell.source))
    return roles


def run_lab(path: Path, with_solutions: bool, monkeypatch, tmp_path) -> list[BaseException | None]:
    """Execute the lab; return, for each check cell, the exception it raised (or None)."""
    matplotlib.use("Agg")
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(path.parent)
    namespace: dict = {"__name__": "__lab__"}
    outcomes: list[BaseException | None] = []
    for role, source in lab_cells(path):
        if role == "other" or (role == notebooks.SOLUTION_TAG and not with_solutions):
            continue
        code = compile(source, f"{path.name}:{role}", "exec")
        if role == notebooks.CHECK_TAG:
            try:
                exec(code, namespace)
            except checks.CheckFailed as failure:
                outcomes.append(failure)
            else:
                outcomes.append(None)
        else:
            exec(code, namespace)
    return outcomes


@pytest.mark.parametrize("path", LABS, ids=[p.name for p in LABS])
def test_every_checker_rejects_its_stub(path, monkeypatch, tmp_path):
    outcomes = run_lab(path, with_solutions=False, monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert outcomes, "a lab needs check cells"
    accepted = [i for i, failure in enumerate(outcomes) if failure is None]
    assert not accepted, f"check cells {accepted} accepted the unfilled stub"
    for failure in outcomes:
        assert "not implemented yet" in str(failure) and "Hint:" in str(failure)


@pytest.mark.parametrize("path", LABS, ids=[p.name for p in LABS])
def test_every_checker_accepts_its_solution(path, monkeypatch, tmp_path):
    outcomes = run_lab(path, with_solutions=True, monkeypatch=monkeypatch, tmp_path=tmp_path)
    failed = {i: str(f) for i, f in enumerate(outcomes) if f is not None}
    assert not failed, f"check cells rejected the solution: {failed}"


def test_every_checker_is_used_by_a_lab_and_every_check_cell_uses_one():
    registry = checks.all_checkers()
    used = set()
    for path in LABS:
        for role, source in lab_cells(path):
            if role == notebooks.CHECK_TAG:
                names = set(re.findall(r"\.(check_\w+)\(", source))
                assert names, f"{path.name}: check cell calls no checker: {source!r}"
                used |= names
    registered = {function.__name__ for function in registry.values()}
    assert used <= registered, f"check cells call unregistered checkers: {used - registered}"
    assert registered <= used, f"checkers no lab uses: {registered - used}"


def test_student_copies_are_generated(tmp_path):
    assert notebooks.main(["student", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in LABS]
    for copy in tmp_path.iterdir():
        roles = [r for r, _ in lab_cells(copy)]
        assert notebooks.SOLUTION_TAG not in roles and notebooks.EXERCISE_TAG in roles
