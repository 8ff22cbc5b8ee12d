"""Lab 8 (``labs/lab08_troubleshooting.ipynb``): six broken runs to diagnose and cure, and a plateau rule.

``make_runs`` trains, with ``utils.chapters.ch08_broken_runs.train_setting`` (chapter 8's runs, seed 1 where chapter 8
used seed 0, both offset by ``BOOK_SEED``: ``env.book_seed``), a healthy ``reference`` and six broken runs
``run_a`` ... ``run_f`` under ``runs/lab08/``, each one setting away from a healthy twin (``RUNS``).
``make_twins`` trains the twins that are not the reference. The reader says, per run, the problem and the
setting to change (``lab08.diagnose_runs``), and writes a plateau detector that ``lab08.plateau_rule`` tests
on curves of its own (``plateau_curves``). Read ``RUNS`` after you have answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from utils.chapters.ch08_broken_runs import Setting, differing_settings, setting_hparams
from utils.checks import CheckFailed, answers_per_run, call, checker, normalised, passed, unchanged

SEED = 1  # chapter 8 trained these settings with seed 0: other data split, initial weights and batches
REFERENCE = Setting(steps=150)  # chapter 8's default run, 150 updates instead of 250 (the lab's CPU budget)
# chapter 8's exploding run: eight ReLU layers drawn 1.8x He's scale (it overflows within a few updates)
EXPLODING = replace(REFERENCE, depth=8, init="kaiming", init_gain=1.8, lr=0.02)
VANISHING = replace(REFERENCE, depth=6, activation="sigmoid", lr=0.1)
# chapter 8's overfitting network on its 50 images, at 0.01 instead of 0.003: at 0.003 its validation loss
# rose less than the 10% utils.diagnose asks within 150 updates for some seeds; at 0.01 it rises 60-85%
OVERFIT = replace(REFERENCE, depth=1, width=256, optimizer="adamw", lr=0.01, train_examples=50)


@dataclass(frozen=True)
class BrokenRun:
    problem: str  # one of PROBLEMS
    setting: Setting
    twin: Setting  # the healthy run that differs from it in exactly one setting


RUNS = {
    "run_a": BrokenRun("lr_too_low", replace(REFERENCE, lr=5e-4), REFERENCE),
    "run_b": BrokenRun("exploding_gradients", EXPLODING, replace(EXPLODING, grad_clip=5.0)),
    "run_c": BrokenRun("overfitting", OVERFIT, replace(OVERFIT, train_examples=800)),
    "run_d": BrokenRun("vanishing_gradients", VANISHING, replace(VANISHING, residual=True)),
    "run_e": BrokenRun("nan_loss", replace(REFERENCE, loss="class_mean_unguarded"),
                       replace(REFERENCE, loss="class_mean")),
    "run_f": BrokenRun("shuffled_labels", replace(REFERENCE, labels="shuffled"), REFERENCE),
}


def run_keywords() -> dict[str, Any]:
    """``train_setting``'s logging keywords: update ratios of every layer every 5 updates, and the seed
    (``SEED`` plus ``$BOOK_SEED``)."""
    from utils import env

    return {"update_ratio_every": 5, "seed": env.book_seed(SEED)}


def make_runs(chapter: str = "lab08") -> dict[str, Path]:
    """Train ``reference`` and every run of ``RUNS`` into ``runs/<chapter>/<name>``; ``{name: run dir}``."""
    from utils.chapters import ch08_broken_runs as broken_runs

    keywords = run_keywords()
    made = {"reference": broken_runs.train_setting("reference", REFERENCE, chapter=chapter, **keywords)}
    for name, broken in RUNS.items():
        made[name] = broken_runs.train_setting(name, broken.setting, chapter=chapter, **keywords)
    return {name: outcome.run for name, outcome in made.items()}


def make_twins(chapter: str = "lab08") -> dict[str, Path]:
    """Train each run's twin that is not the reference, as ``<run>-twin``; ``{run name: twin run dir}``."""
    from utils.chapters import ch08_broken_runs as broken_runs

    return {name: broken_runs.train_setting(f"{name}-twin", broken.twin, chapter=chapter,
                                             **run_keywords()).run
            for name, broken in RUNS.items() if broken.twin != REFERENCE}


# --------------------------------------------------------------------------- lab08.diagnose_runs

