"""Checkers of lab 5 (``labs/lab05_pretraining.ipynb``): sampling the next token as
``utils.gpt.GPT.generate`` does, and the steps a resumed run executes a second time.

Each checker compares the answer with a reference on inputs it builds itself, and names a mistake only
when the answer reproduces that mistake's output exactly (see ``utils.checks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from utils.checks import CheckFailed, call, checker, distribution_fault, passed, unchanged
from utils.hooks import due

# --------------------------------------------------------------------------- lab05.next_token_probs


def reference_probs(logits: torch.Tensor, temperature: float, top_k: int | None) -> np.ndarray:
    """What ``GPT.generate`` samples from, in float64: (B, V) rows summing to 1. Temperature 0 is greedy
    (all mass on the first largest logit); top-k keeps every logit >= the k-th largest (ties kept)."""
    z = logits.detach().double()
    if temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).double().numpy()
    z = z / temperature
    if top_k is not None:
        kth = torch.topk(z, min(top_k, z.shape[-1])).values[:, -1:]  # (B, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    return torch.softmax(z, dim=-1).numpy()


def _as_probs(result: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The answer as a float64 array, once it is what the lab's next cell needs: a floating-point torch
    tensor, since ``torch.multinomial`` takes no NumPy array and no integer tensor."""
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    if isinstance(result, np.ndarray):
        raise CheckFailed(f"{what} returns a numpy array: return a torch tensor (torch.from_numpy converts "
                          "one); the cell after the check samples from it with torch.multinomial, which "
                          "takes only tensors")
    if not isinstance(result, torch.Tensor):
        raise CheckFailed(f"{what} returned {type(result).__name__}: return a (B, V) torch tensor")
    if not torch.is_floating_point(result):
        kind = "complex" if result.is_complex() else "boolean" if result.dtype == torch.bool else "integer"
        raise CheckFailed(f"{what} returns {kind} values ({result.dtype}): return floating-point "
                          "probabilities (.float(), or .to(logits.dtype)); the cell after the check "
                          "samples from them with torch.multinomial, which takes only floating-point "
                          "tensors")
    array = result.detach().cpu().double().numpy()
    if array.shape != shape:
        raise CheckFailed(f"{what} returned shape {array.shape}; expected {shape}: one distribution over "
                          "the V tokens for each of the B rows")
    return array


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))  # float32 answers are fine


def _probs_of(answer: Callable[..., Any], logits: torch.Tensor, temperature: float,
              top_k: int | None) -> np.ndarray:
    original = logits.clone()
    what = f"next_token_probs(logits, temperature={temperature}, top_k={top_k})"
    result = call(answer, logits, temperature, top_k)
    if not unchanged(logits, original):
        raise CheckFailed(f"{what} changed the logits it was given (an in-place operation such as /= or "
                          "masked_fill_): generate reuses them, so compute on a copy")
    return _as_probs(result, tuple(logits.shape), what)


def _basic_fault(got: np.ndarray, logits: torch.Tensor) -> str | None:
    z = logits.double()
    if _close(np.exp(got), torch.softmax(z, -1).numpy()):
        return ("it returns log-probabilities (log_softmax); generate samples from probabilities, "
                "each row summing to 1")
    if _close(got, torch.softmax(z, 0).numpy()):
        return "the softmax runs over the batch axis (dim 0): normalise each row, over the V tokens"
    if np.isnan(got).any():
        return "it returns NaN for ordinary logits"
    return None


def _temperature_fault(got: np.ndarray, logits: torch.Tensor, t: float) -> str | None:
    z = logits.double()
    if _close(got, torch.softmax(z * t, -1).numpy()):
        return f"the logits were multiplied by the temperature ({t}): divide them by it"
    if _close(got, torch.softmax(z, -1).numpy()):
        return f"the temperature ({t}) is ignored: divide the logits by it before the softmax"
    if not np.allclose(got.sum(-1), 1.0, atol=1e-5):
        return ("the rows do not sum to 1: apply the temperature to the logits, before the softmax "
                "(or renormalise)")
    return None


