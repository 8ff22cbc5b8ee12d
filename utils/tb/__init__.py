"""The book's TensorBoard loop: write with tensorboardX, read back with TensorBoard's own loader, check, plot.

Import the package (``from utils import tb``) and call ``tb.open_run``, ``tb.read_scalars``... Its modules:

- ``writing``: ``open_run(chapter, run)`` opens ``runs/<chapter>/<run>`` and yields a ``RunWriter``, a
  tensorboardX ``SummaryWriter`` that refuses NaN, takes any framework's tensors and flushes for real.
- ``durable_flush``: the one place that relies on tensorboardX's private state, to make a flush durable.
- ``reading``: ``read_scalars``, ``read_histograms``, ``read_text``, ``read_images``, ``read_hparams``,
  ``read_pr_curves``, ``read_custom_scalars``, ``read_graph``, ``read_embeddings``, ``list_runs`` and
  ``list_tags`` return everything a run holds; ``average_precision`` reads a PR curve as one number.
- ``checking``: ``assert_logged``, the assertion every chapter ends with.
- ``plotting``: ``smooth``, ``plot_scalars`` and ``plot_histograms`` draw what TensorBoard would.
- ``showing``: ``show`` embeds live TensorBoard in a notebook, or plots when executed headless.
- ``served``: what a real TensorBoard server shows, asked over HTTP, with its Rust or its Python loader
  (``served.serving(logdir, load_fast=...)``); the reader's view, where ``reading`` is the classic one.
  Imported as ``from utils.tb import served``.
- ``records``: ``check_event_file``, each record of an event file whole (TensorBoard skips a damaged end).
- ``errors``: the exceptions all of these raise on purpose.
- ``screenshots``: photographs of the real TensorBoard UI over a log directory, with headless Chromium
  (``python -m utils.tb.screenshots``; ``make screenshots``). Not imported here: it is a command.
"""

from utils.tb.checking import assert_logged
from utils.tb.errors import (
    CorruptEventFileError,
    LogDirNotWritableError,
    NonFiniteScalarError,
    RunInUseError,
    RunNotFoundError,
    TagNotFoundError,
    TensorBoardLogError,
    TensorBoardXChangedError,
)
from utils.tb.plotting import plot_histograms, plot_scalars, smooth
from utils.tb.reading import (
    average_precision,
    list_runs,
    list_tags,
    list_tags_from,
    read_custom_scalars,
    read_embeddings,
    read_graph,
    read_histograms,
    read_hparams,
    read_images,
    read_pr_curves,
    read_scalars,
    read_text,
)
from utils.tb.records import check_event_file
from utils.tb.showing import is_live_notebook, show
from utils.tb.writing import RunWriter, open_run, run_path

__all__ = [
    "CorruptEventFileError",
    "LogDirNotWritableError",
    "NonFiniteScalarError",
    "RunInUseError",
    "RunNotFoundError",
    "RunWriter",
    "TagNotFoundError",
    "TensorBoardLogError",
    "TensorBoardXChangedError",
    "assert_logged",
    "average_precision",
    "check_event_file",
    "is_live_notebook",
    "list_runs",
    "list_tags",
    "list_tags_from",
    "open_run",
    "plot_histograms",
    "plot_scalars",
    "read_custom_scalars",
    "read_embeddings",
    "read_graph",
    "read_histograms",
    "read_hparams",
    "read_images",
    "read_pr_curves",
    "read_scalars",
    "read_text",
    "run_path",
    "show",
    "smooth",
]
