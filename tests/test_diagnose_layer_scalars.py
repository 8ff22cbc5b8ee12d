"""``utils.diagnose`` on per-layer scalars (issue 20, AUTOTRAINER's signals): gradient norms per layer
(``grad_norm/<matrix>`` from the book's loop, Lightning's ``grad_2.0_norm/<param>``) and the share of
exactly-zero activations (``zero_share/<ReLU>``, TensorFlow's ``<layer>/sparsity``). Each series is written
by tensorboardX or torch.utils.tensorboard and read back through TensorBoard's loader; then one real
training by the book's loop, logged with ``layer_stats_every``, for each fault the two rules read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from utils import diagnose

STEPS = np.arange(0, 300, 5)


def _loss(seed: int = 0) -> np.ndarray:
    """A loss falling from 2.3 towards 0.2, 2 % noise."""
    return (0.2 + 2.1 * np.exp(-STEPS / 80)) * (1 + 0.02 * np.random.default_rng(seed).standard_normal(len(STEPS)))


def _write(path: Path, series: dict[str, np.ndarray]) -> Path:
    writer = SummaryWriter(str(path))
    for tag, values in series.items():
        for step, value in zip(STEPS, values, strict=True):
            writer.add_scalar(tag, float(value), int(step))
    writer.close()
    return path


def _report(path: Path, **overrides: str) -> diagnose.RunReport:
    reports = diagnose.diagnose(path, overrides=overrides or None)
    assert len(reports) == 1
    return reports[0]


def _rules(report: diagnose.RunReport) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in report.findings:
        found.setdefault(f.rule, set()).add(f.tag)
    return found


def _norms(first_layer_ratio: np.ndarray, prefix: str = "grad_norm/") -> dict[str, np.ndarray]:
    """Three layers' gradient norms, the first ``first_layer_ratio`` x the last's; noisy."""
    rng = np.random.default_rng(1)
    last = 0.5 * (1 + 0.3 * rng.random(len(STEPS)))
    return {f"{prefix}layers.0.weight": first_layer_ratio * last, f"{prefix}layers.1.weight": 0.3 * last,
            f"{prefix}head.weight": last}


def test_a_first_layer_a_hundred_thousandth_of_the_last_is_vanishing(tmp_path):
    run = _write(tmp_path / "run", {"train/loss": _loss(), **_norms(np.full(len(STEPS), 1e-5))})
    report = _report(run)
    assert _rules(report) == {"vanishing_gradients": {"grad_norm/layers.0.weight"}}  # the loss fell: no excuse
    assert report.findings[0].step == 0 and report.findings[0].value == pytest.approx(1e-5, rel=0.01)
    assert "layer_grad_norms" in report.roles and report.roles["layer_grad_norms"].startswith("3 scalars")


@pytest.mark.parametrize("ratio", [
    pytest.param(np.full(len(STEPS), 0.05), id="small but healthy"),
    pytest.param(np.where(STEPS < 150, 1e-5, 0.2), id="recovered in the second half"),
    pytest.param(np.where(STEPS >= 225, 1e-5, 0.2), id="only the last quarter"),
    pytest.param(np.where(STEPS % 25 == 0, 0.2, 1e-5), id="not at every step"),
])
def test_no_vanishing_unless_the_whole_last_half_is_below(tmp_path, ratio):
    run = _write(tmp_path / "run", {"train/loss": _loss(), **_norms(ratio)})
    assert _rules(_report(run)) == {}


def test_biases_norm_gains_and_the_global_norm_are_not_layers(tmp_path):
    tiny = np.full(len(STEPS), 1e-7)
    series = {"train/loss": _loss(), **_norms(np.full(len(STEPS), 0.3)), "grad_norm/layers.0.bias": tiny,
              "grad_norm/transformer.h.0.ln_1.weight": tiny, "grad_norm/bn1.weight": tiny,
              "grad_norm/total": np.full(len(STEPS), 2.0)}
    report = _report(_write(tmp_path / "run", series))
    assert _rules(report) == {}
    assert report.roles["grad_norm"] == "grad_norm/total"
    assert report.roles["layer_grad_norms"].startswith("6 scalars")


def test_in_the_suffix_form_too(tmp_path):
    """``<param>/grad_norm``: a convolution's bias before a BatchNorm gets no gradient at all (the norm
    removes its mean), and is no layer the gradient fails to reach; a first layer 1e-5 x the last is."""
    tiny = np.full(len(STEPS), 3e-8)
    healthy = {"loss": _loss(), "0.weight/grad_norm": np.full(len(STEPS), 0.2), "0.bias/grad_norm": tiny,
               "1.weight/grad_norm": np.full(len(STEPS), 0.3), "bn1.weight/grad_norm": tiny,
               "4.weight/grad_norm": np.full(len(STEPS), 0.4)}
    assert _rules(_report(_write(tmp_path / "healthy", healthy))) == {}
    sick = {**healthy, "0.weight/grad_norm": np.full(len(STEPS), 4e-6)}
    assert _rules(_report(_write(tmp_path / "sick", sick))) == {"vanishing_gradients": {"0.weight/grad_norm"}}


@pytest.mark.parametrize("dead", [["layers.0", "layers.1", "head"], ["layers.0"]])
def test_steps_where_a_layer_gets_no_gradient_at_all_are_left_out(tmp_path, dead):
    """Exactly 0 is what dead units pass back to the layers before them (dead_units names that), not a
    vanishing gradient, whose remedy (use ReLUs) would be wrong advice on a ReLU net."""
    norms = _norms(np.full(len(STEPS), 0.3))
    for layer in dead:
        norms[f"grad_norm/{layer}.weight"][len(STEPS) // 2:] = 0.0
    assert "vanishing_gradients" not in _rules(_report(_write(tmp_path / "run", {"train/loss": _loss(), **norms})))


def test_lightnings_per_parameter_norms(tmp_path):
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    writer = TorchWriter(str(tmp_path / "lightning"))
    norms = _norms(np.full(len(STEPS), 3e-5), prefix="grad_2.0_norm/")
    for i, step in enumerate(STEPS):
        writer.add_scalar("train_loss", float(_loss()[i]), int(step))
        writer.add_scalar("grad_2.0_norm_total", float(sum(v[i] for v in norms.values())), int(step))
        for tag, values in norms.items():
            writer.add_scalar(tag, float(values[i]), int(step))
    writer.close()
    report = _report(tmp_path / "lightning")
    assert _rules(report) == {"vanishing_gradients": {"grad_2.0_norm/layers.0.weight"}}
    assert report.roles["grad_norm"] == "grad_2.0_norm_total"


def _shares(last: float, switch: int = 150) -> np.ndarray:
    return np.where(STEPS < switch, 0.5, last) + 0.01 * np.random.default_rng(2).random(len(STEPS))


def test_zero_shares_above_nine_tenths_are_dead_units(tmp_path):
    run = _write(tmp_path / "run", {"train/loss": _loss(), "zero_share/act.0": _shares(0.55),
                                    "zero_share/act.1": _shares(0.97)})
    report = _report(run)
    assert _rules(report) == {"dead_units": {"zero_share/act.1"}}
    assert report.findings[0].step == 150 and "exactly 0" in report.findings[0].explanation


@pytest.mark.parametrize("shares", [
    pytest.param(_shares(0.85), id="sparse but alive"),
    pytest.param(np.where(STEPS == 295, 0.97, 0.5), id="one last point"),
    pytest.param(_shares(0.97, switch=100) * np.where(STEPS == 295, 0.5, 1), id="alive again at the end"),
])
def test_no_dead_units_below_the_threshold_or_for_one_point(tmp_path, shares):
    assert _rules(_report(_write(tmp_path / "run", {"train/loss": _loss(), "zero_share/act": shares}))) == {}


def test_tensorflows_zero_fractions_an_override_and_pruning_masks(tmp_path):
    """TensorFlow's canned estimators log each hidden layer's ``fraction_of_zero_values``; TF Model
    Optimization logs ``<mask>/sparsity``, the share of weights pruned on purpose: no dead units."""
    run = _write(tmp_path / "tf", {"loss": _loss(), "dnn/hiddenlayer_0/fraction_of_zero_values": _shares(0.99),
                                   "relu_zeros/fc1": _shares(0.99), "prune_dense/mask:0/sparsity": _shares(0.95)})
    assert _rules(_report(run)) == {"dead_units": {"dnn/hiddenlayer_0/fraction_of_zero_values"}}
    overridden = _report(run, zero_shares="relu_zeros/")
    assert _rules(overridden) == {"dead_units": {"relu_zeros/fc1"}}
    with pytest.raises(diagnose.UnknownTagError, match="scalar prefix 'zeros/'"):
        diagnose.diagnose(run, overrides={"zero_shares": "zeros/"})


def test_dead_shares_are_read_before_zero_shares(tmp_path):
    """A sparse input's layer: 96 % of its outputs are 0, but no unit is 0 for every input: no finding.
    Where dead shares are logged they decide; the zeros alone would have named it."""
    sparse = {"train/loss": _loss(), "zero_share/act": np.full(len(STEPS), 0.96)}
    assert _rules(_report(_write(tmp_path / "zeros", sparse))) == {"dead_units": {"zero_share/act"}}
    both = {**sparse, "dead_share/act": np.full(len(STEPS), 0.0)}
    assert _rules(_report(_write(tmp_path / "both", both))) == {}
    dying = {**sparse, "dead_share/act": _shares(0.95)}
    report = _report(_write(tmp_path / "dying", dying))
    assert _rules(report) == {"dead_units": {"dead_share/act"}}
    assert "0 for every input" in report.findings[0].explanation


def test_histograms_still_name_dead_units_the_scalars_do_not_see(tmp_path):
    """A ReLU module watched and healthy, and a functional relu (no module to hook) whose activations
    histogram sits at 0: the histogram's dead_units is still reported."""
    run = tmp_path / "run"
    writer = SummaryWriter(str(run))
    for i, step in enumerate(STEPS):
        writer.add_scalar("train/loss", float(_loss()[i]), int(step))
        writer.add_scalar("zero_share/act", 0.5, int(step))
        writer.add_scalar("dead_share/act", 0.0, int(step))
        values = np.zeros(256) if step >= 150 else np.random.default_rng(i).random(256)
        writer.add_histogram("activations/functional", values, int(step))
    writer.close()
    assert _rules(_report(run)) == {"dead_units": {"activations/functional"}}


