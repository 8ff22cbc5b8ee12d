"""The screenshot tool (``utils.tb.screenshots``, ``make screenshots``) photographs the real TensorBoard over
a log folder, and the committed pictures the TensorBoard chapter embeds are real, non-blank dashboards."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from utils import tb
from utils.tb import screenshots

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "07_tensorboard.ipynb"
IMAGES = ROOT / "book" / "images" / "tensorboard"


def write_small_logdir(root: Path) -> None:
    """Runs named as the chapter's: a healthy and a dead sweep run with scalars and histograms, a CNN run
    with a custom-scalars layout, images and one PR curve per digit (digit 7's scores are noise: the
    hardest digit)."""
    rng = np.random.default_rng(0)
    for lr, scale in (("0.1", 1.0), ("3.0", 0.01)):
        with tb.open_run("ch07", f"sweep-lr={lr}", root=root) as writer:
            for step in range(30):
                writer.add_scalar("train/loss", 2.0 * 0.9**step, step)
                writer.add_scalar("val/loss", 2.1 * 0.92**step, step)
            for step in range(0, 30, 10):
                writer.add_histogram("activations/hidden", scale * rng.exponential(size=500), step)
                writer.add_histogram("weights/0.weight", rng.normal(size=500), step)
    with tb.open_run("ch07", "cnn", root=root) as writer:
        writer.add_custom_scalars({"Losses": {"train vs validation": ["Multiline", ["train/loss", "val/loss"]]},
                                   "Accuracy": {"validation, 95 % interval":
                                                ["Margin", ["val/accuracy", "val/low", "val/high"]]}})
        for step in range(30):
            for tag, value in (("train/loss", 1.0 / (step + 1)), ("val/loss", 1.2 / (step + 1)),
                               ("val/accuracy", 0.8), ("val/low", 0.75), ("val/high", 0.85)):
                writer.add_scalar(tag, value, step)
        for tag in ("inputs/original", "inputs/augmented", "misclassified"):
            writer.add_images(tag, rng.random((4, 1, 8, 8)), 0)
        writer.add_image("confusion", rng.random((32, 32, 3)), 29, dataformats="HWC")
        labels = rng.integers(0, 10, 300)
        for digit in range(10):
            noise = rng.random(300)
            scores = noise if digit == 7 else 0.7 * (labels == digit) + 0.3 * noise
            writer.add_pr_curve(f"pr/digit_{digit}", labels == digit, scores, 29, num_thresholds=101)


def chosen(*names: str) -> list[screenshots.Dashboard]:
    return [d for d in screenshots.DASHBOARDS if d.name in names]


def require_browser() -> None:
    try:
        screenshots.find_browser()
    except FileNotFoundError as missing:
        pytest.fail(str(missing))


@pytest.mark.server
@pytest.mark.slow
def test_tool_photographs_the_dashboards_of_the_runs_the_server_listed(tmp_path):
    """The book's own dashboard definitions (URL, runs, the strings each page must show) accepted on real
    dashboards of a small log folder: the picture is taken only once the page shows them."""
    require_browser()
    logdir = tmp_path / "runs"
    write_small_logdir(logdir)
    names = ["custom_scalars", "histograms", "distributions", "images", "pr_curves"]
    report = screenshots.take_screenshots(logdir, tmp_path / "png", chosen(*names))
    assert list(report) == names
    assert report["custom_scalars"]["runs"] == ["ch07/cnn"]  # what the server's /data/runs listed
    assert report["histograms"]["runs"] == ["sweep-lr=0.1", "sweep-lr=3.0"]  # served from ch07/
    for name, entry in report.items():
        assert entry["plugin_active"], f"{name}: TensorBoard reports its plugin inactive"
        assert screenshots.picture_problem(entry["png"]) is None
        assert Image.open(entry["png"]).size == screenshots.WINDOW


def test_the_pr_picture_shows_the_hardest_digit(tmp_path):
    write_small_logdir(tmp_path)
    assert screenshots.hardest_digit(tmp_path / "ch07" / "cnn") == 7
    (pr,) = chosen("pr_curves")
    shown = screenshots.resolved(pr, tmp_path, ["ch07/cnn"])
    assert "digit_7" in shown.url and "pr/digit_7" in shown.shows
    assert screenshots.HARDEST_DIGIT not in shown.url + "".join(shown.shows)


@pytest.mark.server
@pytest.mark.slow
def test_tool_refuses_a_dashboard_that_shows_its_empty_state(tmp_path):
    """An Images dashboard over runs without images shows "No image data was found.": a picture that is not
    blank (the header, the run selector) but of nothing. The tool must fail, naming that text."""
    require_browser()
    logdir = tmp_path / "runs"
    with tb.open_run("ch07", "sweep-lr=0.1", root=logdir) as writer:
        for step in range(10):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    images = screenshots.Dashboard("images", "/#images", r"^ch07/sweep-lr=0\.1$", "images",
                                   shows=("ch07/sweep-lr=0.1",))
    with pytest.raises(RuntimeError, match=r"images dashboard .*No image data was found\."):
        screenshots.take_screenshots(logdir, tmp_path / "png", [images], timeout_s=30)
    assert not (tmp_path / "png" / "images.png").exists()


def test_page_problem_names_missing_strings_and_empty_states():
    shown = ["TensorBoard", "Runs", "ch07/cnn", "pr/digit_3", "tag:", "pr/digit_3", "ch07/cnn is at", "step 299"]
    assert screenshots.page_problem(shown, ("ch07/cnn", "pr/digit_3", "ch07/cnn is at")) is None
    assert screenshots.page_problem(["train", "/loss"], ("train/loss",)) is None  # Time Series splits titles
    problem = screenshots.page_problem(shown, ("ch07/cnn", "pr/digit_8"))
    assert problem is not None and "pr/digit_8" in problem and "pr/digit_3" not in problem
    empty = ["TensorBoard", "Runs", "ch07/cnn", "No precision–recall curve data was found."]
    assert "No precision–recall curve data was found." in screenshots.page_problem(empty, ("ch07/cnn",))
    assert "empty state" in screenshots.page_problem(["No  image data\n was found."], ())


def test_a_blank_page_is_recognised(tmp_path):
    """The check the tool and the tests rely on fails on what a failed render looks like."""
    header_only = np.full((900, 1280, 3), 245, dtype=np.uint8)
    header_only[: screenshots.HEADER_PX] = (245, 124, 0)  # the orange bar and nothing below
    Image.fromarray(header_only).save(tmp_path / "blank.png")
    assert "looks blank" in screenshots.picture_problem(tmp_path / "blank.png")
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "busy.png")
    assert screenshots.picture_problem(tmp_path / "busy.png") is None


@pytest.mark.parametrize("dashboard", screenshots.DASHBOARDS, ids=[d.name for d in screenshots.DASHBOARDS])
def test_committed_screenshot_is_a_real_picture_the_chapter_shows(dashboard):
    png = IMAGES / f"{dashboard.name}.png"
    assert png.is_file(), f"{png.relative_to(ROOT)} is missing: run `make screenshots` after `make book`"
    with Image.open(png) as image:
        image.verify()  # a valid PNG
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == screenshots.WINDOW
    assert screenshots.picture_problem(png) is None
    markdown = "\n".join(cell.source for cell in nbformat.read(CHAPTER, as_version=4).cells
                         if cell.cell_type == "markdown")
    assert re.search(rf"!\[[^\]]*\]\(images/tensorboard/{re.escape(dashboard.name)}\.png\)", markdown), \
        f"{CHAPTER.name} does not show images/tensorboard/{dashboard.name}.png"


def test_every_picture_the_chapter_shows_is_made_by_the_tool():
    markdown = "\n".join(cell.source for cell in nbformat.read(CHAPTER, as_version=4).cells
                         if cell.cell_type == "markdown")
    shown = set(re.findall(r"\]\(images/tensorboard/([\w-]+)\.png\)", markdown))
    assert shown == {d.name for d in screenshots.DASHBOARDS}
