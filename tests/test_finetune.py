"""``utils.chapters.ch06_verses`` and ``utils.chapters.ch06_finetuning``: the exact behaviour chapter 6 relies on.

What each test guards against: a character policy that lets an unknown character through or drops more
than it names; padding in the wrong place; a prompt mask off by one (a prompt target scored, or the first
answer target skipped); pooling that lets padding in or pools the wrong positions; a strategy that trains
the wrong parameters; memory figures that do not match the trainable parameters; greedy decoding that
reads the logits of the wrong position; a validation split that overlaps the training or test rows; seed
statistics or a standard error of a difference computed with the wrong formula.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn as nn

from utils import lora, memory
from utils.chapters import ch06_finetuning as finetune
from utils.chapters import ch06_verses as finetune_data
from utils.chapters.ch06_verses import IGNORE_INDEX, PAD
from utils.evaluation import classification_loss
from utils.gpt import GPT, GPTConfig
from utils.loop import train_step
from utils.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer.fit("\nabcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ,.:")
CONFIG = GPTConfig(vocab_size=TOKENIZER.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)
K = 3


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


# ------------------------------------------------------------------------------------------- characters


def test_policy_drops_exactly_the_named_characters_and_counts_them():
    texts = ["a (b) c", "d [e]", "plain"]
    cleaned, counts = finetune_data.apply_character_policy(texts, TOKENIZER)
    assert cleaned == ["a b c", "d e", "plain"]
    assert counts == {"(": 1, ")": 1, "[": 1, "]": 1}
    assert finetune_data.unknown_characters(texts, TOKENIZER) == counts
    assert not finetune_data.unknown_characters(cleaned, TOKENIZER)


def test_policy_refuses_a_character_it_does_not_name():
    with pytest.raises(ValueError, match=r"\['#', '\$'\].*add each to the policy"):
        finetune_data.apply_character_policy(["a # b (c) $"], TOKENIZER)


# ------------------------------------------------------------------------------------------- tensors


def test_prefixes_are_truncated_and_right_padded_with_pad():
    ids = finetune_data.encode_prefixes(["abcdef", "ab"], TOKENIZER, 4)
    assert ids.shape == (2, 4) and ids.dtype == torch.long
    assert ids[0].tolist() == TOKENIZER.encode("abcd")
    assert ids[1].tolist() == TOKENIZER.encode("ab") + [PAD, PAD]
    with pytest.raises(ValueError, match="text 1 is empty"):
        finetune_data.encode_prefixes(["a", ""], TOKENIZER, 4)


def test_sft_mask_puts_ignore_index_exactly_on_prompt_targets():
    x, y = finetune_data.sft_example("abc", "Law", TOKENIZER, 12)
    text = "abc\nLaw\n"  # prompt, separator, answer, separator: 8 tokens, 7 positions
    assert x[:7].tolist() == TOKENIZER.encode(text[:-1]) and x[7:].tolist() == [0] * 5
    # targets at t = 0..2 are "b", "c", "\n" (prompt and separator): masked; t = 3 is the answer's "L"
    assert y.tolist() == [IGNORE_INDEX] * 3 + TOKENIZER.encode("Law\n") + [IGNORE_INDEX] * 5
    _, unmasked = finetune_data.sft_example("abc", "Law", TOKENIZER, 12, mask_prompt=False)
    assert unmasked[:7].tolist() == TOKENIZER.encode(text[1:])
    assert (unmasked[7:] == IGNORE_INDEX).all()


def test_sft_batch_masks_each_row_by_its_own_prompt_and_refuses_overflow():
    x, y = finetune_data.encode_sft(["a", "abcd"], ["Law", "Acts"], TOKENIZER, 10)
    assert x.shape == y.shape == (2, 10)
    assert [int((row != IGNORE_INDEX).sum()) for row in y] == [4, 5]  # answer + closing separator
    assert (y[0, :1] == IGNORE_INDEX).all() and (y[1, :4] == IGNORE_INDEX).all()
    assert y[0, 1] == TOKENIZER.stoi["L"] and y[1, 4] == TOKENIZER.stoi["A"]
    with pytest.raises(ValueError, match="more than length=5"):
        finetune_data.sft_example("abcd", "Law", TOKENIZER, 5)


def test_division_split_is_stratified_disjoint_and_fixed():
    verses = pd.DataFrame({"text": [f"v{i}" for i in range(100)],
                           "division": ["Law"] * 60 + ["Acts"] * 30 + ["Revelation"] * 10})
    train, test = finetune_data.division_split(verses, test_size=0.2)
    assert test.division.value_counts().to_dict() == {"Law": 12, "Acts": 6, "Revelation": 2}
    assert set(train.index).isdisjoint(test.index) and len(train) + len(test) == 100
    again, _ = finetune_data.division_split(verses, test_size=0.2)
    assert list(again.index) == list(train.index)
    assert finetune_data.division_labels(["Law", "Revelation"]).tolist() == [0, 9]


def test_three_way_split_is_disjoint_stratified_and_keeps_the_two_way_test_rows():
    verses = pd.DataFrame({"text": [f"v{i}" for i in range(200)],
                           "division": ["Law"] * 120 + ["Acts"] * 60 + ["Revelation"] * 20})
    train, val, test = finetune_data.train_val_test_split(verses, val_size=0.25, test_size=0.2)
    assert (len(train), len(val), len(test)) == (120, 40, 40)
    assert val.division.value_counts().to_dict() == {"Law": 24, "Acts": 12, "Revelation": 4}
    assert test.division.value_counts().to_dict() == {"Law": 24, "Acts": 12, "Revelation": 4}
    indices = [set(part.index) for part in (train, val, test)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    _, two_way_test = finetune_data.division_split(verses, test_size=0.2)
    assert list(test.index) == list(two_way_test.index)


# ------------------------------------------------------------------------------------------- across seeds


def test_across_seeds_gives_each_seed_the_mean_sd_and_spread():
    table = finetune.across_seeds({"a": [0.2, 0.3, 0.4], "b": [0.5, 0.5, 0.5]})
    assert list(table.columns) == ["s0", "s1", "s2", "mean", "sd", "spread"]
    assert table.loc["a", "mean"] == pytest.approx(0.3) and table.loc["a", "sd"] == pytest.approx(0.1)
    assert table.loc["a", "spread"] == pytest.approx(0.2) and table.loc["b", "sd"] == 0
    with pytest.raises(ValueError, match="same number of seeds"):
        finetune.across_seeds({"a": [0.1, 0.2], "b": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="at least 2"):
        finetune.across_seeds({"a": [0.1]})


def test_standard_error_of_a_difference_adds_the_sample_and_the_seeds():
    assert finetune.accuracy_difference_se(0.3, 512) == pytest.approx((2 * 0.3 * 0.7 / 512) ** 0.5)
    assert 0.028 < finetune.accuracy_difference_se(0.3, 512) < 0.029
    # larger than one accuracy's standard error by sqrt(2); largest at p = 0.5
    assert finetune.accuracy_difference_se(0.3, 512) > finetune.accuracy_difference_se(0.1, 512)
    sample = finetune.accuracy_difference_se(0.3, 512)
    assert finetune.mean_difference_se(0.3, 512, 0.0, 0.0, 3) == pytest.approx(sample)
    both = finetune.mean_difference_se(0.3, 512, 0.03, 0.04, 3)
    assert both == pytest.approx((sample**2 + (0.03**2 + 0.04**2) / 3) ** 0.5)
    with pytest.raises(ValueError):
        finetune.accuracy_difference_se(1.5, 512)


# ------------------------------------------------------------------------------------------- classifier


def test_pooling_is_the_mean_over_real_positions_and_ignores_padding():
    gpt = small_gpt()
    model = finetune.GPTClassifier(gpt, K).eval()
    assert isinstance(gpt.lm_head, nn.Linear)  # the pretrained model is left as it was
    captured = {}
    model.body.transformer.ln_f.register_forward_hook(lambda m, i, out: captured.update(h=out))
    short = finetune_data.encode_prefixes(["abc"], TOKENIZER, 3)  # (1, 3), no padding
    padded = finetune_data.encode_prefixes(["abc", "abcdefgh"], TOKENIZER, 8)  # row 0 padded by 5
    with torch.no_grad():
        alone = model.pooled(short)
        hidden = captured["h"]  # (1, 3, C)
        together = model.pooled(padded)
    assert torch.allclose(alone, hidden.mean(dim=1), atol=1e-6)
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    with pytest.raises(ValueError, match="all padding"):
        model(torch.full((1, 4), PAD))


@pytest.mark.parametrize("strategy", finetune.STRATEGIES)
def test_each_strategy_trains_what_it_says_and_the_formula_counts_it(strategy):
    model = finetune.GPTClassifier(small_gpt(), K)
    optimizer = finetune.prepare_strategy(model, strategy, 1e-2, body_lr=1e-3, rank=4, alpha=8.0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    in_optimizer = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    expected = finetune.expected_trainable(strategy, CONFIG, K, rank=4)
    assert lora.trainable_parameter_count(model) == in_optimizer == expected
    if strategy == "frozen":
        assert trainable == {"head.weight", "head.bias"}
    elif strategy == "lora":
        assert all(".lora_" in name or name.startswith("head.") for name in trainable)
        assert expected == CONFIG.n_layer * 6 * 4 * CONFIG.n_embd + CONFIG.n_embd * K + K
    else:
        assert len(trainable) == len(list(model.parameters()))


def test_discriminative_rates_are_per_group_and_checked():
    model = finetune.GPTClassifier(small_gpt(), K)
    optimizer = finetune.prepare_strategy(model, "discriminative", 3e-2, body_lr=1e-3)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {"body.decay": 1e-3, "body.no_decay": 1e-3, "head.decay": 3e-2, "head.no_decay": 3e-2}
    with pytest.raises(ValueError, match="0 < body_lr < lr"):
        finetune.prepare_strategy(finetune.GPTClassifier(small_gpt(), K), "discriminative", 1e-3, body_lr=1e-2)
    with pytest.raises(ValueError, match="unknown strategy 'partial'"):
        finetune.prepare_strategy(model, "partial", 1e-3)


def test_measured_memory_follows_the_trainable_parameters():
    x = finetune_data.encode_prefixes(["abcdefgh", "abc"], TOKENIZER, 8)
    batch = (x, torch.tensor([0, 2]))
    held = {}
    for strategy in ("full", "frozen"):
        model = finetune.GPTClassifier(small_gpt(), K)
        optimizer = finetune.prepare_strategy(model, strategy, 1e-3)
        train_step(model, optimizer, [batch], classification_loss)
        held[strategy] = memory.measure_training_memory(model, optimizer, classification_loss, batch)
        trainable = lora.trainable_parameter_count(model)
        tensors = sum(1 for p in model.parameters() if p.requires_grad)
        assert held[strategy].weights == 4 * (CONFIG.n_embd * K + K + GPT(CONFIG).num_parameters())
        assert held[strategy].gradients == 4 * trainable
        assert held[strategy].optimizer == 2 * 4 * trainable + 4 * tensors  # two moments, one step each
    assert held["frozen"].activations < 0.05 * held["full"].activations
    assert held["full"].mib()["memory/total_mib"] == held["full"].total / 2**20


# ------------------------------------------------------------------------------------------- answers


def test_greedy_continuations_read_each_rows_own_last_position():
    gpt = small_gpt(1)
    prompts = finetune_data.encode_prefixes(["abc", "hello wor"], TOKENIZER, 12)  # room for 3 more
    written = finetune.greedy_continuations(gpt, prompts, 3)
    for row, text in enumerate(["abc", "hello wor"]):
        idx = torch.tensor([TOKENIZER.encode(text)])
        expected = gpt.generate(idx, 3, temperature=0)[0, len(text):]
        assert written[row].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="no room for 4 tokens"):
        finetune.greedy_continuations(gpt, prompts, 4)


def test_two_characters_name_each_division():
    divisions = finetune_data.DIVISIONS
    assert finetune.distinguishing_length(divisions) == 2
    labels = finetune.answers_to_labels(["Mi", "Ma", "Ge", "Go", "Xy"], divisions)
    assert labels.tolist() == [divisions.index("Minor Prophets"), divisions.index("Major Prophets"),
                               divisions.index("General Epistles"), divisions.index("Gospels"), -1]
