"""A CPU speedrun: nanoGPT's CPU recipe against the book's fastest recipe to the same validation loss, side by
side in one process, and the ablation of each change.

    python -m benchmarks.speedrun --nanogpt PATH     # PATH: a checkout of github.com/karpathy/nanoGPT
    python -m benchmarks.speedrun --nanogpt PATH --quick     # a smoke test of a few seconds
    python -m benchmarks.speedrun --nanogpt PATH --ablation  # the side-by-side only, no ablation

The full benchmark (3 pairs and 11 ablation rows) takes about 20 minutes on a quiet 2-core CPU.

The target: nanoGPT's final validation loss after its README's CPU recipe (4 layers, 4 heads, 128 wide,
context 64, batch 12, 2,000 updates, AdamW lr 1e-3 warm-up 100 cosine to 1e-4, betas (0.9, 0.99), weight
decay 0.1, clipping at 1, dropout 0, no biases, fp32), trained with nanoGPT's own ``model.py`` and
``configure_optimizers`` (imported from the checkout; none of its code is in this repository) and the
learning rate of its ``train.py``. Then the book's speedrun (``SPEEDRUN``): the same model size with the
book's ``utils.gpt.GPT`` and ``utils.loop.train_step``, stopped as soon as its validation loss reaches the
target. Both draw training batches from ``utils.batches.random_windows`` of the book's Tiny Shakespeare
split (``utils.datasets.shakespeare_data``, 90 % / 10 %) and are scored on the same fixed validation
batches (``utils.batches.fixed_windows``). Only the updates are timed (batch, learning rate, forward,
backward, clip, step; ``torch.compile``'s compilation included); the evaluations (every ``--eval-every``
updates for the book, every 250 for nanoGPT as its config does) stop the clock.

``--repeats`` pairs alternate the order (nanoGPT first in the first pair, which sets the target). Each
ablation row is the speedrun with one change, run once to the same target.

TensorBoard: ``runs/speedrun/<recipe>``, one run per recipe (first pair only). ``val/loss`` and
``train/loss`` at the update count, with the event wall time set to the run's start plus its training
seconds (choose the Relative horizontal axis: loss against training time); ``val/loss_vs_train_ms`` at
step = training milliseconds; ``val/loss_vs_tokens`` at step = training tokens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import record, vs_nanogpt
from benchmarks.speedrun_runs import NANOGPT, SHAPE, Outcome, Recipe, book_side, nanogpt_side, run_to_target
from utils import validate
from utils.batches import fixed_windows, random_windows
from utils.datasets import shakespeare_data

NAME = "speedrun"
CHAPTER = "speedrun"  # runs/speedrun/<run>
#: The book's recipe: Muon on the blocks' matrices, a higher AdamW rate elsewhere, a shorter schedule.
SPEEDRUN = Recipe("speedrun", steps=600, batch=12, lr=3e-3, min_lr=3e-4, warmup=50, muon_lr=0.02)
#: Each one change to ``SPEEDRUN`` (name, what it measures, the settings changed).
ABLATION: list[tuple[str, str, dict[str, Any]]] = [
    ("book-nanogpt-recipe", "the book's GPT at nanoGPT's recipe", vars(NANOGPT) | {"side": "book"}),
    ("adamw-only", "AdamW everywhere instead of Muon", {"muon_lr": None}),
    ("lr-1e-3", "AdamW's rate back to nanoGPT's 1e-3 (min 1e-4)", {"lr": 1e-3, "min_lr": 1e-4}),
    ("warmup-100", "nanoGPT's 100 warm-up updates", {"warmup": 100}),
    ("schedule-500", "a shorter schedule: 500 updates", {"steps": 500}),
    ("schedule-1000", "a longer schedule: 1,000 updates", {"steps": 1000}),
    ("batch-24", "batch 24, half the updates", {"batch": 24, "steps": 300, "warmup": 25}),
    ("adamw-foreach", "torch's foreach AdamW", {"adamw": "foreach"}),
    ("adamw-fused", "torch's fused AdamW", {"adamw": "fused"}),
    ("compile", "torch.compile (compile time counted)", {"compile": True}),
    ("threads-1", "one thread", {"threads": 1}),
]
EVAL_ROWS, EVAL_BATCHES, NANOGPT_EVAL_EVERY = 64, 8, 250  # 32,768 validation tokens


class Bench:
    """The data, the validation batches and the nanoGPT module every run of one benchmark shares."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.nanogpt = vs_nanogpt.load_nanogpt(args.nanogpt)
        tokenizer, self.train_ids, val_ids = shakespeare_data()
        self.vocab_size = tokenizer.vocab_size
        rows, count = (8, 2) if args.quick else (EVAL_ROWS, EVAL_BATCHES)
        self.val_batches = fixed_windows(val_ids, SHAPE["block_size"], rows, count, seed=1)

    def run(self, recipe: Recipe, target: float | None, log: bool) -> Outcome:
        """One run of ``recipe`` at its thread count (restored after), logged to TensorBoard if ``log``."""
        before = torch.get_num_threads()
        torch.set_num_threads(recipe.threads or self.args.threads or before)
        try:
            seed, nano = self.args.seed, recipe.side == "nanogpt"
            side = (nanogpt_side(self.nanogpt, recipe, self.vocab_size, seed) if nano
                    else book_side(recipe, self.vocab_size, seed))
            batch_fn = random_windows(self.train_ids, SHAPE["block_size"], recipe.batch, seed=seed)
            every = NANOGPT_EVAL_EVERY if nano else self.args.eval_every
            if not log:
                return run_to_target(side, recipe, batch_fn, self.val_batches, every, target)
            with _writer(recipe, self.args.runs_root) as writer:
                return run_to_target(side, recipe, batch_fn, self.val_batches, every, target, writer)
        finally:
            torch.set_num_threads(before)


