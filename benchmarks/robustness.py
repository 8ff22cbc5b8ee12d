"""Does every notebook hold on other machines? Each notebook of ``book/`` and ``labs/`` executed under a
matrix of perturbations that play another machine: other seeds (``BOOK_SEED``), other thread counts
(``BOOK_THREADS``), other CPU kernels (``ATEN_CPU_CAPABILITY``; ``TF_ENABLE_ONEDNN_OPTS=0`` for TensorFlow).

Each execution is recorded with pass or the failing cell and its error, and with the values of the
notebook's top-level numbers (ints, floats, bools left in its namespace: the numbers its prose states), so
that their spread across the matrix is visible. Results go to ``benchmarks/results/robustness.json`` with
each notebook's code digest; only notebooks whose code changed since their record (or that lack a
combination) run again, unless ``--all``. ``tests/test_robustness_record.py`` fails when a notebook's record
does not match its code or records a failure: a chapter change lands after it held under the whole matrix.

    python -m benchmarks.robustness                      # what changed since its record (make robustness)
    python -m benchmarks.robustness --all --jobs 2       # everything, two executions at a time
    python -m benchmarks.robustness --only book/08_troubleshooting.ipynb --keep-runs /tmp/matrix-runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbclient
import nbformat

from benchmarks import notebooks as bench_notebooks
from benchmarks import record
from utils import costs

NAME = "robustness"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Combination:
    """One perturbation of the machine: its name and the environment variables that make it."""

    name: str
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return " ".join(f"{key}={value}" for key, value in sorted(self.env.items()))


# Each axis covered: seeds 0, 1, 2; threads 1, 2, 4; torch's avx2, default and native (here AVX-512)
# kernels; TensorFlow with and without oneDNN. The published book (seed 0, the chapters' own threads,
# native kernels) is what `make test` executes.
COMBINATIONS: tuple[Combination, ...] = (
    Combination("seed1-avx2-t2", {"BOOK_SEED": "1", "ATEN_CPU_CAPABILITY": "avx2", "BOOK_THREADS": "2",
                                  "OMP_NUM_THREADS": "2"}),
    Combination("seed2-default-t1-nodnn", {"BOOK_SEED": "2", "ATEN_CPU_CAPABILITY": "default",
                                           "BOOK_THREADS": "1", "OMP_NUM_THREADS": "1",
                                           "TF_ENABLE_ONEDNN_OPTS": "0"}),
    Combination("seed0-default-t4", {"BOOK_SEED": "0", "ATEN_CPU_CAPABILITY": "default", "BOOK_THREADS": "4",
                                     "OMP_NUM_THREADS": "4"}),
    Combination("seed2-native-t2-nodnn", {"BOOK_SEED": "2", "BOOK_THREADS": "2", "OMP_NUM_THREADS": "2",
                                          "TF_ENABLE_ONEDNN_OPTS": "0"}),
)
# BOOK_THREADS is the thread count of the notebooks that choose one (env.threads). OMP_NUM_THREADS is set
# with it, but in a Jupyter kernel the notebooks that keep torch's default still ran one thread per core
# (the record keeps the count each execution used).

MARKER = "ROBUSTNESS-VALUES:"
# Appended to the executed copy (never to the notebook): the top-level numbers the notebook left behind.
VALUES_CELL = f"""
import json as _json, numbers as _numbers
_found = {{}}
for _name, _value in list(globals().items()):
    if _name.startswith("_") or _name in ("In", "Out"):
        continue
    if isinstance(_value, bool):
        _found[_name] = _value
    elif isinstance(_value, _numbers.Real):
        _number = float(_value)
        _found[_name] = _number if abs(_number) < float("inf") else repr(_number)
import sys as _sys
_torch = _sys.modules.get("torch")
print({MARKER!r} + _json.dumps({{"values": _found, "torch_threads": _torch and _torch.get_num_threads(),
    "torch_cpu_capability": _torch and _torch.backends.cpu.get_cpu_capability()}}, sort_keys=True))
