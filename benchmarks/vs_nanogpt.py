"""The book's training step against nanoGPT's, side by side: one process, one configuration, the same
batches, steps alternating between the two.

    python -m benchmarks.vs_nanogpt --nanogpt PATH        # PATH: a checkout of github.com/karpathy/nanoGPT

nanoGPT is not a dependency and none of its code is in this repository: its ``model.py`` is imported from
the checkout named by ``--nanogpt`` (``git clone https://github.com/karpathy/nanoGPT``). What is timed, for
each implementation, is one optimizer update at nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, context
64, batch 12, fp32, AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices, clipping at 1):

- the book: ``utils.loop.train_step`` on ``utils.gpt.GPT`` with ``utils.optim.make_adamw``;
- nanoGPT: its ``GPT`` and ``configure_optimizers``, stepped as its ``train.py`` steps in fp32 without
  gradient accumulation: forward with targets, backward, ``clip_grad_norm_``, ``step``,
  ``zero_grad(set_to_none=True)``, then the loss as a float.

Both draw batch ``i`` from the same ``utils.batches.random_windows`` of Tiny Shakespeare's training split.
After untimed warm-up steps, each pair of timed steps runs the two in turn, the order reversed every pair,
so that a change of the machine's load falls on both alike. Reported per thread count: each
implementation's median step time with its quartiles, the median of the per-pair speed ratios (nanoGPT's
time / the book's: above 1, the book is faster) with their quartiles, and the training loss of each at
equal steps with the largest difference between the two over every step: both models are built from the
same seed, and the book's GPT creates and initialises its parameters in nanoGPT's order, so the two can
start from the same weights; the difference says how far their arithmetic then drifts apart.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks import record
from utils import loop, validate
from utils.batches import random_windows
from utils.datasets import shakespeare_data
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw

NAME = "vs_nanogpt"
#: nanoGPT's CPU recipe (its README, "I only have a macbook") and train_shakespeare_char.py's optimizer.
SHAPE = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}
BATCH, LR, WEIGHT_DECAY, BETAS, GRAD_CLIP = 12, 1e-3, 0.1, (0.9, 0.99), 1.0
Step = Callable[[torch.Tensor, torch.Tensor], float]


def load_nanogpt(checkout: str | Path) -> ModuleType:
    """nanoGPT's ``model.py`` from a checkout, imported as a module of its own (``nanogpt_model``)."""
    path = Path(checkout) / "model.py"
    if not path.is_file():
        raise FileNotFoundError(f"{checkout} has no model.py: give the folder of a nanoGPT checkout "
                                "(git clone https://github.com/karpathy/nanoGPT)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def book_step(vocab_size: int, seed: int) -> Step:
    """One update of the book's GPT, as the book's loop makes it."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, dropout=0.0, bias=False, **SHAPE)).train()
    optimizer = make_adamw(model, LR, WEIGHT_DECAY, betas=BETAS)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        return loop.train_step(model, optimizer, [(x, y)], lm_loss, grad_clip=GRAD_CLIP).loss

    return step


def nanogpt_step(nanogpt: ModuleType, vocab_size: int, seed: int) -> Step:
    """One update of nanoGPT's GPT, as its train.py makes it in fp32 (no gradient scaler, no accumulation)."""
    torch.manual_seed(seed)
    config = nanogpt.GPTConfig(vocab_size=vocab_size, dropout=0.0, bias=False, **SHAPE)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count and optimizer groups
        model = nanogpt.GPT(config).train()
        optimizer = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        _, loss = model(x, y)  # (B, T, V) logits, the mean loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def _timed(step: Step, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    start = time.perf_counter()
    loss = step(*batch)
    return time.perf_counter() - start, loss


def interleave(steps: dict[str, Step], batch_fn: Callable[[int], Any], warmup: int,
               pairs: int) -> dict[str, dict[str, list[float]]]:
    """``warmup`` untimed steps of each, then ``pairs`` timed pairs, the order reversed every pair; both
    implementations get batch ``i`` at their step ``i``. Returns ``{name: {"times", "losses"}}``."""
    names = list(steps)
    found = {name: {"times": [], "losses": []} for name in names}
    for index in range(warmup):
        for name in names:
            found[name]["losses"].append(steps[name](*batch_fn(index)))
    for pair in range(pairs):
        batch = batch_fn(warmup + pair)
        for name in record.round_order(names, pair):
            seconds, loss = _timed(steps[name], batch)
            found[name]["times"].append(seconds)
            found[name]["losses"].append(loss)
    return found


def summarise(found: dict[str, dict[str, list[float]]], threads: int, loss_every: int) -> dict[str, Any]:
    """One row per thread count: each side's step time (quartiles) and the per-pair speed ratios."""
    book, nano = found["book"], found["nanogpt"]
    ratios = [n / b for n, b in zip(nano["times"], book["times"], strict=True)]
    steps = len(book["losses"])
    at = sorted({*range(0, steps, loss_every), steps - 1})
    return {"threads": threads, "pairs": len(ratios),
            "book_ms": [t * 1e3 for t in record.quartiles(book["times"])],
            "nanogpt_ms": [t * 1e3 for t in record.quartiles(nano["times"])],
            "speed_ratio": list(record.quartiles(ratios)),
            "loss_steps": at, "book_loss": [book["losses"][i] for i in at],
            "nanogpt_loss": [nano["losses"][i] for i in at],
            "largest_loss_difference": max(abs(b - n) for b, n in zip(book["losses"], nano["losses"],
                                                                        strict=True)),
            "samples": {"book_s": book["times"], "nanogpt_s": nano["times"]}}


def table(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def spread(q: Sequence[float], digits: int = 1) -> str:
        return f"{q[1]:.{digits}f} ({q[0]:.{digits}f}-{q[2]:.{digits}f})"

    cells = [[row["threads"], row["pairs"], spread(row["book_ms"]), spread(row["nanogpt_ms"]),
              spread(row["speed_ratio"], 2), f"{row['book_loss'][-1]:.4f}", f"{row['nanogpt_loss'][-1]:.4f}",
              f"{row['largest_loss_difference']:.1e}"]
             for row in rows]
    notes = [f"nanoGPT's CPU recipe: {SHAPE['n_layer']} layers, {SHAPE['n_head']} heads, {SHAPE['n_embd']} "
             f"wide, context {SHAPE['block_size']}, batch {BATCH}, fp32. {args.warmup} untimed steps each, "
             "then pairs of steps in alternating order on the same batch.",
             "Median (first quartile-third quartile). Speed ratio: nanoGPT's step time / the book's, pair by "
             "pair; above 1, the book's step is faster. Losses: each one's training loss at the last step, "
             "and the largest difference of the two over every step (same seed, same batches).",
             f"nanoGPT checkout: {args.nanogpt_commit}."]
    columns = ["threads", "pairs", "book ms/step", "nanoGPT ms/step", "speed ratio", "book loss",
               "nanoGPT loss", "largest loss difference"]
    return record.table("The book's step against nanoGPT's, alternating in one process", columns, cells, notes)


def _commit(checkout: Path) -> str:
    """The commit the checkout is at, as git says it."""
    # a folder that is no clone: git would name the HEAD of a repository around it
    if not (checkout / ".git").exists():
        return f"{checkout} (not a git clone: commit unknown)"
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    if found.returncode != 0:
        return f"{checkout} (not a git clone: commit unknown)"
    return found.stdout.strip()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_nanogpt", description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, help="the folder of a nanoGPT checkout (holds model.py)")
    parser.add_argument("--threads", type=validate.whole_number(1), nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=validate.whole_number(1), default=5, help="untimed steps of each")
    parser.add_argument("--pairs", type=validate.whole_number(4), default=60, help="timed pairs per thread count")
    parser.add_argument("--loss-every", type=validate.whole_number(1), default=10)
    parser.add_argument("--seed", type=validate.whole_number(0), default=0)
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    if not (Path(args.nanogpt) / "model.py").is_file():
        parser.error(f"argument --nanogpt: {args.nanogpt!r} has no model.py: give the folder of a nanoGPT "
                     "checkout (git clone https://github.com/karpathy/nanoGPT)")
    args.nanogpt_commit = _commit(Path(args.nanogpt))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    nanogpt = load_nanogpt(args.nanogpt)
    tokenizer, train_ids, _ = shakespeare_data()
    batch_fn = random_windows(train_ids, SHAPE["block_size"], BATCH, seed=args.seed)
    before, rows = torch.get_num_threads(), []
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            steps = {"book": book_step(tokenizer.vocab_size, args.seed),
                     "nanogpt": nanogpt_step(nanogpt, tokenizer.vocab_size, args.seed)}
            found = interleave(steps, batch_fn, args.warmup, args.pairs)
            rows.append(summarise(found, threads, args.loss_every))
    finally:
        torch.set_num_threads(before)
    result = {**record.provenance(NAME, argv, machine, load_start, started),
              "settings": {**SHAPE, "batch_size": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY,
                           "betas": list(BETAS), "grad_clip": GRAD_CLIP, "warmup": args.warmup,
                           "pairs": args.pairs, "seed": args.seed, "nanogpt_commit": args.nanogpt_commit},
              "results": rows, "tables": [table(rows, args)]}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
