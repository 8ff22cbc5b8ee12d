"""Screenshots of the real TensorBoard UI over the book's runs, for the HTML book.

``python -m utils.tb.screenshots --runs runs --out book/images/tensorboard`` starts ``tensorboard`` on a
free port of 127.0.0.1 over ``--runs``, waits until the server lists the runs every picture needs
(``/data/runs``), opens each dashboard of ``DASHBOARDS`` in headless Chromium (``utils.tb.browser``, over the
DevTools Protocol), waits until the page shows what the picture is for (each dashboard's ``shows``: run
names, card and tag titles) and no empty-state text (``EMPTY_STATES``), saves ``<name>.png`` of that same
page, stops the server, and prints which runs each picture showed. The same URLs, window size and runs give
the same pictures. Chromium is ``$BOOK_BROWSER``, else ``chromium`` or ``chromium-browser`` on the PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from utils.tb.browser import Page
from utils.tb.showing import HOST, get_json, start_server, stop_server, wait_for_server

WINDOW = (1280, 900)
HEADER_PX = 64  # TensorBoard's orange bar of dashboard names: present even when nothing else rendered
SERVER_TIMEOUT_S = 120
PAGE_TIMEOUT_S = 180  # a busy 2-core machine draws a dashboard in 5-60 s
SETTLE_POLLS = 3  # the page's text must stay the same for this many polls (0.75 s apart) before the picture
# What TensorBoard 2.21 shows instead of a dashboard (its webfiles.zip and the Projector's projector_binary.js):
# a picture of any of these is a picture of nothing.
EMPTY_STATES = (
    "No scalar data was found.", "No image data was found.", "No histogram data was found.",
    "No distribution data was found.", "No text data was found.", "No precision–recall curve data was found.",
    "No hparams data was found.", "No graph definition files were found.", "No audio data was found.",
    "No point cloud data was found.", "No dashboards are active for the current data set.",
    "The custom scalars dashboard is inactive.", "No checkpoint was found.", "No checkpoint has been saved yet",
    "No matches for tag filter", "There are no runs matching the regex", "Data could not be loaded.",
    "Failed to fetch runs",
)
HARDEST_DIGIT = "{hardest_digit}"  # in a url or shows: the digit whose PR curve has the lowest average precision
# The Projector's "Color by" menu, set through its Polymer element (no URL parameter selects it). True once done.
COLOR_PROJECTOR_BY_KIND = r"""
(() => {
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'VZ-PROJECTOR-DATA-PANEL') return el;
      const inside = (el.shadowRoot && find(el.shadowRoot)) ||
        (el.tagName === 'IFRAME' && el.contentDocument && find(el.contentDocument));
      if (inside) return inside;
    }
    return null;
  };
  const panel = find(document);
  if (!panel || !(panel.colorOptions || []).some(o => o.name === 'kind')) return false;
  panel.selectedColorOptionName = 'kind';
  return true;
})()
"""


@dataclass(frozen=True)
class Dashboard:
    """One picture: ``name`` (the PNG's stem), ``url`` (path, query and fragment after the server's
    address), ``runs`` (a regular expression: the server must list at least one run matching it, and the
    picture shows those), ``plugin`` (TensorBoard's name for the dashboard), ``under`` (a sub-folder of
    the log folder to serve instead of all of it, for a dashboard that cannot be told which runs to show:
    the Projector and the Graphs dashboard open the first run that has their data, HParams lists every
    run with hyper-parameters), ``shows`` (strings the page's visible text must contain before it is
    photographed: the runs and the card titles the caption talks about) and ``script`` (JavaScript run
    in the page until it returns true, for a setting no URL carries)."""

    name: str
    url: str
    runs: str
    plugin: str
    under: str = ""
    shows: tuple[str, ...] = ()
    script: str = ""


SWEEP = ("sweep-lr=0.01", "sweep-lr=0.1", "sweep-lr=1.0", "sweep-lr=3.0")
LOSSES = "%5E(train%7Cval)%2Floss%24"  # ^(train|val)/loss$
HEALTHY_AND_DEAD = "sweep-lr%3D(0%5C.1%7C3%5C.0)%24"  # sweep-lr=(0\.1|3\.0)$: the runs the chapter compares
DASHBOARDS = (
    Dashboard("time_series", f"/?runFilter=sweep&tagFilter={LOSSES}#timeseries", r"^sweep-", "timeseries",
              under="ch07", shows=(*SWEEP, "train/loss", "val/loss", "Smoothed")),
    Dashboard("scalars", f"/#scalars&regexInput=sweep&tagFilter={LOSSES}", r"^sweep-", "scalars",
              under="ch07", shows=(*SWEEP, "train/loss", "val/loss")),
    Dashboard("scalars_ch04_ch05", "/#scalars&regexInput=ch0%5B45%5D%2F&tagFilter=%5Eval%2Floss%24",
              r"^ch0[45]/", "scalars", shows=("ch04/good", "ch04/lr_too_high", "ch05/live", "val/loss")),
    Dashboard("custom_scalars", "/#custom_scalars&regexInput=ch07%2Fcnn", r"^ch07/cnn$", "custom_scalars",
              shows=("ch07/cnn", "Losses", "train vs validation", "Accuracy", "validation, 95 % interval")),
    Dashboard("histograms", f"/#histograms&regexInput={HEALTHY_AND_DEAD}&tagFilter=%5Eactivations%2Fhidden%24",
              r"^sweep-lr=(0\.1|3\.0)$", "histograms", under="ch07",
              shows=("sweep-lr=0.1", "sweep-lr=3.0", "activations/hidden")),
    Dashboard("distributions",
              f"/#distributions&regexInput={HEALTHY_AND_DEAD}&tagFilter=%5Eweights%2F0%5C.weight%24",
              r"^sweep-lr=(0\.1|3\.0)$", "distributions", under="ch07",
              shows=("sweep-lr=0.1", "sweep-lr=3.0", "weights/0.weight")),
    Dashboard("images", "/#images&regexInput=ch07%2Fcnn&tagFilter=confusion%7Cinputs%7Cmisclassified",
              r"^ch07/cnn$", "images",
              shows=("ch07/cnn", "confusion", "inputs/original", "inputs/augmented", "misclassified")),
    Dashboard("pr_curves", f"/#pr_curves&regexInput=ch07%2Fcnn&tagFilter=%5Epr%2Fdigit_{HARDEST_DIGIT}%24",
              r"^ch07/cnn$", "pr_curves", shows=("ch07/cnn", f"pr/digit_{HARDEST_DIGIT}", "ch07/cnn is at")),
    Dashboard("text", "/#text&regexInput=ch07%2Ftext", r"^ch07/text$", "text",
              shows=("ch07/text", "gpt samples/text_summary", "temperature", "sample")),
    Dashboard("graphs", "/#graphs", r"^graph$", "graphs", under="ch07", shows=("Main Graph", "Sequential")),
    Dashboard("hparams", "/#hparams", r"^sweep-", "hparams", under="ch07",
              shows=(*SWEEP, "lr", "hparam/best_val_loss")),
    Dashboard("projector", "/#projector", r"^projector$", "projector", under="ch07",
              shows=("1 tensor found", "Color by", "vowel", "consonant", "punctuation", "PCA"),
              script=COLOR_PROJECTOR_BY_KIND),
)


def find_browser() -> str:
    """The Chromium binary: ``$BOOK_BROWSER``, else ``chromium`` or ``chromium-browser`` on the PATH."""
    chosen = os.environ.get("BOOK_BROWSER", "").strip()
    if chosen and shutil.which(chosen) is None:  # a path, or a name on the PATH
        raise FileNotFoundError(f"BOOK_BROWSER={chosen!r} is not allowed: no executable program of that name or "
                                "path. Point it at a Chrome/Chromium binary, or unset it to use chromium from the "
                                "PATH")
    found = chosen or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("no headless browser: install Debian's chromium (`make browser` does as root), "
                                "or point BOOK_BROWSER at a Chrome/Chromium binary")
    return found


@contextmanager
def serve(logdir: str | Path, log_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """Run ``tensorboard --logdir LOGDIR --host 127.0.0.1`` on a free port; yield ``(port, process)``;
    stop it (its whole process group) on exit."""
    port, process = start_server(logdir, log_path, "--reload_interval", "2")
    try:
        yield port, process
    finally:
        stop_server(process)


def wait_for_runs(port: int, process: subprocess.Popen, dashboards: Sequence[Dashboard],
                  log_path: Path) -> dict[str, list[str]]:
    """Poll ``/data/runs`` until every dashboard has a run matching its pattern; return
    ``{dashboard name: [its runs]}``. Raises ``TimeoutError`` naming the dashboards still without runs."""
    missing = [d.name for d in dashboards]

    def every_picture_has_runs() -> dict[str, list[str]] | None:
        runs = get_json(port, "/data/runs")
        shown = {d.name: sorted(r for r in runs if re.search(d.runs, r)) for d in dashboards}
        missing[:] = [name for name, found in shown.items() if not found]
        return None if missing else shown

    shown = wait_for_server(process, every_picture_has_runs, SERVER_TIMEOUT_S, log_path)
    if shown is None:
        raise TimeoutError(f"after {SERVER_TIMEOUT_S} s the server still lists no run for {missing}: were the "
                           "runs written (`make book` writes runs/ch07), and is --runs the right folder?")
    return shown


def picture_problem(png: str | Path) -> str | None:
    """Why a screenshot is not a picture of a dashboard, or None when it is: below TensorBoard's header it
    must hold at least 50 distinct colours and at least 0.5 % of pixels darker than the page's grey
    background (an empty or still-loading page has neither)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))[HEADER_PX:].astype(np.int32)  # (H - header, W, 3)
    colours = len(np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]))  # one int each
    ink = float((pixels.min(axis=2) < 200).mean())
    if colours < 50 or ink < 0.005:
        return (f"{png} looks blank below the header: {colours} distinct colours, {ink:.2%} of pixels "
                "darker than the background")
    return None


