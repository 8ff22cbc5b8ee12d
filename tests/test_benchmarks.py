"""The benchmarks run and record what they should (in a tiny configuration; no speed is asserted)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import record, report, train_throughput

TINY = ["--configs", "tiny", "--threads", "1", "--warmup", "1", "--steps", "3", "--profile-steps", "2",
        "--peak-size", "256"]


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
    assert row["steps_timed"] == 3 and row["steps_warmup"] == 1
    assert row["step_s_min"] <= row["step_s_median"]
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
    config = train_throughput.CONFIGS[train_throughput.REFERENCE].gpt()
    assert train_throughput.flops_per_token(config) == 6 * 795_904 + 12 * 4 * 4 * 32 * 64


def test_report_puts_the_tables_into_the_readme(throughput, tmp_path):
    _, _, out_dir = throughput
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{report.BEGIN}\nold results\n{report.END}\n\nafter\n")
    report.main(["--results-dir", str(out_dir), "--readme", str(readme)])
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


def test_nanogpt_comparison_takes_the_books_fastest_thread_count():
    rows = [{"config": train_throughput.REFERENCE, "threads": threads, "tokens_per_s": rate, "mfu": mfu}
            for threads, rate, mfu in ((1, 9000.0, 0.6), (2, 3000.0, 0.1))]
    rows.append({"config": "medium", "threads": 1, "tokens_per_s": 1e9, "mfu": 1.0})
    comparison = train_throughput.compare_with_nanogpt(rows)
    assert comparison["book_threads"] == 1
    assert comparison["tokens_per_s_ratio"] == pytest.approx(9000 / train_throughput.NANOGPT_HERE["tokens_per_s"])
    assert train_throughput.compare_with_nanogpt(rows[2:]) is None
