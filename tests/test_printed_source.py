"""Source a chapter prints fits the page: every ``inspect.getsource(...)`` a notebook of ``book/`` prints
has no line wider than 88 characters, the width of the page's code blocks (wider lines scroll sideways in
the HTML book and wrap in a narrow notebook).

The pieces still wider are listed in ``STILL_WIDE``; the list may only shrink: a listed piece that fits now
fails the test until it is taken off the list, and a piece that is not listed must fit.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from tests.notebook_code import python_source

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 88
GETSOURCE = re.compile(r"inspect\.getsource\(([\w.]+)\)")
#: (notebook, expression) pairs printed wider than the page today, to be re-wrapped.
STILL_WIDE = {
    *(("01_data", name) for name in (
        "datasets.Standardizer", "datasets.augment_images", "tokenizers.BPETokenizer.train",
        "datasets.SlidingWindowDataset", "datasets.tf_window_dataset")),
    ("02_model", "gpt.GPTConfig"), ("02_model", "gpt.CausalSelfAttention"), ("02_model", "gpt.Block"),
    ("02_model", "gpt.GPT.__init__"), ("02_model", "gpt.GPT.forward"), ("02_model", "gpt.parameter_count_formula"),
    ("02_model", "gpt.flops_per_token"),
    *(("03_cross_entropy", f"crossentropy.{name}") for name in (
        "sigmoid", "two_layer_forward", "binary_cross_entropy_with_logits", "logsumexp", "log_softmax",
        "softmax_cross_entropy", "two_layer_gradients", "numerical_gradient", "max_relative_error",
        "gradient_descent_step")),
    ("05_pretraining", "checkpoint.atomic_torch_save"),
    *(("06_finetuning", name) for name in (
        "finetune_data.apply_character_policy", "finetune.GPTClassifier", "finetune.prepare_strategy",
        "lora.LoRALinear", "finetune_data.sft_example", "keras_transfer.make_classifier",
        "keras_transfer.unfreeze", "minilm.load_minilm", "minilm.with_lora")),
    ("08_troubleshooting", "broken_runs.initialise_linear"),
    ("08_troubleshooting", "memory.activation_values_per_token"),
    *(("09_scaling", f"distributed.{name}") for name in (
        "shard_rows", "average_gradients", "train_distributed", "group_ranks", "_resume_point")),
}


def _printed(notebook: Path) -> list[tuple[str, object]]:
    """Each expression the notebook passes to ``inspect.getsource``, resolved with the notebook's own
    imports (only its import statements are executed)."""
    code = python_source(notebook)
    namespace: dict = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            exec(compile(ast.Module([node], []), str(notebook), "exec"), namespace)  # noqa: S102
    return [(expr, eval(expr, namespace)) for expr in dict.fromkeys(GETSOURCE.findall(code))]  # noqa: S307


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_printed_source_fits_the_page(notebook):
    too_wide, fits_now = [], []
    for expr, obj in _printed(notebook):
        wide = [line for line in inspect.getsource(obj).splitlines() if len(line) > WIDTH]
        listed = (notebook.stem, expr) in STILL_WIDE
        if wide and not listed:
            too_wide.append(f"{expr}: {len(wide)} line(s) over {WIDTH}, e.g. {wide[0].strip()[:60]!r}")
        elif listed and not wide:
            fits_now.append(expr)
    assert not too_wide, f"{notebook.name} prints source wider than the page: {too_wide}"
    assert not fits_now, f"{fits_now} fit the page now: take them off STILL_WIDE"
