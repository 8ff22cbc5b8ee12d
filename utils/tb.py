"""The book's TensorBoard loop: write with tensorboardX, read back with TensorBoard's own loader, plot, assert.

Writing
    ``open_run(chapter, run)`` is a context manager around a tensorboardX ``SummaryWriter`` (``RunWriter``):
    one run directory ``runs/<chapter>/<run>``, an event file name no other writer can take, hyper-parameters
    recorded in the run itself, and flush + close on exit, even when the block raises.
Reading
    ``read_scalars``, ``read_histograms``, ``read_text``, ``read_images``, ``read_hparams``, ``read_graph``
    and ``read_embeddings`` return what a run holds, using
    ``EventAccumulator`` with no sample cap. They read tensorboardX files and TF2 ``tf.summary`` files (which
    store scalars and histograms as tensors).
Showing
    ``plot_scalars`` and ``plot_histograms`` draw what TensorBoard would (with its smoothing); ``show`` embeds
    live TensorBoard in JupyterLab or Colab and falls back to those plots when executed headless.
Checking
    ``assert_logged`` is the assertion every chapter ends with: these tags exist in this run, at these steps,
    with finite values.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tensorboardX import SummaryWriter

from utils.paths import runs_dir

# --------------------------------------------------------------------------------------------- errors


class TensorBoardLogError(Exception):
    """Base class of every error this module raises on purpose."""


class LogDirNotWritableError(TensorBoardLogError, OSError):
    """The run directory cannot be created or written."""


class RunInUseError(TensorBoardLogError):
    """Another open writer of this process already writes to the run directory."""


class RunNotFoundError(TensorBoardLogError, FileNotFoundError):
    """The run directory does not exist or holds no event file."""


class TagNotFoundError(TensorBoardLogError, KeyError):
    """The run holds no series with the requested tag."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class NonFiniteScalarError(TensorBoardLogError, ValueError):
    """A NaN or infinite value was about to be logged (or was found in a run)."""


# --------------------------------------------------------------------------------------------- writing

_NAME = re.compile(r"^[\w.=+-]+$")
_OPEN_RUN_DIRS: set[Path] = set()
_writer_serial = itertools.count()


def _to_numpy(values: Any) -> np.ndarray:
    """A torch tensor (any dtype, any device, bf16 included), TF tensor, list or scalar -> float64 array."""
    if hasattr(values, "detach"):  # torch: bf16 has no numpy dtype, so cast on the torch side first
        values = values.detach().float().cpu().numpy()
    elif hasattr(values, "numpy") and not isinstance(values, np.ndarray):  # TensorFlow eager tensor
        values = values.numpy()
    return np.asarray(values, dtype=np.float64)


