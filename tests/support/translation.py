"""Translation fixtures shared by the relevance and distributed tests: a dictd
dictionary writer (the Debian FreeDict layout), small dictionaries, and a
translator that counts what it is asked."""

from __future__ import annotations

import gzip
from pathlib import Path

from noiseforge.relevance import translate as tr


def b64(n: int) -> str:
    s = ""
    while True:
        s = tr._B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def make_dictd(folder: Path, name: str, entries: dict[str, list[str]]) -> Path:
    """Write a dictd dictionary (index + gzip-compressed data) like the Debian packages."""
    body, index = b"", []
    header = b"00-database-short\nTest dictionary\n"
    index.append(f"00databaseshort\t{b64(0)}\t{b64(len(header))}")
    body += header
    for head, senses in entries.items():
        for text in senses:
            raw = text.encode()
            index.append(f"{head}\t{b64(len(body))}\t{b64(len(raw))}")
            body += raw
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"freedict-{name}.index").write_text(
        "\n".join(sorted(index)) + "\n", encoding="utf-8"
    )
    with gzip.open(folder / f"freedict-{name}.dict.dz", "wb") as f:
        f.write(body)
    return folder


ENG_DEU = {
    "frying pan": [
        "frying pan /fɹˈaɪɪŋ pˈan/\nBratpfanne <fem>, Stielpfanne <fem> [cook.]\n   Synonym: {skillet}\n"
    ],
    "pan": [
        "pan /pˈan/\nKameraschwenk <masc>, Schwenk <masc>\n         Note: Film\n",
        "pan /pˈan/\nPfanne <fem>\n",
    ],
    "red": ['red /red/\nI.  <Adj> 1.  rot  [Farbe]\n 2.  rötlich\n      "red wine"  - Rotwein\n'],
    "tshirt": ["T-shirt\nLeibchen <neut>\n"],
    "women": ["women\nFrauen <pl>\n"],
    "de": [
        "manojo, (de) /m/ <n, m>\nHandvoll <n, f>\n"
    ],  # indexed under "de" too: not its translation
}
ENG_FRA = {"pan": ["pan\npoêle <fem>\n"], "red": ["red\nrouge\n"]}
FRA_ENG = {"poêle": ["poêle <n, fem>\n1. frying pan, pan\n2. stove\n"], "rouge": ["rouge\nred\n"]}


class CountingTranslator(tr.Translator):
    name, version = "counting", "1"

    def __init__(self):
        self.calls: list[list[str]] = []

    def pairs(self):
        return {("en", "de"), ("fr", "de"), ("en", "it")}

    def _translate(self, texts, src, tgt):
        self.calls.append(list(texts))
        return [f"{tgt}[{t}]" for t in texts]
