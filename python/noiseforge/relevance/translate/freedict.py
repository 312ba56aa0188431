"""FreeDict dictionaries: the dictd file format and :class:`FreeDictTranslator`.

A Debian ``dict-freedict-<src>-<tgt>`` package installs ``freedict-<src>-<tgt>.index``
(headword, offset and length of its entry, the numbers in dictd's base64 digits) beside
``freedict-<src>-<tgt>.dict.dz`` (the entries, dictzip: gzip-compatible) in
/usr/share/dictd. :class:`DictdDictionary` reads one such pair lazily;
:class:`FreeDictTranslator` translates phrase-first, longest match on lower-cased tokens,
which suits short product queries.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

from noiseforge.relevance.translate.base import ISO3, Translator, to_iso2

#: bump when FreeDict parsing or lookup changes, so cached translations are redone
FREEDICT_RULES = 2

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}
_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*|\S", re.UNICODE)
_BRACKETS = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)|\{[^}]*\}")


# ----------------------------------------------------------------------------- dictd format


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


# ----------------------------------------------------------------------------- translator


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