class RunWriter(SummaryWriter):
    """A tensorboardX ``SummaryWriter`` that refuses non-finite scalars and takes tensors of any framework.

    ``add_scalar`` raises ``NonFiniteScalarError`` for NaN or inf (after flushing what was already logged),
    unless the writer was created with ``allow_non_finite=True`` (for chapters that log a divergence on
    purpose). ``add_histogram`` defaults to 64 equal-width bins: the tensorboardX default ('tensorflow',
    about 1,500 exponential buckets) costs about 85 ms per million values on a 2-core CPU.
    """

    def __init__(self, logdir: str | Path, *, allow_non_finite: bool = False, **kwargs: Any) -> None:
        super().__init__(logdir=str(logdir), **kwargs)
        self.allow_non_finite = allow_non_finite
        self._base_suffix = kwargs.get("filename_suffix", "")
        self._file_serial = 0

    def flush(self) -> None:
        """Write every event logged so far to disk before returning.

        tensorboardX's own ``flush`` only flushes the file: events still queued for its writer thread stay
        unwritten (measured with tensorboardX 2.6.5: ``add_scalar`` then ``flush()`` left the file as it was),
        so a crash right after it loses them. Closing the event file drains that queue; logging then goes on
        in a new event file of the same run, named to sort after it. A ``purge_step`` marker stays in the
        run's first file: written again, it would hide what this writer logged before.
        """
        if self.all_writers is None:
            return
        for writer in self.all_writers.values():
            writer.close()
        self.file_writer = self.all_writers = None
        self.purge_step = None
        self._file_serial += 1
        self._filename_suffix = f"{self._base_suffix}.{self._file_serial:04d}"

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, **kwargs: Any) -> None:
        value = float(_to_numpy(scalar_value).reshape(-1)[0]) if np.size(_to_numpy(scalar_value)) == 1 else None
        if value is None:
            raise ValueError(f"add_scalar({tag!r}) needs one number, got shape {np.shape(_to_numpy(scalar_value))}; "
                             "log a mean (`.mean()`) or use add_histogram for many values")
        if not math.isfinite(value) and not self.allow_non_finite:
            self.flush()
            raise NonFiniteScalarError(
                f"{tag!r} is {value} at step {global_step}. The values logged before it are saved in {self.logdir}. "
                "A NaN or inf loss usually means the learning rate is too high or the inputs are not normalised: "
                "lower the learning rate, clip gradients, check the data. To log it anyway, open the run with "
                "allow_non_finite=True.")
        super().add_scalar(tag, value, global_step, walltime, **kwargs)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: Any = 64,
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        array = _to_numpy(values)
        if not np.all(np.isfinite(array)):
            raise NonFiniteScalarError(f"histogram {tag!r} at step {global_step} contains NaN or inf values")
        super().add_histogram(tag, array, global_step, bins=bins, walltime=walltime, max_bins=max_bins)

    def add_hparams_here(self, hparams: Mapping[str, Any], metrics: Iterable[str]) -> None:
        """Record hyper-parameters in *this* run (``add_hparams`` would create a child run).

        ``metrics`` are scalar tags this run logs (with ``add_scalar``); the HParams dashboard shows their
        last value. Use tags that are not also logged under another meaning (e.g. ``hparam/val_loss``).
        """
        from tensorboardX.summary import hparams as hparams_summaries

        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()}
        for summary in hparams_summaries(clean, dict.fromkeys(metrics, 0.0)):
            self._get_file_writer().add_summary(summary)


def run_path(chapter: str, run: str, root: str | Path | None = None) -> Path:
    """``<root>/<chapter>/<run>`` with ``root`` defaulting to ``utils.paths.runs_dir()``; names are checked."""
    for label, name in (("chapter", chapter), ("run", run)):
        if not _NAME.match(name) or name in {".", ".."}:
            raise ValueError(f"{label} name {name!r} must be letters, digits, '_', '-', '.', '=' or '+' "
                             "(no slashes): it becomes a folder name")
    return Path(root if root is not None else runs_dir()) / chapter / run


def _prepare_dir(path: Path, on_exists: str) -> None:
    if on_exists not in ("replace", "append", "error"):
        raise ValueError(f"on_exists must be 'replace', 'append' or 'error', got {on_exists!r}")
    if on_exists == "error" and path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} already holds files; choose another run name, "
                              "or open it with on_exists='replace' or 'append'")
    try:
        if on_exists == "replace" and path.is_dir():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LogDirNotWritableError(
            f"cannot write TensorBoard logs to {path}: {exc.strerror or exc}. Point the book at a writable folder "
            "with the environment variable BOOK_RUNS_DIR (or pass root=...).") from exc