def _top_k_fault(got: np.ndarray, logits: torch.Tensor, k: int, ties: bool) -> str | None:
    full = torch.softmax(logits.double(), -1).numpy()
    expected = reference_probs(logits, 1.0, k)
    kept = (got > 0).sum(-1)
    if _close(got, full):
        return f"top_k={k} is ignored: keep only the k most likely tokens"
    if _close(got, np.where(expected > 0, full, 0.0)):
        return ("the tokens outside the top k were zeroed after the softmax but the rest was not "
                "renormalised: the rows sum to less than 1")
    if ties and (kept == k).all():
        return ("a tie at the k-th largest logit: generate keeps every token whose logit equals the "
                "k-th largest (it masks only logits below it), so a row may keep more than k tokens")
    if not ties and (kept == k - 1).all():
        return f"it keeps k - 1 = {k - 1} tokens: the k-th largest logit must stay"
    if not ties and (kept == k + 1).all():
        return f"it keeps k + 1 = {k + 1} tokens: one too many"
    return None


def _greedy_fault(got: np.ndarray, logits: torch.Tensor) -> str | None:
    if np.isnan(got).any() or np.isinf(got).any():
        return ("temperature 0 gives NaN or inf: it means greedy decoding (all probability on the most "
                "likely token), as generate does, not a division by 0")
    best = logits == logits.max(-1, keepdim=True).values
    uniform = (best.double() / best.sum(-1, keepdim=True)).numpy()
    if _close(got, uniform):
        return ("temperature 0 with tied largest logits: generate takes argmax, the *first* of them, so "
                "all the probability goes to that one token")
    return None


def _symptom(got: np.ndarray, logits: torch.Tensor, temperature: float, expected: np.ndarray) -> str | None:
    """What a wrong distribution shows by itself: not a distribution, probability on a token top-k removes,
    the most likely token not at the largest logit, or the same probability for every token."""
    fault = distribution_fault(got)
    if fault:
        return fault
    if temperature != 0 and (got[expected == 0] > 1e-6).any():
        return ("tokens outside the top k keep some probability: set their logits to -inf before the softmax "
                "(a logit of 0, or any finite number, still gets exp() > 0)")
    rows = np.arange(got.shape[0])
    at_largest = got[rows, logits.argmax(-1).numpy()]
    if temperature != 0 and (at_largest < got.max(-1) - 1e-9).any():
        return ("the most likely token is not the one with the largest logit: the softmax keeps the order "
                "of the logits (a larger logit, a larger probability). Is a sign flipped, or the temperature "
                "applied the wrong way?")
    if np.allclose(got, got[:, :1]) and not np.allclose(logits, logits[:, :1]):
        return "every token gets the same probability: the distribution ignores the logits"
    return None


def _logits(seed: int, rows: int = 3, vocab: int = 10, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator) * scale  # (B, V), distinct values


