"""Answers to lab 7: a custom-scalars layout, PR curves per class, and the step validation loss stopped
improving. The layout and curve answers write into the writer the checker gives them."""

from __future__ import annotations

import numpy as np
import torch

from tests.checker_cases import Cases, Wrong
from utils import tb

BAND = ["val/accuracy", "val/accuracy_low", "val/accuracy_high"]

# ---------------------------------------------------------------- lab07.layout: right


def two_categories(writer):
    writer.add_custom_scalars({"Losses": {"train vs val": ["Multiline", ["train/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", BAND]}})


def one_category_with_a_regex(writer):
    writer.add_custom_scalars({"Run": {"losses": ["Multiline", [r"(train|val)/loss"]],
                                       "accuracy": ["Margin", BAND]}})


def margin_first_and_escaped_tags(writer):
    layout = {"Accuracy": {"validation": ["Margin", list(BAND)]},
              "Losses": {"both": ["Multiline", [r"train/loss", r"val/loss"]]}}
    writer.add_custom_scalars(layout)


# ---------------------------------------------------------------- lab07.layout: wrong


def writes_nothing(writer):
    pass


def uses_add_scalars(writer):
    writer.add_scalars("loss", {"train": 1.0, "val": 1.1}, 0)


def losses_in_a_margin_chart(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Margin", ["train/loss", "val/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", BAND]}})


def misspelled_tags(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["loss/train", "loss/val"]]},
                               "Accuracy": {"band": ["Margin", BAND]}})


def pattern_too_broad(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/.*", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", BAND]}})


def only_validation_loss(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["val/loss"]]},
                               "Accuracy": {"band": ["Margin", BAND]}})


