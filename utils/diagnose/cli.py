"""The command line of ``utils.diagnose``: a text report, ``--json``, ``--rules``; exit status 0, 1 or 2."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

from utils.diagnose.roles import missing_roles, parse_tag_flag
from utils.diagnose.rules import RULES
from utils.diagnose.runs import RunReport, UnknownTagError, diagnose


def format_rules() -> str:
    lines = []
    for r in RULES.values():
        numbers = f"threshold={r.threshold:g} window={r.window}" + (f" guard={r.guard:g}" if r.guard else "")
        lines += [f"{r.name} [{r.severity}] {numbers}", f"  means: {r.meaning}", f"  remedy: {r.remedy}"]
    return "\n".join(lines)


def format_report(reports: Sequence[RunReport]) -> str:
    """The readable report: one block per run, each finding with its evidence and what to do."""
    blocks = []
    for report in reports:
        lines = [f"== {report.run}", f"  {role_line(report)}"]
        if report.notice:
            lines.append(f"  note: {report.notice}")
        for f in report.findings:
            lines += [f"  {f.severity.upper():8}{f.rule}: {f.tag} step {f.step} value {f.value:.4g}",
                      f"          {f.explanation}", f"          what to do: {f.remedy}"]
        if not report.findings:
            lines.append("  no findings")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def role_line(report: RunReport) -> str:
    """``roles: loss=train/loss, val_loss=val/loss; not found: lr, ...``: which tag played which role."""
    found = ", ".join(f"{role}={tag}" for role, tag in report.roles.items()) or "none recognised"
    missing = missing_roles(report.roles)
    return f"roles: {found}" + (f"; not found: {', '.join(missing)}" if missing else "")


def _tag_flag(text: str) -> tuple[str, str]:
    try:
        return parse_tag_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_value(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # strict JSON has no NaN: "nan", "inf", "-inf"


def to_json(reports: Sequence[RunReport]) -> str:
    records = [asdict(r) for r in reports]
    for record in records:
        for finding in record["findings"]:
            finding["value"] = _json_value(finding["value"])
    return json.dumps(records, indent=2)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.diagnose", description="Diagnose training runs from their TensorBoard logs.",
                                     epilog="exit status: 0 no error finding, 1 an error finding, 2 bad input")
    parser.add_argument("logdir", nargs="?", help="folder of runs, as given to tensorboard --logdir")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rules", action="store_true", help="print the rules and thresholds, then exit")
    parser.add_argument("--tag", action="append", type=_tag_flag, default=[], metavar="role=TAG",
                        help="the tag that plays a role, instead of the role table (repeatable); for weights, "
                             "grads or activations, a prefix of histogram tags")
    args = parser.parse_args(argv)
    if args.rules:
        out(format_rules())
        return 0
    if args.logdir is None:
        parser.error("give a log directory (e.g. runs/), or --rules")
    from utils import tb

    try:
        reports = diagnose(args.logdir, overrides=dict(args.tag) or None)
    except (tb.RunNotFoundError, tb.CorruptEventFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnknownTagError as exc:
        parser.error(f"argument --tag: {exc}")
    out(to_json(reports) if args.json else format_report(reports))
    return 1 if any(f.severity == "error" for r in reports for f in r.findings) else 0
