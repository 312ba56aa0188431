"""Query translation: offline backends, a disk cache and translation augmentation.

Backends (each a :class:`Translator`):

* :class:`ApertiumTranslator` -- Debian Apertium pairs (rule-based MT) through the
  ``apertium`` binary, one process per batch, pivoting through Spanish or English.
* :class:`FreeDictTranslator` -- Debian FreeDict bilingual dictionaries (dictd files),
  phrase-first longest match on lower-cased tokens; suits short product queries.
* :class:`HFTranslator` -- any local Hugging Face seq2seq or causal LM.

Language codes are the table's two-letter codes (en, fr, es, de, it, pl, ar, pt, ...).
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from noiseforge._common.paths import default_cache_dir

from .schema import COLUMNS

#: two-letter (table) code -> ISO 639-3 (FreeDict, newer Apertium) code
ISO3 = {
    "en": "eng", "fr": "fra", "es": "spa", "de": "deu", "it": "ita", "pl": "pol", "ar": "ara",
    "pt": "por", "nl": "nld", "ru": "rus", "ja": "jpn", "ko": "kor", "th": "tha", "vn": "vie",
    "vi": "vie", "id": "ind", "tr": "tur", "sv": "swe", "ca": "cat", "gl": "glg", "ro": "ron",
    "cs": "ces", "da": "dan", "fi": "fin", "el": "ell", "bg": "bul", "hu": "hun", "nb": "nob",
}  # fmt: skip
_ISO2 = {v: k for k, v in ISO3.items() if k != "vi"}
LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
    "pl": "Polish", "ar": "Arabic", "pt": "Portuguese", "ko": "Korean", "ja": "Japanese",
    "th": "Thai", "vn": "Vietnamese", "id": "Indonesian", "nl": "Dutch", "ru": "Russian",
}  # fmt: skip


def to_iso2(code: str) -> str:
    """'eng' -> 'en', 'es' -> 'es'; unknown codes are returned lower-cased."""
    code = code.lower()
    return _ISO2.get(code, code)


#: bump when FreeDict parsing or lookup changes, so cached translations are redone
FREEDICT_RULES = 2


class TranslationUnavailable(RuntimeError):
    """No installed backend can translate a language pair; the message says what to install."""


class Translator(abc.ABC):
    """Translates batches of short texts between two-letter language codes.

    Subclasses set ``name`` and ``version`` (the cache key) and implement :meth:`pairs`
    and :meth:`_translate`. ``translate`` keeps the order and length of ``texts``.
    """

    name: str = "translator"
    version: str = "0"

    @abc.abstractmethod
    def pairs(self) -> set[tuple[str, str]]:
        """The (src, tgt) pairs this backend can translate (pivots included)."""

    def supports(self, src: str, tgt: str) -> list[str]:
        """Reasons this backend cannot translate src -> tgt (empty when it can)."""
        if (src, tgt) in self.pairs():
            return []
        return [f"{self.name}: no {src}->{tgt} pair installed"]

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        """Translate ``texts`` from ``src`` to ``tgt``; raises TranslationUnavailable if unsupported."""
        texts = list(texts)
        if not texts:
            return []
        if src == tgt:
            return texts
        reasons = self.supports(src, tgt)
        if reasons:
            raise TranslationUnavailable("; ".join(reasons))
        out = self._translate(texts, src, tgt)
        if len(out) != len(texts):
            raise RuntimeError(
                f"{self.name} returned {len(out)} translations for {len(texts)} texts"
            )
        return out

    @abc.abstractmethod
    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


# ----------------------------------------------------------------------------- FreeDict

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}
_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*|\S", re.UNICODE)
_BRACKETS = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)|\{[^}]*\}")


def dictd_number(s: str) -> int:
    """Decode a dictd index number (base64 digits, most significant first)."""
    n = 0
    for c in s:
        n = n * 64 + _B64_VALUE[c]
    return n


def dictd_key(text: str) -> str:
    """The dictd index form of a headword: lower case, only letters, digits and single spaces."""
    return " ".join("".join(c for c in w if c.isalnum()) for w in text.lower().split()).strip()


def first_translation(entry: str) -> str | None:
    """The first translation of a dictd entry's first sense, without grammar annotations.

    ``entry`` is the entry text: a header line (headword, pronunciation, part of speech)
    then sense lines; examples (quoted or ``- ...``), ``Synonyms:``, ``see:`` and ``Note:``
    lines are skipped; numbering ``1.``, ``[tags]``, ``<pos>`` and ``(notes)`` are removed.
    """
    for line in entry.split("\n")[1:]:
        s = line.strip()
        if not s or s[0] in '"-' or s.startswith(("Synonym", "see:", "Note:", "Antonym")):
            continue
        s = _BRACKETS.sub(" ", s)
        s = re.sub(r"^(?:(?:[IVX]+|\d+|[a-z])\.\s*)+", "", s.strip())  # "I. 1. a." numbering
        for part in re.split(r"[,;]", s):
            part = re.sub(r"\s+\d+\.?$", "", " ".join(part.split())).strip(" ./:")  # "birra 2."
            if part:
                return part
    return None


def _headwords(entry: str) -> set[str]:
    """The index keys an entry's header line names (the whole header word and its comma-separated forms)."""
    head = re.split(r"\s/|\s<|\s\[", entry.split("\n", 1)[0])[0]
    forms = {dictd_key(head)} | {dictd_key(re.sub(r"\([^)]*\)", "", f)) for f in head.split(",")}
    return forms - {""}