@contextmanager
def open_run(chapter: str, run: str, *, hparams: Mapping[str, Any] | None = None,
             hparam_metrics: Iterable[str] = (), on_exists: Literal["replace", "append", "error"] = "replace",
             purge_step: int | None = None, root: str | Path | None = None, flush_secs: int = 10,
             allow_non_finite: bool = False) -> Iterator[RunWriter]:
    """Open ``runs/<chapter>/<run>`` for writing and yield a ``RunWriter``; flush and close it on exit.

    on_exists: what to do with an earlier run of the same name: ``"replace"`` (default: re-executing a
        notebook replaces its runs instead of piling up copies), ``"append"`` (resume; pass ``purge_step``
        = the first step to be written again) or ``"error"``.
    hparams / hparam_metrics: recorded in this run for the HParams dashboard (see ``add_hparams_here``).
    The event file name carries the process id and a per-process serial number, so two writers that open the
    same directory within one second (tensorboardX names files by the second) never overwrite each other.
    """
    path = run_path(chapter, run, root).resolve()
    if path in _OPEN_RUN_DIRS:
        raise RunInUseError(f"{path} is already open in this process; close that writer first (leave its "
                            "`with` block) or use another run name")
    _prepare_dir(path, on_exists)
    suffix = f".{os.getpid()}.{next(_writer_serial)}"
    writer = RunWriter(path, purge_step=purge_step, flush_secs=flush_secs, filename_suffix=suffix,
                       allow_non_finite=allow_non_finite)
    _OPEN_RUN_DIRS.add(path)
    try:
        if hparams:
            writer.add_hparams_here(hparams, hparam_metrics)
        yield writer
    finally:
        _OPEN_RUN_DIRS.discard(path)
        writer.close()


# --------------------------------------------------------------------------------------------- reading


def list_runs(logdir: str | Path) -> list[Path]:
    """Every directory at or below ``logdir`` that directly holds an event file, sorted."""
    root = Path(logdir)
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def _load(run: str | Path):
    """The run's ``EventAccumulator``, loaded once per state of its event files: every ``read_*`` call and
    ``assert_logged`` on an unchanged run share one parse, and a file that grew or appeared is read again."""
    path = Path(run)
    events = sorted(path.glob("events.out.tfevents.*")) if path.is_dir() else []
    if not events:
        parent = path.parent
        near = [p.name for p in sorted(parent.iterdir()) if p.is_dir()] if parent.is_dir() else []
        below = [str(p.relative_to(path)) for p in list_runs(path)] if path.is_dir() else []
        hint = (f"It has no event file itself, but these sub-runs do: {below}. " if below else
                f"Runs next to it: {near}. " if near else "")
        raise RunNotFoundError(f"no TensorBoard run at {path}: the directory does not exist or holds no "
                               f"events.out.tfevents.* file. {hint}Was the cell that writes it executed, and "
                               "did its writer close (leave the `with open_run(...)` block)?")
    files = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in events)
    return _load_files(str(path.resolve()), files)


@functools.lru_cache(maxsize=16)
def _load_files(path: str, files: tuple[tuple[str, int, int], ...]):
    from tensorboard.backend.event_processing import event_accumulator as ea

    # size_guidance 0 = keep everything: the defaults keep 10,000 scalars and 1 histogram per tag
    accumulator = ea.EventAccumulator(path, size_guidance=dict.fromkeys(ea.DEFAULT_SIZE_GUIDANCE, 0))
    accumulator.Reload()
    return accumulator


def _plugin(acc, tag: str) -> str:
    metadata = acc.summary_metadata.get(tag)
    return metadata.plugin_data.plugin_name if metadata is not None else ""


def list_tags(run: str | Path) -> dict[str, list[str]]:
    """The tags of a run by kind: ``scalars``, ``histograms``, ``images``, ``text`` and ``other``.

    TF2 tensors are sorted by the plugin that wrote them, so ``tf.summary.scalar`` tags appear as scalars.
    """
    return list_tags_from(_load(run))


def _missing(run: str | Path, kind: str, tag: str, available: Mapping[str, list[str]]) -> TagNotFoundError:
    logged = available.get(kind, [])
    others = {k: v for k, v in available.items() if v and k != kind}
    return TagNotFoundError(f"run {run} has no {kind[:-1] if kind.endswith('s') else kind} tag {tag!r}. "
                            f"Logged {kind}: {logged or 'none'}. Other tags: {others or 'none'}.")