SETTINGS = tuple(f.name for f in fields(Setting))
CHANGES = ("raise", "lower", "set", "change")
SHOWS = {  # what each problem looks like in these logs; the lab's last cell asserts every number here
    "exploding_gradients": "train/grad_norm starts at more than 100x the reference's and grows more than "
                           "100x within a few updates, the training loss shooting above 3x its start until "
                           "the run stops",
    "vanishing_gradients": "the loss sits at ln 10 = 2.30 while the first layer's update ratio stays below "
                           "1/1000 of the head's: the early layers get almost no gradient",
    "lr_too_low": "the loss falls, slowly (still above 2 at the end), its gradient norm starting where the "
                  "reference's does (within 10%) and never above 2x that, and the first layer's update ratio "
                  "within 10x of the head's: every layer takes steps, all of them small",
    "lr_too_high": "the loss jumps and rises from the first updates and never settles",
    "overfitting": "the training loss falls below 0.01 while the validation loss rises again after its "
                   "minimum, to more than 1.1x it",
    "nan_loss": "the loss turns NaN without warning, the gradient norm at most 3x its start up to "
                "that step, and the run stops there",
    "shuffled_labels": "the training loss creeps down while the validation loss never gets more than 0.05 "
                       "below ln 10 = 2.30, a uniform guess: nothing learned carries over",
    "unscaled_inputs": "it trains, to a worse loss than the reference, with larger gradient norms",
    "leaked_validation": "the validation loss hugs the training loss, far below an honest run's",
    "healthy": "both losses fall and level off together, the gradient norm steady",
}
PROBLEMS = tuple(SHOWS)
CURES = {  # the changes chapter 8 measured to cure each problem (setting, change)
    "exploding_gradients": {("grad_clip", "set"), ("lr", "lower"), ("init_gain", "lower")},
    "vanishing_gradients": {("activation", "change"), ("norm", "set"), ("residual", "set"),
                            ("init", "change")},
    "lr_too_low": {("lr", "raise")},
    "overfitting": {("train_examples", "raise"), ("patience", "set"), ("weight_decay", "raise")},
    "nan_loss": {("loss", "change")},
    "shuffled_labels": {("labels", "change")},
}
WHY_NOT = {  # (problem, setting, change) -> why that change is no cure (chapter 8's evidence)
    ("vanishing_gradients", "grad_clip", "set"):
        "clipping does not cure vanishing gradients: it only shrinks a gradient whose norm is above its "
        "threshold, and a vanishing one never is (chapter 8's common-mistake box)",
    ("exploding_gradients", "init", "change"):
        "the initialisation is the cause, yet not its scheme: this run's is He's (init='kaiming'), the right "
        "one for ReLU, drawn init_gain=1.8 times too large; lower init_gain (chapter 8's exploding-he-init)",
    ("vanishing_gradients", "lr", "raise"):
        "a larger learning rate scales every layer's step alike: the first layer's stay 1/1000 of the head's",
    ("nan_loss", "lr", "lower"):
        "a smaller learning rate does not stop 0 / 0: the NaN appears in the forward pass, on a batch "
        "that misses a class, whatever the learning rate",
    ("nan_loss", "grad_clip", "set"):
        "clipping acts on the gradients after the loss is computed; a NaN loss makes NaN gradients, "
        "which no clipping repairs",
    ("nan_loss", "batch", "raise"):
        "a larger batch makes a batch without some class rarer, not impossible: guard the division",
    ("overfitting", "dropout", "raise"):
        "in chapter 8, on this network (with 50 training images), dropout at 0.2, 0.5 and 0.8 did not shrink "
        "the gap between validation and training loss (none by more than 0.05), and utils.diagnose still "
        "reported overfitting on each",
    ("overfitting", "augment", "set"):
        "in chapter 8, on this network (with 50 training images), shifting the images by up to one pixel "
        "left the run overfitting (utils.diagnose still reported it); more data, early stopping and weight "
        "decay shrank the gap",
}
CONFUSIONS = {  # (truth, given) -> the evidence that tells them apart; {lr}: the run's recorded lr,
    # {ratio}: that lr over the reference's
    ("lr_too_low", "vanishing_gradients"):
        "its steps are small in every layer alike, not only in the first: that is a too-low learning rate "
        "(this run's lr is {lr}), not vanishing gradients; compare update_ratio/layers.0.weight with "
        "update_ratio/head.weight, and look at train/grad_norm and train/lr",
    ("vanishing_gradients", "lr_too_low"):
        "its lr ({lr}) is {ratio:g}x the reference's, yet its first layers barely move while its head does: "
        "compare update_ratio/layers.0.weight with update_ratio/head.weight",
    ("shuffled_labels", "overfitting"):
        "an overfitting run's validation loss first falls well below ln 10, then rises; this one never "
        "fell below chance at all: the labels do not match the inputs",
    ("exploding_gradients", "nan_loss"):
        "its train/grad_norm was already more than 100x the reference's at the first update and grew by "
        "orders of magnitude before the loss gave out: the gradients exploded first; a loss that computes "
        "a NaN itself does so with an ordinary gradient norm",
    ("nan_loss", "exploding_gradients"):
        "the gradient norm stays ordinary (at most 3x its start) up to the step where the loss turns NaN: "
        "nothing exploded, the loss itself computed a NaN",
}


