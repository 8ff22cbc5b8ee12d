"""Reading runs for ``utils.diagnose``: which tags play which role, Keras's train/validation sub-runs read
as one run, and each run's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.diagnose.layer_rules import (
    check_collapsed,
    check_dead_layers,
    check_dead_units,
    histogram_stats,
    zero_bucket_share,
)
from utils.diagnose.roles import (
    LAYER_ROLES,
    ROLE_TAGS,
    SPLIT_FOLDERS,
    UPDATE_RATIO_PREFIX,
    describe_layer_tags,
    is_non_trainable,
    layer_role,
    scalar_roles,
)
from utils.diagnose.rules import (
    Finding,
    Series,
    check_divergence,
    check_exploding,
    check_learning_rate,
    check_non_finite,
    check_plateau,
    check_scaler_skips,
    check_stalled_layers,
    check_vanishing,
    finite_points,
    loss_converged,
    scaler_skips,
)
from utils.diagnose.validation_rules import (
    check_overfitting,
    check_validation_progress,
    schedule_completed,
)

KERAS_FOLDERS = SPLIT_FOLDERS  # the name it had when only Keras's train/validation folders were grouped


class UnknownTagError(ValueError):
    """``--tag role=TAG`` names a tag that no run under the log directory has."""

    def __init__(self, role: str, tag: str, available: list[str]) -> None:
        shown = ", ".join(available[:8]) + (" ..." if len(available) > 8 else "")
        super().__init__(f"'{role}={tag}': no run has the {'histogram prefix' if role in LAYER_ROLES else 'tag'} "
                         f"{tag!r}; the runs' tags include {shown or 'none'}")
        self.role, self.tag = role, tag


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
    """``{run name: {tag prefix: folder}}``: each folder with event files is a run, except the folders of one
    writer per split (``SPLIT_FOLDERS``: ``train``, ``val``, ``validation``, ``eval``, ``test`` ...), read
    together as their parent's run, each with its prefix. Every event file is checked first
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
        split = path.name in SPLIT_FOLDERS and path != root
        owner, prefix = (path.parent, SPLIT_FOLDERS[path.name]) if split else (path, "")
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


def _layer_tags(histograms: dict, overrides: dict | None) -> dict[str, list[str]]:
    """``{per-layer role: its histogram tags}``."""
    layers: dict[str, list[str]] = {}
    for tag in histograms:
        role = layer_role(tag, overrides)
        if role:
            layers.setdefault(role, []).append(tag)
    return layers


def _scaler_skips(roles: dict[str, str], scalars: dict[str, Series]) -> np.ndarray:
    """The steps a gradient scaler skipped (``rules.scaler_skips``) at which the loss was finite."""
    if "grad_norm" not in roles or "loss_scale" not in roles:
        return np.array([], dtype=int)
    skipped = scaler_skips(scalars[roles["grad_norm"]], scalars[roles["loss_scale"]])
    loss = scalars.get(roles.get("loss", ""))
    if loss is not None:
        bad_loss = loss[0][~np.isfinite(loss[1])]
        skipped = skipped[~np.isin(skipped, bad_loss)]
    return skipped


def _scalar_findings(roles: dict[str, str], scalars: dict[str, Series]) -> list[Finding]:
    """The rules on the scalar roles: the training loss, the validation loss (with accuracy), the gradient
    norm, the learning rate."""
    findings: list[Finding] = []
    loss = scalars.get(roles.get("loss", ""))
    if loss is not None:
        diverged = check_divergence(roles["loss"], loss)  # or a loss_spike, after which a plateau counts
        findings += diverged
        if not any(f.rule == "divergence" for f in diverged):
            findings += check_plateau(roles["loss"], loss)
        if "val_loss" in roles:
            completed = schedule_completed(scalars.get(roles.get("lr", "")))
            accuracy = scalars.get(roles.get("val_accuracy", ""))
            findings += check_overfitting(roles["val_loss"], scalars[roles["val_loss"]], loss, completed,
                                          accuracy)
    if "val_loss" in roles:
        findings += check_validation_progress(roles["val_loss"], scalars[roles["val_loss"]],
                                              scalars.get(roles.get("val_accuracy", "")), loss)
    if "grad_norm" in roles:
        grad = scalars[roles["grad_norm"]]
        findings += check_exploding(roles["grad_norm"], grad)
        findings += check_vanishing(roles["grad_norm"], grad, loss)
    if "lr" in roles:
        findings += check_learning_rate(roles["lr"], scalars[roles["lr"]])
    return findings