def _tensor_events(acc, tag: str) -> list:
    """The tensor events of a tag, one per step: the last one written.

    TensorBoard's Python loader purges on a resumed run (``purge_step``) only the classic scalar, histogram
    and image records, not tensors (text, and TF2 scalars and histograms), so a step written before an
    interruption and again after the resume would appear twice. Keeping the last value written for a step
    is what TensorBoard's Rust loader does."""
    latest = {}
    for event in acc.Tensors(tag):
        latest[event.step] = event
    return sorted(latest.values(), key=lambda event: event.step)


def _tensor_scalar_rows(acc, tag: str) -> list[tuple[float, int, float]]:
    from tensorboard.util import tensor_util

    return [(e.wall_time, e.step, float(tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0]))
            for e in _tensor_events(acc, tag)]


def read_scalars(run: str | Path, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """All scalar points of a run: a DataFrame with columns ``tag, step, value, wall_time`` (seconds since the
    epoch), sorted by tag and step. ``tags=None`` reads every scalar tag; a tag that was never logged raises
    ``TagNotFoundError`` listing those that were."""
    acc = _load(run)
    available = list_tags_from(acc)
    wanted = list(tags) if tags is not None else available["scalars"]
    rows = []
    for tag in wanted:
        if tag in acc.Tags()["scalars"]:
            rows += [(tag, e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
        elif tag in available["scalars"]:
            rows += [(tag, step, value, wall) for wall, step, value in _tensor_scalar_rows(acc, tag)]
        else:
            raise _missing(run, "scalars", tag, available)
    frame = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return frame.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)


def list_tags_from(acc) -> dict[str, list[str]]:
    """``list_tags`` for an already loaded ``EventAccumulator`` (avoids reading the files twice)."""
    tags = acc.Tags()
    kinds: dict[str, list[str]] = {"scalars": list(tags["scalars"]), "histograms": list(tags["histograms"]),
                                   "images": list(tags["images"]), "text": [], "other": []}
    by_plugin = {"scalars": "scalars", "histograms": "histograms", "images": "images", "text": "text"}
    for tag in tags["tensors"]:
        kinds[by_plugin.get(_plugin(acc, tag), "other")].append(tag)
    return {kind: sorted(names) for kind, names in kinds.items()}


def read_hparams(run: str | Path) -> dict[str, Any]:
    """The hyper-parameters recorded in a run (by ``open_run(..., hparams=...)``), as ``{name: value}``.
    An empty dict when the run recorded none."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _load(run).PluginTagToContent("hparams").get("_hparams_/session_start_info")
    if content is None:
        return {}
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values: dict[str, Any] = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind) if kind else None
    return values


def read_histograms(run: str | Path, tag: str) -> pd.DataFrame:
    """One row per logged step: ``step, wall_time, min, max, count, sum, edges, counts``.

    ``edges`` has one more entry than ``counts`` (bucket boundaries, in the units of the logged values).
    Reads tensorboardX histograms and TF2 ``tf.summary.histogram`` tensors alike.
    """
    from tensorboard.util import tensor_util

    acc = _load(run)
    available = list_tags_from(acc)
    rows = []
    if tag in acc.Tags()["histograms"]:
        for e in acc.Histograms(tag):
            h = e.histogram_value
            limits = np.asarray(h.bucket_limit, dtype=float)
            counts = np.asarray(h.bucket, dtype=float)
            lefts = np.concatenate([[h.min], limits[:-1]])
            edges = np.concatenate([[lefts[0]], np.minimum(limits, max(h.max, lefts[-1]))])
            rows.append((e.step, e.wall_time, h.min, h.max, h.num, h.sum, edges, counts))
    elif tag in available["histograms"]:
        for e in _tensor_events(acc, tag):
            buckets = tensor_util.make_ndarray(e.tensor_proto).reshape(-1, 3)  # (k, [left, right, count])
            edges = np.concatenate([buckets[:1, 0], buckets[:, 1]])
            counts = buckets[:, 2]
            rows.append((e.step, e.wall_time, buckets[0, 0], buckets[-1, 1], counts.sum(),
                         float(((buckets[:, 0] + buckets[:, 1]) / 2 * counts).sum()), edges, counts))
    else:
        raise _missing(run, "histograms", tag, available)
    return pd.DataFrame(rows, columns=["step", "wall_time", "min", "max", "count", "sum", "edges", "counts"])


def read_text(run: str | Path, tag: str) -> pd.DataFrame:
    """``step, text`` for a text tag. tensorboardX stores ``add_text("note", ...)`` as ``note/text_summary``;
    either name is accepted."""
    from tensorboard.util import tensor_util

    acc = _load(run)
    available = list_tags_from(acc)
    name = tag if tag in available["text"] else f"{tag}/text_summary"
    if name not in available["text"]:
        raise _missing(run, "text", tag, available)
    rows = []
    for e in _tensor_events(acc, name):
        value = tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0]
        rows.append((e.step, value.decode("utf-8") if isinstance(value, bytes) else str(value)))
    return pd.DataFrame(rows, columns=["step", "text"])


def read_images(run: str | Path, tag: str) -> list[tuple[int, np.ndarray]]:
    """``(step, image)`` pairs; each image a ``(H, W, C)`` uint8 array decoded from the stored PNG."""
    from PIL import Image
    from tensorboard.util import tensor_util

    acc = _load(run)
    available = list_tags_from(acc)
    if tag in acc.Tags()["images"]:
        encoded = [(e.step, e.encoded_image_string) for e in acc.Images(tag)]
    elif tag in available["images"]:  # TF2: a string tensor [width, height, png, png, ...]
        encoded = [(e.step, png) for e in _tensor_events(acc, tag)
                   for png in tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[2:]]
    else:
        raise _missing(run, "images", tag, available)
    return [(step, np.asarray(Image.open(io.BytesIO(png)))) for step, png in encoded]


def read_graph(run: str | Path):
    """The model graph a run holds (``add_graph`` of tensorboardX, or Keras' ``TensorBoard(write_graph=True)``),
    as a TensorFlow ``GraphDef`` protobuf: ``len(graph.node)`` nodes, each with ``.name`` and ``.op``."""
    acc = _load(run)
    if not acc.Tags()["graph"]:
        raise TagNotFoundError(f"run {run} holds no graph: log one with writer.add_graph(model, example_input) "
                               "(PyTorch) or keras.callbacks.TensorBoard(write_graph=True)")
    return acc.Graph()


def read_embeddings(logdir: str | Path) -> pd.DataFrame:
    """The embeddings ``add_embedding`` wrote under ``logdir`` (for the Projector): one row per embedding with
    ``tensor_name, vectors`` (an ``(N, D)`` float array), ``labels`` (the metadata column, or ``None``) and
    ``sprite`` (the sprite image as an ``(H, W, C)`` uint8 array, or ``None``). tensorboardX writes these as
    TSV/PNG files listed in ``projector_config.pbtxt``, not as events."""
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins.projector import projector_config_pb2

    root = Path(logdir)
    config_file = root / "projector_config.pbtxt"
    if not config_file.is_file():
        raise RunNotFoundError(f"no projector_config.pbtxt in {root}: was add_embedding called with this "
                               "run's writer, and the writer closed?")
    config = text_format.Parse(config_file.read_text(), projector_config_pb2.ProjectorConfig())
    rows = []
    for embedding in config.embeddings:
        vectors = np.loadtxt(root / embedding.tensor_path, delimiter="\t", ndmin=2)
        labels = None
        if embedding.metadata_path:
            labels = (root / embedding.metadata_path).read_text(encoding="utf-8").splitlines()
        sprite = None
        if embedding.sprite.image_path:
            sprite = np.asarray(Image.open(root / embedding.sprite.image_path))
        rows.append((embedding.tensor_name, vectors, labels, sprite))
    return pd.DataFrame(rows, columns=["tensor_name", "vectors", "labels", "sprite"])


# --------------------------------------------------------------------------------------------- checking


def assert_logged(run: str | Path, expected: Mapping[str, int | Sequence[int] | None]) -> pd.DataFrame:
    """Assert that each tag exists in ``run`` with the expected steps, and that every scalar is finite.

    expected: tag -> ``None`` (at least one point), an ``int`` (exactly that many points) or a sequence of
        steps (exactly those, in order). Tags may be scalars, histograms, images or text (by their logged
        name; tensorboardX text tags end in ``/text_summary``, which may be left out).
    Returns the scalars of the checked scalar tags (columns as ``read_scalars``), so a chapter can go on to
    assert values. Raises ``AssertionError`` naming the tag, what was expected and what was found.
    """
    acc = _load(run)
    available = list_tags_from(acc)
    scalar_tags = [t for t in expected if t in available["scalars"]]
    scalars = read_scalars(run, scalar_tags) if scalar_tags else read_scalars(run, [])
    for tag, want in expected.items():
        if tag in available["scalars"]:
            steps = scalars.loc[scalars.tag == tag, "step"].tolist()
            values = scalars.loc[scalars.tag == tag, "value"].to_numpy()
            if not np.all(np.isfinite(values)):
                bad = scalars.loc[(scalars.tag == tag) & ~np.isfinite(scalars.value), "step"].tolist()
                raise AssertionError(f"{tag!r} in {run} has NaN/inf values at steps {bad[:10]}")
        elif tag in available["histograms"]:
            steps = read_histograms(run, tag)["step"].tolist()
        elif tag in available["images"]:
            steps = [step for step, _ in read_images(run, tag)]
        elif tag in available["text"] or f"{tag}/text_summary" in available["text"]:
            steps = read_text(run, tag)["step"].tolist()
        else:
            all_tags = sorted(t for names in available.values() for t in names)
            raise AssertionError(f"tag {tag!r} was never logged in {run}. Logged tags: {all_tags}")
        if want is None:
            ok, wanted = len(steps) > 0, "at least one point"
        elif isinstance(want, int):
            ok, wanted = len(steps) == want, f"{want} points"
        else:
            ok, wanted = steps == list(want), f"steps {_short(list(want))}"
        if not ok:
            raise AssertionError(f"{tag!r} in {run}: expected {wanted}, found {len(steps)} points at steps "
                                 f"{_short(steps)}")
    return scalars


def _short(steps: list[int]) -> str:
    return str(steps) if len(steps) <= 12 else f"[{', '.join(map(str, steps[:5]))}, ..., " \
                                               f"{', '.join(map(str, steps[-3:]))}] ({len(steps)} in all)"


# --------------------------------------------------------------------------------------------- plotting


def smooth(values: Sequence[float], weight: float = 0.6) -> np.ndarray:
    """TensorBoard's scalar smoothing: a debiased exponential moving average.

    ``s_t = m_t / (1 - weight**n_t)`` with ``m_t = weight * m_{t-1} + (1 - weight) * x_t``, ``m_0 = 0`` and
    ``n_t`` the number of finite values so far. Non-finite values pass through unsmoothed, and a constant
    series is returned as it is (both as TensorBoard does). ``weight`` in [0, 1): 0 = no smoothing.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=float)
    if x.size == 0 or np.all(x == x[0]):
        return x.copy()
    out = np.empty_like(x)
    last, count = 0.0, 0
    for i, value in enumerate(x):
        if not math.isfinite(value):
            out[i] = value
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out[i] = last / (1 - weight**count)
    return out


def _as_runs(runs: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    if isinstance(runs, Mapping):
        return {label: Path(path) for label, path in runs.items()}
    return {Path(runs).name: Path(runs)}


def plot_scalars(runs: str | Path | Mapping[str, str | Path], tags: Sequence[str] | None = None,
                 smoothing: float = 0.6, ncols: int = 3, logy: Sequence[str] = (), title: str | None = None):
    """One panel per tag, one line per run, as TensorBoard's Scalars dashboard draws them: the smoothed
    series as a solid line over the raw values drawn faintly. ``runs`` is a run directory or
    ``{label: run directory}``; ``tags=None`` plots every scalar tag of the first run. Returns the Figure."""
    import matplotlib.pyplot as plt

    paths = _as_runs(runs)
    frames = {label: read_scalars(path) for label, path in paths.items()}
    tags = list(tags) if tags is not None else sorted(next(iter(frames.values())).tag.unique())
    if not tags:
        raise ValueError(f"no scalar tags to plot in {list(paths.values())}")
    ncols = min(ncols, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tag in zip(axes.flat, tags, strict=False):
        for (label, frame), color in zip(frames.items(), itertools.cycle(colors)):
            series = frame[frame.tag == tag]
            if series.empty:
                continue
            ax.plot(series.step, series.value, color=color, alpha=0.25, linewidth=1)
            ax.plot(series.step, smooth(series.value.to_numpy(), smoothing), color=color, linewidth=1.6,
                    label=label)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("step")
        if tag in logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(frames) > 1:
            ax.legend(fontsize=8)
    for ax in axes.flat[len(tags):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_histograms(run: str | Path, tag: str, max_steps: int = 8):
    """TensorBoard's histogram view (overlay mode): one outline per logged step, later steps darker.
    At most ``max_steps`` steps, evenly spaced, are drawn. Returns the Figure."""
    import matplotlib.pyplot as plt

    frame = read_histograms(run, tag)
    picks = np.unique(np.linspace(0, len(frame) - 1, min(max_steps, len(frame))).round().astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    cmap = plt.get_cmap("Oranges")
    for rank, index in enumerate(picks):
        row = frame.iloc[index]
        centers = (row.edges[:-1] + row.edges[1:]) / 2
        ax.plot(centers, row.counts, color=cmap(0.3 + 0.7 * rank / max(1, len(picks) - 1)),
                label=f"step {row.step}")
    ax.set_title(tag, fontsize=10)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- showing


def is_live_notebook() -> bool:
    """True in an interactive JupyterLab/Notebook or Colab session; False when executed headless
    (nbmake, the book build, nbclient) or when ``BOOK_HEADLESS=1``."""
    if os.environ.get("BOOK_HEADLESS") == "1":
        return False
    return "google.colab" in sys.modules or "JPY_SESSION_NAME" in os.environ


def show(logdir: str | Path, tags: Sequence[str] | None = None, port: int = 6006, smoothing: float = 0.6):
    """Show the runs under ``logdir``: live TensorBoard embedded in JupyterLab or Colab; when executed headless
    (CI, the book build) the static equivalent, ``plot_scalars`` of every run found. Never waits on a server
    when headless; live, ``tensorboard.notebook`` waits for the server to answer (about 10 s) and returns.
    Returns the Figure when it plots, else None."""
    logdir = Path(logdir)
    if is_live_notebook():
        from tensorboard import notebook

        notebook.start(f"--logdir {logdir} --host 127.0.0.1 --port {port}")
        return None
    runs = list_runs(logdir)
    if not runs:
        raise RunNotFoundError(f"no runs under {logdir}: nothing has been logged there yet")
    labels = {str(p.relative_to(logdir)) if p != logdir else p.name: p for p in runs}
    return plot_scalars(labels, tags, smoothing=smoothing)
