"""Local Hugging Face models as translators: :class:`HFTranslator`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from noiseforge.relevance.translate.base import LANGUAGE_NAMES, Translator


class HFTranslator(Translator):
    """Any local Hugging Face seq2seq (T5, Marian, NLLB...) or causal LM as a translator.

    ``prompt`` is formatted with ``src``, ``tgt`` (language names) and ``text``. For causal
    LMs only the generated continuation is kept (its first line). Needs ``transformers``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        prompt: str = "Translate this {src} search query into {tgt}: {text}\n",
        languages: Sequence[str] = tuple(LANGUAGE_NAMES),
        max_new_tokens: int = 48,
        batch_size: int = 16,
        device: str | None = None,
    ):
        try:
            import transformers
        except ImportError:
            raise ImportError(
                "HFTranslator needs 'transformers': pip install transformers"
            ) from None
        self.model_path = Path(model_path)
        config = transformers.AutoConfig.from_pretrained(self.model_path)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto = (
            transformers.AutoModelForSeq2SeqLM
            if self.seq2seq
            else transformers.AutoModelForCausalLM
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "left"  # causal generation continues the right end
        self.model = auto.from_pretrained(self.model_path).eval()
        if device is not None:
            self.model.to(device)
        self.prompt, self.languages = prompt, tuple(languages)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.name = f"hf:{self.model_path.name}"
        h = hashlib.sha256((self.model_path / "config.json").read_bytes() + prompt.encode())
        for f in sorted(self.model_path.glob("*.safetensors")) + sorted(
            self.model_path.glob("*.bin")
        ):
            h.update(f"{f.name}{f.stat().st_size}{f.stat().st_mtime_ns}".encode())
        self.version = h.hexdigest()[:12]

    def pairs(self) -> set[tuple[str, str]]:
        return {(s, t) for s in self.languages for t in self.languages if s != t}

    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        out: list[str] = []
        names = (LANGUAGE_NAMES.get(src, src), LANGUAGE_NAMES.get(tgt, tgt))
        for i in range(0, len(texts), self.batch_size):
            prompts = [
                self.prompt.format(src=names[0], tgt=names[1], text=t)
                for t in texts[i : i + self.batch_size]
            ]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
            with torch.no_grad():
                gen = self.model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # fmt: skip
            if not self.seq2seq:
                gen = gen[:, enc["input_ids"].shape[1] :]
            for g in self.tokenizer.batch_decode(gen, skip_special_tokens=True):
                lines = g.strip().split("\n")
                out.append(lines[0].strip() if lines else "")
        return out