def _normalise(text: Any) -> Any:
    return text if text is None else normalised(text)


def _answer_of(name: str, value: Any) -> tuple[str, str | None, str | None]:
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 3:
        raise CheckFailed(f"{name}: give a tuple (problem, setting, change), e.g. ('lr_too_low', 'lr', "
                          f"'raise'); got {value!r}")
    problem, setting, change = (_normalise(part) for part in value)
    if problem not in PROBLEMS:
        raise CheckFailed(f"{name}: {problem!r} is not one of the problems: use one of {', '.join(PROBLEMS)}")
    if problem != "healthy" and setting not in SETTINGS:
        raise CheckFailed(f"{name}: {setting!r} is not a setting; the settings are the fields of "
                          f"broken_runs.Setting: {', '.join(SETTINGS)}")
    if problem != "healthy" and change not in CHANGES:
        raise CheckFailed(f"{name}: {change!r} is not a change: use one of {', '.join(CHANGES)}")
    return problem, setting, change


def _answers_of(answer: Any) -> dict[str, tuple[str, str | None, str | None]]:
    given = answers_per_run(answer, RUNS, "diagnose_runs", "{run name: (problem, setting, change)}", "answer")
    return {name: _answer_of(name, value) for name, value in given.items()}


def _wrong_problem(name: str, given: str) -> str:
    broken = RUNS[name]
    truth, hparams = broken.problem, setting_hparams(broken.setting)
    if (truth, given) in CONFUSIONS:
        ratio = hparams["lr"] / setting_hparams(REFERENCE)["lr"]
        return f"{name} is not {given}: " + CONFUSIONS[truth, given].format(lr=hparams["lr"], ratio=ratio)
    return (f"{name} is not {given}: it shows that {SHOWS[truth]} ({truth}). {given} would look "
            f"different: {SHOWS[given]}.")


def _wrong_cure(name: str, setting: str, change: str) -> str:
    """Why changing ``setting`` that way does not cure the run, from the settings it recorded."""
    broken = RUNS[name]
    hparams = setting_hparams(broken.setting)
    (field, (mine, twins)), = differing_settings(hparams, setting_hparams(broken.twin)).items()
    twin = f"its healthy twin differs from it in {field} only ({field}={mine} here, {twins} there)"
    right_way = [c for s, c in CURES[broken.problem] if s == setting]
    if right_way:
        return (f"{name}: {setting} is a setting to change, but not to {change}: this run recorded "
                f"{setting}={hparams[setting]}; {right_way[0]} it. ({twin})")
    if (broken.problem, setting, change) in WHY_NOT:
        return f"{name}: right problem, but {WHY_NOT[broken.problem, setting, change]}. ({twin})"
    if setting == "steps" and change == "raise" and broken.problem == "lr_too_low":
        ratio = setting_hparams(broken.twin)["lr"] / hparams["lr"]
        return (f"{name}: right problem, but at lr {hparams['lr']} it needs about {ratio:.0f}x as many "
                f"updates to get as far as its twin: raise the learning rate instead. ({twin})")
    return f"{name}: right problem, but {change} {setting} is not what cures {broken.problem}: {twin}"


@checker("lab08.diagnose_runs")
def check_diagnose_runs(diagnose_runs: Callable[[], Any]) -> None:
    """``diagnose_runs()`` -> ``{run name: (problem, setting, change)}``, a problem of ``PROBLEMS``, a
    field of ``broken_runs.Setting`` and a change of ``CHANGES``, for every run of ``RUNS``. The setting
    must be one that cures the problem (``CURES``); each wrong answer is explained."""
    answers = _answers_of(call(diagnose_runs))
    lines = []
    for name, (problem, setting, change) in answers.items():
        if problem != RUNS[name].problem:
            lines.append(_wrong_problem(name, problem))
        elif (setting, change) not in CURES[problem]:
            lines.append(_wrong_cure(name, setting, change))
    if lines:
        raise CheckFailed(f"{len(lines)} of the {len(RUNS)} runs are answered wrong:\n- " + "\n- ".join(lines))
    passed("lab08.diagnose_runs")