def _writer(recipe: Recipe, root: str | None):
    from utils import tb

    hparams = {k: v for k, v in recipe.settings().items() if isinstance(v, (int, float, str, bool))}
    return tb.open_run(CHAPTER, recipe.name, hparams=hparams, root=root)


def side_by_side(bench: Bench, nanogpt: Recipe, speedrun: Recipe) -> tuple[float, list[dict[str, Any]]]:
    """``repeats`` pairs, the order alternating, nanoGPT first in the first (its loss is the target)."""
    target, pairs = None, []
    for index in range(bench.args.repeats):
        order = record.round_order([nanogpt, speedrun], index)
        found = {}
        for recipe in order:
            outcome = bench.run(recipe, None if recipe is nanogpt else target, log=index == 0)
            found[recipe.side] = outcome
            target = outcome.val_loss if target is None else target
        pairs.append({"order": [r.side for r in order], "nanogpt": _row(found["nanogpt"]),
                      "book": _row(found["book"]),
                      "speedup": found["nanogpt"].train_s / found["book"].train_s})
    return target, pairs


def _row(outcome: Outcome, baseline_s: float | None = None) -> dict[str, Any]:
    row = {"recipe": outcome.recipe.name, "settings": outcome.recipe.settings(), "steps": outcome.steps,
           "tokens": outcome.tokens, "train_s": outcome.train_s, "val_loss": outcome.val_loss,
           "reached": outcome.reached, "curve": outcome.curve}
    if baseline_s is not None:
        row["speedup"] = baseline_s / outcome.train_s
    return row


def ablation(bench: Bench, speedrun: Recipe, target: float, baseline_s: float) -> list[dict[str, Any]]:
    rows = []
    for name, note, changes in _ablation_rows(bench.args):
        changes = {k: v for k, v in changes.items() if k not in ("name", "note")}
        recipe = speedrun.but(name, note, **changes)
        rows.append({**_row(bench.run(recipe, target, log=True), baseline_s), "change": note})
    return rows


