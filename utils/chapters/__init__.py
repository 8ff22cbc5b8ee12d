"""Each chapter's experiments, apart from the library (``utils``) every chapter uses.

A module here is named for its chapter and serves that chapter (and its lab) only. Edges run one way: a
chapter module imports the library, never the reverse, and a chapter module imports no other chapter's
module; a lab's checker (``utils.checks``) may import its own chapter's module. ``tests/test_layout.py``
checks these edges.

``ch06_verses``
    Chapter 6's task: the King James Bible's verses, their character policy, the train/validation/test
    split stratified by division, and the tensors a classifier or a language model reads.
``ch06_finetuning``
    Chapter 6's fine-tuning strategies on the small GPT (full, frozen body, discriminative rates, LoRA),
    their training memory, greedy answers, and comparisons across seeds with their standard errors.
``ch06_keras``
    Transfer learning in Keras 3: a frozen base, a new head, BatchNorm kept in inference mode.
``ch06_minilm``
    The real pretrained all-MiniLM-L6-v2, loaded offline from its PyPI package, as a classifier with peft's
    LoRA.
``ch07_dashboards``
    Chapter 7's runs for every TensorBoard dashboard (a small CNN, confusion matrices, PR curves,
    embeddings), and the book's runs as one table.
``ch08_broken_runs``
    Chapter 8's deliberately broken runs, each one setting away from a healthy reference (``utils.diagnose``
    is the library that reads any run's logs; this module makes the runs it is shown on).
"""
