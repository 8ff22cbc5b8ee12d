"""Divergence in a run's first updates, which the divergence rule's start (the largest of the first
``window`` points) hides because the start is itself the blow-up. Three shapes, each seen in the zoo
(``tests/zoo.py``: a far too high rate, SGD on tanh units or AdamW at 0.5):

- the loss jumps and never comes back below its first value (``never_back_down``);
- it jumps above ``threshold`` x its first value, then settles back at the untrained loss and ends there
  (``jumped_and_never_learned``): the model it left (dead units, a saturated output) learns nothing;
- the first logged point is already the blow-up, because the loss is logged as a mean over a block of
  updates (Hugging Face's Trainer: every ``logging_steps``), and the loss never learns after it
  (``blew_up_within_first_point``).

And one that is no divergence: a loss that rose before it learned anything, then learned
(``spike_before_learning``). Chapter 8's residual net does so and then learns well (no finding); the GPT at
100x its rate does so and stalls: its finding is then that rise, a loss_spike, not the plateau.

Each function takes finite ``(steps, values)`` and returns ``(index of the point to report, explanation)``
or None; ``rules.check_divergence`` turns that into a finding."""

from __future__ import annotations

import numpy as np

Hit = tuple[int, str]


def ending_level(values: np.ndarray, window: int) -> float:
    """Where the loss ended: the median of its last quarter (at least ``window`` points), robust to the
    single noisy points of a small batch."""
    return float(np.median(values[-max(window, len(values) // 4):]))


def never_back_down(steps: np.ndarray, values: np.ndarray, window: int, early_jump: float) -> Hit | None:
    """Every point after the first ``window`` is above the first value, their median at least ``early_jump``
    x it (above a noisy first point, not a jump)."""
    later = values[window:]
    if len(later) < window or values[0] <= 0 or not np.all(later > values[0]):
        return None
    if np.median(later) < early_jump * values[0]:
        return None
    i = window + int(np.argmax(later))
    return i, (f"the loss never came back below its first value {values[0]:.4g}: after step "
               f"{steps[window - 1]} every point is above it, up to {values[i]:.4g} at step {steps[i]}")


def jumped_and_never_learned(steps: np.ndarray, values: np.ndarray, threshold: float, window: int,
                             never_learned: float) -> Hit | None:
    """A point among the first ``window`` above ``threshold`` x the first value, and the loss ending (its
    ``ending_level``) less than ``never_learned`` below that first value: whatever it learned for a while
    after the jump (a batch of 16's loss dips below it now and then), it ended untrained."""
    if len(values) < 2 * window or values[0] <= 0:
        return None
    j = 1 + int(np.argmax(values[1:window]))
    end = ending_level(values, window)
    if values[j] <= threshold * values[0] or end < (1 - never_learned) * values[0]:
        return None
    return j, (f"the loss jumped to {values[j] / values[0]:.0f}x its first value at step {steps[j]} and ended "
               f"at {end:.4g} (median of its last quarter), not {never_learned:.0%} below that first value "
               f"{values[0]:.4g}: the run never learned")


def blew_up_within_first_point(steps: np.ndarray, values: np.ndarray, threshold: float, window: int,
                               never_learned: float) -> Hit | None:
    """The first point above ``threshold`` x the median of the later ones, and the loss flat after its
    first updates: its ``ending_level`` not ``never_learned`` below the median of its points from ``window``
    to the middle of the run. A healthy run's first point is high too (the untrained loss, or a mean over
    updates that learned fast), but it goes on learning: in the zoo its ending level is at most a third of
    that median, where a run that blew up in its first block of updates ends at 0.99-1.0 x it."""
    if len(values) < 4 * window or values[0] <= 0:
        return None
    settled = float(np.median(values[window:len(values) // 2]))
    end = ending_level(values, window)
    if values[0] <= threshold * np.median(values[1:]) or end < (1 - never_learned) * settled:
        return None
    return 0, (f"the first logged loss {values[0]:.4g} (step {steps[0]}) is {values[0] / settled:.0f}x where "
               f"the loss then sat, {settled:.4g}, and it never learned after (it ended at {end:.4g}): it blew "
               "up in its first updates, averaged into its first point (a loss logged as a mean over updates)")


def rise_before_learning(values: np.ndarray, early_jump: float) -> int | None:
    """The index of the first point above ``early_jump`` x the first value, when every point before it is at
    or above the first value (the loss rose before it learned anything: a rate too high from the first
    update, the first sign of which a healthy start, falling from its first point, never shows); None
    otherwise."""
    if len(values) < 2 or values[0] <= 0:
        return None
    above = np.flatnonzero(values[1:] > early_jump * values[0])
    if not len(above):
        return None
    i = 1 + int(above[0])
    return i if values[1:i].min(initial=values[0]) >= values[0] else None


def spike_before_learning(steps: np.ndarray, values: np.ndarray, early_jump: float, window: int) -> Hit | None:
    """A ``rise_before_learning`` in a loss that then ended (its ``ending_level``) below its first value (it
    learned after, some), at least ``4 * window`` points long."""
    i = rise_before_learning(values, early_jump)
    if i is None or len(values) < 4 * window or ending_level(values, window) >= values[0]:
        return None
    return i, (f"the loss rose to {values[i] / values[0]:.1f}x its first value {values[0]:.4g} at step {steps[i]}, "
               "before it ever fell below it")
