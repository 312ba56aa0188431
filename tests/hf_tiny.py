"""Tiny Hugging Face pieces for plumbing tests: nothing downloaded, random weights."""

from __future__ import annotations


def word_tokenizer(vocab: list[str] | dict[str, int], **special_tokens):
    """A fast word-level tokenizer (whitespace and punctuation split) over ``vocab``;
    ``special_tokens`` are the tokenizer's named tokens (pad_token="<pad>", ...)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    ids = vocab if isinstance(vocab, dict) else {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(models.WordLevel(ids, unk_token=special_tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens)
