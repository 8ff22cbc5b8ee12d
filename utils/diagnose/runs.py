"""Reading runs for ``utils.diagnose``: which tags play which role, Keras's train/validation sub-runs read
as one run, and each run's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from utils.diagnose.rules import (
    Finding,
    Series,
    check_collapsed,
    check_dead_layers,
    check_divergence,
    check_exploding,
    check_learning_rate,
    check_non_finite,
    check_overfitting,
    check_plateau,
    check_stalled_layers,
    check_validation_progress,
    check_vanishing,
    finite_points,
    histogram_stats,
)

ROLE_TAGS: dict[str, tuple[str, ...]] = {
    "loss": ("train/loss", "loss", "train_loss", "training/loss", "loss/train", "Loss/train", "train/epoch_loss",
             "epoch_loss"),
    "val_loss": ("val/loss", "val_loss", "validation/loss", "valid/loss", "eval/loss", "loss/val", "Loss/val",
                 "loss/validation", "validation/epoch_loss", "epoch_val_loss"),
    "grad_norm": ("train/grad_norm", "grad_norm", "gradient_norm", "train/gradient_norm", "grad/norm"),
    "lr": ("train/lr", "lr", "learning_rate", "train/learning_rate", "epoch_learning_rate", "lr-AdamW",
           "lr-Adam", "lr-SGD"),
}
LAYER_PREFIXES: dict[str, tuple[str, ...]] = {
    "update_ratio": ("update_ratio/",), "weights": ("weights/",), "grads": ("grads/",),
    "activations": ("activations/", "activation/"),
}
KERAS_FOLDERS = {"train": "", "validation": "validation/"}  # Keras's sub-runs -> the prefix of their tags


@dataclass
class RunReport:
    run: str  # the run's path relative to the log directory
    findings: list[Finding] = field(default_factory=list)
    notice: str | None = None  # why a run could not be (fully) diagnosed
    roles: dict[str, str] = field(default_factory=dict)  # role -> the tag that played it


def _no_runs(root: Path) -> Exception:
    """Why ``root`` is not a folder of runs, in the reader's words."""
    from utils import tb

    advice = "Pass the folder you would give `tensorboard --logdir`, e.g. runs/ or runs/<chapter>."
    if root.is_file() and root.name.startswith("events.out.tfevents."):
        return tb.RunNotFoundError(f"{root} is an event file, not a folder: pass its folder, {root.parent}")
    if root.exists() and not root.is_dir():
        return tb.RunNotFoundError(f"{root} is a file, not a folder of runs. {advice}")
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    held = ("no such folder" if not root.is_dir() else "it is empty" if not present else
            f"it holds {present[:5]}{' ...' if len(present) > 5 else ''}")
    return tb.RunNotFoundError(f"no TensorBoard runs under {root}: no event file (events.out.tfevents.*) at or "
                               f"below it ({held}). {advice}")


def group_runs(logdir: str | Path) -> dict[str, dict[str, Path]]:
    """``{run name: {tag prefix: folder}}``: each folder with event files is a run, except Keras's ``train``
    and ``validation`` folders, read together as their parent's run. Every event file is checked first
    (``tb.check_event_file``): an empty, cut short or foreign one raises ``tb.CorruptEventFileError``."""
    from utils import tb

    root = Path(logdir)
    runs = tb.list_runs(root) if root.is_dir() else []
    if not runs:
        raise _no_runs(root)
    for path in runs:
        for event_file in sorted(path.glob("events.out.tfevents.*")):
            tb.check_event_file(event_file)
    groups: dict[str, dict[str, Path]] = {}
    for path in runs:
        owner, prefix = (path.parent, KERAS_FOLDERS[path.name]) if path.name in KERAS_FOLDERS else (path, "")
        name = owner.relative_to(root).as_posix() if owner != root else root.name
        groups.setdefault(name, {})[prefix] = path
    return groups