# --------------------------------------------------------------------------- lab08.plateau_rule

WINDOW = 10  # W: points per smoothed value, and the later points a plateau needs
TOLERANCE = 0.01  # an improvement of less than 1% of the smoothed loss does not count


def _plateau(steps: Any, values: Any, *, window: int = WINDOW, tolerance: float = TOLERANCE,
             relative: bool = True, drop: bool = True, keep_steps: bool = False, need_later: bool = True,
             horizon: int | None = None, report: str = "end") -> int | None:
    """The rule of the lab, and, through its keywords, the faults the checker names: ``window`` of the
    smoothing, a ``relative`` or absolute ``tolerance``, non-finite points dropped (``drop``; their steps
    too unless ``keep_steps``), ``need_later`` W later points, only ``horizon`` later means compared,
    ``report`` the step at the window's end, its start, or the point's index."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if drop:
        finite = np.isfinite(values)
        steps, values = (steps, values[finite]) if keep_steps else (steps[finite], values[finite])
    if len(values) < 2 * WINDOW:
        return None
    smoothed = np.convolve(values, np.ones(window) / window, mode="valid")  # [j]: points j .. j+window-1
    for j in range(len(values) - window + 1 - (WINDOW if need_later else 0)):
        later = smoothed[j + 1:None if horizon is None else j + 1 + horizon]
        floor = (1 - tolerance) * smoothed[j] if relative else smoothed[j] - tolerance
        if np.all(later >= floor):  # no later mean more than the tolerance below this one
            end = j + window - 1
            return {"end": int(steps[end]), "start": int(steps[j]), "index": end}[report]
    return None


def reference_plateau(steps: Any, values: Any) -> int | None:
    """The step from which the loss has stopped improving (the lab's contract), or None."""
    return _plateau(steps, values)


@dataclass(frozen=True)
class Curve:
    description: str
    steps: np.ndarray  # (n,) int
    values: np.ndarray  # (n,) float


def _curve(kind: str, n: int, seed: int, *, noise: float = 0.0, every: int = 1, first: int = 0,
           level: float = 0.3, top: float = 2.3, tau: float = 15.0, nan_at: tuple[int, ...] = ()) -> Curve:
    t = np.arange(n, dtype=float)
    shapes = {  # kind -> (values, what it is)
        "flat": (np.full(n, level), f"flat at {level}"),
        "exp": (level + (top - level) * np.exp(-t / tau), f"a fall from {top} levelling off at {level}"),
        "decay": (top * np.exp(-t / tau), f"a fall from {top} by {1 - np.exp(-10 / tau):.0%} every 10 points"),
        "power": (top / (1 + t / tau), f"a fall from {top} as 1 / (1 + t / {tau:g})"),
        "two-step": (level + (top - level) * np.exp(-t / tau)
                     - level / 2 * (1 - np.exp(-np.clip(t - n / 2, 0, None) / tau)),
                     f"a fall from {top} that levels off at {level}, then falls again to {level / 2} "
                     f"from its middle"),
    }
    values, what = shapes[kind]
    values = values * (1 + noise * np.random.default_rng(seed).standard_normal(n))
    values[list(nan_at)] = [np.nan if i % 2 == 0 else np.inf for i in range(len(nan_at))]
    noisy = f" with {noise:.1%} noise" if noise else ""
    spacing = f", logged every {every} steps from step {first}" if (every, first) != (1, 0) else ""
    broken = f", not finite at points {list(nan_at)}" if nan_at else ""
    return Curve(f"{n} points{spacing}, {what}{noisy}{broken}", first + every * np.arange(n), values)


def plateau_curves() -> list[Curve]:
    """The curves ``lab08.plateau_rule`` tests a rule on, in order."""
    return [
        _curve("exp", 150, 0),
        _curve("exp", 120, 1, every=5, first=100, tau=10),
        _curve("decay", 200, 2, noise=0.01, tau=200),
        _curve("power", 300, 3, noise=0.005, tau=20),
        _curve("power", 100, 4, noise=0.03, tau=5),
        _curve("exp", 250, 5, noise=0.01, level=0.05, tau=30),
        _curve("exp", 120, 6, noise=0.005, level=3.0, top=5.0, tau=10),
        _curve("exp", 400, 7, noise=0.01, level=0.5, tau=60),
        _curve("two-step", 250, 8, noise=0.005, level=1.0, tau=10),
        _curve("exp", 200, 9, noise=0.05, level=0.8),
        _curve("flat", 20, 10, level=1.0),
        _curve("flat", 19, 11, level=1.0),
        _curve("exp", 12, 12),
        _curve("exp", 0, 13),
        _curve("exp", 150, 14, noise=0.01, nan_at=(20, 41, 118, 131)),
        _curve("flat", 25, 15, nan_at=(3, 5, 7, 9, 11, 13)),
    ]


FAULTS = [  # (keywords of _plateau that make the fault, what the fault is)
    ({"keep_steps": True}, "it dropped the non-finite values but not their steps: the steps and values "
                           "no longer line up"),
    ({"drop": False}, "the NaN or inf points poison the means around them: drop the non-finite points, "
                      "with their steps, first"),
    ({"report": "index"}, "it returns the position of the point in the arrays, not its step: steps need "
                          "not be 0, 1, 2, ..., return the step at that position"),
    ({"report": "start"}, f"off by the window: it reports the step where the flat window starts, "
                          f"{WINDOW - 1} points before the point whose {WINDOW}-point mean qualifies; "
                          f"report the step of the window's last point"),
    ({"tolerance": 1.0}, "a tolerance of 1 (100%) lets every point qualify: 1% is 0.01"),
    ({"need_later": False}, f"it accepts a point with fewer than {WINDOW} points after it: near the end of "
                            f"a curve nothing is left to show that the loss has stopped improving"),
    ({"horizon": WINDOW}, f"it only looks {WINDOW} means ahead: a plateau means the loss never improves "
                          f"again, up to the end of the curve"),
    ({"relative": False}, "it takes the 1% as an absolute 0.01: the tolerance is relative, 1% of the "
                          "smoothed loss at that point"),
    ({"window": 1}, f"it compares single points, not means over {WINDOW} points: on a noisy curve one "
                    f"lucky point decides; smooth first"),
]


def _as_step(result: Any, what: str) -> int | None:
    if result is None:
        return None
    if isinstance(result, bool | np.bool_):
        raise CheckFailed(f"{what} returned {result}: return the step (an int) where the plateau starts, "
                          "or None, not True/False")
    try:
        number = float(result)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {type(result).__name__}: return one step (an int) or None") from None
    if number != int(number):
        raise CheckFailed(f"{what} returned {result}: a step is a whole number")
    return int(number)


def _fault(curve: Curve, got: int | None, expected: int | None) -> str:
    for keywords, fault in FAULTS:
        faulty = _plateau(curve.steps, curve.values, **keywords)
        if faulty == got:  # only called when got != expected
            return f"{fault} (got {got}, expected {expected})"
    if expected is None:
        text = (f"false alarm: it reports a plateau at step {got}, but for every point some later "
                f"{WINDOW}-point mean is more than 1% lower: the loss still improves (expected None)")
    elif got is None:
        text = (f"it misses the plateau: from step {expected} on, no later {WINDOW}-point mean is more than "
                f"1% lower (got None)")
    else:
        text = f"it reports step {got}; the plateau starts at step {expected}"
    return text + _context(curve)


def _context(curve: Curve) -> str:
    """What is special about a curve that a rule may have overlooked."""
    bad = curve.steps[~np.isfinite(curve.values)]
    finite = len(curve.values) - len(bad)
    if finite < 2 * WINDOW:
        return (f"; it has {finite} finite points, fewer than 2 x {WINDOW}: too short to show a plateau, "
                f"return None")
    return f"; this curve has NaN or inf at steps {bad.tolist()}: drop those points first" if len(bad) else ""


@checker("lab08.plateau_rule")
def check_plateau_rule(detect_plateau: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """``detect_plateau(steps, values)`` on every curve of ``plateau_curves()`` must return what
    ``reference_plateau`` does, leaving its inputs unchanged."""
    for index, curve in enumerate(plateau_curves()):
        steps, values = curve.steps.copy(), curve.values.copy()
        where = f"curve {index} of plateau_curves() ({curve.description})"
        try:
            result = call(detect_plateau, steps, values)
        except CheckFailed as failure:
            raise CheckFailed(f"on {where}: {failure}{_context(curve)}") from failure.__cause__
        if not (unchanged(steps, curve.steps) and unchanged(values, curve.values)):
            raise CheckFailed(f"detect_plateau changed the steps or values it was given ({where}): read "
                              "them without editing them (a copy is yours to change)")
        got = _as_step(result, f"detect_plateau on {where}")
        expected = reference_plateau(curve.steps, curve.values)
        if got != expected:
            raise CheckFailed(f"on {where}: {_fault(curve, got, expected)}")
    passed("lab08.plateau_rule")
