"""Reading runs for ``utils.diagnose``: which tags play which role, Keras's train/validation sub-runs read
as one run, and each run's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.diagnose import early_divergence
from utils.diagnose.layer_rules import (
    check_collapsed,
    check_dead_layers,
    check_dead_units,
    check_layer_vanishing,
    histogram_stats,
    zero_bucket_share,
)
from utils.diagnose.roles import (
    LAYER_ROLES,
    LAYER_SCALAR_ROLES,
    ROLE_TAGS,
    SPLIT_FOLDERS,
    UPDATE_RATIO_PREFIX,
    describe_layer_tags,
    is_non_trainable,
    layer_role,
    layer_scalar_tags,
    scalar_roles,
)
from utils.diagnose.rules import (
    EARLY_JUMP,
    RULES,
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
    make_finding,
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
        what = "histogram prefix" if role in LAYER_ROLES else "scalar prefix" if role in LAYER_SCALAR_ROLES else "tag"
        super().__init__(f"'{role}={tag}': no run has the {what} "
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
    """``{run name: {how its tags are named: folder}}``: each folder with event files is a run, except the
    writers that belong to another run (``run_owner``): one writer per split (``SPLIT_FOLDERS``: ``train``,
    ``val``, ``validation``, ``eval``, ``test`` ...) and ``add_scalars``'s sub-writers, each read as part of
    its parent's run, its tags named as ``tag_name`` says. Every event file is checked first
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
        owner, naming = run_owner(path, root)
        name = owner.relative_to(root).as_posix() if owner != root else root.name
        groups.setdefault(name, {})[naming] = path
    return groups


def run_owner(path: Path, root: Path) -> tuple[Path, str]:
    """The folder of the run that the writer in ``path`` belongs to, and how its tags are named there
    (``tag_name``): an ``add_scalars`` sub-writer's one tag ``loss`` in ``RUN/loss_val`` is ``loss/val`` of
    ``RUN``; a per-split writer's ``loss`` in ``RUN/val`` is ``val/loss`` (the prefix ``val/``)."""
    owner, naming = _add_scalars_parent(path, root) or (path, "")
    if owner.name in SPLIT_FOLDERS and owner != root:
        owner, naming = owner.parent, SPLIT_FOLDERS[owner.name] + naming
    return owner, naming


def _add_scalars_parent(path: Path, root: Path) -> tuple[Path, str] | None:
    """``(parent run, "<main_tag>/<name>": its one tag's name there)`` when ``path`` is a sub-writer that
    ``add_scalars(main_tag, {name: value})`` made: it holds one scalar tag, ``main_tag``, and no other tag,
    in ``RUN/<main_tag with / as _>_<name>`` (torch.utils.tensorboard) or ``RUN/<main_tag>/<name>``
    (tensorboardX). TensorBoard draws the sub-writers as runs of their own; they are one training's curves,
    as ``add_scalars("loss", {"train": ..., "val": ...})`` overlays them. ``None`` for any other folder."""
    from utils import tb

    tags = tb.list_tags(path)
    if len(tags["scalars"]) != 1 or any(tags[kind] for kind in tags if kind != "scalars") or path == root:
        return None
    main_tag = tags["scalars"][0]
    flat = main_tag.replace("/", "_") + "_"
    parts = main_tag.split("/")
    if path.name.startswith(flat) and len(path.name) > len(flat):  # torch.utils.tensorboard
        parent, name = path.parent, path.name[len(flat):]
    elif list(path.parts[-len(parts) - 1:-1]) == parts:  # tensorboardX: a folder per part of main_tag
        parent, name = path.parents[len(parts)], path.name
    else:
        return None
    if parent != root and root not in parent.parents:
        return None
    return parent, f"{main_tag}/{name}"


def tag_name(naming: str, tag: str) -> str:
    """A tag as its run names it: ``naming`` is a prefix when empty or ending in ``/`` (``val/`` + ``loss``;
    ``diagnose_run(name, {"": folder})``), else the whole name of the one tag its folder holds (an
    ``add_scalars`` sub-writer's ``loss`` is ``loss/val``)."""
    return naming + tag if naming == "" or naming.endswith("/") else naming


def load_run(sources: dict[str, Path]) -> tuple[dict[str, Series], dict[str, tuple[Path, str]], list[str]]:
    """Scalars ``{tag: (steps, values)}`` (a repeated step keeps its last value), histogram locations
    ``{tag: (folder, tag in that folder)}`` and every other tag, each named as ``tag_name`` says from its
    folder's key (``{"": RUN, "val/": RUN/val, "loss/val": RUN/loss_val}``)."""
    from utils import tb

    scalars, histograms, others = {}, {}, []
    for naming, path in sources.items():
        tags = tb.list_tags(path)
        frame = tb.read_scalars(path).drop_duplicates(["tag", "step"], keep="last")
        for tag, points in frame.groupby("tag", sort=False):
            scalars[tag_name(naming, tag)] = (points.step.to_numpy(), points.value.to_numpy(dtype=float))
        histograms.update({tag_name(naming, tag): (path, tag) for tag in tags["histograms"]})
        others += [tag_name(naming, tag) for kind in ("images", "text", "other") for tag in tags[kind]]
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


