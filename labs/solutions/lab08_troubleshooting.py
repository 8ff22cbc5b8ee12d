"""Reference solutions of lab 8 (``labs/lab08_troubleshooting.ipynb``); see ``lab00_first_run.py``."""

import numpy as np


def diagnose_runs():
    return {
        "run_a": ("lr_too_low", "lr", "raise"),
        "run_b": ("exploding_gradients", "grad_clip", "set"),
        "run_c": ("overfitting", "train_examples", "raise"),
        "run_d": ("vanishing_gradients", "residual", "set"),
        "run_e": ("nan_loss", "loss", "change"),
        "run_f": ("shuffled_labels", "labels", "change"),
    }


def detect_plateau(steps, values):
    window, tolerance = 10, 0.01  # the contract: 10-point means, 1% of the loss
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = np.asarray(steps)[finite], values[finite]  # new arrays: the inputs stay as they are
    if len(values) < 2 * window:
        return None
    means = np.convolve(values, np.ones(window) / window, mode="valid")  # means[j]: points j..j+W-1
    for j in range(len(means) - window):  # the point j + W - 1 keeps at least W points after it
        if means[j + 1:].min() >= (1 - tolerance) * means[j]:
            return int(steps[j + window - 1])
    return None