def _ablation_rows(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    chosen = [row for row in ABLATION if args.ablation is None or row[0] in args.ablation]
    if args.quick:  # the same schedules, scaled down
        return [(n, note, {**c, "steps": 20, "warmup": 2} if "steps" in c else c) for n, note, c in chosen]
    return chosen


def tables(target: float, pairs: list[dict[str, Any]], rows: list[dict[str, Any]],
           args: argparse.Namespace) -> list[dict[str, Any]]:
    def spread(values: list[float], digits: int) -> str:
        q1, mid, q3 = record.quartiles(values)
        return f"{mid:.{digits}f} ({q1:.{digits}f}-{q3:.{digits}f})"

    speedups = [pair["speedup"] for pair in pairs]
    cells = []
    for side in ("nanogpt", "book"):
        first = pairs[0][side]
        cells.append([first["recipe"], first["steps"], f"{first['tokens']:,}",
                      spread([pair[side]["train_s"] for pair in pairs], 1), _loss_cell(first, side),
                      spread(speedups, 2) if side == "book" else "1"])
    notes = [f"Target: nanoGPT's final validation loss {target:.4f} on {_val_tokens(args):,} fixed validation "
             f"tokens. Pairs: {len(pairs)}, the order alternating; training seconds and speed-up (nanoGPT's "
             "seconds / the book's, pair by pair): median (first quartile-third quartile).",
             f"Threads: {args.threads or torch.get_num_threads()}. nanoGPT checkout: {args.nanogpt_commit}."]
    columns = ["recipe", "steps", "tokens", "training s", "val loss reached", "speed-up vs nanoGPT"]
    side_table = record.table("Time to nanoGPT's validation loss, side by side", columns, cells, notes)
    ablation_cells = [[row["recipe"], row["change"], row["steps"], f"{row['tokens']:,}",
                       f"{row['train_s']:.1f}", f"{row['val_loss']:.4f}", "yes" if row["reached"] else "no",
                       f"{row['speedup']:.2f}" if row["reached"] else "-"] for row in rows]
    ablation_notes = ["Each row: the speedrun with one change, run once to the same target (or to the end "
                      "of its schedule: reached = no, no speed-up). Speed-up: nanoGPT's median training seconds / the row's."]
    ablation_table = record.table("Ablation: one change at a time", ["recipe", "change", "steps", "tokens",
                                  "training s", "val loss", "reached", "speed-up vs nanoGPT"],
                                  ablation_cells, ablation_notes)
    return [side_table, ablation_table] if rows else [side_table]


def _loss_cell(row: dict[str, Any], side: str) -> str:
    """The validation loss at the end of a run; the book's marked when it missed the target."""
    missed = side == "book" and not row["reached"]
    return f"{row['val_loss']:.4f}" + (" (target missed)" if missed else "")


def _val_tokens(args: argparse.Namespace) -> int:
    rows, count = (8, 2) if args.quick else (EVAL_ROWS, EVAL_BATCHES)
    return rows * count * SHAPE["block_size"]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speedrun", description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, help="the folder of a nanoGPT checkout (holds model.py)")
    parser.add_argument("--repeats", type=validate.whole_number(1), default=3, help="side-by-side pairs")
    parser.add_argument("--threads", type=validate.whole_number(1), default=None,
                        help="torch threads for both sides (default: torch's default)")
    parser.add_argument("--eval-every", type=validate.whole_number(1), default=25,
                        help="updates between the book's validation checks")
    parser.add_argument("--ablation", nargs="*", default=None, choices=[row[0] for row in ABLATION],
                        help="the ablation rows to run (default: all; none: --ablation with no name)")
    parser.add_argument("--seed", type=validate.whole_number(0), default=0)
    parser.add_argument("--quick", action="store_true", help="a few updates of each: a smoke test")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    parser.add_argument("--runs-root", type=validate.folder_path, default=None,
                        help="TensorBoard root (default: the book's runs folder)")
    args = parser.parse_args(argv)
    if not (Path(args.nanogpt) / "model.py").is_file():
        parser.error(f"argument --nanogpt: {args.nanogpt!r} has no model.py: give the folder of a nanoGPT "
                     "checkout (git clone https://github.com/karpathy/nanoGPT)")
    args.nanogpt_commit = vs_nanogpt._commit(Path(args.nanogpt))
    if args.quick:
        args.eval_every = min(args.eval_every, 5)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    bench = Bench(args)
    nanogpt, speedrun = NANOGPT, SPEEDRUN
    if args.quick:
        nanogpt, speedrun = NANOGPT.but("nanogpt", steps=30, warmup=3), SPEEDRUN.but("speedrun", steps=20,
                                                                                     warmup=2)
    target, pairs = side_by_side(bench, nanogpt, speedrun)
    baseline_s = record.median([pair["nanogpt"]["train_s"] for pair in pairs])
    rows = ablation(bench, speedrun, target, baseline_s)
    result = {**record.provenance(NAME, argv, machine, load_start, started),
              "settings": {**SHAPE, "nanogpt": nanogpt.settings(), "speedrun": speedrun.settings(),
                           "repeats": args.repeats, "threads": args.threads, "eval_every": args.eval_every,
                           "val_tokens": _val_tokens(args), "seed": args.seed, "quick": args.quick,
                           "nanogpt_commit": args.nanogpt_commit},
              "target": target, "pairs": pairs, "ablation": rows, "tables": tables(target, pairs, rows, args)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
