"""Apertium (rule-based MT) through the ``apertium`` program: :class:`ApertiumTranslator`."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Sequence

from noiseforge.relevance.translate.base import (
    ISO3,
    TranslationUnavailable,
    Translator,
    to_iso2,
)


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