def _histogram_findings(layers: dict[str, list[str]], histograms: dict,
                        converged: bool = False) -> list[Finding]:
    """Collapsed histograms of every per-layer role; dead layers among the trainable weights; dead units
    among the activations."""
    from utils import tb

    findings: list[Finding] = []
    weights = {}
    for role, tags in layers.items():
        for tag in tags:
            frame = tb.read_histograms(*histograms[tag])
            stats = histogram_stats(frame)
            if not (role == "grads" and converged):  # a converged run's gradients shrink, rightly
                findings += check_collapsed(tag, frame.step.to_numpy(), stats)
            if role == "activations":
                findings += check_dead_units(tag, frame.step.to_numpy(), zero_bucket_share(frame))
            if role == "weights" and not is_non_trainable(tag):
                weights[tag] = (frame.step.to_numpy(), stats)
    return findings + check_dead_layers(weights)


def diagnose_run(name: str, sources: dict[str, Path], overrides: dict[str, str] | None = None) -> RunReport:
    """Apply every rule of ``RULES`` to one run; ``overrides`` (``{role: tag}``, as ``--tag role=TAG``) name
    tags (for a per-layer role, a prefix of histogram tags) instead of the role table."""
    scalars, histograms, others = load_run(sources)
    roles = scalar_roles(scalars, overrides)
    layers = _layer_tags(histograms, overrides)
    report = RunReport(name, roles={**roles, **{r: describe_layer_tags(t) for r, t in layers.items()}})
    skipped = _scaler_skips(roles, scalars)
    for tag, series in scalars.items():
        if tag == roles.get("grad_norm"):  # a scaler's skipped steps are no fault
            series = (series[0][~np.isin(series[0], skipped)], series[1][~np.isin(series[0], skipped)])
        report.findings += check_non_finite(tag, series)
    report.findings += check_scaler_skips(roles.get("grad_norm", ""), skipped)
    report.findings += _scalar_findings(roles, scalars)
    report.findings += check_stalled_layers(
        {t: finite_points(s) for t, s in scalars.items() if t.startswith(UPDATE_RATIO_PREFIX)})
    converged = loss_converged(scalars.get(roles.get("loss", "")))
    report.findings += _histogram_findings(layers, histograms, converged)
    report.notice = _notice(report.roles, scalars, histograms, others)
    return report


def _notice(roles: dict, scalars: dict, histograms: dict, others: list[str]) -> str | None:
    if roles or any(t.startswith(UPDATE_RATIO_PREFIX) for t in scalars):
        return None
    known = ", ".join(tags[0] for tags in ROLE_TAGS.values())
    if not scalars and not histograms:
        return f"no scalars or histograms to diagnose; its tags: {others or 'none'}"
    return (f"no tag this tool recognises, so it was only checked for NaN/inf. Its scalars: {sorted(scalars)}; "
            f"histograms: {sorted(histograms)}. Recognised: {known} (and the alternatives of ROLE_TAGS), "
            f"update_ratio/*, weights/*, grads/*, activations/*; or name them with --tag role=TAG")


def _check_overrides(overrides: dict[str, str], loaded: list[tuple[dict, dict]]) -> None:
    """Raise ``UnknownTagError`` for an override whose tag (or prefix) no run has."""
    for role, tag in overrides.items():
        if role in LAYER_ROLES:
            present = any(t.startswith(tag) for _, histograms in loaded for t in histograms)
        else:
            present = any(tag in scalars for scalars, _ in loaded)
        if not present:
            available = sorted({t for scalars, histograms in loaded
                                for t in (histograms if role in LAYER_ROLES else scalars)})
            raise UnknownTagError(role, tag, available)


def diagnose(logdir: str | Path, overrides: dict[str, str] | None = None) -> list[RunReport]:
    """A ``RunReport`` for every run at or below ``logdir``, sorted by run name; raises
    ``tb.RunNotFoundError`` when it holds no event file, ``tb.CorruptEventFileError`` when one is damaged,
    ``UnknownTagError`` when an override names a tag no run has."""
    groups = sorted(group_runs(logdir).items())
    if overrides:
        _check_overrides(overrides, [load_run(sources)[:2] for _, sources in groups])
    return [diagnose_run(name, sources, overrides) for name, sources in groups]