def band_as_multiline(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Multiline", BAND]}})


def band_bounds_swapped(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", [BAND[0], BAND[2], BAND[1]]]}})


def band_in_the_wrong_order(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", [BAND[1], BAND[0], BAND[2]]]}})


def no_band(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/loss", "val/loss"]]}})


def band_of_unlogged_tags(writer):
    writer.add_custom_scalars({"Losses": {"l": ["Multiline", ["train/loss", "val/loss"]]},
                               "Accuracy": {"band": ["Margin", ["val/acc", "val/acc_lo", "val/acc_hi"]]}})


# ---------------------------------------------------------------- lab07.pr_curves: right


def per_class_bool_labels(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs[:, c], step)


def torch_tensors(writer, labels, probs, step):
    labels, probs = torch.as_tensor(labels), torch.as_tensor(probs)
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", (labels == c).int(), probs[:, c], global_step=step)


def fewer_thresholds(writer, labels, probs, step):
    for c, scores in enumerate(np.asarray(probs).T):
        writer.add_pr_curve(f"pr/class_{c}", (labels == c).astype(np.int64), scores, step,
                            num_thresholds=50)


# ---------------------------------------------------------------- lab07.pr_curves: wrong


def from_predicted_labels(writer, labels, probs, step):
    predicted = probs.argmax(axis=1)
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, (predicted == c).astype(float), step)


def class_numbers_as_labels(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels, probs[:, c], step)


def confidence_of_the_prediction(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs.max(axis=1), step)


def inverted_scores(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, 1 - probs[:, c], step)


def labels_and_scores_swapped(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", probs[:, c], (labels == c).astype(float), step)


def next_column(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs[:, (c + 1) % probs.shape[1]], step)


def other_tag_names(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/{c}", labels == c, probs[:, c], step)


def step_zero(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs[:, c], 0)


def no_curve(writer, labels, probs, step):
    writer.add_scalar("pr/none", 0.0, step)


def two_thresholds(writer, labels, probs, step):
    """Right labels and scores, but a curve of two points: thresholds 0 and 1 only."""
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs[:, c], step, num_thresholds=2)


def labels_as_scores(writer, labels, probs, step):
    """The 0/1 labels passed as the predictions too: a perfect, two-point curve."""
    for c in range(probs.shape[1]):
        is_c = (labels == c).astype(float)
        writer.add_pr_curve(f"pr/class_{c}", is_c, is_c, step)


def thresholded_at_a_half(writer, labels, probs, step):
    """Hard decisions (p > 0.5) instead of the probabilities."""
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, (probs[:, c] > 0.5).astype(float), step)


# ---------------------------------------------------------------- lab07.stopped_improving: right


def by_idxmin(run):
    val = tb.read_scalars(run, ["val/loss"])
    return int(val.step[val.value.idxmin()])


def by_a_loop(run):
    best, best_step = float("inf"), None
    for row in tb.read_scalars(run).itertuples():
        if row.tag == "val/loss" and row.value < best:  # strict: a tie is no improvement
            best, best_step = row.value, row.step
    return best_step


def by_argmin(run):
    scalars = tb.read_scalars(run)
    val = scalars[scalars.tag == "val/loss"]
    return np.int64(val.step.to_numpy()[np.argmin(val.value.to_numpy())])


# ---------------------------------------------------------------- lab07.stopped_improving: wrong


def position_not_step(run):
    val = tb.read_scalars(run, ["val/loss"])
    return int(np.argmin(val.value.to_numpy()))


def the_loss_itself(run):
    return float(tb.read_scalars(run, ["val/loss"]).value.min())


def last_of_a_tie(run):
    best, best_step = float("inf"), None
    for row in tb.read_scalars(run, ["val/loss"]).itertuples():
        if row.value <= best:
            best, best_step = row.value, row.step
    return best_step


def the_evaluation_after(run):
    val = tb.read_scalars(run, ["val/loss"]).reset_index(drop=True)
    i = int(val.value.idxmin())
    return int(val.step[min(i + 1, len(val) - 1)])


def train_loss(run):
    train = tb.read_scalars(run, ["train/loss"])
    return int(train.step[train.value.idxmin()])


def prefix_match(run):
    scalars = tb.read_scalars(run)
    val = scalars[scalars.tag.str.startswith("val/loss")]
    return int(val.step[val.value.idxmin()])


def forgets_return(run):
    tb.read_scalars(run, ["val/loss"])


def every_step(run):
    return tb.read_scalars(run, ["val/loss"]).step.tolist()


def before_the_first_rise(run):
    """Stops at the first evaluation that is worse than the one before: a later, lower dip is missed."""
    val = tb.read_scalars(run, ["val/loss"])
    steps, values = val.step.tolist(), val.value.tolist()
    for i in range(1, len(values)):
        if values[i] > values[i - 1]:
            return steps[i - 1]
    return steps[-1]


def early_stopping_without_patience(run):
    """The same mistake as a loop that breaks at the first evaluation that does not improve."""
    best, best_step = float("inf"), None
    for row in tb.read_scalars(run, ["val/loss"]).itertuples():
        if row.value >= best:
            break
        best, best_step = row.value, row.step
    return best_step


CASES = {
    "lab07.layout": Cases(
        correct=[two_categories, one_category_with_a_regex, margin_first_and_escaped_tags],
        wrong=[
            Wrong(writes_nothing, "holds no custom-scalars layout"),
            Wrong(uses_add_scalars, "add_scalars writes one run per key"),
            Wrong(losses_in_a_margin_chart, "are in a Margin chart"),
            Wrong(misspelled_tags, "match no tag the run logs"),
            Wrong(pattern_too_broad, "a pattern matches more than"),
            Wrong(only_validation_loss, "the Multiline chart shows only"),
            Wrong(band_as_multiline, "are in a Multiline chart"),
            Wrong(band_bounds_swapped, "lower and upper tags are swapped"),
            Wrong(band_in_the_wrong_order, "its order is [value, lower, upper]"),
            Wrong(no_band, "no Margin chart"),
            Wrong(band_of_unlogged_tags, "the Margin chart's series are"),
        ],
    ),
    "lab07.pr_curves": Cases(
        correct=[per_class_bool_labels, torch_tensors, fewer_thresholds],
        wrong=[
            Wrong(from_predicted_labels, "built from predicted labels"),
            Wrong(class_numbers_as_labels, "the labels are the class numbers"),
            Wrong(confidence_of_the_prediction, "probability of the predicted class"),
            Wrong(inverted_scores, "the scores are 1 - p"),
            Wrong(labels_and_scores_swapped, "labels and scores are swapped"),
            Wrong(next_column, "the next class's column"),
            Wrong(other_tag_names, "named pr/class_<c>"),
            Wrong(step_zero, "log it once, at the step given"),
            Wrong(no_curve, "holds no PR curve"),
            Wrong(two_thresholds, "needs many thresholds"),
            Wrong(labels_as_scores, "the predictions are 0/1 decisions"),
            Wrong(thresholded_at_a_half, "the predictions are 0/1 decisions"),
        ],
    ),
    "lab07.stopped_improving": Cases(
        correct=[by_idxmin, by_a_loop, by_argmin],
        wrong=[
            Wrong(position_not_step, "the position of the best evaluation"),
            Wrong(the_loss_itself, "the lowest loss itself"),
            Wrong(last_of_a_tie, "a tie is no improvement"),
            Wrong(the_evaluation_after, "the first evaluation after the best"),
            Wrong(train_loss, "where train/loss is lowest"),
            Wrong(prefix_match, "it mixes in another tag"),
            Wrong(forgets_return, "forget the `return`"),
            Wrong(every_step, "return one step number"),
            Wrong(before_the_first_rise, "the step before the first rise"),
            Wrong(early_stopping_without_patience, "the step before the first rise"),
        ],
    ),
}
