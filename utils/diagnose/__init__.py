"""Diagnose training runs from their TensorBoard logs:
``python -m utils.diagnose <logdir> [--json] [--rules] [--tag role=TAG ...]``.

Reads every run at or below ``logdir`` (any folder holding an ``events.out.tfevents.*`` file) through
TensorBoard's own loader (``utils.tb``: tensorboardX, ``torch.utils.tensorboard``, ``tf.summary`` and Keras
logs alike, TF2 tensor-stored scalars included; a step written twice, as by a resumed run, counts once, with
the value written last) and reports, per run, what went wrong, with its evidence: rule, tag, step, value, a
one-line explanation and what to do. It never writes into the folder it reads.

Every rule and every threshold is in ``RULES`` (``--rules`` prints it). Which tag plays which role is the role
table, ``utils.diagnose.roles``; each run's report has a line ``roles: loss=..., val_loss=...; not found:
...``. The roles: ``loss`` (training loss), ``val_loss`` (validation, eval or test loss evaluated during
training), ``train_accuracy``, ``val_accuracy``, ``lr``, ``grad_norm``, ``loss_scale`` (scalars: the first tag
of the role's list in ``ROLE_TAGS`` that a run has plays it), and ``weights``, ``grads``, ``activations``
(histograms, by prefix or suffix: ``weights/*``, ``grads/*``, ``activations/*``, Keras's
``<layer>/<weight>/histogram``, torch's ``fc.weight`` and ``fc.weight.grad``); ``update_ratio/*`` scalars are
read per layer too. The table knows the book's tags (``train/loss``, ``val/loss``, ``train/grad_norm``,
``train/lr``, ``val/accuracy``), the PyTorch tutorial's (``Loss/train``, ``Loss/test``, ``Accuracy/test``),
Hugging Face's Trainer (``train/loss``, ``eval/loss``, ``eval/accuracy``, ``train/grad_norm``,
``train/learning_rate``), PyTorch Lightning (``train_loss``, ``val_loss``, ``val_acc``, ``lr-AdamW``) and
Keras (``epoch_loss``, ``epoch_accuracy``, ``epoch_learning_rate``, ``batch_loss``,
``evaluation_loss_vs_iterations``). Three per-layer roles are scalars, one tag per layer, as the book's loop
logs them with ``layer_stats_every``: ``layer_grad_norms`` (``grad_norm/<matrix>``; Lightning's
``grad_2.0_norm/<param>``), ``zero_shares`` (``zero_share/<ReLU>``, the share of a layer's outputs that are
exactly 0; TensorFlow estimators' ``<layer>/fraction_of_zero_values``) and ``dead_shares``
(``dead_share/<ReLU>``, the share of its units that output 0 for every input of a batch). A run written as one
writer per split (``RUN/train``, ``RUN/val``, ``RUN/validation``, ``RUN/eval``, ``RUN/test``: Keras's
callback, or the usual way to overlay curves) is one run ``RUN``: the ``train`` writer's tags as they are (its
``loss`` is the training loss), the others' prefixed with their folder (``val/loss``,
``validation/epoch_loss``: the validation loss, never a training loss). So are ``add_scalars``'s sub-writers
(``RUN/loss_train`` and ``RUN/loss_val`` from torch.utils.tensorboard, ``RUN/loss/train`` and ``RUN/loss/val``
from tensorboardX, each holding the one tag ``loss``): one run ``RUN`` whose tags are ``loss/train`` and
``loss/val``. A tag the table lists in other capitals plays its role too.

``--tag role=TAG`` (repeatable) names the tag that plays a role instead of the table, in every run that has
it (for ``weights``, ``grads``, ``activations``: a prefix of histogram tags; a per-split writer's tags carry
their folder's prefix). An unknown role, or a tag that no run has, is refused with the usage line and exit
status 2. Every scalar, whatever its tag, is checked for NaN and inf.

Severity: "error" means the run is broken now (a non-finite loss or gradient that was not a gradient
scaler's skipped step, a divergence that did not recover); "warning", worth a look (a spike the loss
recovered from, validation rising, dead units); "note", facts (a scaler's skipped steps, a schedule without
warmup or decay). Rules that compare two stretches of a curve ask for more than its own noise (``NOISE_SE``
standard errors), so a small batch's jumpy loss is no finding; ``python -m benchmarks.diagnose_zoo``
measures each rule's precision and recall on runs with known faults (``tests/zoo.py``).

Exit status: 0 when no finding has severity "error" (warnings and notes may be present), 1 when one does,
2 when the input is unusable (no event file under ``logdir``, or one that is empty, cut short or not an
event file; a bad ``--tag``).
"""

from utils.diagnose.cli import format_report, format_rules, main, to_json
from utils.diagnose.roles import LAYER_ROLES, LAYER_SCALAR_ROLES, ROLE_TAGS, ROLES
from utils.diagnose.rules import RULES, Finding, Rule
from utils.diagnose.runs import RunReport, UnknownTagError, diagnose, diagnose_run

# roles.py: which tag plays which role; rules.py: the table and the checks of the training loss and the
# gradient norm; validation_rules.py: overfitting and no progress; layer_rules.py: the per-layer histograms;
# runs.py: reading runs and a report per run; cli.py: the output.
__all__ = ["LAYER_ROLES", "LAYER_SCALAR_ROLES", "RULES", "ROLES", "ROLE_TAGS", "Finding", "Rule", "RunReport",
           "UnknownTagError", "diagnose", "diagnose_run", "format_report", "format_rules", "main", "to_json"]
