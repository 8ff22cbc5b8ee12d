"""Screenshots of the real TensorBoard UI over the book's runs, for the HTML book.

``python -m utils.tb.screenshots --runs runs --out book/images/tensorboard`` starts ``tensorboard`` on a
free port of 127.0.0.1 over ``--runs``, waits until the server lists the runs every picture needs
(``/data/runs``), opens each dashboard of ``DASHBOARDS`` in headless Chromium and saves ``<name>.png``,
stops the server, and prints which runs each picture showed. The same URLs, window size and runs give the
same pictures. Chromium is ``$BOOK_BROWSER``, else ``chromium`` or ``chromium-browser`` on the PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from utils.tb.showing import HOST, get_json, start_server, stop_server, wait_for_server

WINDOW = (1280, 900)
HEADER_PX = 64  # TensorBoard's orange bar of dashboard names: present even when nothing else rendered
SERVER_TIMEOUT_S = 120
# TensorBoard draws its charts only when Chromium lets its timers run (virtual time), and the Projector needs
# a software WebGL (SwiftShader). The Time Series tab loads its cards only once they scroll into view, which
# headless Chromium never reports: its cards stay empty, so the pictures use the Scalars tab (same data).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-unsafe-swiftshader", "--virtual-time-budget=15000",
                  f"--window-size={WINDOW[0]},{WINDOW[1]}")


@dataclass(frozen=True)
class Dashboard:
    """One picture: ``name`` (the PNG's stem), ``url`` (path, query and fragment after the server's
    address), ``runs`` (a regular expression: the server must list at least one run matching it, and the
    picture shows those), ``plugin`` (TensorBoard's name for the dashboard) and ``under`` (a sub-folder of
    the log folder to serve instead of all of it, for a dashboard that cannot be told which runs to show:
    the Projector and the Graphs dashboard open the first run that has their data, HParams lists every
    run with hyper-parameters)."""

    name: str
    url: str
    runs: str
    plugin: str
    under: str = ""


DASHBOARDS = (
    Dashboard("scalars", "/#scalars&regexInput=sweep&tagFilter=%5E(train%7Cval)%2Floss%24", r"^sweep-",
              "scalars", under="ch07"),
    Dashboard("scalars_ch04_ch05", "/#scalars&regexInput=ch0%5B45%5D%2F&tagFilter=%5Eval%2Floss%24",
              r"^ch0[45]/", "scalars"),
    Dashboard("custom_scalars", "/#custom_scalars&regexInput=ch07%2Fcnn", r"^ch07/cnn$", "custom_scalars"),
    Dashboard("histograms", "/#histograms&regexInput=sweep&tagFilter=activations", r"^ch07/sweep-",
              "histograms"),
    Dashboard("images", "/#images&regexInput=ch07%2Fcnn", r"^ch07/cnn$", "images"),
    Dashboard("pr_curves", "/#pr_curves&regexInput=ch07%2Fcnn", r"^ch07/cnn$", "pr_curves"),
    Dashboard("text", "/#text&regexInput=ch07%2Ftext", r"^ch07/text$", "text"),
    Dashboard("graphs", "/#graphs", r"^graph$", "graphs", under="ch07"),
    Dashboard("hparams", "/#hparams", r"^sweep-", "hparams", under="ch07"),
    Dashboard("projector", "/#projector", r"^projector$", "projector", under="ch07"),
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


def photograph(url: str, png: Path, browser: str, timeout_s: float = 180) -> None:
    """Save a screenshot of ``url`` to ``png`` with headless Chromium, in a fresh profile; raise when the
    picture is blank (``picture_problem``)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", url]
        subprocess.run(command, capture_output=True, timeout=timeout_s, check=True)
    if not png.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {url} to {png}")
    problem = picture_problem(png)
    if problem:
        raise RuntimeError(f"{problem}: TensorBoard did not draw {url} in time (a busy machine needs a larger "
                           "--virtual-time-budget)")


def take_screenshots(logdir: str | Path, out: str | Path,
                     dashboards: Sequence[Dashboard] = DASHBOARDS) -> dict[str, dict]:
    """Photograph each dashboard of TensorBoard serving ``logdir`` (or its ``under`` sub-folder) into
    ``out/<name>.png``. Returns ``{name: {"png": path, "runs": [the runs the server listed for it],
    "plugin_active": bool}}``, in the order of ``dashboards``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    browser = find_browser()
    report: dict[str, dict] = {}
    for under in dict.fromkeys(d.under for d in dashboards):  # one server per folder, in order
        group = [d for d in dashboards if d.under == under]
        report.update(_photograph_group(Path(logdir) / under, out, group, browser))
    return {d.name: report[d.name] for d in dashboards}


def _photograph_group(logdir: Path, out: Path, dashboards: Sequence[Dashboard],
                      browser: str) -> dict[str, dict]:
    """``take_screenshots`` for dashboards that share one server over ``logdir``."""
    with tempfile.TemporaryDirectory(prefix="tensorboard-screenshots-") as scratch:
        log_path = Path(scratch) / "tensorboard.log"
        with serve(logdir, log_path) as (port, process):
            shown = wait_for_runs(port, process, dashboards, log_path)
            listing = get_json(port, "/data/plugins_listing")
            report = {}
            for dashboard in dashboards:
                png = out / f"{dashboard.name}.png"
                photograph(f"http://{HOST}:{port}{dashboard.url}", png, browser)
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