@checker("lab05.next_token_probs")
def check_next_token_probs(next_token_probs: Callable[..., Any]) -> None:
    """``next_token_probs(logits, temperature, top_k)``: (B, V) logits -> the (B, V) distribution
    ``GPT.generate`` samples from, as a floating-point torch tensor (the lab feeds it to torch.multinomial),
    for temperatures 1, 0.5, 2 and 0, top-k with and without ties, top_k larger than V, and logits of
    +-1000."""
    tied = torch.tensor([[3.0, 1.0, 1.0, 0.0, -1.0, 2.0, 1.0, -2.0]])  # k = 3 cuts through three 1.0s
    tied_max = torch.tensor([[2.0, 5.0, 1.0, 5.0, 0.0]])
    cases = [  # (label, logits, temperature, top_k, specific diagnosis)
        ("plain softmax", _logits(0), 1.0, None, _basic_fault),
        ("temperature 0.5", _logits(1), 0.5, None, lambda g, z: _temperature_fault(g, z, 0.5)),
        ("temperature 2", _logits(2), 2.0, None, lambda g, z: _temperature_fault(g, z, 2.0)),
        ("top_k=3", _logits(3), 1.0, 3, lambda g, z: _top_k_fault(g, z, 3, ties=False)),
        ("top_k=3 with temperature 0.7", _logits(4), 0.7, 3, None),
        ("top_k=3 with a tie at the 3rd", tied, 1.0, 3, lambda g, z: _top_k_fault(g, z, 3, ties=True)),
        ("top_k=15 > V=10", _logits(5), 1.0, 15, None),
        ("logits of +-1000", _logits(6, scale=1000.0), 1.0, None, None),
        ("temperature 0", _logits(7), 0, None, _greedy_fault),
        ("temperature 0, tied largest", tied_max, 0, None, _greedy_fault),
    ]
    for label, logits, temperature, top_k, fault in cases:
        try:
            got = _probs_of(next_token_probs, logits, temperature, top_k)
        except CheckFailed as failure:
            hint = ("; with top_k larger than the vocabulary, generate keeps every token (it asks "
                    "torch.topk for min(top_k, V))") if label.startswith("top_k=15") else ""
            raise CheckFailed(f"case {label!r}: {failure}{hint}") from failure.__cause__
        expected = reference_probs(logits, temperature, top_k)
        if _close(got, expected):
            continue
        diagnosis = fault(got, logits) if fault is not None else None
        if diagnosis is None and label == "logits of +-1000" and not np.isfinite(got).all():
            diagnosis = ("exp overflows for logits of +-1000 (NaN or inf): torch.softmax is stable; by hand, "
                         "subtract each row's largest logit first")
        if diagnosis is None:
            diagnosis = _symptom(got, logits, temperature, expected)
        if diagnosis is None and label.startswith("top_k=15"):
            diagnosis = "with top_k larger than the vocabulary, generate keeps every token"
        raise CheckFailed(f"case {label!r}: {diagnosis or 'the distribution differs from generate'}"
                          f"\n  logits {np.round(logits.double().numpy(), 3).tolist()}"
                          f"\n  yours    {np.round(got, 4).tolist()}\n  expected {np.round(expected, 4).tolist()}")
    passed("lab05.next_token_probs")


# --------------------------------------------------------------------------- lab05.redone_steps


def newest_checkpoint_records(max_steps: int, checkpoint_every: int, steps_done: int) -> int:
    """The step a run resumes at: the newest checkpoint saved after a completed update s (``hooks.due``)
    records s + 1; with no checkpoint, a resumed run starts again at 0."""
    saved = [s for s in range(steps_done) if due(checkpoint_every, s, max_steps - 1)]
    return saved[-1] + 1 if saved else 0


def reference_redone(max_steps: int, checkpoint_every: int, steps_done: int) -> list[int]:
    """Steps a resumed run executes a second time: from where it resumes up to the last completed one."""
    return list(range(newest_checkpoint_records(max_steps, checkpoint_every, steps_done), steps_done))


def _variant(max_steps: int, every: int, done: int, *, records_next: bool = True, step0: bool = True,
             one_based: bool = False, last: bool = True, inclusive: bool = False,
             to_the_end: bool = False) -> list[int]:
    """The reference with one rule changed: each flag is a mistake the checker can name."""
    saved = []
    for s in range(done):
        if one_based:
            hit = every > 0 and (s + 1) % every == 0
        else:
            hit = every > 0 and ((s % every == 0 and (step0 or s > 0)) or (last and s == max_steps - 1))
        if hit:
            saved.append(s)
    start = (saved[-1] + (1 if records_next else 0)) if saved else 0
    end = max_steps if to_the_end else done + (1 if inclusive else 0)
    return list(range(start, end))


_MISTAKES = {  # flag -> what the answer got wrong
    "records_next": "a checkpoint saved after step s records s + 1: the resumed run starts at s + 1, so step "
                    "s itself is not executed again",
    "step0": "hooks.due also saves at step 0, so a run that dies before step checkpoint_every resumes at 1",
    "one_based": "checkpoints are saved at step 0 and at every multiple of checkpoint_every (0-based "
                 "steps, hooks.due), not after every checkpoint_every-th update counted from 1",
    "last": "hooks.due always saves at the last step: a finished run has nothing to redo",
    "inclusive": "steps_done counts completed updates: the last completed step is steps_done - 1",
    "to_the_end": "only the steps executed twice: from where the run resumes up to steps_done - 1, not "
                  "every step left to max_steps",
}
_CASES = [(500, 100, 330), (500, 100, 50), (500, 100, 300), (500, 100, 301), (450, 100, 450),
          (10, 3, 8), (500, 100, 0), (20, 0, 5)]


