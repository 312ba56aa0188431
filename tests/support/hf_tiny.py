"""Tiny Hugging Face pieces for plumbing tests: nothing downloaded, random weights."""

from __future__ import annotations

import pytest
import torch


def word_tokenizer(vocab: list[str] | dict[str, int], **special_tokens):
    """A fast word-level tokenizer (whitespace and punctuation split) over ``vocab``;
    ``special_tokens`` are the tokenizer's named tokens (pad_token="<pad>", ...)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    ids = vocab if isinstance(vocab, dict) else {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(models.WordLevel(ids, unk_token=special_tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens)


def tiny_causal_lm(path, texts):
    """A randomly initialised 1-layer GPT-2 with a word-level tokenizer (plumbing only)."""
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (HFYesNoJudge is optional)"
    )
    words = sorted({w for s in texts for w in s.replace(":", " ").replace("?", " ").split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "yes", "no", *words])}
    fast = word_tokenizer(vocab, pad_token="<pad>", unk_token="<unk>")
    cfg = transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=128, n_embd=16, n_layer=1, n_head=2
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path
