"""How right ``utils.diagnose`` is on runs whose faults are known: precision and recall of every rule on the
zoo of ``tests/zoo.py`` (real small trainings of chapter 8's MLP on the digits and of the book's GPT, each
built with one fault or none, in the book's layout and in the PyTorch tutorial's, one writer per split,
Hugging Face's Trainer's, and ``add_scalars``'s sub-writers; and of the MLP in Keras, logged by Keras's own
TensorBoard callback only).

Which rule may name which fault is ``tests.book_runs.FAULT_NAMES`` (the same table that judges the book's own
runs). Counted per run, not per finding (a rule that fires on three layers of one run counts once):

- **TP** of a rule: runs it fired on whose fault it may name.
- **FP** of a rule: runs it fired on that are healthy, or whose fault it may not name.
- **FN** of a rule: runs with a fault it may name on which *no* rule naming that fault fired (the fault was
  missed, and this rule was one that could have caught it). A rule is not blamed for staying silent when
  another rule named the fault: one naming finding is all a broken run needs.
- precision = TP / (TP + FP), recall = TP / (TP + FN); "-" where the denominator is 0.
- Per fault: recall = runs of that fault that some rule naming it fired on / its runs; a run of another fault
  (or a healthy one) is "falsely called" the fault when a rule fired on it that may name the fault but not the
  run's own fault; precision = named / (named + falsely called).

A wrong verdict is a broken run whose fault no finding names (a miss), or any run with a finding that may not
name its fault (a false alarm; on a healthy run, any finding).

    python -m benchmarks.diagnose_zoo                       # the whole zoo: 3 seeds (about 2 minutes)
    python -m benchmarks.diagnose_zoo --seeds 0 --keep /tmp/zoo   # one seed, and keep the runs to look at
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import record
from utils import validate

NAME = "diagnose_zoo"


# --------------------------------------------------------------------------------------------- scoring


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _allowed(fault: str, fault_names: Mapping[str, set[str]]) -> set[str]:
    """The rules that may fire on a run of ``fault``: none on a healthy run."""
    return set() if fault == "healthy" else set(fault_names[fault])


def rule_scores(labels: Mapping[str, str], fired: Mapping[str, set[str]], rules: Sequence[str],
                fault_names: Mapping[str, set[str]]) -> dict[str, dict[str, Any]]:
    """``{rule: {fired, tp, fp, fn, precision, recall}}``, counted per run (see the module's docstring)."""
    scores = {}
    for rule in rules:
        tp = fp = fn = 0
        for run, fault in labels.items():
            allowed, got = _allowed(fault, fault_names), fired.get(run, set())
            if rule in got:
                tp, fp = (tp + 1, fp) if rule in allowed else (tp, fp + 1)
            elif rule in allowed and not got & allowed:
                fn += 1
        scores[rule] = {"fired": tp + fp, "tp": tp, "fp": fp, "fn": fn,
                        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
    return scores


def fault_scores(labels: Mapping[str, str], fired: Mapping[str, set[str]],
                 fault_names: Mapping[str, set[str]]) -> dict[str, dict[str, Any]]:
    """``{fault: {runs, named, falsely_called, false_alarm_runs, precision, recall}}`` for every fault of the
    zoo; for ``healthy``, ``named`` is the runs with no finding."""
    scores = {}
    for fault in sorted(set(labels.values())):
        own = [run for run, f in labels.items() if f == fault]
        allowed = _allowed(fault, fault_names)
        named = sum(bool(fired.get(run, set()) & allowed) for run in own) if allowed else \
            sum(not fired.get(run) for run in own)
        falsely = sum(bool(fired.get(run, set()) & (allowed - _allowed(f, fault_names)))
                      for run, f in labels.items() if f != fault)
        alarms = sum(bool(fired.get(run, set()) - allowed) for run in own)
        scores[fault] = {"runs": len(own), "named": named, "falsely_called": falsely,
                         "false_alarm_runs": alarms, "recall": _ratio(named, len(own)),
                         "precision": _ratio(named, named + falsely) if allowed else None}
    return scores


def wrong_verdicts(labels: Mapping[str, str], findings: Mapping[str, Sequence[Any]],
                   fault_names: Mapping[str, set[str]]) -> list[dict[str, Any]]:
    """Every run whose findings contradict its fault: ``{run, fault, verdict, got}``, ``verdict`` "missed"
    (no finding names its fault) and/or "false alarm" (a finding that may not name it), ``got`` each finding
    as ``rule [severity] tag step value``."""
    wrong = []
    for run, fault in sorted(labels.items()):
        allowed, got = _allowed(fault, fault_names), findings.get(run, [])
        rules = {f.rule for f in got}
        verdicts = (["missed"] if allowed and not rules & allowed else []) + \
            (["false alarm"] if rules - allowed else [])
        if verdicts:
            wrong.append({"run": run, "fault": fault, "verdict": " + ".join(verdicts),
                          "extra_rules": sorted(rules - allowed),
                          "got": [f"{f.rule} [{f.severity}] {f.tag} step {f.step} value {f.value:.4g}" for f in got]})
    return wrong


def layout_scores(labels: Mapping[str, str], wrong: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per layout (a run name's first folder): runs, broken runs and those missed, runs with a false alarm."""
    layout = lambda run: run.split("/", 1)[0]  # noqa: E731
    counts: dict[str, Counter] = {}
    for run, fault in labels.items():
        counts.setdefault(layout(run), Counter()).update({"runs": 1, "broken": fault != "healthy"})
    for item in wrong:
        counts[layout(item["run"])].update({"missed": "missed" in item["verdict"],
                                            "false_alarm": "false alarm" in item["verdict"]})
    return {name: {key: c[key] for key in ("runs", "broken", "missed", "false_alarm")}
            for name, c in sorted(counts.items())}


def score(labels: Mapping[str, str], findings: Mapping[str, Sequence[Any]], rules: Sequence[str],
          fault_names: Mapping[str, set[str]]) -> dict[str, Any]:
    """Every count of the benchmark from ``{run: fault}`` and ``{run: findings}`` (objects with ``rule``,
    ``severity``, ``tag``, ``step``, ``value``). Rules that fired but are not in ``rules`` are scored too."""
    missing = sorted(set(labels) ^ set(findings))
    if missing:
        raise ValueError(f"runs and reports differ: {missing[:5]}")
    fired = {run: {f.rule for f in got} for run, got in findings.items()}
    every_rule = list(rules) + sorted({r for got in fired.values() for r in got} - set(rules))
    wrong = wrong_verdicts(labels, findings, fault_names)
    return {"rules": rule_scores(labels, fired, every_rule, fault_names),
            "faults": fault_scores(labels, fired, fault_names), "wrong": wrong,
            "layouts": layout_scores(labels, wrong)}


# --------------------------------------------------------------------------------------------- tables


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def tables(scores: dict[str, Any], severities: Mapping[str, str], runs: int) -> list[dict[str, Any]]:
    rule_table = record.table(
        f"utils.diagnose on the zoo: precision and recall per rule ({runs} runs)",
        ["rule", "severity", "fired on", "TP", "FP", "FN", "precision", "recall"],
        [[rule, severities.get(rule, "?"), s["fired"], s["tp"], s["fp"], s["fn"], _pct(s["precision"]),
          _pct(s["recall"])] for rule, s in scores["rules"].items()],
        ["Counted per run. TP: fired on a run whose fault it may name (tests/book_runs.FAULT_NAMES); FP: fired "
         "on a healthy run or one whose fault it may not name; FN: a run with a fault it may name where no rule "
         "naming that fault fired."])
    fault_table = record.table(
        "Per fault", ["fault", "runs", "named", "recall", "falsely called", "precision", "runs with a false alarm"],
        [[fault, s["runs"], s["named"], _pct(s["recall"]), s["falsely_called"], _pct(s["precision"]),
          s["false_alarm_runs"]] for fault, s in scores["faults"].items()],
        ["named: some rule that may name the fault fired (healthy: no finding at all); falsely called: runs of "
         "another fault, or healthy, on which a rule fired that may name this fault and not theirs."])
    layout_table = record.table(
        "Per layout", ["layout", "runs", "broken", "missed", "runs with a false alarm"],
        [[name, s["runs"], s["broken"], s["missed"], s["false_alarm"]] for name, s in scores["layouts"].items()],
        ["book: utils.loop.train's own tags and histograms; tutorial: Loss/train + Loss/test (tensorboardX); "
         "split: RUN/train + RUN/val writers each logging loss; hf: Hugging Face Trainer's tags, evaluation once "
         "per epoch; add_scalars: add_scalars(\"loss\", {\"train\": ..., \"val\": ...}) (torch), a sub-writer "
         "per name. Each training of the book's loop is written in the book's layout and one other; keras: "
         "model.fit's keras.callbacks.TensorBoard (train/ and validation/, epoch_loss per epoch), only there."])
    return [rule_table, fault_table, layout_table, _wrong_table(scores["wrong"])]


def _wrong_table(wrong: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The wrong verdicts grouped: per fault and verdict, how many runs, which extra rules, one example."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in wrong:
        groups.setdefault((item["fault"], item["verdict"]), []).append(item)
    rows = []
    for (fault, verdict), items in sorted(groups.items()):
        extra = Counter(rule for item in items for rule in item["extra_rules"])
        rows.append([fault, verdict, len(items), ", ".join(f"{r} ({n})" for r, n in extra.most_common()) or "-",
                     items[0]["run"]])
    return record.table("Wrong verdicts, grouped", ["fault", "verdict", "runs", "rules that may not name it",
                                                    "e.g."], rows,
                        ["Every wrong verdict, run by run with its findings, is in the result file's `wrong`."])


# --------------------------------------------------------------------------------------------- main


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    from tests import zoo

    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose_zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of every recipe")
    parser.add_argument("--recipes", default=",".join(zoo.RECIPES), help="comma-separated, from tests/zoo.py")
    parser.add_argument("--keep", type=validate.folder_path, default=None, help="write the zoo here and keep it")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    unknown = [name for name in args.recipes.split(",") if name not in zoo.RECIPES]
    if unknown:
        parser.error(f"argument --recipes: unknown recipe(s) {unknown}: choose from {', '.join(zoo.RECIPES)}")
    try:
        args.seed_list = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"argument --seeds: {args.seeds!r} is not comma-separated whole numbers, e.g. 0,1,2")
    return args


def run_zoo(folder: Path, seeds: Sequence[int], recipes: Sequence[str]) -> tuple[dict[str, str], dict[str, list]]:
    """Write the zoo into ``folder`` and diagnose it: ``({run: fault}, {run: findings})``."""
    from tests import zoo
    from utils import diagnose

    labels = zoo.write_zoo(folder, seeds=seeds, recipes=recipes)
    return labels, {report.run: report.findings for report in diagnose.diagnose(folder)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from tests import book_runs, zoo
    from utils import diagnose

    args = _arguments(argv)
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="diagnose-zoo-"))
    try:
        labels, findings = run_zoo(folder, args.seed_list, args.recipes.split(","))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    scores = score(labels, findings, list(diagnose.RULES), book_runs.FAULT_NAMES)
    severities = {name: rule.severity for name, rule in diagnose.RULES.items()}
    settings = {"seeds": args.seed_list, "recipes": {name: {"fault": zoo.RECIPES[name].fault, "why": zoo.RECIPES[name].why,
                                                           "batches": list(zoo.RECIPES[name].batches)}
                                                    for name in args.recipes.split(",")}}
    result = {**record.provenance(NAME, argv, machine, load_start, started), "settings": settings,
              "labels": labels, **scores, "tables": tables(scores, severities, len(labels))}
    for item in scores["wrong"]:
        print(f"{item['run']} ({item['fault']}): {item['verdict']}; got {'; '.join(item['got']) or 'nothing'}")
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
