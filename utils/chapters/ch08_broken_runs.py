"""Chapter 8's experiments: small networks on the 8x8 digits trained by ``utils.loop.train``, each run
described by one ``Setting``, so that a broken run and its healthy reference differ in exactly one field
(recorded as the run's hyper-parameters and checked from them with ``differing_settings``).

``digits_data`` is the data (standardised with training statistics only, or raw, or with shuffled labels,
or with the validation set leaked into training); ``DeepMLP`` the network (depth, activation,
initialisation and its scale, LayerNorm, residual connections, dropout); ``train_setting`` one logged run;
``lr_range_test`` the learning-rate range test; ``layer_gradient_norms`` the gradient of each layer on a
fixed batch; ``layer_output_stds`` the size of each layer's signal; ``step_seconds`` the time cost of the
out-of-memory remedies, whose memory the formulas and measurements of ``utils.memory`` give.

Every function that draws something takes a ``seed`` (the data split, the initial weights, the batches):
chapter 8 passes ``env.book_seed(0)``, so that ``BOOK_SEED`` re-runs it on other draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = 10  # digits 0-9: a uniform guess scores ln 10 = 2.30 nats
SIDE = 8  # the images are 8 x 8 pixels


@dataclass(frozen=True)
class Setting:
    """Every setting a chapter-8 run can change. Learning rates in the optimizer's units; ``steps`` in
    updates. ``loss``: ``"cross_entropy"``, or the class-balanced mean ``"class_mean"`` (guarded against a
    class absent from a batch) and ``"class_mean_unguarded"`` (0 / 0 then: NaN)."""

    depth: int = 2  # hidden layers of ``width`` units
    width: int = 64
    activation: str = "relu"  # "relu", "gelu", "tanh" or "sigmoid"
    init: str = "default"  # "default" (PyTorch's), "xavier" or "kaiming"
    init_gain: float = 1.0  # every initial weight matrix times this (1: the init as its authors scaled it)
    norm: bool = False  # LayerNorm before each activation
    residual: bool = False  # x + f(x) in every hidden layer after the first
    dropout: float = 0.0
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adamw"
    lr: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float | None = None
    steps: int = 250
    batch: int = 64
    train_examples: int = 1437  # the first n of the (shuffled) training set
    augment: bool = False  # shift each training image by up to one pixel
    patience: int | None = None  # early stopping, in evaluations
    loss: str = "cross_entropy"
    labels: str = "paired"  # "paired", or "shuffled" apart from the inputs
    inputs: str = "standardised"  # "standardised" or "raw" (grey levels 0..16)
    leak_validation: bool = False  # the validation images also in the training set


def differing_settings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (a's value, b's value)}`` for every recorded setting in which two runs differ."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# --------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    x_train: torch.Tensor  # (N, 64)
    y_train: torch.Tensor  # (N,)
    x_val: torch.Tensor  # (360, 64)
    y_val: torch.Tensor  # (360,)
    mean: torch.Tensor  # (64,) raw-pixel mean of the training images, to undo the standardisation
    std: float


def digits_data(setting: Setting, seed: int = 0) -> Data:
    """The digits split 1,437 / 360 (stratified, as in chapter 4), shaped by the data settings of
    ``setting``: ``train_examples``, ``inputs``, ``labels``, ``leak_validation``."""
    from sklearn.model_selection import train_test_split

    from utils.datasets import load_digits_pixels

    pixels, digits = load_digits_pixels(scaled=False)
    x_tr, x_va, y_tr, y_va = train_test_split(pixels, digits, test_size=0.2, random_state=seed,
                                              stratify=digits)
    mean, std = x_tr.mean(axis=0), float(x_tr.std())
    if setting.inputs == "standardised":
        x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    elif setting.inputs != "raw":
        raise ValueError(f"inputs must be 'standardised' or 'raw', got {setting.inputs!r}")
    x_tr, y_tr = x_tr[:setting.train_examples], y_tr[:setting.train_examples]
    if setting.labels == "shuffled":
        y_tr = np.random.default_rng(seed).permutation(y_tr)
    if setting.leak_validation:
        x_tr, y_tr = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    as_long = lambda y: torch.from_numpy(np.asarray(y)).long()  # noqa: E731
    return Data(torch.from_numpy(x_tr), as_long(y_tr), torch.from_numpy(x_va), as_long(y_va),
                torch.from_numpy(mean), std)


def shifted_batches(data: Data, batch: int, seed: int = 0):
    """``batch_fn`` whose every image is moved by -1, 0 or +1 pixel in each direction (drawn from a
    generator seeded by the batch index: a pure function of it), the vacated border set to 0 ink."""
    from utils.batches import epoch_batches

    plain = epoch_batches(data.x_train, data.y_train, batch, seed=seed)
    blank = (-data.mean / data.std).view(SIDE, SIDE)  # a pixel with no ink, standardised

    def batch_fn(index: int):
        x, y = plain(index)
        shifts = torch.randint(-1, 2, (len(x), 2), generator=torch.Generator().manual_seed(index))
        images = x.view(-1, SIDE, SIDE).clone()  # (B, 8, 8)
        for i, (dy, dx) in enumerate(shifts.tolist()):
            moved = torch.roll(images[i], (dy, dx), dims=(0, 1))
            if dy:
                moved[0 if dy > 0 else -1, :] = blank[0 if dy > 0 else -1, :]
            if dx:
                moved[:, 0 if dx > 0 else -1] = blank[:, 0 if dx > 0 else -1]
            images[i] = moved
        return images.view(len(x), -1), y

    return batch_fn


# --------------------------------------------------------------------------------------------- model


ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}


class DeepMLP(torch.nn.Module):
    """``depth`` hidden layers (Linear, optional LayerNorm, activation, optional residual, dropout), then a
    Linear head to the 10 classes. Input (B, 64), output logits (B, 10). Layer ``i``'s matrix is
    ``layers.<i>.weight`` (the tag of its histograms and update ratios)."""

    def __init__(self, setting: Setting) -> None:
        super().__init__()
        if setting.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {setting.activation!r}")
        sizes = [SIDE * SIDE] + [setting.width] * setting.depth
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        norm = torch.nn.LayerNorm if setting.norm else lambda _: torch.nn.Identity()
        self.norms = torch.nn.ModuleList(norm(setting.width) for _ in self.layers)
        self.activation = ACTIVATIONS[setting.activation]()
        self.drop = torch.nn.Dropout(setting.dropout)
        self.head = torch.nn.Linear(setting.width, CLASSES)
        self.residual = setting.residual
        for layer in [*self.layers, self.head]:
            initialise_linear(layer, setting.init, setting.activation, setting.init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            out = self.drop(self.activation(norm(layer(x))))  # (B, width)
            x = x + out if self.residual and i > 0 else out
        return self.head(x)  # (B, 10)


# Xavier's variance, 2 / (fan_in + fan_out), keeps the signal of an activation whose slope at 0 is 1
# (Glorot and Bengio derived it for tanh); the logistic sigmoid's slope at 0 is 1/4, so its weights need 4
# times the scale. PyTorch's ``calculate_gain("sigmoid")`` is 1: with it, six sigmoid layers still pass
# back almost nothing (chapter 8 prints the first layer's gradient at both gains).
XAVIER_GAIN = {"sigmoid": 4.0}


def initialise_linear(layer: torch.nn.Linear, init: str, activation: str = "relu", gain: float = 1.0) -> None:
    """Draw ``layer``'s weights (and zero its bias, except for PyTorch's default), then multiply the weights
    by ``gain``: a gain above 1 in every one of L layers multiplies the signal, and the gradient, by about
    gain^L."""
    if init == "xavier":  # variance 2 / (fan_in + fan_out) x XAVIER_GAIN^2 (4^2 for the sigmoid, else 1)
        torch.nn.init.xavier_normal_(layer.weight, gain=XAVIER_GAIN.get(activation, 1.0))
    elif init == "kaiming":  # variance 2 / fan_in: keeps a ReLU's signal
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    elif init != "default":
        raise ValueError(f"init must be 'default', 'xavier' or 'kaiming', got {init!r}")
    if init != "default":
        torch.nn.init.zeros_(layer.bias)
    if gain != 1.0:
        with torch.no_grad():
            layer.weight.mul_(gain)


# --------------------------------------------------------------------------------------------- losses


def class_mean_loss(model: torch.nn.Module, batch, guarded: bool = True):
    """Cross-entropy averaged per class, then over classes (each class weighs the same, whatever its
    count in the batch). Unguarded, a class absent from the batch makes its mean 0 / 0 = NaN."""
    x, y = batch
    logits = model(x)  # (B, 10)
    per_example = F.cross_entropy(logits, y, reduction="none")  # (B,)
    onehot = F.one_hot(y, CLASSES).float()  # (B, 10)
    counts = onehot.sum(dim=0)  # (10,)
    sums = onehot.T @ per_example  # (10,)
    if guarded:
        present = counts > 0
        loss = (sums[present] / counts[present]).mean()
    else:
        loss = (sums / counts).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).float().mean().item(),
                  "classes_in_batch": float((counts > 0).sum())}


def loss_function(name: str):
    from utils.evaluation import classification_loss

    losses = {"cross_entropy": classification_loss, "class_mean": class_mean_loss,
              "class_mean_unguarded": lambda m, b: class_mean_loss(m, b, guarded=False)}
    if name not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {name!r}")
    return losses[name]


# --------------------------------------------------------------------------------------------- one run


@dataclass
class Outcome:
    run: Path  # where the run was logged
    result: Any  # utils.loop.TrainResult
    model: DeepMLP
    data: Data


def make_optimizer(model: torch.nn.Module, setting: Setting) -> torch.optim.Optimizer:
    from utils import optim

    if setting.optimizer == "adamw":
        return optim.make_adamw(model, setting.lr, setting.weight_decay)
    if setting.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=setting.lr, momentum=0.9,
                               weight_decay=setting.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {setting.optimizer!r}")


def setting_hparams(setting: Setting) -> dict[str, Any]:
    """The setting as hyper-parameters TensorBoard stores (None as "none")."""
    return {k: "none" if v is None else v for k, v in asdict(setting).items()}


def train_setting(name: str, setting: Setting, *, chapter: str = "ch08", eval_every: int = 10,
                  histogram_every: int = 0, update_ratio_every: int = 0, layer_stats_every: int = 0,
                  seed: int = 0) -> Outcome:
    """Train ``DeepMLP(setting)`` with ``utils.loop.train`` (constant learning rate, no warm-up), logged to
    ``runs/<chapter>/<name>`` with the setting as its hyper-parameters; validation on the 360 held-out
    digits every ``eval_every`` updates."""
    from utils import batches, evaluation, loop, tb

    data = digits_data(setting, seed)
    torch.manual_seed(seed)  # the same initial weights for runs of the same architecture
    model = DeepMLP(setting)
    config = loop.TrainConfig(max_steps=setting.steps, lr=setting.lr, min_lr=setting.lr, warmup_steps=0,
                              grad_clip=setting.grad_clip, eval_every=eval_every,
                              histogram_every=histogram_every, update_ratio_every=update_ratio_every,
                              layer_stats_every=layer_stats_every, early_stopping_patience=setting.patience,
                              restore_best=False, progress=False)
    batch_fn = (shifted_batches(data, setting.batch, seed) if setting.augment
                else batches.epoch_batches(data.x_train, data.y_train, setting.batch, seed=seed))
    val = [(data.x_val, data.y_val)]
    with tb.open_run(chapter, name, hparams=setting_hparams(setting), allow_non_finite=True) as writer:
        result = loop.train(model, make_optimizer(model, setting), config, batch_fn=batch_fn,
                            loss_fn=loss_function(setting.loss), writer=writer,
                            eval_fn=lambda m: evaluation.evaluate(m, val, evaluation.classification_loss))
        run = Path(writer.logdir)
    return Outcome(run, result, model, data)


def layer_gradient_norms(model: DeepMLP, setting: Setting, data: Data, seed: int = 0) -> np.ndarray:
    """The L2 norm of each hidden layer's weight gradient on one fixed training batch, shape (depth,)."""
    from utils import loop

    rows = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:256]
    grads = loop.accumulated_gradients(model, loss_function(setting.loss),
                                       [(data.x_train[rows], data.y_train[rows])])
    return np.array([float(grads[f"layers.{i}.weight"].norm()) for i in range(setting.depth)])


