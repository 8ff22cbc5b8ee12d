"""Every lab works as a reader meets it, and as a reader who solved it.

- **As shipped** (the notebook JupyterLab, Colab and Binder open: stubs only), a lab runs to its end
  without an error, as the book build and ``pytest --nbmake`` require; its first check cell reports the
  first stub's hint (``Not yet: <hint>``), no cell before it reports anything, and no check passes.
- **Solved** (each exercise cell replaced by the same definitions from ``labs/solutions/<lab>.py``, with
  that module's imports), every check cell prints ``PASSED`` and no cell is skipped.

Both run the notebook in a real Jupyter kernel, from the lab's own folder. ``make test`` executes every
notebook once, under ``pytest --nbmake``, and keeps the labs as executed in ``$BOOK_EXECUTED_LABS``: the
as-shipped test reads that execution (after checking it is of the lab's current code) instead of running
the lab again; without the variable it executes the lab itself (``nbclient``).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

from utils import checks, notebooks
from utils.checks.run import NOT_YET

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted(ROOT.glob("labs/*.ipynb"))
SOLUTIONS = ROOT / "labs" / "solutions"
SKIPPED = "Skipped until the check of"


def tagged(cell: nbformat.NotebookNode, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def stub_hints(source: str) -> list[str]:
    """The message of every ``raise NotImplementedError("...")`` of an exercise cell, in order."""
    hints = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            if getattr(node.exc.func, "id", None) == "NotImplementedError":
                hints.append(ast.literal_eval(node.exc.args[0]))
    return hints


def defined_names(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body
            if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def solution_source(lab: Path, names: set[str]) -> str:
    """The imports of ``labs/solutions/<lab>.py`` and its definitions of ``names``."""
    path = SOLUTIONS / f"{lab.stem}.py"
    assert path.is_file(), f"{lab.name} has no solutions module {path.relative_to(ROOT)}"
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    found = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    missing = names - set(found)
    assert not missing, f"{path.name} does not define {sorted(missing)}"
    parts = [ast.get_source_segment(text, node) for node in imports]
    parts += [ast.get_source_segment(text, found[name]) for name in sorted(names)]
    return "\n\n".join(part for part in parts if part)


def solved(lab: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(lab, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and tagged(cell, notebooks.EXERCISE_TAG):
            cell.source = solution_source(lab, defined_names(cell.source))
    return nb


def execute(nb: nbformat.NotebookNode, lab: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel from the lab's folder; any cell error fails the test."""
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(lab.parent)}})
    client.execute()
    return nb


def as_shipped(lab: Path) -> nbformat.NotebookNode:
    """The lab executed as shipped: ``make test``'s one execution of it, or a new one."""
    folder = os.environ.get("BOOK_EXECUTED_LABS")
    if not folder:
        return execute(nbformat.read(lab, as_version=4), lab)
    path = ROOT / folder / lab.name
    assert path.is_file(), f"{path} is missing: BOOK_EXECUTED_LABS names the labs executed by make test"
    executed, shipped = nbformat.read(path, as_version=4), nbformat.read(lab, as_version=4)
    assert [c.source for c in executed.cells] == [c.source for c in shipped.cells], \
        f"{path} was executed from other code than {lab.name}: run make test again"
    return executed


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.output_type == "stream")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Runs and checkpoints of the kernel go to a temporary folder (the kernel inherits the env)."""
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BOOK_CHECKPOINTS_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_lab_as_shipped_runs_and_stops_at_its_first_check(lab, isolated):
    nb = as_shipped(lab)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    first_exercise = next(i for i, c in enumerate(code) if tagged(c, notebooks.EXERCISE_TAG))
    first_check = next(i for i, c in enumerate(code) if tagged(c, notebooks.CHECK_TAG))
    assert first_exercise < first_check
    before = [i for i in range(first_check) if NOT_YET in printed(code[i])]
    assert not before, f"cells {before} report a failure before the first check"
    report = printed(code[first_check])
    hint = stub_hints(code[first_exercise].source)
    assert hint, "the first exercise cell raises no NotImplementedError with a hint"
    assert NOT_YET in report and hint[0] in report, \
        f"the first check must say 'Not yet' with the stub's hint {hint[0]!r}; it printed {report!r}"
    passed = [i for i, c in enumerate(code) if tagged(c, notebooks.CHECK_TAG) and "PASSED" in printed(c)]
    assert not passed, f"check cells {passed} accepted a stub"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_lab_with_its_solutions_passes_end_to_end(lab, isolated):
    nb = execute(solved(lab), lab)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    checks_run = [c for c in code if tagged(c, notebooks.CHECK_TAG)]
    assert checks_run, "a lab needs check cells"
    for cell in checks_run:
        assert "PASSED" in printed(cell) and NOT_YET not in printed(cell), \
            f"{cell.source!r} did not pass: {printed(cell)!r}"
    skipped = [c.source.splitlines()[0] for c in code if SKIPPED in printed(c)]
    assert not skipped, f"cells skipped although every check passed: {skipped}"


def test_labs_hold_no_solution_and_every_exercise_has_its_check():
    """The notebooks readers open contain stubs only, each followed by the check cell that runs its
    checker; every checker is used by a lab; each lab has a solutions module."""
    registry = checks.all_checkers()
    used = set()
    for lab in LABS:
        code = [c for c in nbformat.read(lab, as_version=4).cells if c.cell_type == "code"]
        assert not [c for c in code if tagged(c, "solution")], f"{lab.name} still has solution cells"
        for i, cell in enumerate(code):
            if not tagged(cell, notebooks.EXERCISE_TAG):
                continue
            assert stub_hints(cell.source), f"{lab.name}: exercise cell {i} raises no hint"
            assert i + 1 < len(code) and tagged(code[i + 1], notebooks.CHECK_TAG), \
                f"{lab.name}: exercise cell {i} must be followed by its check cell"
            called = re.fullmatch(r'check\("([\w.]+)", (\w+)\)', code[i + 1].source.strip())
            assert called, f"{lab.name}: a check cell is one call check(\"<id>\", <answer>)"
            assert called.group(1) in registry, f"{lab.name}: no checker {called.group(1)}"
            assert called.group(2) in defined_names(cell.source), \
                f"{lab.name}: check cell {i + 1} checks {called.group(2)}, not the exercise above it"
            used.add(called.group(1))
        assert (SOLUTIONS / f"{lab.stem}.py").is_file(), f"{lab.name}: no labs/solutions/{lab.stem}.py"
    assert used == set(registry), f"checkers no lab uses: {sorted(set(registry) - used)}"


def test_hints_describe_instead_of_giving_code():
    """A hint says what to do; code in a hint (a call, an indexing, an operator) is the answer."""
    code_like = re.compile(r"\w\(|\)\.|\[[^\]]*[:,]|==|\*\*|np\.|torch\.|self\.\w+\s*=|\w\.\w+\(")
    offenders = []
    for lab in LABS:
        for cell in nbformat.read(lab, as_version=4).cells:
            if cell.cell_type == "code" and tagged(cell, notebooks.EXERCISE_TAG):
                offenders += [f"{lab.name}: {hint!r}" for hint in stub_hints(cell.source)
                              if code_like.search(hint)]
    assert not offenders, "hints that give the code:\n" + "\n".join(offenders)
