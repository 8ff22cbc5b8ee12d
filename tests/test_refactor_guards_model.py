"""Guards for what a refactor of the model, the sampler and the data helpers breaks without a sound: each test
fails on a one-line change that the rest of the suite let through (named in its docstring).

- ``GPT.generate`` feeds the *last* ``block_size`` tokens once the text is longer than the context, at every
  step, greedy and sampled (checked token by token against a loop written out here);
- attention dropout is off in eval mode and on in training mode (every other model of the suite has
  dropout 0, so a dropout applied in eval mode changed nothing there);
- greedy decoding of a model with dropout, in eval mode, is the argmax of the model without dropout; the
  book's sampler (``utils.pretrain.sampler``) and the fine-tuning chapter's ``greedy_continuations`` put the
  model in eval mode themselves (the latter gives the caller's mode back);
- ``make_adamw``'s default betas and eps;
- ``tf_window_dataset``'s default order covers every window, as ``torch_window_loader``'s does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw
from utils.pretrain import sampler
from utils.tokenizers import CharTokenizer

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def make(dropout: float = 0.0, seed: int = 3) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**CONFIG.__dict__, "dropout": dropout}))
    with torch.no_grad():  # larger weights than GPT-2's init, so that the logits depend clearly on the context
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(20)
    return model.eval()


def reference_generate(model: GPT, idx: torch.Tensor, steps: int, temperature: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Token by token, written out: the last block_size tokens in, the last position's logits out."""
    block = model.config.block_size
    with torch.no_grad():
        for _ in range(steps):
            logits = model(idx[:, -block:])[0][:, -1, :]  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
    return idx


# --------------------------------------------------------------------------------------------- the context


def test_greedy_generation_past_the_block_feeds_the_last_block_size_tokens():
    model = make()
    prompt = torch.tensor([[1, 5, 2, 7, 3], [4, 4, 9, 0, 11]])  # (2, 5): the block (8) is passed at step 4
    out = model.generate(prompt, 15, temperature=0)
    assert out.shape == (2, 20)
    assert torch.equal(out, reference_generate(model, prompt, 15))
    # the check can tell: feeding the *first* block_size tokens would give other tokens past the block
    first = prompt
    with torch.no_grad():
        for _ in range(15):
            first = torch.cat([first, model(first[:, :8])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert not torch.equal(first, out)


def test_sampled_generation_past_the_block_feeds_the_last_block_size_tokens():
    model = make()
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2]])
    out = model.generate(prompt, 20, temperature=0.8, generator=torch.Generator().manual_seed(1))
    expected = reference_generate(model, prompt, 20, 0.8, torch.Generator().manual_seed(1))
    assert torch.equal(out, expected)


def test_tokens_older_than_the_block_do_not_change_the_continuation():
    model = make()
    tail = torch.tensor([[2, 6, 1, 8, 12, 0, 5, 7]])  # block_size tokens
    a = model.generate(torch.cat([torch.tensor([[1, 1, 1]]), tail], dim=1), 6, temperature=0)
    b = model.generate(torch.cat([torch.tensor([[9, 3, 10]]), tail], dim=1), 6, temperature=0)
    assert torch.equal(a[:, 3:], b[:, 3:])
    c = model.generate(torch.cat([torch.tensor([[1, 1, 1]]), tail[:, :-1], torch.tensor([[3]])], dim=1), 6,
                       temperature=0)
    assert not torch.equal(a[:, -6:], c[:, -6:])  # whereas a token inside the block does


# --------------------------------------------------------------------------------------------- dropout and modes