def page_problem(texts: Sequence[str], shows: Sequence[str]) -> str | None:
    """Why a page's visible text (``Page.visible_text``) is not the dashboard a picture is for, or None when
    it is: a string of ``shows`` is missing, or an empty-state text of ``EMPTY_STATES`` is there. Text split
    over several nodes (Time Series writes ``train`` and ``/loss`` apart) counts as one string."""
    joined = "".join(texts)
    spaced = " ".join(" ".join(text.split()) for text in texts)
    missing = [wanted for wanted in shows if wanted not in joined and wanted not in spaced]
    empty = [state for state in EMPTY_STATES if state in spaced]
    problems = []
    if empty:
        problems.append(f"it shows TensorBoard's empty state {empty}")
    if missing:
        problems.append(f"it does not show {missing}")
    return "; ".join(problems) or None


def hardest_digit(run: str | Path) -> int:
    """The digit whose last PR curve (``pr/digit_<d>`` of ``run``) has the lowest average precision: the one
    the chapter reads a threshold off, as its cell computes it."""
    from utils.tb.reading import average_precision, read_pr_curves

    precision = {d: average_precision(read_pr_curves(run, f"pr/digit_{d}").iloc[-1]) for d in range(10)}
    return min(precision, key=precision.get)


def resolved(dashboard: Dashboard, logdir: Path, runs: Sequence[str]) -> Dashboard:
    """``dashboard`` with ``HARDEST_DIGIT`` replaced by the digit of its first run (``runs``, as the server
    named them, under ``logdir``)."""
    if HARDEST_DIGIT not in dashboard.url + "".join(dashboard.shows):
        return dashboard
    digit = str(hardest_digit(logdir / runs[0]))
    return replace(dashboard, url=dashboard.url.replace(HARDEST_DIGIT, digit),
                   shows=tuple(s.replace(HARDEST_DIGIT, digit) for s in dashboard.shows))


