"""The role table of ``utils.diagnose``: which logged tag plays which role (training loss, validation loss,
accuracy, learning rate, gradient norm, loss scale, per-layer histograms), in the layouts people log, and
how a run written as one writer per split (``RUN/train``, ``RUN/val`` ...) is read as one run.

Scalar roles (``ROLE_TAGS``): the first tag of a role's list that the run has plays it. Per-layer roles
(``LAYER_ROLES``): every histogram whose tag starts with one of the role's prefixes or ends with one of its
suffixes. ``--tag role=TAG`` (``overrides``) names the tag (for a per-layer role: the prefix) instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ROLES: dict[str, str] = {
    "loss": "training loss",
    "val_loss": "validation loss (a held-out, eval or test split evaluated during training)",
    "train_accuracy": "training accuracy",
    "val_accuracy": "validation accuracy",
    "lr": "learning rate",
    "grad_norm": "global gradient norm",
    "loss_scale": "loss scale of mixed-precision training (a gradient scaler)",
    "weights": "per-layer weight histograms",
    "grads": "per-layer gradient histograms",
    "activations": "per-layer activation histograms",
    "layer_grad_norms": "per-layer gradient norms (scalars, one tag per matrix)",
    "zero_shares": "per-layer share of exactly-zero activations (scalars, one tag per ReLU)",
    "dead_shares": "per-layer share of units that output 0 for every input of a batch (scalars, one tag per ReLU)",
}

# In each list: the book's tag, the tensorboardX/torch tutorials', a per-split writer's (its folder's name
# prefixed, the training writer's tags as they are), Hugging Face's Trainer, Lightning, Keras (``epoch_*`` in
# ``train/`` and ``validation/``; ``batch_*`` and ``evaluation_*_vs_iterations`` against iterations).
ROLE_TAGS: dict[str, tuple[str, ...]] = {
    "loss": ("train/loss", "loss", "train_loss", "training/loss", "loss/train", "Loss/train", "train/epoch_loss",
             "epoch_loss", "Loss/training", "loss/training", "train_loss_step", "train_loss_epoch", "batch_loss",
             "train/batch_loss", "Train/Loss", "train/Loss"),
    "val_loss": ("val/loss", "val_loss", "validation/loss", "valid/loss", "eval/loss", "loss/val", "Loss/val",
                 "loss/validation", "Loss/validation", "loss/valid", "Loss/valid", "loss/eval", "Loss/eval",
                 "validation/epoch_loss", "epoch_val_loss", "val/epoch_loss", "val_loss_epoch",
                 "validation/evaluation_loss_vs_iterations", "evaluation/loss", "Val/Loss", "val/Loss",
                 "test/loss", "loss/test", "Loss/test", "test_loss", "Test/Loss", "test/epoch_loss"),
    "train_accuracy": ("train/accuracy", "train/acc", "accuracy", "acc", "train_acc", "train_accuracy",
                       "Accuracy/train", "accuracy/train", "epoch_accuracy", "train/epoch_accuracy",
                       "train_acc_step", "train_acc_epoch", "Train/Accuracy"),
    "val_accuracy": ("val/accuracy", "val/acc", "val_acc", "val_accuracy", "validation/accuracy",
                     "validation/acc", "valid/accuracy", "eval/accuracy", "eval/acc", "Accuracy/val",
                     "accuracy/val", "Accuracy/validation", "accuracy/validation", "validation/epoch_accuracy",
                     "epoch_val_accuracy", "validation/evaluation_accuracy_vs_iterations", "Val/Accuracy",
                     "test/accuracy", "test/acc", "Accuracy/test", "accuracy/test", "test_acc", "test_accuracy"),
    "lr": ("train/lr", "lr", "learning_rate", "train/learning_rate", "epoch_learning_rate", "lr-AdamW",
           "lr-Adam", "lr-SGD", "Learning_rate", "LearningRate", "learning-rate", "train/learning-rate",
           "batch_learning_rate"),
    "grad_norm": ("train/grad_norm", "grad_norm", "gradient_norm", "train/gradient_norm", "grad/norm",
                  "grad_2.0_norm_total", "grad_norm/total", "Grad/norm", "train/grad_norm_total"),
    "loss_scale": ("train/loss_scale", "loss_scale", "amp/loss_scale", "scaler/scale", "train/scale",
                   "grad_scale", "train/grad_scale", "loss_scaler/scale"),
}

# per-layer roles: (tag prefixes, tag suffixes); update_ratio/* scalars are per-layer too (stalled_layer)
LAYER_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "weights": (("weights/", "weight/", "params/", "parameters/"), ("/histogram", ".weight", ".bias", "/kernel")),
    "grads": (("grads/", "gradients/", "grad/"), (".grad", "/grad", "_grad", "/gradient", "/gradients")),
    "activations": (("activations/", "activation/", "acts/"), ("/activations", "/activation", ".activations")),
}
UPDATE_RATIO_PREFIX = "update_ratio/"

# per-layer scalar roles: (tag prefixes, tag suffixes). The book's loop (``utils.layer_stats``), Lightning's
# ``grad_norm`` utility (``grad_2.0_norm/<param>``), TensorFlow's canned estimators' ``tf.nn.zero_fraction``
# of each hidden layer (``<layer>/fraction_of_zero_values``). Not ``<name>/sparsity``: TensorFlow's CIFAR-10
# tutorial logs activations so, but TF Model Optimization logs its pruning masks so (weights pruned on
# purpose, not dead units); name such a tag with --tag zero_shares=PREFIX. A tag a scalar role claims
# (``grad_norm/total``: the global norm) is not per-layer.
LAYER_SCALAR_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "layer_grad_norms": (("grad_norm/", "grad_2.0_norm/", "grad_norms/", "gradient_norm/"), ("/grad_norm",)),
    "zero_shares": (("zero_share/", "zero_fraction/"), ("/zero_fraction", "/zero_share", "/fraction_of_zero_values")),
    "dead_shares": (("dead_share/",), ("/dead_share",)),
}

# one writer per split: RUN/<folder> is part of the run RUN, its tags prefixed so (the training writer's
# tags as they are: its ``loss`` is the training loss, ``val/loss`` the validation writer's)
SPLIT_FOLDERS: dict[str, str] = {"train": "", "training": "", "val": "val/", "valid": "valid/",
                                 "validation": "validation/", "eval": "eval/", "evaluation": "evaluation/",
                                 "test": "test/"}

# statistics a layer keeps but does not train (Keras Normalization and BatchNormalization, torch BatchNorm):
# constant by design, never a "dead layer"
NON_TRAINABLE = ("mean", "variance", "count", "moving_mean", "moving_variance", "running_mean", "running_var",
                 "num_batches_tracked")


def _weight_name(tag: str) -> str:
    """The weight's own name in a histogram tag: ``normalization/mean/histogram`` -> ``mean``,
    ``weights/bn.running_mean`` -> ``running_mean``."""
    parts = [p for p in tag.removesuffix("/histogram").split("/") if p]
    return parts[-1].rsplit(".", 1)[-1] if parts else tag


def is_non_trainable(tag: str) -> bool:
    return _weight_name(tag) in NON_TRAINABLE


def layer_role(tag: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """The per-layer role of a histogram tag (``weights``, ``grads``, ``activations``) or None; an override
    (a prefix) wins over the table."""
    for role, prefix in (overrides or {}).items():
        if role in LAYER_ROLES and tag.startswith(prefix):
            return role
    for role, (prefixes, _) in LAYER_ROLES.items():  # prefixes first: "grads/fc.weight" is a gradient
        if tag.startswith(prefixes):
            return role
    for role, (_, suffixes) in LAYER_ROLES.items():
        if tag.endswith(suffixes):
            return role
    return None


def layer_scalar_tags(scalars: Iterable[str], claimed: Iterable[str],
                      overrides: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{per-layer scalar role: its tags}``: an override (a prefix) wins over the table; tags in
    ``claimed`` (played by a scalar role) are left out."""
    overrides = {r: t for r, t in (overrides or {}).items() if r in LAYER_SCALAR_ROLES}
    taken, found = set(claimed), {}
    for tag in scalars:
        if tag in taken:
            continue
        role = next((r for r, prefix in overrides.items() if tag.startswith(prefix)), None) or next(
            (r for r, (prefixes, suffixes) in LAYER_SCALAR_ROLES.items()
             if r not in overrides and (tag.startswith(prefixes) or tag.endswith(suffixes))), None)
        if role:
            found.setdefault(role, []).append(tag)
    return found


