"""Every notebook held under the whole robustness matrix, as its code is now.

``benchmarks/results/robustness.json`` records each notebook executed under every combination of
``benchmarks.robustness.COMBINATIONS`` (other seeds, thread counts, CPU kernels). A notebook whose code
changed since its record, or whose record has a failure or lacks a combination, fails here: a chapter change
lands only after ``make robustness`` showed it holds on the machines the matrix plays.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import notebooks as bench_notebooks
from benchmarks import robustness
from utils import costs

NOTEBOOKS = bench_notebooks.notebooks(())
RECORD = robustness.load_record()


def _name(path):
    return str(path.relative_to(robustness.ROOT))


def test_the_record_names_the_matrix_it_ran():
    assert RECORD.get("combinations") == [{"name": c.name, "env": c.env} for c in robustness.COMBINATIONS], \
        "the record was made with another matrix: run make robustness with --all"
    axes = {key: {c.env.get(key) for c in robustness.COMBINATIONS} for key in
            ("BOOK_SEED", "BOOK_THREADS", "ATEN_CPU_CAPABILITY", "TF_ENABLE_ONEDNN_OPTS")}
    assert {"1", "2"} <= axes["BOOK_SEED"] and {"1", "2", "4"} <= axes["BOOK_THREADS"]
    assert {"avx2", "default", None} <= axes["ATEN_CPU_CAPABILITY"] and "0" in axes["TF_ENABLE_ONEDNN_OPTS"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_notebook_held_under_every_combination_with_its_current_code(path):
    entry = RECORD["notebooks"].get(_name(path))
    assert entry is not None, f"{_name(path)} has no robustness record: run make robustness"
    digest = costs.code_digest(path)
    assert entry["code_sha256"] == digest, \
        f"{_name(path)} changed since its robustness record: run make robustness (it re-runs what changed)"
    for combination in robustness.COMBINATIONS:
        row = entry["runs"].get(combination.name)
        assert row is not None, f"{_name(path)} was not run under {combination.name}: run make robustness"
        assert row["code_sha256"] == digest
        assert row["ok"], (f"{_name(path)} fails under {combination.name} ({combination.describe()}): "
                           f"cell {row['cell']} ({row['cell_source']}): {row['error']}")


def _chooses_threads(notebook: str) -> bool:
    """Whether the notebook sets its thread count through ``env.threads`` (the others keep torch's default,
    one thread per core, which ``BOOK_THREADS`` does not change)."""
    return "env.threads(" in (robustness.ROOT / notebook).read_text(encoding="utf-8")


def test_each_combination_really_ran_its_threads_and_kernel():
    """The perturbation reached the kernel: torch reported the CPU kernel it was given and, in every notebook
    that chooses its thread count, the thread count it was given."""
    for notebook, entry in RECORD["notebooks"].items():
        chooses = _chooses_threads(notebook)
        for name, row in entry["runs"].items():
            combination = next(c for c in robustness.COMBINATIONS if c.name == name)
            if row.get("torch_threads") is None:  # a notebook that never imported torch
                continue
            threads = combination.env.get("BOOK_THREADS")
            kernel = combination.env.get("ATEN_CPU_CAPABILITY")
            if kernel is not None:
                assert row["torch_cpu_capability"].lower() == kernel, (name, row["notebook"])
            if threads is not None and chooses and row["notebook"] != "book/05_pretraining.ipynb":
                assert row["torch_threads"] == int(threads), (name, row["notebook"], row["torch_threads"])


def test_due_selects_changed_and_missing_pairs(tmp_path):
    path = NOTEBOOKS[0]
    current = {"notebooks": {_name(path): {"code_sha256": costs.code_digest(path), "runs": {
        c.name: {"code_sha256": costs.code_digest(path), "ok": True} for c in robustness.COMBINATIONS[:-1]}}}}
    assert robustness.due([path], current, everything=False) == [(path, robustness.COMBINATIONS[-1])]
    assert len(robustness.due([path], current, everything=True)) == len(robustness.COMBINATIONS)
    stale = json.loads(json.dumps(current))
    for row in stale["notebooks"][_name(path)]["runs"].values():
        row["code_sha256"] = "0" * 16
    assert len(robustness.due([path], stale, everything=False)) == len(robustness.COMBINATIONS)
    failed = json.loads(json.dumps(current))
    next(iter(failed["notebooks"][_name(path)]["runs"].values()))["ok"] = False
    assert len(robustness.due([path], failed, everything=False)) == 2  # the failed row is tried again


def test_merge_drops_rows_made_on_other_code():
    rec = {"notebooks": {"book/x.ipynb": {"code_sha256": "old", "runs": {"a": {"code_sha256": "old"}}}}}
    robustness.merge(rec, {"notebook": "book/x.ipynb", "combination": "b", "code_sha256": "new"})
    assert rec["notebooks"]["book/x.ipynb"] == {"code_sha256": "new", "runs": {
        "b": {"notebook": "book/x.ipynb", "combination": "b", "code_sha256": "new"}}}
