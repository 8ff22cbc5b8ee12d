"""Reference solutions of lab 0 (``labs/lab00_first_run.ipynb``).

Not part of the notebook readers open: ``tests/test_labs.py`` runs the lab with each exercise cell
replaced by these definitions (and the module's imports) and requires every check to pass.
"""

import math


def log_losses(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", loss, step)


def smooth_like_tensorboard(values, weight):
    smoothed, average, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            smoothed.append(value)  # shown as it is, left out of the average
            continue
        average = weight * average + (1 - weight) * value
        count += 1
        smoothed.append(average / (1 - weight**count))  # debiased: the average starts at 0
    return smoothed