def layer_output_stds(model: DeepMLP, x: torch.Tensor) -> np.ndarray:
    """The standard deviation of each hidden layer's output (after its activation) on the inputs ``x``
    (N, 64), without a gradient; shape (depth,). Dropout is applied as in ``model``'s current mode."""
    stds = []
    with torch.no_grad():
        for i, (layer, norm) in enumerate(zip(model.layers, model.norms, strict=True)):
            out = model.drop(model.activation(norm(layer(x))))
            x = x + out if model.residual and i > 0 else out
            stds.append(float(x.std()))
    return np.array(stds)


# --------------------------------------------------------------------------------------------- range test


def lr_range_test(setting: Setting, name: str = "lr_range_test", *, chapter: str = "ch08", lr_min: float = 1e-4,
                  lr_max: float = 10.0, steps: int = 120, seed: int = 0) -> tuple[Path, float]:
    """One run whose learning rate rises exponentially from ``lr_min`` to ``lr_max`` over ``steps``
    updates (``utils.loop.train_step`` each), logged as ``train/loss`` and ``train/lr``; it stops once
    the loss is non-finite or above 4 times its smallest value. Returns the run and the suggested rate:
    a tenth of the rate at which the smoothed loss was lowest (beyond it the loss turns up)."""
    from utils import batches, loop, tb

    data = digits_data(setting, seed)
    torch.manual_seed(seed)
    model = DeepMLP(setting)
    optimizer = make_optimizer(model, replace(setting, lr=lr_min))
    batch_fn = batches.epoch_batches(data.x_train, data.y_train, setting.batch, seed=seed)
    growth = (lr_max / lr_min) ** (1 / (steps - 1))
    rates, losses = [], []
    with tb.open_run(chapter, name, hparams=setting_hparams(setting), allow_non_finite=True) as writer:
        for step in range(steps):
            lr = lr_min * growth**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            stats = loop.train_step(model, optimizer, [batch_fn(step)], loss_function(setting.loss))
            writer.add_scalar("train/loss", stats.loss, step)
            writer.add_scalar("train/lr", lr, step)
            rates.append(lr)
            losses.append(stats.loss)
            if not math.isfinite(stats.loss) or stats.loss > 4 * min(losses):
                break
        run = Path(writer.logdir)
    smoothed = tb.smooth(np.nan_to_num(losses, nan=np.inf), 0.8)
    return run, rates[int(np.argmin(smoothed))] / 10


def step_seconds(model: torch.nn.Module, micro_batches: Sequence[Any],
                     loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Any]],
                     repeats: int = 3) -> float:
    """Median wall time of one forward + backward pass over ``micro_batches`` (gradient accumulation when
    there are several), each loss divided by their number as ``loop.accumulate_gradients`` does."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        for batch in micro_batches:
            loss, _ = loss_fn(model, batch)
            (loss / len(micro_batches)).backward()
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2]