"""


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failing_cell(nb: nbformat.NotebookNode) -> tuple[int | None, str]:
    """The index of the cell whose output is an error, and the line that raised (the traceback's arrow),
    else the cell's first line."""
    for index, cell in enumerate(nb.cells):
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if cell.cell_type == "code" and errors:
            arrows = [line.strip() for frame in errors[0].get("traceback", [])
                      for line in ANSI.sub("", frame).splitlines() if line.lstrip().startswith("---->")]
            return index, arrows[0] if arrows else cell.source.strip().splitlines()[0]
    return None, ""


def _values(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """What the appended cell printed: the numbers, and the torch threads and CPU kernel really in use."""
    for output in nb.cells[-1].get("outputs", []):
        text = output.get("text", "")
        if MARKER in text:
            return json.loads(text.split(MARKER, 1)[1].strip().splitlines()[0])
    return {"values": {}}


def execute(path: Path, combination: Combination, timeout: int, runs_dir: str | None) -> dict[str, Any]:
    """Execute one notebook in a fresh kernel under ``combination``; pass or its failing cell, its numbers."""
    nb = nbformat.read(path, as_version=4)
    digest = costs.code_digest(path)
    nb.cells.append(nbformat.v4.new_code_cell(VALUES_CELL))
    scratch = Path(tempfile.mkdtemp(prefix="robustness-"))
    env = {**os.environ, "BOOK_RUNS_DIR": runs_dir or str(scratch / "runs"),
           "BOOK_CHECKPOINTS_DIR": str(scratch / "ckpt"), "BOOK_HEADLESS": "1", "MPLBACKEND": "Agg",
           **combination.env}
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                     resources={"metadata": {"path": str(path.parent)}})
    error, start = None, time.perf_counter()
    try:
        client.execute(env=env)
    except Exception as exc:  # a failing notebook is one row; the matrix goes on
        error = f"{getattr(exc, 'ename', type(exc).__name__)}: {str(getattr(exc, 'evalue', exc))[:300]}"
    cell, first_line = _failing_cell(nb)
    return {"notebook": str(path.relative_to(ROOT)), "combination": combination.name, "date": record.now(),
            "code_sha256": digest, "ok": error is None, "error": error, "cell": cell, "cell_source": first_line,
            "wall_s": round(time.perf_counter() - start, 1), **(_values(nb) if error is None else {"values": {}})}


def load_record(out_dir: str | Path | None = None) -> dict[str, Any]:
    """The committed record (``{"notebooks": {path: {"code_sha256", "runs": {combination: row}}}}``)."""
    found = costs.load_results(out_dir if out_dir is not None else record.RESULTS_DIR).get(NAME)
    return found if found is not None else {"notebooks": {}}


def due(paths: Sequence[Path], earlier: dict[str, Any], everything: bool,
        combinations: Sequence[Combination] = COMBINATIONS) -> list[tuple[Path, Combination]]:
    """The (notebook, combination) pairs to execute: all, or those whose record is missing, failed (a
    failure may come from the library or the machine's load: it is tried again), or was made on other code
    than the notebook's current code."""
    jobs = []
    for path in paths:
        entry = earlier["notebooks"].get(str(path.relative_to(ROOT)), {})
        for combination in combinations:
            row = entry.get("runs", {}).get(combination.name)
            if everything or row is None or not row["ok"] or row["code_sha256"] != costs.code_digest(path):
                jobs.append((path, combination))
    return jobs


def merge(earlier: dict[str, Any], row: dict[str, Any]) -> None:
    """Put one execution's row into the record; rows of the notebook made on other code are dropped."""
    entry = earlier["notebooks"].setdefault(row["notebook"], {"code_sha256": row["code_sha256"], "runs": {}})
    if entry["code_sha256"] != row["code_sha256"]:
        entry.update(code_sha256=row["code_sha256"], runs={})
    entry["runs"][row["combination"]] = row


def _spread(entry: dict[str, Any]) -> list[tuple[str, float, float]]:
    """Each number that took more than one value across the combinations: (name, lowest, highest)."""
    seen: dict[str, list[float]] = {}
    for row in entry["runs"].values():
        for name, value in row.get("values", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                seen.setdefault(name, []).append(value)
    return [(name, min(v), max(v)) for name, v in sorted(seen.items()) if min(v) != max(v)]


def tables(rec: dict[str, Any], combinations: Sequence[Combination] = COMBINATIONS) -> list[dict[str, Any]]:
    status_rows, spread_rows = [], []
    for name, entry in sorted(rec["notebooks"].items(), key=lambda kv: (not kv[0].startswith("book/"), kv[0])):
        cells = [f"`{name}`"]
        for combination in combinations:
            row = entry["runs"].get(combination.name)
            cells.append("not run" if row is None else f"ok {row['wall_s']:.0f} s" if row["ok"]
                         else f"FAILED in cell {row['cell']}: {row['error'][:120]}")
        status_rows.append(cells)
        changed = _spread(entry)
        shown = ", ".join(f"{n} {lo:.4g}..{hi:.4g}" for n, lo, hi in changed[:12])
        more = f" (and {len(changed) - 12} more)" if len(changed) > 12 else ""
        spread_rows.append([f"`{name}`", str(len(changed)), (shown + more) or "-"])
    legend = "; ".join(f"`{c.name}`: {c.describe()}" for c in combinations)
    return [
        record.table("Every notebook under every combination", ["notebook", *[c.name for c in combinations]],
                     status_rows, [f"Combinations: {legend}.",
                                   "ok N s: passed every assertion, in N s of wall time (two executions may "
                                   "have shared the 2 cores)."]),
        record.table("Numbers that differ across the combinations",
                     ["notebook", "numbers that differ", "lowest..highest (first 12)"], spread_rows,
                     ["The top-level ints and floats each notebook left in its namespace; the full values per "
                      "combination are in robustness.json."]),
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], help="notebooks, relative to the repository")
    parser.add_argument("--all", action="store_true", help="run every pair, not only what changed")
    parser.add_argument("--jobs", type=int, default=1, help="executions at a time (default 1)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds per cell (default 1800: two executions at a time share the cores)")
    parser.add_argument("--keep-runs", default=None, help="keep each combination's runs in DIR/<combination>")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give at least 1")
    if args.timeout < 1:
        parser.error(f"--timeout {args.timeout}: give a number of seconds >= 1")
    if bench_notebooks.unknown_notebooks(args.only):
        parser.error(bench_notebooks.unknown_notebooks(args.only))
    for flag, folder in (("--keep-runs", args.keep_runs), ("--out-dir", args.out_dir)):
        if folder and Path(folder).is_file():
            parser.error(f"argument {flag}: {folder!r} is a file: give a folder (created when missing)")
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    rec = load_record(args.out_dir)
    rec["notebooks"] = {name: entry for name, entry in rec["notebooks"].items() if (ROOT / name).exists()}
    jobs = due(bench_notebooks.notebooks(args.only), rec, args.all)
    print(f"{len(jobs)} execution(s) to run, {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(execute, path, combination, args.timeout,
                               str(Path(args.keep_runs) / combination.name) if args.keep_runs else None)
                   for path, combination in jobs]
        for future in as_completed(futures):
            row = future.result()
            merge(rec, row)
            print(f"{row['notebook']} [{row['combination']}]: " + (f"ok, {row['wall_s']:.0f} s" if row["ok"]
                  else f"FAILED in cell {row['cell']} ({row['cell_source']}): {row['error']}"), flush=True)
            result = {**record.provenance(NAME, argv, machine, load_start, started),
                      "combinations": [{"name": c.name, "env": c.env} for c in COMBINATIONS],
                      "notebooks": rec["notebooks"], "tables": tables(rec)}
            record.write_result(NAME, result, args.out_dir)  # after every execution: a long run keeps its rows
    result = {**record.provenance(NAME, argv, machine, load_start, started),
              "combinations": [{"name": c.name, "env": c.env} for c in COMBINATIONS],
              "notebooks": rec["notebooks"], "tables": tables(rec)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
