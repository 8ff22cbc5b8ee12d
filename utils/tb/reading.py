"""Reading runs back: ``read_scalars``, ``read_histograms``, ``read_text``, ``read_images``, ``read_hparams``,
``read_graph``, ``read_embeddings``, ``read_pr_curves`` and ``read_custom_scalars`` return what a run
holds, through TensorBoard's own ``EventAccumulator`` with no sample cap, parsed once per state of the
run's files. They read tensorboardX files and TF2 ``tf.summary`` files alike (TF2 stores scalars,
histograms, images and text as tensors)."""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils.tb.errors import RunNotFoundError, TagNotFoundError

_PLUGIN_KINDS = {"scalars": "scalars", "histograms": "histograms", "images": "images", "text": "text"}


def list_runs(logdir: str | Path) -> list[Path]:
    """Every directory at or below ``logdir`` that directly holds an event file, sorted."""
    root = Path(logdir)
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def _no_run_error(path: Path) -> RunNotFoundError:
    parent = path.parent
    near = [p.name for p in sorted(parent.iterdir()) if p.is_dir()] if parent.is_dir() else []
    below = [str(p.relative_to(path)) for p in list_runs(path)] if path.is_dir() else []
    hint = (f"It has no event file itself, but these sub-runs do: {below}. " if below else
            f"Runs next to it: {near}. " if near else "")
    return RunNotFoundError(f"no TensorBoard run at {path}: the directory does not exist or holds no "
                            f"events.out.tfevents.* file. {hint}Was the cell that writes it executed, and "
                            "did its writer close (leave the `with open_run(...)` block)?")


def accumulator(run: str | Path):
    """The run's ``EventAccumulator``, loaded once per state of its event files: every ``read_*`` call and
    ``assert_logged`` on an unchanged run share one parse, and a file that grew or appeared is read again."""
    path = Path(run)
    events = sorted(path.glob("events.out.tfevents.*")) if path.is_dir() else []
    if not events:
        raise _no_run_error(path)
    files = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in events)
    return _load_files(str(path.resolve()), files)


@functools.lru_cache(maxsize=16)
def _load_files(path: str, files: tuple[tuple[str, int, int], ...]):
    from tensorboard.backend.event_processing import event_accumulator as ea

    # size_guidance 0 = keep everything. The defaults keep, per tag, 10,000 scalars, 10 tensor events (text
    # and every TF2 summary), 4 images and 1 histogram, sampled at random.
    accumulator = ea.EventAccumulator(path, size_guidance=dict.fromkeys(ea.DEFAULT_SIZE_GUIDANCE, 0))
    accumulator.Reload()
    return accumulator


def list_tags(run: str | Path) -> dict[str, list[str]]:
    """The tags of a run by kind: ``scalars``, ``histograms``, ``images``, ``text`` and ``other``.

    TF2 tensors are sorted by the plugin that wrote them, so ``tf.summary.scalar`` tags appear as scalars.
    """
    return list_tags_from(accumulator(run))


def list_tags_from(acc) -> dict[str, list[str]]:
    """``list_tags`` for an already loaded ``EventAccumulator`` (avoids reading the files twice)."""
    tags = acc.Tags()
    kinds: dict[str, list[str]] = {"scalars": list(tags["scalars"]), "histograms": list(tags["histograms"]),
                                   "images": list(tags["images"]), "text": [], "other": []}
    for tag in tags["tensors"]:
        metadata = acc.summary_metadata.get(tag)
        plugin = metadata.plugin_data.plugin_name if metadata is not None else ""
        kinds[_PLUGIN_KINDS.get(plugin, "other")].append(tag)
    return {kind: sorted(names) for kind, names in kinds.items()}


def _missing(run: str | Path, kind: str, tag: str, available: Mapping[str, list[str]]) -> TagNotFoundError:
    logged = available.get(kind, [])
    others = {k: v for k, v in available.items() if v and k != kind}
    return TagNotFoundError(f"run {run} has no {kind[:-1] if kind.endswith('s') else kind} tag {tag!r}. "
                            f"Logged {kind}: {logged or 'none'}. Other tags: {others or 'none'}.")


def as_served(events: list) -> list:
    """The events of one tag, in the order the files hold them, as TensorBoard's default (Rust) loader keeps
    them: when a step s arrives again (a resumed run), it drops every event at a step >= s ("preempts"
    them) and keeps what follows."""
    kept: list = []
    for event in events:
        if kept and event.step <= kept[-1].step:
            kept = [earlier for earlier in kept if earlier.step < event.step]
        kept.append(event)
    return kept