def scalar_roles(scalars: Iterable[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{role: tag}`` for the scalar roles this run's tags play: an override where the run has its tag, else
    the first tag of the role's list that the run has and no override claims, else the first that it has
    spelled in other capitals (``add_scalars("Loss", {"Train": ..., "Validation": ...})`` writes
    ``Loss/Train`` and ``Loss/Validation``; no two tags of the table differ only in capitals across roles)."""
    tags = set(scalars)
    overrides = {r: t for r, t in (overrides or {}).items() if r in ROLE_TAGS}
    taken = set(overrides.values())
    folded = {t.casefold(): t for t in sorted(tags - taken, reverse=True)}  # the first in order wins a tie
    roles = {}
    for role, candidates in ROLE_TAGS.items():
        if role in overrides:
            if overrides[role] in tags:
                roles[role] = overrides[role]
            continue
        tag = next((t for t in candidates if t in tags and t not in taken), None) or \
            next((folded[t.casefold()] for t in candidates if t.casefold() in folded), None)
        if tag is not None:
            roles[role] = tag
    return roles


def describe_layer_tags(tags: list[str], kind: str = "histogram") -> str:
    """How the report names a per-layer role's tags: ``3 histograms (weights/fc1.weight, ...)``."""
    more = ", ..." if len(tags) > 1 else ""
    return f"{len(tags)} {kind}{'s' if len(tags) > 1 else ''} ({tags[0]}{more})"


def missing_roles(found: Iterable[str]) -> list[str]:
    found = set(found)
    return [role for role in ROLES if role not in found]


def parse_tag_flag(text: str) -> tuple[str, str]:
    """``"role=TAG"`` -> ``(role, TAG)``; ``ValueError`` with one sentence when it is not that."""
    role, equals, tag = text.partition("=")
    if not equals or not role.strip() or not tag.strip():
        raise ValueError(f"{text!r} is not allowed: give role=TAG, e.g. loss=Loss/train")
    if role.strip() not in ROLES:
        raise ValueError(f"{text!r} names an unknown role {role.strip()!r}: give role=TAG with a role among "
                         f"{', '.join(ROLES)}")
    return role.strip(), tag.strip()