def load_run(sources: dict[str, Path]) -> tuple[dict[str, Series], dict[str, tuple[Path, str]], list[str]]:
    """Scalars ``{tag: (steps, values)}`` (a repeated step keeps its last value), histogram locations
    ``{tag: (folder, tag in that folder)}`` and every other tag, the folder's prefix added to each tag."""
    from utils import tb

    scalars, histograms, others = {}, {}, []
    for prefix, path in sources.items():
        tags = tb.list_tags(path)
        frame = tb.read_scalars(path).drop_duplicates(["tag", "step"], keep="last")
        for tag, points in frame.groupby("tag", sort=False):
            scalars[prefix + tag] = (points.step.to_numpy(), points.value.to_numpy(dtype=float))
        histograms.update({prefix + tag: (path, tag) for tag in tags["histograms"]})
        others += [prefix + tag for kind in ("images", "text", "other") for tag in tags[kind]]
    return scalars, histograms, others


def _layer_kind(tag: str) -> str | None:
    for kind, prefixes in LAYER_PREFIXES.items():
        if tag.startswith(prefixes):
            return kind
    return "weights" if tag.endswith("/histogram") else None  # Keras: <layer>/<weight>/histogram


def diagnose_run(name: str, sources: dict[str, Path]) -> RunReport:
    """Apply every rule of ``RULES`` to one run."""
    from utils import tb

    scalars, histograms, others = load_run(sources)
    roles = {role: next(t for t in tags if t in scalars) for role, tags in ROLE_TAGS.items()
             if any(t in scalars for t in tags)}
    report = RunReport(name, roles=roles)
    for tag, series in scalars.items():
        report.findings += check_non_finite(tag, series)
    if "loss" in roles:
        loss = scalars[roles["loss"]]
        diverged = check_divergence(roles["loss"], loss)
        report.findings += diverged or check_plateau(roles["loss"], loss)
        if "val_loss" in roles:
            report.findings += check_overfitting(roles["val_loss"], scalars[roles["val_loss"]], loss)
    if "val_loss" in roles:
        report.findings += check_validation_progress(roles["val_loss"], scalars[roles["val_loss"]])
    if "grad_norm" in roles:
        grad = scalars[roles["grad_norm"]]
        report.findings += check_exploding(roles["grad_norm"], grad)
        report.findings += check_vanishing(roles["grad_norm"], grad, scalars.get(roles.get("loss", "")))
    if "lr" in roles:
        report.findings += check_learning_rate(roles["lr"], scalars[roles["lr"]])
    report.findings += check_stalled_layers(
        {t: finite_points(s) for t, s in scalars.items() if _layer_kind(t) == "update_ratio"})
    weights = {}
    for tag, (path, own_tag) in histograms.items():
        if _layer_kind(tag) in ("weights", "grads", "activations"):
            frame = tb.read_histograms(path, own_tag)
            stats = histogram_stats(frame)
            report.findings += check_collapsed(tag, frame.step.to_numpy(), stats)
            if _layer_kind(tag) == "weights":
                weights[tag] = (frame.step.to_numpy(), stats)
    report.findings += check_dead_layers(weights)
    report.notice = _notice(roles, scalars, histograms, others)
    return report


def _notice(roles: dict, scalars: dict, histograms: dict, others: list[str]) -> str | None:
    if roles or any(_layer_kind(tag) for tag in [*scalars, *histograms]):
        return None
    known = ", ".join(tags[0] for tags in ROLE_TAGS.values())
    if not scalars and not histograms:
        return f"no scalars or histograms to diagnose; its tags: {others or 'none'}"
    return (f"no tag this tool recognises, so it was only checked for NaN/inf. Its scalars: {sorted(scalars)}; "
            f"histograms: {sorted(histograms)}. Recognised: {known} (and the alternatives of ROLE_TAGS), "
            f"update_ratio/*, weights/*, grads/*, activations/*")


def diagnose(logdir: str | Path) -> list[RunReport]:
    """A ``RunReport`` for every run at or below ``logdir``, sorted by run name; raises
    ``tb.RunNotFoundError`` when it holds no event file, ``tb.CorruptEventFileError`` when one is damaged."""
    return [diagnose_run(name, sources) for name, sources in sorted(group_runs(logdir).items())]


# --------------------------------------------------------------------------------------------- output
