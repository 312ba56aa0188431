"""Translation backends, the disk cache and translation augmentation."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from noiseforge.relevance import translate as tr
from noiseforge.relevance.fixture import make_fixture
from tests.support.translation import (
    ENG_DEU,
    ENG_FRA,
    FRA_ENG,
    CountingTranslator,
    b64,
    make_dictd,
)

DICTD = Path("/usr/share/dictd")


@pytest.fixture
def dict_dir(tmp_path):
    make_dictd(tmp_path / "dictd", "eng-deu", ENG_DEU)
    make_dictd(tmp_path / "dictd", "eng-fra", ENG_FRA)
    return make_dictd(tmp_path / "dictd", "fra-eng", FRA_ENG)


def test_dictd_numbers_and_keys():
    assert (
        tr.dictd_number("A") == 0
        and tr.dictd_number("BA") == 64
        and tr.dictd_number("FVrr") == 1399531
    )
    assert all(tr.dictd_number(b64(n)) == n for n in (0, 1, 63, 64, 4095, 10**9))
    assert (
        tr.dictd_key("T-Shirt") == "tshirt" and tr.dictd_key("  Women's  Shoes ") == "womens shoes"
    )


@pytest.mark.parametrize(
    "entry,expected",
    [
        ("pan /p/\nKochpfanne <fem>, Pfanne <fem> [cook.]\n", "Kochpfanne"),
        ("case /k/ <N>\n 1.  [też gram]  przypadek\n 2.  sprawa\n", "przypadek"),
        ("red /r/\nI.  <Adj> 1.  czerwony  [też]\n", "czerwony"),
        ("Case /k/\nالحالة\n", "الحالة"),
        ('x\n      "example"  - Beispiel\n   Synonym: {y}\nwahr\n', "wahr"),
        ("funda /f/ <n, f>\n1. Bezug <n, m>\n", "Bezug"),
        ("empty\n see: {other}\n", None),
        ("bière /b/ <n, fem>\n1. birra 2.\nBoisson\n", "birra"),
    ],
)
def test_first_translation_strips_annotations(entry, expected):
    assert tr.first_translation(entry) == expected


def test_freedict_longest_match_keeps_unknown_tokens(dict_dir):
    t = tr.FreeDictTranslator(dict_dir)
    assert ("en", "de") in t.pairs() and ("fr", "de") in t.pairs()  # fr->de through English
    out = t.translate(
        ["red frying pan 28cm", "pan", "Tefal frying", "t-shirt", "women's", "de"], "en", "de"
    )
    # the phrase wins over its words; the plain sense beats the tagged one; numbers and brands stay
    assert out == ["rot bratpfanne 28cm", "pfanne", "tefal frying", "leibchen", "frauen", "de"]
    assert t.stats[("en", "de")] == {"tokens": 10, "translated": 6}


def test_freedict_pivot_and_missing_pair(dict_dir):
    t = tr.FreeDictTranslator(dict_dir)
    assert t.route("fr", "de") == [("fr", "en"), ("en", "de")]
    assert t.translate(["poêle rouge"], "fr", "de") == ["bratpfanne rot"]
    with pytest.raises(tr.TranslationUnavailable, match="dict-freedict-eng-pol"):
        t.translate(["pan"], "en", "pl")


def test_cache_hits_and_keys(tmp_path):
    inner = CountingTranslator()
    cache = tr.TranslationCache(tmp_path / "c.sqlite")
    t = tr.CachedTranslator(inner, cache)
    assert t.translate(["a", "b", "a"], "en", "de") == ["de[a]", "de[b]", "de[a]"]
    assert inner.calls == [["a", "b"]]
    assert t.translate(["b", "c"], "en", "de") == ["de[b]", "de[c]"]
    assert inner.calls[-1] == ["c"] and t.hits == 1 and t.misses == 3
    t.translate(["a"], "en", "it")  # another pair is another key
    assert inner.calls[-1] == ["a"]
    again = tr.CachedTranslator(CountingTranslator(), tr.TranslationCache(tmp_path / "c.sqlite"))
    assert again.translate(["a", "b", "c"], "en", "de") == ["de[a]", "de[b]", "de[c]"]
    assert again.inner.calls == []  # reused from disk by a new process-like instance
    inner.version = "2"  # a new translator version must not read the old entries
    assert tr.CachedTranslator(inner, cache).translate(["a"], "en", "de") and inner.calls[-1] == [
        "a"
    ]


def _table(rows):
    df = pd.DataFrame(rows, columns=["id", "task", "language", "query", "target", "label"])
    df["source_id"], df["strategy"], df["translator"], df["score"] = "", "original", "", np.nan
    return df.astype({"label": np.int64})


def test_augmentation_provenance_and_dedup():
    df = _table(
        [
            ("1", "QC", "en", "pan", "home,pans", 1),
            ("2", "QC", "en", "Pan", "home,pans", 1),  # same query after normalisation -> duplicate
            ("3", "QC", "fr", "poêle", "home,pans", 0),  # translates to an existing de row below
            ("4", "QC", "en", "sandals", "shoes,sandals", -1),  # unlabelled: never a source
            ("5", "QC", "de", "de[poêle]", "home,pans", 1),  # existing de row
            ("6", "QI", "en", "pot", "Tefal Pan", 0),
        ]
    )
    new, report = tr.augment_translations(df, ["de"], CountingTranslator(), progress=False)
    assert new["id"].tolist() == ["1:translation:de", "6:translation:de"]
    assert new["source_id"].tolist() == ["1", "6"] and (new["strategy"] == "translation").all()
    assert (new["translator"] == "counting").all() and (new["language"] == "de").all()
    assert new["query"].tolist() == ["de[pan]", "de[pot]"] and new["label"].tolist() == [1, 0]
    assert new["target"].tolist() == ["home,pans", "Tefal Pan"]
    r = report["de"]
    assert r["candidates"] == 4 and r["duplicates_dropped"] == 2 and r["added"] == 2
    assert list(new.columns) == list(df.columns)


class IdentityTranslator(CountingTranslator):
    name = "identity"

    def _translate(self, texts, src, tgt):
        return list(texts)


def test_augmentation_drops_unchanged_only_when_there_were_words():
    df = _table(
        [
            ("1", "QC", "en", "frying pan", "a", 1),
            ("2", "QC", "en", "iphone 13", "b", 1),
            ("3", "QC", "en", "a52 128", "c", 0),
        ]
    )
    new, report = tr.augment_translations(df, ["de"], IdentityTranslator(), progress=False)
    # "frying pan" has words the translator should have changed; "a52 128" has none
    assert new["source_id"].tolist() == ["3"]
    assert report["de"]["unchanged_dropped"] == 2 and report["de"]["unchanged_kept"] == 1


def test_augmentation_unsupported_pairs_and_sampling():
    df = make_fixture("QC", n=300, seed=4, languages=("en", "fr", "es"))
    new, report = tr.augment_translations(
        df, ["de", "it"], CountingTranslator(), per_language=50, seed=1, progress=False
    )
    assert report["de"]["unsupported"] == ["es"] and report["it"]["unsupported"] == ["es", "fr"]
    assert report["de"]["candidates"] == 50
    assert set(new[new.language == "it"]["source_id"]) <= set(df[df.language == "en"]["id"])
    again, _ = tr.augment_translations(
        df, ["de", "it"], CountingTranslator(), per_language=50, seed=1, progress=False
    )
    pd.testing.assert_frame_equal(new, again)
    assert not new.duplicated(["task", "language", "query", "target"]).any()


def test_auto_translator_explains_missing_pairs():
    with pytest.raises(tr.TranslationUnavailable) as e:
        tr.auto_translator("ko", "xx")
    msg = str(e.value)
    assert "apertium" in msg and "freedict" in msg and "dict-freedict-kor" in msg


def test_available_translators_table():
    table = tr.available_translators()
    assert set(table["name"]) == {"apertium", "freedict"}
    for _, row in table.iterrows():
        assert row["available"] == bool(row["pairs"]) and (
            row["available"] or "install" in row["reason"]
        )


# ---------------------------------------------------------------------- real Debian packages


def _needs_dict(name: str):
    return pytest.mark.skipif(
        not (DICTD / f"freedict-{name}.index").exists(),
        reason=f"apt-get install dict-freedict-{name}",
    )


@_needs_dict("eng-ita")
def test_real_freedict_eng_ita():
    out = tr.FreeDictTranslator().translate(["red watch", "summer dress 42"], "en", "it")
    assert out == ["rosso orologio", "estate abito 42"]


@_needs_dict("eng-pol")
def test_real_freedict_eng_pol_phrase():
    assert tr.FreeDictTranslator().translate(["frying pan", "red"], "en", "pl") == [
        "patelnia",
        "czerwony",
    ]


def _apertium_mode(mode: str):
    have = shutil.which("apertium") and mode in tr.ApertiumTranslator().modes.values()
    return pytest.mark.skipif(not have, reason=f"apt-get install apertium apertium-{mode}")


@_apertium_mode("eng-spa")
def test_real_apertium_batch_and_case():
    t = tr.ApertiumTranslator()
    out = t.translate(["red frying pan", "black dress", "", "Summer Dress"], "en", "es")
    assert out[:3] == ["sartén roja", "vestido negro", ""] and out[3][0].isupper()


@_apertium_mode("spa-ita")
def test_real_apertium_pivot_through_spanish():
    t = tr.ApertiumTranslator()
    assert t.route("en", "it") == ["eng-spa", "spa-ita"]
    assert t.translate(["black dress"], "en", "it") == ["abito nero"]


@_apertium_mode("fr-es")
def test_real_apertium_unknown_marks():
    t = tr.ApertiumTranslator()
    assert t.translate_marked(["bracelet xqzw"], "fr", "es") == ["pulsera *xqzw"]


# ---------------------------------------------------------------------- Hugging Face plumbing


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="pip install transformers"
)
@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_hf_translator_tiny_random_model(tmp_path, kind):
    import transformers

    from tests.support.hf_tiny import word_tokenizer

    words = [
        "<pad>",
        "<unk>",
        "</s>",
        "translate",
        "this",
        "english",
        "german",
        "search",
        "query",
        "into",
        "red",
        "pan",
        ":",
    ]
    fast = word_tokenizer(words, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(tmp_path)
    if kind == "causal":
        cfg = transformers.GPT2Config(
            vocab_size=len(words),
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=64,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.T5Config(
            vocab_size=len(words),
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = transformers.T5ForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path)
    t = tr.HFTranslator(tmp_path, max_new_tokens=4, batch_size=2)
    assert t.seq2seq == (kind == "seq2seq") and t.name == f"hf:{tmp_path.name}"
    out = t.translate(["red pan", "pan", "red"], "en", "de")
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert set(" ".join(out).split()) <= set(words)  # random weights: only plumbing is checked
    cached = tr.CachedTranslator(t, tr.TranslationCache(tmp_path / "c.sqlite"))
    assert cached.translate(["red pan"], "en", "de") == cached.translate(["red pan"], "en", "de")
    assert cached.hits == 1


# ---------------------------------------------------------------------- the package layout


def test_the_package_reexports_its_modules_names():
    from noiseforge.relevance import augment
    from noiseforge.relevance.translate import base, cache, discovery, freedict

    assert tr.augment_translations is augment.augment_translations
    assert tr.untranslatable_pairs is augment.untranslatable_pairs and tr._norm is augment._norm
    assert tr.Translator is base.Translator and tr.TranslationCache is cache.TranslationCache
    assert tr._BACKENDS is discovery._BACKENDS and tr._B64 is freedict._B64
    assert {"augment_translations", "_augmentable", "dictd_key"} <= set(dir(tr))
    with pytest.raises(AttributeError, match="no_such_name"):
        tr.no_such_name  # noqa: B018