def _as_steps(result: Any, what: str) -> list[int]:
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    if isinstance(result, (int, np.integer, float)):
        raise CheckFailed(f"{what} returned the number {result}: return the list of steps themselves")
    try:
        return [int(s) for s in result]
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {type(result).__name__}: return a list of step numbers") from None


@checker("lab05.redone_steps")
def check_redone_steps(redone_steps: Callable[[int, int, int], Any]) -> None:
    """``redone_steps(max_steps, checkpoint_every, steps_done)``: the steps a run that died after
    ``steps_done`` updates executes again when resumed from its newest checkpoint (``hooks.due`` rule)."""
    answers = {}
    for case in _CASES:
        what = "redone_steps(max_steps={}, checkpoint_every={}, steps_done={})".format(*case)
        try:
            answers[case] = _as_steps(call(redone_steps, *case), what)
        except CheckFailed as failure:
            hint = " (checkpoint_every = 0 means never: a resumed run starts again at 0)" if case[1] == 0 else ""
            hint += " (with steps_done = 0 no update finished: nothing is redone)" if case[2] == 0 else ""
            raise CheckFailed(f"{failure}{hint}") from failure.__cause__
    wrong = [case for case in _CASES if answers[case] != reference_redone(*case)]
    if not wrong:
        passed("lab05.redone_steps")
        return
    for flag, mistake in _MISTAKES.items():
        value = flag not in ("records_next", "step0", "last")  # the flags that default to True are negated
        if all(answers[case] == _variant(*case, **{flag: value}) for case in _CASES):
            raise CheckFailed(mistake)
    symptom = _redone_symptom({case: answers[case] for case in wrong})
    if symptom:
        raise CheckFailed(symptom)
    case = wrong[0]
    raise CheckFailed("redone_steps(max_steps={}, checkpoint_every={}, steps_done={}) ".format(*case)
                      + f"returned {_short(answers[case])}, expected {_short(reference_redone(*case))}. "
                      "Find the newest step s < steps_done with hooks.due(checkpoint_every, s, "
                      "max_steps - 1); the run resumes at s + 1")


def _redone_symptom(wrong: dict[tuple[int, int, int], list[int]]) -> str | None:
    """What the wrong lists show by themselves: steps not a consecutive run, a last step other than
    steps_done - 1, or a start that is always one off."""
    shown = "; ".join("redone_steps({}, {}, {}) ".format(*case) + f"returned {_short(steps)}, expected "
                      f"{_short(reference_redone(*case))}" for case, steps in list(wrong.items())[:2])
    if any(steps and steps != list(range(steps[0], steps[0] + len(steps))) for steps in wrong.values()):
        return (f"the steps are not one consecutive run ({shown}): a resumed run executes every step from "
                "where it resumes up to the last completed one, each once, in order")
    if any(steps and steps[-1] != case[2] - 1 for case, steps in wrong.items()):
        return (f"the last redone step is not steps_done - 1 ({shown}): steps_done updates finished, the "
                "last being step steps_done - 1, and every step up to it is executed again")
    starts = {(steps[0] if steps else case[2]) - reference_redone(*case)[0] if reference_redone(*case)
              else None for case, steps in wrong.items()}
    if starts in ({1}, {-1}):
        return (f"one step {'late' if starts == {1} else 'early'} at the start ({shown}): the run resumes at "
                "s + 1, s being the newest step < steps_done at which hooks.due saved a checkpoint")
    return None


def _short(steps: list[int]) -> str:
    if len(steps) > 4 and steps == list(range(steps[0], steps[-1] + 1)):
        return f"[{steps[0]}, ..., {steps[-1]}] ({len(steps)} steps)"
    if len(steps) > 6:
        return f"[{steps[0]}, {steps[1]}, {steps[2]}, ..., {steps[-1]}] ({len(steps)} steps)"
    return str(steps)