def _tensor_events(acc, tag: str) -> list:
    """The tensor events of a tag as the Rust loader serves them (``as_served``). TensorBoard's Python
    loaders purge only classic scalar, histogram and image records on a resume, not tensors (text, and TF2
    scalars and histograms), so without this a step written before an interruption and again after the
    resume would appear twice."""
    return as_served(acc.Tensors(tag))


def _tensor_values(event) -> np.ndarray:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)


def read_scalars(run: str | Path, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """All scalar points of a run: a DataFrame with columns ``tag, step, value, wall_time`` (seconds since the
    epoch), sorted by tag and step. ``tags=None`` reads every scalar tag; a tag that was never logged raises
    ``TagNotFoundError`` listing those that were."""
    acc = accumulator(run)
    available = list_tags_from(acc)
    wanted = list(tags) if tags is not None else available["scalars"]
    rows = []
    for tag in wanted:
        if tag in acc.Tags()["scalars"]:
            rows += [(tag, e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
        elif tag in available["scalars"]:
            rows += [(tag, e.step, float(_tensor_values(e).reshape(-1)[0]), e.wall_time)
                     for e in _tensor_events(acc, tag)]
        else:
            raise _missing(run, "scalars", tag, available)
    frame = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return frame.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)


def read_hparams(run: str | Path) -> dict[str, Any]:
    """The hyper-parameters recorded in a run (by ``open_run(..., hparams=...)``), as ``{name: value}``.
    An empty dict when the run recorded none."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        by_tag = accumulator(run).PluginTagToContent("hparams")
    except KeyError:  # the run never wrote anything for the hparams plugin
        return {}
    content = by_tag.get("_hparams_/session_start_info")
    if content is None:
        return {}
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values: dict[str, Any] = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind) if kind else None
    return values


def _histogram_row(event) -> tuple:
    """A tensorboardX histogram event -> ``(step, wall_time, min, max, count, sum, edges, counts)``."""
    h = event.histogram_value
    limits = np.asarray(h.bucket_limit, dtype=float)
    counts = np.asarray(h.bucket, dtype=float)
    lefts = np.concatenate([[h.min], limits[:-1]])
    edges = np.concatenate([[lefts[0]], np.minimum(limits, max(h.max, lefts[-1]))])
    return event.step, event.wall_time, h.min, h.max, h.num, h.sum, edges, counts


def _tf2_histogram_row(event) -> tuple:
    """A TF2 ``tf.summary.histogram`` tensor event -> the same row as ``_histogram_row``."""
    buckets = _tensor_values(event).reshape(-1, 3)  # (k, [left, right, count])
    edges = np.concatenate([buckets[:1, 0], buckets[:, 1]])
    counts = buckets[:, 2]
    centre_sum = float(((buckets[:, 0] + buckets[:, 1]) / 2 * counts).sum())
    return event.step, event.wall_time, buckets[0, 0], buckets[-1, 1], counts.sum(), centre_sum, edges, counts


def read_histograms(run: str | Path, tag: str) -> pd.DataFrame:
    """One row per logged step: ``step, wall_time, min, max, count, sum, edges, counts``.

    ``edges`` has one more entry than ``counts`` (bucket boundaries, in the units of the logged values).
    Reads tensorboardX histograms and TF2 ``tf.summary.histogram`` tensors alike.
    """
    acc = accumulator(run)
    available = list_tags_from(acc)
    if tag in acc.Tags()["histograms"]:
        rows = [_histogram_row(e) for e in acc.Histograms(tag)]
    elif tag in available["histograms"]:
        rows = [_tf2_histogram_row(e) for e in _tensor_events(acc, tag)]
    else:
        raise _missing(run, "histograms", tag, available)
    return pd.DataFrame(rows, columns=["step", "wall_time", "min", "max", "count", "sum", "edges", "counts"])


def read_text(run: str | Path, tag: str) -> pd.DataFrame:
    """``step, text`` for a text tag. tensorboardX stores ``add_text("note", ...)`` as ``note/text_summary``;
    either name is accepted."""
    acc = accumulator(run)
    available = list_tags_from(acc)
    name = tag if tag in available["text"] else f"{tag}/text_summary"
    if name not in available["text"]:
        raise _missing(run, "text", tag, available)
    rows = []
    for e in _tensor_events(acc, name):
        value = _tensor_values(e).reshape(-1)[0]
        rows.append((e.step, value.decode("utf-8") if isinstance(value, bytes) else str(value)))
    return pd.DataFrame(rows, columns=["step", "text"])


def _decode_png(png: bytes) -> np.ndarray:
    """PNG bytes -> an ``(H, W, C)`` uint8 array (a grey image gets ``C = 1``, not a missing axis)."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)))
    return image if image.ndim == 3 else image[..., None]


def read_images(run: str | Path, tag: str) -> list[tuple[int, np.ndarray]]:
    """``(step, image)`` pairs as logged; each image an ``(H, W, C)`` uint8 array decoded from the stored
    PNG. A TF2 ``tf.summary.image`` of a batch gives one pair per image of the batch."""
    acc = accumulator(run)
    available = list_tags_from(acc)
    if tag in acc.Tags()["images"]:
        encoded = [(e.step, e.encoded_image_string) for e in acc.Images(tag)]
    elif tag in available["images"]:  # TF2: a string tensor [width, height, png, png, ...]
        encoded = [(e.step, png) for e in _tensor_events(acc, tag)
                   for png in _tensor_values(e).reshape(-1)[2:]]
    else:
        raise _missing(run, "images", tag, available)
    return [(step, _decode_png(png)) for step, png in encoded]


def read_graph(run: str | Path):
    """The model graph a run holds (tensorboardX's ``add_graph``, or Keras'
    ``TensorBoard(write_graph=True)``), as a TensorFlow ``GraphDef`` protobuf: ``len(graph.node)`` nodes,
    each with ``.name`` and ``.op``."""
    acc = accumulator(run)
    if not acc.Tags()["graph"]:
        raise TagNotFoundError(f"run {run} holds no graph: log one with writer.add_graph(model, "
                               "example_input) (PyTorch) or keras.callbacks.TensorBoard(write_graph=True)")
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


def read_pr_curves(run: str | Path, tag: str) -> pd.DataFrame:
    """The precision-recall curves of a tag (``add_pr_curve``), one row per logged step: ``step``,
    ``thresholds`` (the score cut-offs, ``0 .. 1``) and, per threshold, ``tp, fp, tn, fn`` (counts of
    examples whose score is >= the threshold, by label), ``precision`` and ``recall`` (1-D arrays)."""
    acc = accumulator(run)
    curves = [t for t in acc.Tags()["tensors"] if acc.summary_metadata[t].plugin_data.plugin_name
              == "pr_curves"]
    if tag not in curves:
        raise TagNotFoundError(f"run {run} has no PR-curve tag {tag!r}. PR curves logged: "
                               f"{curves or 'none'} (write one with writer.add_pr_curve(tag, labels, "
                               "scores, step))")
    rows = []
    for event in _tensor_events(acc, tag):
        tp, fp, tn, fn, precision, recall = _tensor_values(event)  # (6, num_thresholds)
        thresholds = np.linspace(0.0, 1.0, len(tp))
        rows.append((event.step, thresholds, tp, fp, tn, fn, precision, recall))
    return pd.DataFrame(rows, columns=["step", "thresholds", "tp", "fp", "tn", "fn", "precision",
                                       "recall"])


def read_custom_scalars(run: str | Path) -> pd.DataFrame:
    """The custom-scalars layout of a run (``add_custom_scalars``): one row per chart with ``category``,
    ``title``, ``kind`` (``"multiline"`` or ``"margin"``) and ``tags`` (a multiline chart's tag patterns;
    a margin chart's ``(value, lower, upper)`` triples). Empty when the run wrote no layout."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = accumulator(run)
    name = "custom_scalars__config__"
    if name not in acc.Tags()["tensors"]:
        return pd.DataFrame(columns=["category", "title", "kind", "tags"])
    content = _tensor_values(_tensor_events(acc, name)[-1]).reshape(-1)[0]
    layout = layout_pb2.Layout.FromString(content)
    rows = []
    for category in layout.category:
        for chart in category.chart:
            kind = chart.WhichOneof("content")
            if kind == "multiline":
                tags = list(chart.multiline.tag)
            else:
                tags = [(s.value, s.lower, s.upper) for s in chart.margin.series]
            rows.append((category.title, chart.title, kind, tags))
    return pd.DataFrame(rows, columns=["category", "title", "kind", "tags"])


def average_precision(curve: pd.Series) -> float:
    """The average precision of one PR curve (a row of ``read_pr_curves``): the precision at each
    threshold weighted by the recall it adds, ``sum_i (R_i - R_{i+1}) P_i`` with ``R`` falling to 0
    after the highest threshold, as scikit-learn's ``average_precision_score`` on these thresholds.
    Thresholds that call no example positive are skipped (tensorboardX records precision 0 there)."""
    predicted = np.asarray(curve.tp) + np.asarray(curve.fp)
    keep = predicted > 0
    recall, precision = np.asarray(curve.recall)[keep], np.asarray(curve.precision)[keep]
    next_recall = np.append(recall[1:], 0.0)
    return float(((recall - next_recall) * precision).sum())
