"""The benchmarks run and record what they should (in a tiny configuration; no speed is asserted)."""

from __future__ import annotations

import json
import math
import statistics

import nbformat
import pytest
import torch

from benchmarks import logging_overhead, record, report, scaling, train_throughput
from benchmarks import notebooks as bench_notebooks
from utils import costs

TINY = ["--configs", "tiny", "--threads", "1", "--warmup", "1", "--steps", "3", "--repeats", "2",
        "--profile-steps", "2", "--peak-size", "256"]


@pytest.fixture(scope="module")
def throughput(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    returned = train_throughput.main([*TINY, "--out-dir", str(out_dir)])
    assert torch.get_num_threads() == threads, "the benchmark must restore the caller's thread count"
    path = out_dir / "train_throughput.json"
    return json.loads(path.read_text()), returned, out_dir


def test_throughput_json_records_machine_command_and_date(throughput):
    result, returned, _ = throughput
    assert result == json.loads(json.dumps(returned))  # the file is what main returned
    machine = result["machine"]
    assert machine["cpu"] and machine["cpus_usable"] >= 1 and machine["torch"] == torch.__version__
    for key in ("load_average_start", "load_average_end"):
        assert len(machine[key]) in (0, 3) and all(value >= 0 for value in machine[key])
    assert result["command"].startswith("python -m benchmarks.train_throughput --configs tiny")
    assert result["date"].endswith("+00:00")


def test_throughput_numbers_are_positive_and_mfu_plausible(throughput):
    result, _, _ = throughput
    (row,) = result["results"]
    assert (row["config"], row["threads"], row["n_layer"]) == ("tiny", 1, 1)
    assert row["steps_timed"] == 6 and row["rounds"] == 2  # 3 timed steps in each of 2 rounds
    samples = row["step_s_samples"]  # every timed step: the statistics recomputed from them
    assert len(samples) == 6 and len(set(samples)) == 6 and all(t > 0 for t in samples)
    q1, median, q3 = statistics.quantiles(samples, n=4)
    assert (row["step_s_q1"], row["step_s_median"], row["step_s_q3"]) == (q1, median, q3)
    assert row["round_medians_s"] == [statistics.median(samples[:3]), statistics.median(samples[3:])]
    for key in ("step_s_median", "tokens_per_s", "model_gflops_per_s", "peak_gflops", "flops_per_token"):
        assert row[key] > 0 and math.isfinite(row[key]), key
    assert 0 < row["mfu"] < 1.5
    tokens = row["batch_size"] * row["block_size"]
    assert row["tokens_per_s"] == pytest.approx(tokens / row["step_s_median"])
    assert row["mfu"] == pytest.approx(row["tokens_per_s"] * row["flops_per_token"] / (row["peak_gflops"] * 1e9))
    assert math.isfinite(row["last_loss"]) and row["last_loss"] > 0


def test_throughput_profile_lists_top_operators_by_self_time(throughput):
    profile = throughput[0]["profile"]
    operators = profile["top_operators"]
    assert 1 <= len(operators) <= 10
    times = [op["self_cpu_ms_per_step"] for op in operators]
    assert times == sorted(times, reverse=True) and times[0] > 0
    assert sum(op["share_of_self_cpu"] for op in operators) <= 1 + 1e-9


def test_flops_formula_is_nanogpts_at_its_recipe():
    """6N + 12·L·H·Q·T with N = 795,904 non-embedding parameters of nanoGPT's bias-free CPU model."""
    config = train_throughput.CONFIGS[train_throughput.REFERENCE].model
    assert train_throughput.flops_per_token(config) == 6 * 795_904 + 12 * 4 * 4 * 32 * 64


def test_report_puts_the_tables_into_the_readme(throughput, tmp_path):
    _, _, out_dir = throughput
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{report.BEGIN}\nold results\n{report.END}\n\nafter\n")
    main_readme = tmp_path / "MAIN.md"
    main_readme.write_text(f"# book\n\n{report.NOTEBOOKS_BEGIN}\nold\n{report.NOTEBOOKS_END}\n")
    report.main(["--results-dir", str(out_dir), "--readme", str(readme), "--main-readme", str(main_readme)])
    assert main_readme.read_text() == (f"# book\n\n{report.NOTEBOOKS_BEGIN}\n\nNot measured yet: run "
                                       f"`make bench-notebooks`.\n\n{report.NOTEBOOKS_END}\n")
    text = readme.read_text()
    assert "old results" not in text and text.startswith("# title") and text.endswith("after\n")
    assert "### train_throughput" in text and "| tiny | 1/2/32 | 16 | 4 | 1 |" in text
    assert "Where the time goes" in text


def test_report_refuses_a_readme_without_markers_and_foreign_json(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        report.replace_section("no markers here", "x")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by a benchmark"):
        report.load_results(tmp_path)


def test_table_rejects_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        record.table("t", ["a", "b", "c"], [["1", "2"]])


def test_throughput_rounds_reverse_the_order_and_keep_every_step(monkeypatch):
    """Round 0 runs the (configuration, threads) pairs in order, round 1 in reverse, and each row gathers
    the timed steps of all its rounds."""
    order = []

    def fake_time_steps(config, train_ids, warmup, steps, max_seconds):
        order.append((config.name, torch.get_num_threads()))
        return {"step_s_samples": [0.1 * len(order)], "last_loss": 1.0}

    monkeypatch.setattr(train_throughput, "time_steps", fake_time_steps)
    monkeypatch.setattr(train_throughput, "matmul_peak", lambda threads, size: torch.set_num_threads(threads)
                        or 50.0)
    args = train_throughput._arguments(["--configs", "tiny,nanogpt-cpu", "--threads", "1", "--repeats", "2"])
    threads = torch.get_num_threads()
    rows = train_throughput.measure_all([train_throughput.CONFIGS["tiny"], train_throughput.CONFIGS["nanogpt-cpu"]],
                                        [1], args, torch.arange(1000))
    torch.set_num_threads(threads)
    assert [name for name, _ in order] == ["tiny", "nanogpt-cpu", "nanogpt-cpu", "tiny"]
    assert rows[0]["step_s_samples"] == pytest.approx([0.1, 0.4]) and rows[0]["rounds"] == 2


# --------------------------------------------------------------------------------------------- the others


@pytest.fixture(scope="module")
def logging_result(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("logging")
    threads = torch.get_num_threads()
    result = logging_overhead.main(["--steps", "2", "--rounds", "3", "--log-step-calls", "20", "--scalars", "50",
                                    "--histograms", "2", "--values", "1000", "--out-dir", str(out_dir),
                                    "--writers", "tensorboardX,torch.utils.tensorboard"])
    assert torch.get_num_threads() == threads
    return result, out_dir


def test_logging_overhead_compares_the_three_variants_against_no_logging(logging_result):
    result, out_dir = logging_result
    assert json.loads((out_dir / "logging_overhead.json").read_text()) == json.loads(json.dumps(result))
    variants = {row["variant"]: row for row in result["loop"]}
    assert list(variants) == list(logging_overhead.VARIANTS)
    assert all(row["ms_per_step"] > 0 and row["cpu_ms_per_step"] > 0 for row in variants.values())
    base = variants["no logging"]
    for name, row in variants.items():  # each statistic recomputed from the recorded rounds, round by round
        wall, cpu = row["step_s_rounds"], row["cpu_s_rounds"]
        assert row["rounds"] == len(wall) == len(cpu) == 3 and len(set(wall)) == 3, name
        assert row["ms_per_step"] == pytest.approx(statistics.median(wall) * 1e3, rel=1e-12), name
        assert row["cpu_ms_per_step"] == pytest.approx(statistics.median(cpu) * 1e3, rel=1e-12), name
        ratios = [w / b - 1 for w, b in zip(wall, base["step_s_rounds"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
        assert [row["overhead_q1"], row["overhead"], row["overhead_q3"]] == pytest.approx(quartiles, abs=1e-12)
        cpu_ratios = [c / b - 1 for c, b in zip(cpu, base["cpu_s_rounds"], strict=True)]
        assert row["cpu_overhead"] == pytest.approx(statistics.median(cpu_ratios), abs=1e-12), name
    direct = result["log_step"]
    assert direct["share_of_step"] == pytest.approx(direct["log_step_ms"] / direct["step_ms"])
    assert direct["cpu_share_of_step"] == pytest.approx(direct["log_step_cpu_ms"] / direct["step_ms"])
    assert direct["one_add_scalar_per_tag_ms"] > 0
    assert [row["writer"] for row in result["writers"]] == ["tensorboardX", "torch.utils.tensorboard"]
    assert all(row["scalars_per_s"] > 0 and row["histograms_per_s"] > 0 for row in result["writers"])
    text = report.section(report.load_results(out_dir))
    assert "### logging_overhead" in text and "| tensorboardX, default cadence |" in text


def write_notebook(path, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_notebook_benchmark_measures_time_memory_and_failures(tmp_path):
    big = write_notebook(tmp_path / "big.ipynb",
                         "import time\nblock = bytearray(300 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n"
                         "time.sleep(1.0)\nsum(range(10**7))")
    broken = write_notebook(tmp_path / "broken.ipynb", "raise ValueError('on purpose')")
    big_row, broken_row = bench_notebooks.run([big, broken], timeout=120)
    assert big_row["ok"] and big_row["wall_s"] >= 1.0 and big_row["cpu_s"] > 0
    assert big_row["peak_rss_mib"] >= 300  # the kernel held the block for a second
    assert not broken_row["ok"] and "on purpose" in broken_row["error"]
    table = bench_notebooks.table([big_row, broken_row])
    assert table["rows"][1][-1].startswith("failed: ")


def test_notebook_cost_line_reads_the_result_or_says_it_is_missing(tmp_path):
    assert "not measured yet" in costs.notebook_cost("book/09_scaling", {})
    row = {"notebook": "book/09_scaling.ipynb", "date": "2026-01-02T03:04:05+00:00", "wall_s": 61.2,
           "cpu_s": 80.4, "peak_rss_mib": 1000.0, "ok": True, "error": None}
    results = {"notebooks": {"results": [row], "machine": {"cpus_usable": 2, "cpu": "AMD EPYC"}}}
    line = costs.notebook_cost("book/09_scaling", results)
    assert "61 s wall, 80 s of CPU time and 1,000 MiB" in line and "2026-01-02" in line
    assert costs.load_results(tmp_path / "nothing here") == {}
    row["ok"], row["error"] = False, "CellExecutionError: on purpose"
    assert "failed: CellExecutionError: on purpose" in costs.notebook_cost("book/09_scaling", results)


def test_notebook_cost_line_says_when_the_code_changed_since(tmp_path):
    (tmp_path / "book").mkdir()
    notebook = write_notebook(tmp_path / "book" / "ch.ipynb", "x = 1")
    row = {"notebook": "book/ch.ipynb", "date": "2026-01-02T03:04:05+00:00", "wall_s": 1.0, "cpu_s": 1.0,
           "peak_rss_mib": 10.0, "ok": True, "error": None, "code_sha256": costs.code_digest(notebook)}
    results = {"notebooks": {"results": [row], "machine": {"cpus_usable": 2, "cpu": "AMD EPYC"}}}
    assert "changed" not in costs.notebook_cost("book/ch", results, root=tmp_path)
    nb = nbformat.read(notebook, 4)
    nb.cells.append(nbformat.v4.new_markdown_cell("prose does not change the cost"))
    nbformat.write(nb, notebook)
    assert "changed" not in costs.notebook_cost("book/ch", results, root=tmp_path)
    write_notebook(notebook, "x = 2")
    assert "Its code has changed since" in costs.notebook_cost("book/ch", results, root=tmp_path)


@pytest.mark.slow
def test_scaling_memory_row_lies_within_the_arithmetic_bounds():
    row = scaling.memory_row("tiny")
    assert row["measured_activations"] == row["predicted_activations"]
    assert row["lower_bound"] <= row["measured_peak"] <= row["predicted_total"]


@pytest.mark.slow
def test_scaling_launches_two_ranks_and_reports_their_throughput(tmp_path):
    row = scaling.throughput("tiny", 2, 1, 3, tmp_path)
    assert (row["ranks"], row["threads_per_rank"], row["steps"]) == (2, 1, 3)
    assert row["tokens_per_s"] > 0 and math.isfinite(row["tokens_per_s"])


def test_logging_overhead_is_paired_round_by_round():
    # round 2 ran under load for both variants: paired ratios ignore it, a ratio of medians would not
    paired = logging_overhead._paired([1.01, 2.02, 1.03], [1.00, 2.00, 1.00])
    assert paired["overhead"] == pytest.approx(0.01)
    assert paired["overhead_q1"] == pytest.approx(0.01) and paired["overhead_q3"] == pytest.approx(0.02)


def test_the_committed_notebook_costs_cover_every_notebook_and_each_ran():
    """The README's table and each chapter's cost line read this file: a notebook missing from it, or one
    whose measurement failed, would be a chapter without its figures."""
    rows = {row["notebook"]: row for row in costs.load_results()["notebooks"]["results"]}
    expected = {str(path.relative_to(bench_notebooks.ROOT)) for path in bench_notebooks.notebooks(())}
    assert set(rows) == expected
    assert all(row["ok"] and row["wall_s"] > 0 and row["peak_rss_mib"] > 0 for row in rows.values())
    assert all(len(row["code_sha256"]) == 16 for row in rows.values())


# ------------------------------------------------------------------------------------------- vs nanoGPT

#: A stand-in for a nanoGPT checkout's model.py with nanoGPT's interface (GPTConfig fields, GPT(config),
#: forward(idx, targets) -> (logits, loss), configure_optimizers printing as nanoGPT's does), built on the
#: book's GPT, so the two sides must agree to rounding.
FAKE_NANOGPT = '''
from dataclasses import dataclass

import torch

from utils.gpt import GPT as BookGPT
from utils.gpt import GPTConfig as BookConfig


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT(BookGPT):
    def __init__(self, config):
        super().__init__(BookConfig(**vars(config)))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        print("num decayed parameter tensors: ...")
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
'''


@pytest.fixture(scope="module")
def versus(tmp_path_factory):
    from benchmarks import vs_nanogpt

    checkout = tmp_path_factory.mktemp("nanogpt")
    (checkout / "model.py").write_text(FAKE_NANOGPT)
    out_dir = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    vs_nanogpt.main(["--nanogpt", str(checkout), "--threads", "1", "--warmup", "1", "--pairs", "4",
                     "--loss-every", "2", "--out-dir", str(out_dir)])
    assert torch.get_num_threads() == threads, "the benchmark must restore the caller's thread count"
    return json.loads((out_dir / "vs_nanogpt.json").read_text())


def test_vs_nanogpt_times_both_and_compares_their_losses(versus):
    (row,) = versus["results"]
    assert row["threads"] == 1 and row["pairs"] == 4
    for side in ("book_ms", "nanogpt_ms", "speed_ratio"):
        q1, median, q3 = row[side]
        assert 0 < q1 <= median <= q3, side
    assert len(row["samples"]["book_s"]) == len(row["samples"]["nanogpt_s"]) == 4
    assert row["loss_steps"] == [0, 2, 4]  # 1 warm-up + 4 pairs = 5 steps each, every 2nd and the last
    # the stand-in is the book's model: same seed, same batches, the same losses to rounding
    assert row["largest_loss_difference"] < 1e-4
    assert all(math.isfinite(loss) for loss in row["book_loss"] + row["nanogpt_loss"])
    assert "nanoGPT checkout" in " ".join(versus["tables"][0]["notes"])


def test_vs_nanogpt_ratio_is_nanogpts_time_over_the_books_pair_by_pair():
    from benchmarks import vs_nanogpt

    found = {"book": {"times": [1.0, 2.0, 1.0, 2.0], "losses": [3.0, 2.0, 1.0, 0.5]},
             "nanogpt": {"times": [2.0, 2.0, 3.0, 2.0], "losses": [3.0, 2.5, 1.0, 0.5]}}
    row = vs_nanogpt.summarise(found, threads=2, loss_every=2)
    assert row["speed_ratio"][1] == pytest.approx(statistics.median([2.0, 1.0, 3.0, 1.0]))
    assert row["largest_loss_difference"] == pytest.approx(0.5)
    assert row["loss_steps"] == [0, 2, 3]


def test_vs_nanogpt_alternates_the_order_and_gives_both_the_same_batch():
    from benchmarks import vs_nanogpt

    calls = []

    def side(name):
        def step(x, y):
            calls.append((name, int(x)))
            return 0.0
        return step

    vs_nanogpt.interleave({"a": side("a"), "b": side("b")}, lambda i: (torch.tensor(i), None), warmup=1,
                          pairs=3)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]


def test_communication_tables_give_bus_bandwidth_by_the_ring_formula_and_the_step_against_its_parts():
    from benchmarks import communication

    sizes, values = [16, 4096], 4096
    rounds = [{"bandwidth": {2: {16: 1e-4 * k, 4096: 2e-4 * k}, 4: {16: 3e-4 * k, 4096: 4e-4 * k}},
               "step_s": {"2x24": 0.1 * k, "1x12": 0.06 * k}} for k in (1, 2, 3)]
    summary = communication.summarize(rounds, sizes, values)
    row = next(r for r in summary["allreduce"] if (r["ranks"], r["values"]) == (4, 4096))
    assert row["seconds"][1] == 8e-4 and row["bytes"] == 16384
    assert row["bus_gb_s"] == pytest.approx(1.5 * row["algorithm_gb_s"])  # 2(N-1)/N at N = 4
    assert summary["step_s"]["2x24"][1] == pytest.approx(0.2)
    assert summary["gradient_allreduce_s"][1] == pytest.approx(4e-4)
    parts = communication.tables(summary)[1]
    assert parts["rows"][-1] == ["compute + communication", f"{(0.12 + 4e-4) * 1e3:.2f}"]


def test_batch_scaling_groups_seeds_per_rule_and_rank_count():
    from benchmarks import batch_scaling

    rows = [{"rule": "sqrt", "ranks": 4, "final_loss": loss} for loss in (2.0, 2.2, 2.1)]
    rows += [{"rule": "linear", "ranks": 4, "final_loss": None}]  # diverged: counted as infinite
    groups = batch_scaling.spread(rows)
    assert groups["sqrt", 4] == {"mean": pytest.approx(2.1), "low": 2.0, "high": 2.2, "seeds": 3}
    assert groups["linear", 4]["mean"] == float("inf")
    assert batch_scaling.RULES["linear, warm-up x W"](4) == (4 * batch_scaling.BASE_LR, 4 * batch_scaling.BASE_WARMUP)