def test_exact_zero_shares_say_dead_units_once(tmp_path):
    """A run that logs both its activations' histograms (all at 0) and their exact zero shares: one
    dead_units finding per layer, from the exact count; the collapsed histogram is not reported either."""
    run = tmp_path / "run"
    writer = SummaryWriter(str(run))
    for i, step in enumerate(STEPS):
        writer.add_scalar("train/loss", float(_loss()[i]), int(step))
        dead = step >= 150
        writer.add_scalar("zero_share/act", 0.99 if dead else 0.5, int(step))
        values = np.zeros(256) if dead else np.random.default_rng(i).random(256)
        writer.add_histogram("activations/act", values, int(step))
    writer.close()
    assert [(f.rule, f.tag) for f in _report(run).findings] == [("dead_units", "zero_share/act")]


# --------------------------------------------------------------------------------------------- real runs


@pytest.mark.parametrize(("recipe", "rule", "tag"), [
    ("vanishing_gradients", "vanishing_gradients", "grad_norm/layers.0.weight"),
    ("dead_relus", "dead_units", "dead_share/activation.1"),
    ("healthy-constant", None, None),
])
def test_real_runs_of_the_loop(tmp_path, recipe, rule, tag):
    """The zoo's chapter-8 MLP trained by the book's loop with ``layer_stats_every``: six sigmoid layers
    (the first layer's gradient about 1e-5 x the head's), ReLUs at SGD 0.8 (the last hidden layer's outputs
    all 0), and the healthy reference (shares about a half, layers within 0.4x of each other): the per-layer
    rules name the first two, and nothing is said of the third."""
    from tests import zoo

    trained = zoo.train_recipe(tmp_path, "run", zoo.RECIPES[recipe], zoo.RECIPES[recipe].batches[0], seed=0)
    report = _report(trained.run)
    layer_rules = {f.rule for f in report.findings if f.tag.startswith(("grad_norm/", "zero_share/", "dead_share/"))}
    if rule is None:
        assert report.findings == []
    else:
        assert tag in _rules(report)[rule] and layer_rules == {rule}  # dead units are not also "vanishing"