def _plateau_or_early_spike(tag: str, loss: Series) -> list[Finding]:
    """``check_plateau``'s findings, unless the loss rose before it learned anything and then stalled
    (``early_divergence.spike_before_learning`` and a plateau): that rise, a loss_spike, is then the finding.
    The plateau is where a rate too high from the start left the model, and plateau's remedy (raise a
    too-low rate) would be the wrong advice. A rise before learning after which the loss goes on learning
    (chapter 8's residual net) is no finding."""
    plateau = check_plateau(tag, loss)
    steps, values = finite_points(loss)
    hit = early_divergence.spike_before_learning(steps, values, EARLY_JUMP, RULES["divergence"].window)
    if hit is None or [f.rule for f in plateau] != ["plateau"]:
        return plateau
    i, rise = hit
    return [make_finding("loss_spike", tag, steps[i], values[i],
                         f"{rise}; then {plateau[0].explanation.removeprefix('the loss ')}: a rate too high from the start "
                         "left it there")]


def _scalar_findings(roles: dict[str, str], scalars: dict[str, Series]) -> list[Finding]:
    """The rules on the scalar roles: the training loss, the validation loss (with accuracy), the gradient
    norm, the learning rate."""
    findings: list[Finding] = []
    loss = scalars.get(roles.get("loss", ""))
    if loss is not None:
        diverged = check_divergence(roles["loss"], loss)  # or a loss_spike, after which a plateau counts
        findings += diverged
        if not any(f.rule == "divergence" for f in diverged):
            findings += _plateau_or_early_spike(roles["loss"], loss)
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
        findings += check_exploding(roles["grad_norm"], grad, loss)
        findings += check_vanishing(roles["grad_norm"], grad, loss)
    if "lr" in roles:
        findings += check_learning_rate(roles["lr"], scalars[roles["lr"]])
    return findings


def _layer_scalar_findings(layer_scalars: dict[str, list[str]], scalars: dict[str, Series]) -> list[Finding]:
    """vanishing_gradients from the per-layer gradient norms; dead_units from the shares of dead units where
    logged (a sparse input's layer is mostly zeros, yet every unit fires for some input), else from the
    exact shares of zeros."""
    findings = check_layer_vanishing({tag: scalars[tag] for tag in layer_scalars.get("layer_grad_norms", [])})
    source = "dead_shares" if "dead_shares" in layer_scalars else "zero_shares"
    for tag in layer_scalars.get(source, []):
        steps, shares = scalars[tag]
        findings += check_dead_units(tag, steps, shares, source)
    return findings


def _histogram_findings(layers: dict[str, list[str]], histograms: dict,
                        converged: bool = False, dead_said: bool = False) -> list[Finding]:
    """Collapsed histograms of every per-layer role; dead layers among the trainable weights; dead units
    among the activations (unless ``dead_said``: the run's per-layer scalars, which count them exactly,
    named dead units already). An activations histogram of dead units has collapsed to 0 too: that one fact
    is reported once, as the specific dead_units (whose remedy names the cause, a too-high rate), not again
    as collapsed_histogram."""
    from utils import tb

    findings: list[Finding] = []
    weights = {}
    for role, tags in layers.items():
        for tag in tags:
            frame = tb.read_histograms(*histograms[tag])
            stats = histogram_stats(frame)
            dead = check_dead_units(tag, frame.step.to_numpy(), zero_bucket_share(frame)) \
                if role == "activations" else []
            # a converged run's gradients shrink, rightly; activations all at 0 are dead units, said once
            if not (role == "grads" and converged) and not dead:
                findings += check_collapsed(tag, frame.step.to_numpy(), stats)
            findings += [] if dead_said else dead
            if role == "weights" and not is_non_trainable(tag):
                weights[tag] = (frame.step.to_numpy(), stats)
    return findings + check_dead_layers(weights)


def diagnose_run(name: str, sources: dict[str, Path], overrides: dict[str, str] | None = None) -> RunReport:
    """Apply every rule of ``RULES`` to one run; ``overrides`` (``{role: tag}``, as ``--tag role=TAG``) name
    tags (for a per-layer role, a prefix of histogram tags) instead of the role table."""
    scalars, histograms, others = load_run(sources)
    roles = scalar_roles(scalars, overrides)
    layers = _layer_tags(histograms, overrides)
    layer_scalars = layer_scalar_tags(scalars, roles.values(), overrides)
    report = RunReport(name, roles={**roles, **{r: describe_layer_tags(t) for r, t in layers.items()},
                                    **{r: describe_layer_tags(t, "scalar") for r, t in layer_scalars.items()}})
    skipped = _scaler_skips(roles, scalars)
    for tag, series in scalars.items():
        if tag == roles.get("grad_norm"):  # a scaler's skipped steps are no fault
            series = (series[0][~np.isin(series[0], skipped)], series[1][~np.isin(series[0], skipped)])
        report.findings += check_non_finite(tag, series)
    report.findings += check_scaler_skips(roles.get("grad_norm", ""), skipped)
    report.findings += _scalar_findings(roles, scalars)
    report.findings += check_stalled_layers(
        {t: finite_points(s) for t, s in scalars.items() if t.startswith(UPDATE_RATIO_PREFIX)})
    from_scalars = _layer_scalar_findings(layer_scalars, scalars)
    report.findings += from_scalars
    converged = loss_converged(scalars.get(roles.get("loss", "")))
    dead_said = any(f.rule == "dead_units" for f in from_scalars)
    report.findings += _histogram_findings(layers, histograms, converged, dead_said)
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
        elif role in LAYER_SCALAR_ROLES:
            present = any(t.startswith(tag) for scalars, _ in loaded for t in scalars)
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
