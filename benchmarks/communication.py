"""What data parallelism costs in communication on this machine: gloo's all-reduce on the loopback
interface at 2 and 4 ranks, against the ring's 2(N-1)/N bytes per rank, and a DDP step against its compute
plus its communication.

Bandwidth: ``utils.comm --bandwidth`` launched by torchrun, the median time of ``all_reduce`` on float32
tensors from 4 KiB to 64 MiB. Two figures per size, as nccl-tests reports them: the *algorithm* bandwidth,
bytes of the tensor over the time, and the *bus* bandwidth, the bytes each rank really sends
(``comm.ring_bytes_per_rank``, 2(N-1)/N of the tensor) over the time: what a ring all-reduce asks of each
link, comparable across rank counts.

Step: the DDP step of nanoGPT's CPU size (benchmarks.scaling's "nanogpt-cpu", 24 windows of 64 tokens) on
2 ranks x 1 thread; its compute, 1 rank x 1 thread on the 12 windows each rank has; its communication,
one all-reduce of every gradient (the model's parameter count in float32) at 2 ranks. Each launch is
repeated ``--rounds`` times, the order reversed every round; medians and quartiles over the rounds.

    python -m benchmarks.communication                # about 4 minutes
    python -m benchmarks.communication --rounds 1 --steps 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import record
from benchmarks.scaling import CONFIGS, throughput
from utils import comm, torchrun, validate
from utils.gpt import GPT

NAME = "communication"
RANKS = (2, 4)
STEP_CONFIG = "nanogpt-cpu"


def gradient_values() -> int:
    """Values all-reduced per update of the step measured: every parameter of the model once."""
    return sum(p.numel() for p in GPT(CONFIGS[STEP_CONFIG][0]).parameters())


def bandwidth(ranks: int, sizes: Sequence[int], folder: Path) -> dict[int, float]:
    """``{size: median seconds}`` of one launch of ``utils.comm --bandwidth`` on ``ranks`` ranks."""
    out = folder / f"bandwidth-{ranks}.json"
    torchrun.launch_module(ranks, "utils.comm", ["--bandwidth", "--out", str(out),
                                                 "--sizes", ",".join(map(str, sizes))], timeout=1800)
    return {int(size): seconds for size, seconds in json.loads(out.read_text())["seconds"].items()}


def one_round(round_index: int, steps: int, sizes: Sequence[int], folder: Path) -> dict[str, Any]:
    """Every launch once, in reverse order on odd rounds."""
    _, batch = CONFIGS[STEP_CONFIG]
    jobs = [("bandwidth", r) for r in RANKS] + [("step", (2, batch)), ("step", (1, batch // 2))]
    measured: dict[str, Any] = {"bandwidth": {}, "step_s": {}}
    for kind, what in record.round_order(jobs, round_index):
        if kind == "bandwidth":
            measured["bandwidth"][what] = bandwidth(what, sizes, folder)
        else:
            ranks, rows = what
            row = throughput(STEP_CONFIG, ranks, 1, steps, folder, global_batch=rows)
            tokens = rows * row["block_size"]
            measured["step_s"][f"{ranks}x{rows}"] = tokens / row["tokens_per_s"]
    return measured


def summarize(rounds: list[dict[str, Any]], sizes: Sequence[int], values: int) -> dict[str, Any]:
    """Quartiles over the rounds: all-reduce seconds and bandwidths per (ranks, size), and the step."""
    rows = []
    for ranks in RANKS:
        for size in sizes:
            q1, mid, q3 = record.quartiles([r["bandwidth"][ranks][size] for r in rounds])
            nbytes = 4 * size
            rows.append({"ranks": ranks, "values": size, "bytes": nbytes, "seconds": [q1, mid, q3],
                         "algorithm_gb_s": nbytes / mid / 1e9,
                         "bus_gb_s": comm.ring_bytes_per_rank(nbytes, ranks) / mid / 1e9})
    _, batch = CONFIGS[STEP_CONFIG]
    step = {name: list(record.quartiles([r["step_s"][name] for r in rounds]))
            for name in (f"2x{batch}", f"1x{batch // 2}")}
    comm_s = record.quartiles([r["bandwidth"][2][values] for r in rounds])
    return {"allreduce": rows, "step_s": step, "gradient_values": values, "gradient_allreduce_s": list(comm_s)}


def tables(summary: dict[str, Any]) -> list[dict[str, Any]]:
    ms = lambda q: f"{q[1] * 1e3:.2f} ({q[0] * 1e3:.2f}-{q[2] * 1e3:.2f})"  # noqa: E731
    bandwidths = record.table(
        "gloo all-reduce on the loopback interface (float32, median of 10 calls per round)",
        ["ranks", "tensor", "ms (quartiles over rounds)", "algorithm GB/s", "bus GB/s"],
        [[row["ranks"], f"{row['bytes'] / 2**10:,.0f} KiB", ms(row["seconds"]),
          f"{row['algorithm_gb_s']:.3f}", f"{row['bus_gb_s']:.3f}"] for row in summary["allreduce"]],
        ["Bus bandwidth = 2(N-1)/N x tensor bytes / time: the bytes each rank of a ring sends. Small tensors "
         "measure latency, large ones bandwidth; the ranks' processes share this machine's cores."])
    _, batch = CONFIGS[STEP_CONFIG]
    step, compute = summary["step_s"][f"2x{batch}"], summary["step_s"][f"1x{batch // 2}"]
    sent = summary["gradient_allreduce_s"]
    parts = record.table(
        f"One DDP step of {STEP_CONFIG} ({batch} windows) on 2 ranks x 1 thread, against its parts",
        ["what", "ms (quartiles over rounds)"],
        [["DDP step, 2 ranks", ms(step)], [f"compute: 1 rank, its {batch // 2} windows", ms(compute)],
         [f"communication: all-reduce of {summary['gradient_values']:,} float32 at 2 ranks", ms(sent)],
         ["compute + communication", f"{(compute[1] + sent[1]) * 1e3:.2f}"]],
        ["DDP overlaps the all-reduce of each bucket with the backward pass of earlier layers, so the step "
         "can take less than compute + communication; on two cores the gloo threads share the cores with "
         "the ranks' compute."])
    return [bandwidths, parts]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.communication",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=validate.whole_number(1), default=3)
    parser.add_argument("--steps", type=validate.whole_number(2), default=30, help=">= 2: the first is not timed")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    values = gradient_values()
    sizes = sorted({*comm.SIZES, values})
    with tempfile.TemporaryDirectory() as folder:
        rounds = [one_round(i, args.steps, sizes, Path(folder)) for i in range(args.rounds)]
    summary = summarize(rounds, sizes, values)
    result = {**record.provenance(NAME, argv, machine, load_start, started), "rounds": args.rounds,
              "steps": args.steps, **summary, "tables": tables(summary)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