def _entry_penalty(entry: str) -> int:
    """Prefer plain, general senses: count domain/register tags, notes and verb headers."""
    lines = entry.split("\n")
    sense = next((ln for ln in lines[1:] if ln.strip()), "")
    return (
        len(re.findall(r"\[[^\]]*\]", lines[0] + sense)) + ("Note:" in entry) + ("<v" in lines[0])
    )


class DictdDictionary:
    """One dictd dictionary (``<name>.index`` + ``<name>.dict.dz`` or ``.dict``), parsed lazily."""

    def __init__(self, index_path: str | os.PathLike):
        self.index_path = Path(index_path)
        base = str(self.index_path)[: -len(".index")]
        self.dict_path = (
            Path(base + ".dict.dz") if Path(base + ".dict.dz").exists() else Path(base + ".dict")
        )
        self._index: dict[str, list[tuple[int, int]]] | None = None
        self._data: bytes | None = None
        self._cache: dict[str, str | None] = {}
        self.max_words = 1

    def _load(self) -> None:
        index: dict[str, list[tuple[int, int]]] = {}
        with open(self.index_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if (
                    len(parts) < 3
                    or parts[0].startswith("00database")
                    or parts[0].startswith("00-database")
                ):
                    continue
                key = dictd_key(parts[0])
                if not key:
                    continue
                index.setdefault(key, []).append((dictd_number(parts[1]), dictd_number(parts[2])))
        opener = gzip.open if self.dict_path.suffix == ".dz" else open
        with opener(self.dict_path, "rb") as f:  # dictzip is gzip-compatible
            self._data = f.read()
        self._index = index
        self.max_words = max((k.count(" ") + 1 for k in index), default=1)

    def lookup(self, key: str) -> str | None:
        """The chosen translation of a normalised headword, or None."""
        if self._index is None:
            self._load()
        if key in self._cache:
            return self._cache[key]
        best = None
        for offset, length in self._index.get(key, ()):
            entry = self._data[offset : offset + length].decode("utf-8", errors="replace")
            if key not in _headwords(entry):
                continue  # indexed under a secondary form, e.g. "de" in "manojo, (de)"
            t = first_translation(entry)
            if t is not None:
                cand = (_entry_penalty(entry), t)
                if best is None or cand[0] < best[0]:
                    best = cand
        self._cache[key] = best[1] if best else None
        return self._cache[key]

    def entries(self) -> int:
        if self._index is None:
            self._load()
        return len(self._index)


class FreeDictTranslator(Translator):
    """Word-by-word translation with FreeDict dictionaries, longest phrase first.

    Tokens are lower-cased; at each position the longest run of up to ``max_phrase``
    tokens found in the dictionary is replaced by its first translation; tokens not
    found (numbers, brands, unknown words) are kept. Pairs without a dictionary are
    translated through ``pivot`` (English) when both legs exist.
    """

    name = "freedict"

    def __init__(
        self,
        dict_dir: str | os.PathLike = "/usr/share/dictd",
        pivot: str = "en",
        max_phrase: int = 4,
    ):
        self.dict_dir = Path(dict_dir)
        self.pivot = pivot
        self.max_phrase = max_phrase
        self._dicts: dict[tuple[str, str], DictdDictionary] = {}
        for index in (
            sorted(self.dict_dir.glob("freedict-*-*.index")) if self.dict_dir.is_dir() else []
        ):
            m = re.fullmatch(r"freedict-([a-z]{3})-([a-z]{3})\.index", index.name)
            if m:
                self._dicts[(to_iso2(m.group(1)), to_iso2(m.group(2)))] = DictdDictionary(index)
        # the cache key covers the dictionaries, the settings and the lookup rules' version
        digest = hashlib.sha256(f"{FREEDICT_RULES}|{pivot}|{max_phrase}".encode())
        for pair, d in sorted(self._dicts.items()):
            st = d.dict_path.stat() if d.dict_path.exists() else None
            digest.update(f"{pair}{st.st_size if st else 0}".encode())
        self.version = f"1-{digest.hexdigest()[:10]}"
        #: (src, tgt) leg -> {"tokens": word tokens seen, "translated": tokens covered by an entry}
        self.stats: dict[tuple[str, str], dict[str, int]] = {}

    def pairs(self) -> set[tuple[str, str]]:
        direct = set(self._dicts)
        via = {
            (s, t)
            for (s, p) in direct
            for (p2, t) in direct
            if p == self.pivot and p2 == self.pivot and s != t
        }
        return direct | via

    def route(self, src: str, tgt: str) -> list[tuple[str, str]]:
        if (src, tgt) in self._dicts:
            return [(src, tgt)]
        if (src, self.pivot) in self._dicts and (self.pivot, tgt) in self._dicts:
            return [(src, self.pivot), (self.pivot, tgt)]
        return []

    def supports(self, src: str, tgt: str) -> list[str]:
        if self.route(src, tgt):
            return []
        s3, t3 = ISO3.get(src, src), ISO3.get(tgt, tgt)
        p3 = ISO3.get(self.pivot, self.pivot)
        return [
            f"freedict: no {src}->{tgt} dictionary in {self.dict_dir}; install dict-freedict-{s3}-{t3} "
            f"or both dict-freedict-{s3}-{p3} and dict-freedict-{p3}-{t3} (check: apt-cache search freedict)"
        ]

    def translate_text(
        self, text: str, dictionary: DictdDictionary, stats: dict[str, int] | None = None
    ) -> str:
        """Translate one text with one dictionary (longest match first)."""
        stats = stats if stats is not None else {"tokens": 0, "translated": 0}
        dictionary.entries()  # loads the index, which sets max_words
        tokens = _TOKEN.findall(text.lower())
        out: list[str] = []
        i = 0
        max_len = min(self.max_phrase, dictionary.max_words)
        while i < len(tokens):
            for j in range(min(len(tokens), i + max_len), i, -1):
                t = self._lookup(dictionary, tokens[i:j])
                if t is not None:
                    out.append(t.lower())
                    stats["translated"] += j - i
                    stats["tokens"] += j - i
                    i = j
                    break
            else:
                if any(c.isalpha() for c in tokens[i]):
                    stats["tokens"] += 1
                out.append(tokens[i])
                i += 1
        return _join(out)

    @staticmethod
    def _lookup(dictionary: DictdDictionary, tokens: list[str]) -> str | None:
        key = dictd_key(" ".join(tokens))
        if not key or not any(c.isalpha() for c in key):
            return None  # numbers and symbols stay as they are
        t = dictionary.lookup(key)
        if t is None and len(tokens) == 1:
            # a possessive or a plural ("women's", "pans") is often listed only in its base form
            word = re.sub(r"['’]s$", "", tokens[0])
            for base in dict.fromkeys(
                (word, word[:-1] if len(word) > 3 and word.endswith("s") else word)
            ):
                if t is None and base != tokens[0]:
                    t = dictionary.lookup(dictd_key(base))
        return t

    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        for leg in self.route(src, tgt):
            d = self._dicts[leg]
            stats = self.stats.setdefault(leg, {"tokens": 0, "translated": 0})
            texts = [self.translate_text(t, d, stats) for t in texts]
        return texts


def _join(tokens: list[str]) -> str:
    s = " ".join(tokens)
    return re.sub(r" ([,.;:!?)])", r"\1", s)


# ----------------------------------------------------------------------------- Apertium


class ApertiumTranslator(Translator):
    """Apertium through its command-line tool: ``apertium -u <mode>``, one call per batch.

    Modes are discovered with ``apertium -l`` (names differ by package: ``eng-spa``,
    ``es-fr``, ``spa-ita``). A pair without a mode goes through one of ``pivots``
    (Spanish, then English) when both legs exist. Texts are sent one per line.
    """

    name = "apertium"

    def __init__(
        self, binary: str = "apertium", pivots: Sequence[str] = ("es", "en"), timeout: float = 600
    ):
        self.binary = shutil.which(binary)
        self.pivots = tuple(pivots)
        self.timeout = timeout
        self.modes: dict[tuple[str, str], str] = {}
        if self.binary:
            try:
                listed = subprocess.run(
                    [self.binary, "-l"], capture_output=True, text=True, timeout=30
                ).stdout
            except (OSError, subprocess.SubprocessError):
                listed = ""
            for mode in listed.split():
                m = re.fullmatch(r"([a-z]{2,3})-([a-z]{2,3})", mode)
                if m:
                    pair = (to_iso2(m.group(1)), to_iso2(m.group(2)))
                    self.modes.setdefault(pair, mode)
        self.version = (
            "1-"
            + hashlib.sha256(repr((sorted(self.modes.items()), self.pivots)).encode()).hexdigest()[
                :10
            ]
        )

    def route(self, src: str, tgt: str) -> list[str]:
        if (src, tgt) in self.modes:
            return [self.modes[(src, tgt)]]
        for p in self.pivots:
            if (src, p) in self.modes and (p, tgt) in self.modes:
                return [self.modes[(src, p)], self.modes[(p, tgt)]]
        return []

    def pairs(self) -> set[tuple[str, str]]:
        langs = {x for pair in self.modes for x in pair}
        return {(s, t) for s in langs for t in langs if s != t and self.route(s, t)}

    def supports(self, src: str, tgt: str) -> list[str]:
        if not self.binary:
            return ["apertium: the 'apertium' program is not installed (apt-get install apertium)"]
        if self.route(src, tgt):
            return []
        s3, t3 = ISO3.get(src, src), ISO3.get(tgt, tgt)
        return [
            f"apertium: no {src}->{tgt} mode (installed: {', '.join(sorted(self.modes.values())) or 'none'}); "
            f"look for apertium-{s3}-{t3} or apertium-{t3}-{s3} (apt-cache search apertium)"
        ]

    def run_mode(self, mode: str, texts: list[str], mark_unknown: bool = False) -> list[str]:
        """One ``apertium`` process for all ``texts`` (newlines inside a text become spaces)."""
        lines = [" ".join(t.split()) for t in texts]
        cmd = [self.binary, mode] if mark_unknown else [self.binary, "-u", mode]
        res = subprocess.run(
            cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=self.timeout
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"apertium {mode} failed ({res.returncode}): {res.stderr.strip()[:500]}"
            )
        out = res.stdout.split("\n")
        if out and out[-1] == "":
            out.pop()
        if len(out) != len(lines):
            raise RuntimeError(f"apertium {mode} returned {len(out)} lines for {len(lines)}")
        return [o.strip() for o in out]

    def _translate(
        self, texts: list[str], src: str, tgt: str, mark_unknown: bool = False
    ) -> list[str]:
        out = texts
        for mode in self.route(src, tgt):
            out = self.run_mode(mode, out, mark_unknown)
        # Apertium capitalises the first word; queries are usually lower case
        return [o.lower() if t == t.lower() else o for t, o in zip(texts, out, strict=True)]

    def translate_marked(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        """Like :meth:`translate` but unknown words keep Apertium's ``*`` mark (for coverage)."""
        if self.supports(src, tgt):
            raise TranslationUnavailable("; ".join(self.supports(src, tgt)))
        return self._translate(list(texts), src, tgt, mark_unknown=True)


# ----------------------------------------------------------------------------- Hugging Face


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


# ----------------------------------------------------------------------------- cache


class TranslationCache:
    """Translations on disk in SQLite, keyed by (translator name@version, src, tgt, text).

    Each batch is one transaction, so concurrent processes and interrupted runs leave the
    cache consistent.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_dir() / "translations.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS translations (translator TEXT, src TEXT, tgt TEXT, "
                "text TEXT, translation TEXT, PRIMARY KEY (translator, src, tgt, text))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, translator: str, src: str, tgt: str, texts: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        uniq = list(dict.fromkeys(texts))
        with self._connect() as db:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                q = ",".join("?" * len(chunk))
                for text, tr in db.execute(
                    f"SELECT text, translation FROM translations WHERE translator=? AND src=? AND tgt=? AND text IN ({q})",
                    [translator, src, tgt, *chunk],
                ):
                    found[text] = tr
        return found

    def put(self, translator: str, src: str, tgt: str, pairs: dict[str, str]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?)",
                [(translator, src, tgt, k, v) for k, v in pairs.items()],
            )


class CachedTranslator(Translator):
    """Wraps a translator: cached texts are read from disk, only misses are translated."""

    def __init__(self, inner: Translator, cache: TranslationCache | None = None):
        self.inner = inner
        self.cache = cache if cache is not None else TranslationCache()
        self.name, self.version = inner.name, inner.version
        self.hits = self.misses = 0

    def pairs(self) -> set[tuple[str, str]]:
        return self.inner.pairs()

    def supports(self, src: str, tgt: str) -> list[str]:
        return self.inner.supports(src, tgt)

    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        key = f"{self.inner.name}@{self.inner.version}"
        found = self.cache.get(key, src, tgt, texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        self.hits += len(texts) - sum(1 for t in texts if t not in found)
        self.misses += len(missing)
        if missing:
            new = dict(zip(missing, self.inner.translate(missing, src, tgt), strict=True))
            self.cache.put(key, src, tgt, new)
            found.update(new)
        return [found[t] for t in texts]


# ----------------------------------------------------------------------------- choice


def available_translators() -> pd.DataFrame:
    """The offline backends on this machine: name, available, pairs (sorted), reason."""
    rows = []
    for cls, missing in (
        (ApertiumTranslator, "apt-get install apertium apertium-eng-spa ..."),
        (FreeDictTranslator, "apt-get install dict-freedict-eng-deu ..."),
    ):
        t = cls()
        pairs = sorted(t.pairs())
        rows.append((t.name, bool(pairs), pairs, "" if pairs else f"nothing installed: {missing}"))
    return pd.DataFrame(rows, columns=["name", "available", "pairs", "reason"])


_BACKENDS: dict[str, Translator] = {}


def auto_translator(src: str, tgt: str, *, cache: bool = True) -> Translator:
    """The best installed backend for src -> tgt: Apertium when it has the pair, else FreeDict.

    Raises TranslationUnavailable listing every backend's reason (and the apt packages to
    install) when none can translate the pair. ``cache=True`` wraps it in the disk cache.
    """
    reasons = []
    for cls in (ApertiumTranslator, FreeDictTranslator):
        t = _BACKENDS.get(cls.name) or _BACKENDS.setdefault(cls.name, cls())
        why = t.supports(src, tgt)
        if not why:
            return CachedTranslator(t) if cache else t
        reasons += why
    raise TranslationUnavailable(f"cannot translate {src}->{tgt}:\n  " + "\n  ".join(reasons))


# ----------------------------------------------------------------------------- augmentation


def _augmentable(
    df: pd.DataFrame, target_languages: Sequence[str], source_languages: Sequence[str] | None
) -> pd.DataFrame:
    """The rows :func:`augment_translations` may translate: labelled originals in a source
    language (default: every language of ``df`` not among the targets)."""
    if source_languages is None:
        source_languages = sorted(set(df["language"]) - set(target_languages))
    return df[
        (df["strategy"] == "original")
        & df["label"].isin([0, 1])
        & df["language"].isin(source_languages)
    ]


def untranslatable_pairs(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    source_languages: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """The (src, tgt) pairs that :func:`augment_translations` would need and no installed
    backend can translate, checked before any work (``per_language`` sampling aside, every
    source language with rows to translate counts)."""
    base = _augmentable(df, list(target_languages), source_languages)
    missing = []
    for tgt in target_languages:
        for src in sorted(set(base["language"]) - {tgt}):
            if isinstance(translator, str):
                try:
                    auto_translator(src, tgt, cache=False)
                except TranslationUnavailable:
                    missing.append((src, tgt))
            elif translator.supports(src, tgt):
                missing.append((src, tgt))
    return missing


def install_hint(
    pairs: Sequence[tuple[str, str]],
    translator: Translator | str = "auto",
    *,
    freedict: FreeDictTranslator | None = None,
) -> str:
    """One line: the Debian packages that would translate every (src, tgt) of ``pairs``.

    FreeDict pivots through English, so ``dict-freedict-<src>-eng`` for each source and
    ``dict-freedict-eng-<tgt>`` for each target cover every pair (dictionaries already
    installed in ``freedict``'s folder, default /usr/share/dictd, are left out); Apertium
    pair packages are named irregularly, so for ``translator="apertium"`` the hint names
    the search instead.
    """
    name = translator if isinstance(translator, str) else translator.name
    if name == "apertium":
        apertium = ApertiumTranslator()
        first = "" if apertium.binary else "apt-get install apertium, then "
        wanted = ", ".join(sorted({f"{s}-{t}" for s, t in pairs}))
        return (
            f"{first}install an Apertium pair for {wanted} (or pairs through Spanish or "
            "English): apt-cache search apertium"
        )
    freedict = freedict if freedict is not None else FreeDictTranslator()
    have = set(freedict._dicts)
    pivot = freedict.pivot
    legs = {(s, pivot) for s, _ in pairs if s != pivot} | {
        (pivot, t) for _, t in pairs if t != pivot
    }
    packages = sorted(f"dict-freedict-{ISO3.get(a, a)}-{ISO3.get(b, b)}" for a, b in legs - have)
    if not packages:  # every leg is there, yet a pair is not: name the direct dictionaries
        packages = sorted({f"dict-freedict-{ISO3.get(s, s)}-{ISO3.get(t, t)}" for s, t in pairs})
    hint = f"apt-get install {' '.join(packages)}"
    if name == "auto":
        hint += " (FreeDict through English; an Apertium pair works too: apt-cache search apertium)"
    return hint


def _has_words(text: str) -> bool:
    """True if the text has a word that a translator could change (2+ letters, not a code like 'a52')."""
    return any(
        sum(c.isalpha() for c in w) >= 2 and not any(c.isdigit() for c in w) for w in text.split()
    )


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def augment_translations(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    source_languages: Sequence[str] | None = None,
    per_language: int | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 512,
) -> tuple[pd.DataFrame, dict]:
    """Synthesize rows in ``target_languages`` by translating the queries of labelled rows.

    Each new row copies task, target and label of an original row (``strategy ==
    "original"``, label 0/1, language in ``source_languages``; default every language of
    ``df`` not in ``target_languages``), with ``query`` translated, ``language`` = target,
    ``id = f"{source_id}:translation:{lang}"``, ``strategy = "translation"`` and the
    translator's name. ``per_language`` samples that many source rows per target language
    (seeded). Dropped and counted in the report: pairs no backend supports, translations
    equal to the source text when the source has translatable words, and rows whose
    (task, language, query, target) already exists in ``df`` or among the new rows.

    Returns ``(new_rows, report)``; report[lang] has candidates, translated, unchanged_dropped,
    unchanged_kept, duplicates_dropped, added, unsupported (list of src languages) and by_translator.
    """
    from noiseforge._progress import progress_bar

    target_languages = list(target_languages)
    base = _augmentable(df, target_languages, source_languages)
    seen = {
        (t, lang, _norm(q), tg)
        for t, lang, q, tg in zip(
            df["task"], df["language"], df["query"], df["target"], strict=True
        )
    }
    rng = np.random.default_rng(seed)
    new_parts, report = [], {}
    for tgt in target_languages:
        rep = {"candidates": 0, "translated": 0, "unchanged_dropped": 0, "unchanged_kept": 0,
               "duplicates_dropped": 0, "added": 0, "unsupported": [], "by_translator": {}}  # fmt: skip
        report[tgt] = rep
        rows = base[base["language"] != tgt]
        if per_language is not None and len(rows) > per_language:
            rows = rows.iloc[np.sort(rng.choice(len(rows), per_language, replace=False))]
        rep["candidates"] = len(rows)
        for src, group in rows.groupby("language", sort=True):
            if isinstance(translator, str):
                try:
                    tr = auto_translator(src, tgt)
                except TranslationUnavailable:
                    rep["unsupported"].append(src)
                    continue
            else:
                tr = translator
                if tr.supports(src, tgt):
                    rep["unsupported"].append(src)
                    continue
            queries = list(dict.fromkeys(group["query"]))
            done: dict[str, str] = {}
            bar = progress_bar(
                total=len(queries),
                desc=f"translating {src}->{tgt} ({tr.name})",
                enabled=progress and len(queries) >= 2000,
                unit="queries",
            )
            for i in range(0, len(queries), batch_size):
                chunk = queries[i : i + batch_size]
                done.update(zip(chunk, tr.translate(chunk, src, tgt), strict=True))
                bar.update(len(chunk))
            bar.close()
            keep = []
            for rid, task, q, target, label in zip(
                group["id"],
                group["task"],
                group["query"],
                group["target"],
                group["label"],
                strict=True,
            ):
                t = " ".join(done[q].split())
                rep["translated"] += 1
                if not t or _norm(t) == _norm(q):
                    if not t or _has_words(q):
                        rep["unchanged_dropped"] += 1
                        continue
                    rep["unchanged_kept"] += 1
                key = (task, tgt, _norm(t), target)
                if key in seen:
                    rep["duplicates_dropped"] += 1
                    continue
                seen.add(key)
                keep.append(
                    (
                        f"{rid}:translation:{tgt}",
                        task,
                        tgt,
                        t,
                        target,
                        int(label),
                        rid,
                        "translation",
                        tr.name,
                        np.nan,
                    )
                )
            rep["added"] += len(keep)
            rep["by_translator"][tr.name] = rep["by_translator"].get(tr.name, 0) + len(keep)
            new_parts.extend(keep)
    out = (
        pd.DataFrame(new_parts, columns=list(COLUMNS))
        .astype(
            {
                c: str
                for c in (
                    "id",
                    "task",
                    "language",
                    "query",
                    "target",
                    "source_id",
                    "strategy",
                    "translator",
                )
            }
        )
        .astype({"label": np.int64, "score": np.float64})
    )
    return out, report