def photograph(url: str, png: Path, browser: str, dashboard: Dashboard, timeout_s: float = PAGE_TIMEOUT_S) -> None:
    """Open ``url`` in a fresh headless Chromium (``WINDOW`` pixels), run ``dashboard.script`` until it
    returns true, wait until the page shows ``dashboard.shows`` and no empty state and its text has settled,
    and save that same page to ``png``. Raises ``RuntimeError`` naming the dashboard and what the page lacked
    (``page_problem``) or that the picture stayed blank (``picture_problem``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    problem, previous, settled, scripted = "the page did not load", None, 0, not dashboard.script
    draft = png.with_name(f".{png.name}")  # the picture replaces png only once it passed
    with Page(browser, *WINDOW, timeout_s=min(timeout_s, 60)) as page:
        page.navigate(url)
        while time.monotonic() < deadline:
            time.sleep(0.75)
            scripted = scripted or bool(page.evaluate(dashboard.script))
            texts = page.visible_text()
            problem = page_problem(texts, dashboard.shows) or (None if scripted else "its script did not run")
            settled = settled + 1 if problem is None and texts == previous else 0
            previous = texts
            if settled < SETTLE_POLLS:
                continue
            page.screenshot(draft)
            problem = picture_problem(draft)
            if problem is None:
                draft.replace(png)
                return
    draft.unlink(missing_ok=True)
    raise RuntimeError(f"the {dashboard.name} dashboard ({url}) after {timeout_s:.0f} s: {problem}")


def take_screenshots(logdir: str | Path, out: str | Path, dashboards: Sequence[Dashboard] = DASHBOARDS,
                     timeout_s: float = PAGE_TIMEOUT_S) -> dict[str, dict]:
    """Photograph each dashboard of TensorBoard serving ``logdir`` (or its ``under`` sub-folder) into
    ``out/<name>.png``. Returns ``{name: {"png": path, "runs": [the runs the server listed for it],
    "plugin_active": bool}}``, in the order of ``dashboards``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    browser = find_browser()
    report: dict[str, dict] = {}
    for under in dict.fromkeys(d.under for d in dashboards):  # one server per folder, in order
        group = [d for d in dashboards if d.under == under]
        report.update(_photograph_group(Path(logdir) / under, out, group, browser, timeout_s))
    return {d.name: report[d.name] for d in dashboards}


