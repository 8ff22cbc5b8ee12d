"""The shared code of the book: every helper the chapters teach lives here, once.

Import modules by name (``from utils import tb``); importing this package has no side effects and
pulls in neither torch nor TensorFlow. One sentence per module:

Logging and reading back
    ``tb``: write runs with tensorboardX, read them back with TensorBoard's own loader, plot and assert them.
    ``diagnose``: what went wrong in any run's logs, with the evidence (``python -m utils.diagnose runs/``).
Data
    ``datasets``: the shipped corpora, the digits, and the preprocessing chapter 1 teaches (splits, windows,
    standardisation, augmentation).
    ``tokenizers``: the character and byte-level BPE tokenizers the book builds from scratch.
    ``batches``: ``batch_fn(i)`` factories, pure functions of the batch index, and moving batches to a device.
    ``integrity``: SHA-256 checks of the files the book ships.
Models and losses
    ``gpt``: the book's GPT (pre-norm blocks, causal attention, weight tying) and its parameter/FLOP formulas.
    ``crossentropy``: cross-entropy and its gradients in NumPy, worked exactly as chapter 3 teaches them.
    ``evaluation``: the losses the loop optimises and batch-size-weighted validation.
Training
    ``loop``: ``train_step`` (one update) and ``train`` (the loop around it), on any device.
    ``hooks``: what the loop does around an update (logging, evaluation, early stopping, samples, checkpoints).
    ``layer_stats``: per-layer gradient norms and ReLUs' share of exact zeros, measured on an update's batches.
    ``lora``: LoRA from scratch (a frozen linear layer plus a low-rank update), checked against ``peft``.
    ``distributed``: data-parallel training with ``torch.distributed`` (DDP, the all-reduce by hand, FSDP),
    the script chapter 9 launches with torchrun, each rank running ``loop.train``.
    ``torchrun``: that script's command line, and launching (or killing) it with torchrun on this machine.
    ``comm``: what DDP sends and when (its buckets, ``no_sync``, the overlap), gloo's all-reduce timed.
    ``memory``: the memory arithmetic of training (weights, gradients, AdamW states, activations), measured.
    ``optim``: AdamW with decay on matrices only and per-group rates, and its warm-up + cosine scheduler.
    ``schedule``: the warm-up + cosine learning rate as a pure function of the step.
    ``checkpoint``: atomic, ``weights_only`` checkpoints of a whole training state, with clear errors.
    ``perf``: the measured matmul peak and model FLOPs utilisation.
    ``keras_tb``: the same logging for TensorFlow/Keras (a ``GradientTape`` loop and a ``model.fit`` callback).
    ``pretrain``: chapter 5's pretraining run, also the command that makes the shipped model.
    ``pretrained``: loading the shipped pretrained GPT, verified ("load the checkpoint, else train").
The book itself
    ``env``: seeding, the environment check, and what a notebook cost.
    ``costs``: the benchmarks' latest results as Markdown, and each notebook's measured cost.
    ``paths``: where the repository, ``runs/`` and ``checkpoints/`` are.
    ``validate``: checks of settings and command-line values whose errors name the setting, value and bounds.
    ``notebooks``: the notebook conventions, as commands (strip, bootstrap cell, student copies).
    ``checks``: the labs' checkers (``utils.checks.lab06_finetuning`` goes with chapter 6, and so on).
Each chapter's own experiments
    ``chapters``: one module per chapter that needs code of its own (``ch06_finetuning``, ``ch07_dashboards``,
    ``ch08_broken_runs``, ...), each described in ``utils/chapters/__init__.py``. The library above never
    imports them; ``tests/test_layout.py`` checks the edges.
"""

__version__ = "0.1.0"
