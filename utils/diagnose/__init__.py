"""Diagnose training runs from their TensorBoard logs: ``python -m utils.diagnose <logdir> [--json] [--rules]``.

Reads every run at or below ``logdir`` (any folder holding an ``events.out.tfevents.*`` file) through
TensorBoard's own loader (``utils.tb``: tensorboardX, ``torch.utils.tensorboard``, ``tf.summary`` and Keras
logs alike, TF2 tensor-stored scalars included; a step written twice, as by a resumed run, counts once, with
the value written last) and reports, per run, what went wrong, with its evidence: rule, tag, step, value, a
one-line explanation and what to do. It never writes into the folder it reads.

Every rule and every threshold is in ``RULES`` below (``--rules`` prints it). Tags recognised (``ROLE_TAGS``,
first match wins; ``LAYER_PREFIXES``): the book's ``train/loss``, ``val/loss``, ``train/grad_norm``,
``train/lr``, ``update_ratio/*`` scalars and ``weights/*``, ``grads/*``, ``activations/*`` histograms, and common
alternatives: ``loss``, ``train_loss``, ``val_loss`` (Keras 2, Lightning), ``validation/loss``, ``grad_norm``,
``lr``, ``learning_rate``, ``lr-AdamW`` (Lightning), Keras's ``<layer>/histogram``. Keras's ``TensorBoard``
callback writes ``<run>/train`` and ``<run>/validation``: read as one run ``<run>``, the validation folder's
tags prefixed ``validation/`` (so ``epoch_loss`` and ``validation/epoch_loss``). Every scalar, whatever its
tag, is checked for NaN and inf.

Exit status: 0 when no finding has severity "error" (warnings and notes may be present), 1 when one does,
2 when the input is unusable (no event file under ``logdir``, or one that is empty, cut short or not an
event file).
"""

from utils.diagnose.cli import format_report, format_rules, main, to_json
from utils.diagnose.rules import RULES, Finding, Rule
from utils.diagnose.runs import ROLE_TAGS, RunReport, diagnose, diagnose_run

# rules.py: the table and one check per rule; runs.py: reading runs and a report per run; cli.py: the output.
__all__ = ["RULES", "ROLE_TAGS", "Finding", "Rule", "RunReport", "diagnose", "diagnose_run", "format_report",
           "format_rules", "main", "to_json"]