def _photograph_group(logdir: Path, out: Path, dashboards: Sequence[Dashboard], browser: str,
                      timeout_s: float) -> dict[str, dict]:
    """``take_screenshots`` for dashboards that share one server over ``logdir``."""
    with tempfile.TemporaryDirectory(prefix="tensorboard-screenshots-") as scratch:
        log_path = Path(scratch) / "tensorboard.log"
        with serve(logdir, log_path) as (port, process):
            shown = wait_for_runs(port, process, dashboards, log_path)
            listing = get_json(port, "/data/plugins_listing")
            report = {}
            for dashboard in dashboards:
                png = out / f"{dashboard.name}.png"
                shown_dashboard = resolved(dashboard, logdir, shown[dashboard.name])
                photograph(f"http://{HOST}:{port}{shown_dashboard.url}", png, browser, shown_dashboard, timeout_s)
                active = bool(listing.get(dashboard.plugin, {}).get("enabled", False))
                report[dashboard.name] = {"png": png, "runs": shown[dashboard.name],
                                          "plugin_active": active}
    return report


def _check_arguments(parser: argparse.ArgumentParser, runs: Path, out: Path,
                     dashboards: Sequence[Dashboard]) -> None:
    """Refuse, before a server starts, what would otherwise fail minutes later: a log folder without the runs
    the pictures need, an output path that is a file, no usable browser."""
    if not runs.is_dir() or not any(runs.rglob("events.out.tfevents.*")):
        parser.error(f"argument --runs: {str(runs)!r} is not a folder of TensorBoard runs (no event file at or "
                     "below it): give the folder `make book` wrote, runs/")
    for dashboard in dashboards:
        if dashboard.under and not (runs / dashboard.under).is_dir():
            parser.error(f"argument --runs: {str(runs)!r} has no {dashboard.under}/ folder, which the "
                         f"{dashboard.name} picture serves: execute the chapter that writes it (`make book`)")
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {str(out)!r} is a file: give the folder the pictures go in")
    try:
        find_browser()
    except FileNotFoundError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.tb.screenshots",
                                     description="Screenshots of TensorBoard's dashboards over a log folder.")
    parser.add_argument("--runs", default="runs", help="the log folder TensorBoard serves (default: runs)")
    parser.add_argument("--out", default="book/images/tensorboard", help="where the PNGs go")
    parser.add_argument("--only", nargs="*", help="names of the dashboards to photograph (default: all)")
    args = parser.parse_args(argv)
    chosen = [d for d in DASHBOARDS if not args.only or d.name in args.only]
    unknown = set(args.only or ()) - {d.name for d in DASHBOARDS}
    if unknown:
        parser.error(f"argument --only: unknown dashboards {sorted(unknown)}; known: {[d.name for d in DASHBOARDS]}")
    _check_arguments(parser, Path(args.runs), Path(args.out), chosen)
    for entry in take_screenshots(args.runs, args.out, chosen).values():
        print(f"{entry['png']}: {len(entry['runs'])} runs ({', '.join(entry['runs'][:4])}"
              f"{', ...' if len(entry['runs']) > 4 else ''}); plugin active: {entry['plugin_active']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
