"""Reference solutions of lab 7 (``labs/lab07_tensorboard.ipynb``); see ``lab00_first_run.py``."""

from utils import tb


def log_layout(writer):
    writer.add_custom_scalars({
        "Losses": {"train vs validation": ["Multiline", ["train/loss", "val/loss"]]},
        "Accuracy": {"validation, 95 % interval": [
            "Margin", ["val/accuracy", "val/accuracy_low", "val/accuracy_high"]]},
    })


def log_pr_curves(writer, labels, probs, step):
    for c in range(probs.shape[1]):
        writer.add_pr_curve(f"pr/class_{c}", labels == c, probs[:, c], step)  # 0/1 against scores


def stopped_improving(run):
    val = tb.read_scalars(run, ["val/loss"])  # only this tag: val/loss_ema would match a prefix
    return int(val.step[val.value.idxmin()])  # idxmin: the first of tied minima