def test_attention_dropout_is_off_in_eval_mode():
    """In eval mode a model with dropout 0.5 computes what the same weights without dropout compute."""
    with_dropout, without = make(dropout=0.5), make(dropout=0.0)
    without.load_state_dict(with_dropout.state_dict())
    idx = torch.randint(0, 13, (4, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(with_dropout.eval()(idx)[0], without.eval()(idx)[0], rtol=0, atol=0)


def test_attention_dropout_is_on_in_training_mode():
    """Only the attention's dropout left (the nn.Dropout modules set to 0): training mode changes the output."""
    model = make(dropout=0.5)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    idx = torch.randint(0, 13, (4, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        evaluated = model.eval()(idx)[0]
        torch.manual_seed(0)
        trained = model.train()(idx)[0]
    assert (trained - evaluated).abs().max() > 1e-3


def test_greedy_decoding_in_eval_mode_ignores_dropout():
    model, plain = make(dropout=0.5), make(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(0)
    first = model.eval().generate(prompt, 12, temperature=0)
    torch.manual_seed(1)  # another dropout draw, if dropout were applied
    second = model.generate(prompt, 12, temperature=0)
    assert torch.equal(first, second) and torch.equal(first, reference_generate(plain, prompt, 12))


def test_the_books_sampler_switches_the_model_to_eval_mode():
    """``utils.pretrain.sampler``'s ``sample_fn`` is called by the loop on a model in training mode; it must
    sample with dropout off: the text of a dropout model equals that of the same weights without dropout."""
    tokenizer = CharTokenizer.fit("abcdefghijkl\n")  # 13 characters: CONFIG's vocabulary
    model, plain = make(dropout=0.5), make(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    sample_fn = sampler(tokenizer, prompt="ab", length=12, seed=0)
    texts = []
    for draw in range(2):
        model.train()
        torch.manual_seed(draw)  # another dropout draw each time, if dropout were applied
        texts.append(sample_fn(model))
    assert modes == [False] * 24
    assert texts[0] == texts[1] == sample_fn(plain.eval()) and len(texts[0]) == 12


def test_greedy_continuations_decode_in_eval_mode_and_give_the_mode_back():
    """``utils.chapters.ch06_finetuning.greedy_continuations`` (the fine-tuning chapter's answers) on a model with dropout that
    is in training mode: the answers of the same weights without dropout, and the training mode kept."""
    from utils.chapters import ch06_finetuning as finetune

    model, plain = make(dropout=0.5), make(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    prompts = torch.tensor([[1, 2, 3, -1, -1, -1, -1, -1], [4, 5, -1, -1, -1, -1, -1, -1]])  # -1: padding
    model.train()
    torch.manual_seed(0)
    answers = finetune.greedy_continuations(model, prompts, 5)
    assert model.training
    for row, length in enumerate((3, 2)):
        expected = reference_generate(plain, prompts[row:row + 1, :length], 5)[0, length:]
        assert answers[row].tolist() == expected.tolist()
    model.eval()
    finetune.greedy_continuations(model, prompts, 5)
    assert not model.training


# --------------------------------------------------------------------------------------------- optimizer, data


def test_make_adamw_defaults_are_the_books():
    """The book's AdamW: betas (0.9, 0.95) (nanoGPT's, not torch's 0.999) and eps 1e-8, in every group."""
    optimizer = make_adamw(make(), 1e-3, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {(tuple(g["betas"]), g["eps"]) for g in optimizer.param_groups} == {((0.9, 0.95), 1e-8)}
    assert make_adamw(make(), 1e-3, betas=(0.8, 0.9)).param_groups[0]["betas"] == (0.8, 0.9)


def test_tf_window_dataset_default_order_covers_every_window():
    """Without ``order``, the tf.data pipeline visits windows 0, 1, ..., N - T - 1 in order: the same batches
    as ``torch_window_loader`` without ``order``, the last window's target ending at the last id."""
    from utils.datasets import tf_window_dataset, torch_window_loader

    ids = np.arange(61) * 7 % 53  # 61 ids, T = 8: 53 windows, 7 batches of 8 (the last one of 5)
    torch_batches = [tuple(t.numpy() for t in b) for b in torch_window_loader(ids, 8, 8)]
    tf_batches = [tuple(t.numpy() for t in b) for b in tf_window_dataset(ids, 8, 8)]
    assert [len(b[0]) for b in tf_batches] == [8] * 6 + [5]
    assert sum(len(b[0]) for b in tf_batches) == len(ids) - 8
    for (tx, ty), (fx, fy) in zip(torch_batches, tf_batches, strict=True):
        np.testing.assert_array_equal(tx, fx)
        np.testing.assert_array_equal(ty, fy)
    np.testing.assert_array_equal(tf_batches[0][0][0], ids[:8])
    np.testing.assert_array_equal(tf_batches[-1][1][-1], ids[-8:])
