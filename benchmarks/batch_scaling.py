"""What changes as the global batch grows with the ranks: the learning rate and the warm-up, measured on the
book's GPT (chapter 9's: 2 layers, 2 heads, 64-dim, context 32) with DDP at 1, 2 and 4 ranks.

Two questions, each answered by real torchrun launches of ``utils.distributed``:

- **The same global batch** (16 windows) on 1, 2 and 4 ranks: the same updates, so the same losses (to
  float rounding): nothing to change. One seed.
- **The same batch per rank** (8 windows), so a global batch of 8, 16, 32: each rule for the peak learning
  rate, from the 1-rank run's 3e-3: the same; times sqrt(W); times W (Goyal et al., 2017); times W with a
  warm-up W times longer (their gradual warm-up). Every rule at every W over ``--seeds`` seeds; the
  figure is each run's final loss, the mean of its last 20 updates' losses (each the loss of the whole
  global batch, before its update). And 1 rank trained 4 times longer at the 1-rank settings: the tokens
  the 4-rank runs see, one rank's way.

    python -m benchmarks.batch_scaling                 # about 10 minutes
    python -m benchmarks.batch_scaling --seeds 0 --steps 30
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import record
from utils import distributed, torchrun, validate

NAME = "batch_scaling"
WORLD_SIZES = (1, 2, 4)
PER_RANK = 8
SAME_GLOBAL = 16
BASE_LR, BASE_WARMUP = 3e-3, 5
#: name: (peak learning rate, warm-up steps) at W ranks
RULES = {"same": lambda w: (BASE_LR, BASE_WARMUP), "sqrt": lambda w: (BASE_LR * math.sqrt(w), BASE_WARMUP),
         "linear": lambda w: (BASE_LR * w, BASE_WARMUP),
         "linear, warm-up x W": lambda w: (BASE_LR * w, BASE_WARMUP * w)}
TAIL = 20  # the final loss: the mean of the last TAIL updates' losses


def run(ranks: int, global_batch: int, lr: float, warmup: int, steps: int, seed: int, folder: Path) -> dict:
    """One launch of ``utils.distributed`` (DDP); its losses and final loss."""
    out = folder / f"{ranks}-{global_batch}-{lr:g}-{warmup}-{steps}-{seed}.json"
    config = distributed.DistConfig(global_batch=global_batch, seed=seed, mode="ddp",
                                    summary_out=str(out)).with_training(
        max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=warmup)
    torchrun.launch(ranks, config, timeout=3600)
    losses = [loss for _, loss in sorted((int(s), v) for s, v in json.loads(out.read_text())["losses"].items())]
    final = statistics.fmean(losses[-TAIL:])
    return {"ranks": ranks, "global_batch": global_batch, "lr": lr, "warmup": warmup, "steps": steps,
            "seed": seed, "final_loss": final if math.isfinite(final) else None, "first_loss": losses[0]}


def same_global(steps: int, folder: Path) -> list[dict[str, Any]]:
    return [run(w, SAME_GLOBAL, BASE_LR, BASE_WARMUP, steps, 0, folder) for w in WORLD_SIZES]


def same_per_rank(steps: int, seeds: Sequence[int], folder: Path) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for w in WORLD_SIZES:
            for rule, settings in RULES.items():
                if w == 1 and rule != "same":
                    continue  # at one rank every rule is the 1-rank run
                lr, warmup = settings(w)
                rows.append({"rule": rule, **run(w, PER_RANK * w, lr, warmup, steps, seed, folder)})
        longer = run(1, PER_RANK, BASE_LR, BASE_WARMUP, steps * max(WORLD_SIZES), seed, folder)
        rows.append({"rule": f"1 rank, {max(WORLD_SIZES)}x the steps", **longer})
    return rows


def spread(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (rule, ranks): the mean final loss over the seeds, its lowest and highest."""
    groups: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        loss = row["final_loss"] if row["final_loss"] is not None else math.inf
        groups.setdefault((row["rule"], row["ranks"]), []).append(loss)
    return {key: {"mean": statistics.fmean(v), "low": min(v), "high": max(v), "seeds": len(v)}
            for key, v in groups.items()}


def tables(global_rows: list[dict[str, Any]], rank_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = global_rows[0]["final_loss"]
    same = record.table(
        f"The same global batch ({SAME_GLOBAL} windows) on 1, 2, 4 ranks: DDP, peak lr {BASE_LR:g}",
        ["ranks", "rows per rank", "final loss", "difference from 1 rank"],
        [[r["ranks"], SAME_GLOBAL // r["ranks"], f"{r['final_loss']:.5f}", f"{r['final_loss'] - first:.1e}"]
         for r in global_rows])
    groups = spread(rank_rows)
    by_rank = record.table(
        f"The same batch per rank ({PER_RANK} windows): final loss by learning-rate rule, mean (lowest-highest) "
        "over seeds",
        ["rule", "ranks", "global batch", "peak lr", "warm-up", "final loss"],
        [[rule, w, PER_RANK * w if "steps" not in rule else PER_RANK,
          f"{_settings(rule, w)[0]:g}", _settings(rule, w)[1],
          f"{g['mean']:.4f} ({g['low']:.4f}-{g['high']:.4f})"] for (rule, w), g in groups.items()],
        [f"Final loss: the mean of the last {TAIL} updates' losses. Goyal et al. (2017) scale the rate "
         "linearly with the batch and warm it up gradually; under Adam-type optimizers a square-root rule "
         "is often used instead."])
    return [same, by_rank]


def _settings(rule: str, w: int) -> tuple[float, int]:
    return RULES[rule](w) if rule in RULES else (BASE_LR, BASE_WARMUP)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_scaling",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=validate.whole_numbers(0), default=[0, 1, 2], help="comma-separated")
    parser.add_argument("--steps", type=validate.whole_number(TAIL + 1), default=300)
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        global_rows = same_global(args.steps, Path(folder))
        rank_rows = same_per_rank(args.steps, args.seeds, Path(folder))
    result = {**record.provenance(NAME, argv, machine, load_start, started), "steps": args.steps,
              "seeds": args.seeds, "same_global": global_rows, "same_per_rank": rank_rows,
              "tables": tables(global_rows, rank_rows)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
