"""Every lab checker accepts every correct answer in ``tests/checker_cases`` and rejects every wrong one with
*its* diagnosis, without blaming a fault the answer does not have (see ``tests/checker_cases/__init__.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import time

import pytest
import torch
import torch.distributed as dist

from tests import checker_cases
from utils import checks
from utils.checks import ranks

MIN_CORRECT, MIN_WRONG = 3, 8


def load_cases() -> dict[str, tuple[list, list[checker_cases.Wrong]]]:
    cases: dict[str, tuple[list, list[checker_cases.Wrong]]] = {}
    for module in pkgutil.iter_modules(checker_cases.__path__):
        lab = importlib.import_module(f"{checker_cases.__name__}.{module.name}")
        for name, entry in lab.CASES.items():
            assert name not in cases, f"{name} has cases in two modules"
            cases[name] = checker_cases.normalise(entry)
    return cases


CHECKERS = checks.all_checkers()
CASES = load_cases()
CORRECT = [(name, i) for name, (correct, _) in sorted(CASES.items()) for i in range(len(correct))]
WRONG = [(name, i) for name, (_, wrong) in sorted(CASES.items()) for i in range(len(wrong))]


def test_every_checker_has_enough_cases():
    missing = sorted(set(CHECKERS) - set(CASES))
    assert not missing, f"checkers without cases in tests/checker_cases: {missing}"
    unknown = sorted(set(CASES) - set(CHECKERS))
    assert not unknown, f"cases for checkers that are not registered: {unknown}"
    thin = {name: (len(c), len(w)) for name, (c, w) in CASES.items() if len(c) < MIN_CORRECT or len(w) < MIN_WRONG}
    assert not thin, f"(correct, wrong) cases below ({MIN_CORRECT}, {MIN_WRONG}): {thin}"


@pytest.mark.parametrize(("name", "index"), CORRECT, ids=[f"{n}-correct{i}" for n, i in CORRECT])
def test_correct_answer_passes(name, index, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    answer = CASES[name][0][index]
    CHECKERS[name](answer)
    assert f"PASSED {name}" in capsys.readouterr().out


def forbidden_texts(name: str, wrong: checker_cases.Wrong) -> list[str]:
    """The other faults' diagnoses (not contained in this one's own) and the case's own forbidden texts."""
    others = {w.diagnosis for w in CASES[name][1]} - {wrong.diagnosis}
    return sorted({text for text in others if text not in wrong.diagnosis} | set(wrong.forbidden))


@pytest.mark.parametrize(("name", "index"), WRONG, ids=[f"{n}-wrong{i}" for n, i in WRONG])
def test_wrong_answer_gets_its_diagnosis(name, index, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    wrong = CASES[name][1][index]
    with pytest.raises(checks.CheckFailed) as failure:
        CHECKERS[name](wrong.answer)
    message = str(failure.value)
    answer = getattr(wrong.answer, "__name__", repr(wrong.answer))
    assert wrong.diagnosis in message, f"{answer}: expected {wrong.diagnosis!r} in the diagnosis {message!r}"
    blamed = [text for text in forbidden_texts(name, wrong) if text in message]
    assert not blamed, f"{answer}: the diagnosis {message!r} also blames {blamed}"


def test_a_rank_that_never_returns_is_stopped_and_reported():
    """``utils.checks.ranks``: a launch whose ranks outlive its timeout is killed, each rank reported as
    stopped, not waited for (the checkers' answers that deadlock in a collective are in checker_cases)."""
    started = time.monotonic()
    outcomes = ranks.run_in_ranks(time.sleep, (120,), (2,), timeout=8)
    assert time.monotonic() - started < 30
    assert [o.timed_out for o in outcomes[2]] == [True, True]
    assert "was stopped" in ranks.failure_in_words(outcomes, "sleep")


def test_the_rank_check_leaves_this_process_as_it_was():
    """The whole-batch reference of the rank checks draws no number from the caller's random state, and
    this process never joins a process group."""
    state = torch.random.get_rng_state()
    ranks.whole_batch_gradients()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not dist.is_initialized()
