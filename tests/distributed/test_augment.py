"""Translation augmentation on Ray: the local engine's rows and report, each query asked once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from noiseforge.distributed.augment import (
    TranslatorActor,
    _request_blocks,
    augment_translations_ray,
    translation_requests,
)
from noiseforge.distributed.engine import relevance_engine
from noiseforge.relevance import translate as tr
from noiseforge.relevance.augment import augment_translations, plan_translations
from noiseforge.relevance.fixture import make_fixture
from tests.support.translation import ENG_DEU, ENG_FRA, FRA_ENG, CountingTranslator, make_dictd


class LossyTranslator(tr.Translator):
    """Deterministic and picklable: drops the words of 3 letters or fewer and tags the
    rest, so that different queries meet (duplicates) and some come back unchanged."""

    name, version = "lossy", "1"

    def pairs(self):
        return {(s, t) for s in ("en", "fr", "es", "de") for t in ("de", "it", "pl") if s != t}

    def _translate(self, texts, src, tgt):
        out = []
        for text in texts:
            words = [w for w in text.split() if len(w) > 3]
            out.append(" ".join(f"{tgt}:{w}" for w in words) if len(words) > 1 else text)
        return out


class LoggingTranslator(LossyTranslator):
    """Appends every text it is asked for to a file (one line each, O_APPEND: the lines
    of concurrent actors do not interleave), so a test can count the real calls."""

    def __init__(self, log: Path):
        self.log = str(log)

    def _translate(self, texts, src, tgt):
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("".join(f"{src}\t{tgt}\t{t}\n" for t in texts))
        return super()._translate(texts, src, tgt)


class FailingTranslator(LossyTranslator):
    """Says it supports every pair, then refuses at translation time (in the actor)."""

    def _translate(self, texts, src, tgt):
        raise tr.TranslationUnavailable(f"failing: the {src}->{tgt} model went away")


class Unpicklable(LossyTranslator):
    def __init__(self):
        self.lock = threading.Lock()


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Three source languages and a few de rows; many queries repeat with other targets
    (a query asked once per pair, however many rows share it)."""
    df = make_fixture("QC", n=240, seed=4, languages=("en", "fr", "es", "de"))
    again = df[df["language"] != "de"].sample(80, random_state=1).copy()
    again["id"] = again["id"] + "-again"
    again["target"] = again["target"].to_numpy()[::-1]  # same query, other targets
    return pd.concat([df, again], ignore_index=True)


def _assert_same(got, want):
    pd.testing.assert_frame_equal(got[0], want[0], check_exact=True)
    assert got[1] == want[1]


def test_ray_rows_and_report_equal_the_local_engines(ray_cluster, table):
    want = augment_translations(table, ["de", "it", "pl"], LossyTranslator(), progress=False)
    got = augment_translations_ray(
        table, ["de", "it", "pl"], LossyTranslator(), progress=False, batch_size=16
    )
    _assert_same(got, want)
    # the case is not trivial: rows were added, duplicates and unchanged rows dropped
    assert len(want[0]) > 50 and want[1]["de"]["duplicates_dropped"] > 0
    assert want[1]["it"]["unchanged_dropped"] > 0 and want[1]["pl"]["unsupported"] == []


@pytest.mark.parametrize("workers", [1, 2])
def test_per_language_sampling_and_sources_equal_the_local_engines(ray_cluster, table, workers):
    opts = dict(per_language=60, seed=7, source_languages=["en", "fr"], progress=False)
    # CountingTranslator has no es or pl pairs: they are reported unsupported alike
    want = augment_translations(table, ["it", "de"], CountingTranslator(), **opts)
    got = augment_translations_ray(
        table,
        ["it", "de"],
        CountingTranslator(),
        workers=workers,
        batch_size=8,
        block_rows=20,
        **opts,
    )
    _assert_same(got, want)
    assert want[1]["it"]["candidates"] == 60 and want[1]["it"]["unsupported"] == ["fr"]


def test_freedict_backend_equals_the_local_engine(ray_cluster, tmp_path):
    folder = tmp_path / "dictd"
    for name, entries in (("eng-deu", ENG_DEU), ("eng-fra", ENG_FRA), ("fra-eng", FRA_ENG)):
        make_dictd(folder, name, entries)
    rows = [
        ("1", "QC", "en", "red frying pan 28cm", "home,pans", 1),
        ("2", "QC", "en", "pan", "home,pans", 0),
        ("3", "QC", "fr", "poêle rouge", "home,pans", 1),  # through English
        ("4", "QC", "en", "Red Frying Pan 28cm", "home,pans", 1),  # a duplicate once translated
        ("5", "QC", "en", "tefal", "brands", 1),  # no word the dictionary knows: dropped
    ]
    df = pd.DataFrame(rows, columns=["id", "task", "language", "query", "target", "label"])
    df["source_id"], df["strategy"], df["translator"], df["score"] = "", "original", "", np.nan
    df = df.astype({"label": np.int64})
    freedict = tr.FreeDictTranslator(folder)
    want = augment_translations(df, ["de"], freedict, progress=False)
    got = augment_translations_ray(df, ["de"], tr.FreeDictTranslator(folder), progress=False)
    _assert_same(got, want)
    assert got[0]["query"].tolist() == ["rot bratpfanne 28cm", "pfanne", "bratpfanne rot"]
    assert got[1]["de"]["duplicates_dropped"] == 1 and got[1]["de"]["unchanged_dropped"] == 1


def test_auto_with_the_installed_backends_equals_the_local_engine(ray_cluster, table):
    installed = tr.available_translators()
    if not installed["available"].any():
        pytest.skip(
            "no offline translation backend on this machine (apt-get install "
            "dict-freedict-eng-deu or apertium-eng-spa ...): the 'auto' path is untested here"
        )
    pairs = sorted({tuple(p) for ps in installed["pairs"] for p in ps})
    src, tgt = pairs[0]
    df = make_fixture("QC", n=80, seed=2, languages=(src,))
    want = augment_translations(df, [tgt], "auto", progress=False)
    got = augment_translations_ray(df, [tgt], "auto", progress=False, batch_size=16)
    _assert_same(got, want)
    assert got[1][tgt]["translated"] == len(df[df["label"].isin([0, 1])])


def test_each_distinct_query_is_translated_once(ray_cluster, table, tmp_path):
    log = tmp_path / "calls.tsv"
    targets = ["de", "it"]
    want = augment_translations(table, targets, LossyTranslator(), progress=False)
    got = augment_translations_ray(
        table, targets, LoggingTranslator(log), progress=False, batch_size=8, block_rows=16
    )
    _assert_same(got, want)
    calls = log.read_text(encoding="utf-8").splitlines()
    requests = translation_requests(plan_translations(table, targets, LossyTranslator()))
    asked = [
        f"{s}\t{t}\t{q}"
        for s, t, q in zip(requests["src"], requests["tgt"], requests["query"], strict=True)
    ]
    assert sorted(calls) == sorted(asked)  # every distinct triple exactly once, nothing else
    rows_translated = sum(r["translated"] for r in want[1].values())
    assert len(calls) < rows_translated  # the repeated queries were not asked again


def test_an_actors_error_is_the_original_error(ray_cluster, table):
    with pytest.raises(tr.TranslationUnavailable, match="model went away"):
        augment_translations_ray(table, ["de"], FailingTranslator(), progress=False)
    # the failed job freed its actors: the next job (through the command line's engine)
    # gets CPUs and finishes
    got = relevance_engine().augment(table, ["pl"], LossyTranslator(), progress=False)
    _assert_same(got, augment_translations(table, ["pl"], LossyTranslator(), progress=False))


def test_nothing_to_translate_gives_empty_rows_and_the_report(ray_cluster, table):
    want = augment_translations(table, ["ko"], CountingTranslator(), progress=False)
    got = augment_translations_ray(table, ["ko"], CountingTranslator(), progress=False)
    _assert_same(got, want)
    assert len(got[0]) == 0 and got[1]["ko"]["unsupported"] == ["de", "en", "es", "fr"]


def test_bad_arguments_fail_before_any_work(table):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="make_translator"):
        augment_translations_ray(table, ["de"], "freedict")
    with pytest.raises(TypeError, match="does not pickle"):
        augment_translations_ray(table, ["de"], Unpicklable())
    with pytest.raises(TypeError, match="Translator"):
        augment_translations_ray(table, ["de"], object())
    for name in ("workers", "batch_size", "block_rows"):
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
            augment_translations_ray(table, ["de"], LossyTranslator(), **{name: 0})


# ---------------------------------------------------------------- the pieces, without Ray


def test_requests_follow_the_local_engines_translate_calls(table):
    plans = plan_translations(table, ["de", "de", "it"], LossyTranslator())
    req = translation_requests(plans, batch_size=7)
    assert not req.duplicated(["src", "tgt", "query"]).any()  # "de" twice: asked once
    for plan in plans:
        for job in plan.jobs:
            mine = req[(req.src == job.src) & (req.tgt == job.tgt)]
            assert set(job.queries) <= set(mine["query"])
    first = plans[0].jobs[0]
    mine = req[(req.src == first.src) & (req.tgt == first.tgt)]
    assert mine["query"].tolist() == first.queries  # first occurrence first
    assert mine["chunk"].tolist() == [i // 7 for i in range(len(first.queries))]
    assert set(req["backend"]) == {"lossy@1"}
    assert set(translation_requests(plans, auto=False)["backend"]) == {""}


@pytest.mark.parametrize("block_rows", [1, 7, 10, 1000])
def test_blocks_hold_whole_chunks_of_one_pair(table, block_rows):
    req = translation_requests(
        plan_translations(table, ["de", "it"], LossyTranslator()), batch_size=7
    )
    blocks = _request_blocks(req, block_rows)
    assert sum(len(b) for b in blocks) == len(req)
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), req)
    cut = set()
    for b in blocks:
        assert b[["src", "tgt"]].drop_duplicates().shape[0] == 1
        keys = set(zip(b.src, b.tgt, b.chunk, strict=True))
        assert not keys & cut  # no chunk starts in one block and ends in another
        cut |= keys
        if len(b) > 7:
            assert len(b) - 7 < block_rows  # a block closes once it reaches block_rows


def test_the_actor_makes_one_call_per_chunk():
    inner = CountingTranslator()
    actor = TranslatorActor(inner)
    batch = {
        "src": np.array(["en", "en", "en", "fr", "en"], dtype=object),
        "tgt": np.array(["de"] * 5, dtype=object),
        "query": np.array(["a", "b", "c", "x", "d"], dtype=object),
        "chunk": np.array([0, 0, 1, 0, 1]),
        "backend": np.array([""] * 5, dtype=object),
    }
    out = actor(batch)
    assert out["translation"].tolist() == ["de[a]", "de[b]", "de[c]", "de[x]", "de[d]"]
    assert inner.calls == [["a", "b"], ["c", "d"], ["x"]]


def test_an_auto_actor_without_the_backend_says_what_to_install():
    actor = TranslatorActor(None)
    batch = {
        "src": np.array(["ko"], dtype=object),
        "tgt": np.array(["xx"], dtype=object),
        "query": np.array(["q"], dtype=object),
        "chunk": np.array([0]),
        "backend": np.array(["freedict@1"], dtype=object),
    }
    with pytest.raises(tr.TranslationUnavailable, match="dict-freedict-kor"):
        actor(batch)


def test_an_auto_actor_refuses_another_backend_than_planned():
    installed = tr.available_translators()
    if not installed["available"].any():
        pytest.skip("no offline translation backend on this machine: nothing to compare with")
    src, tgt = sorted(tuple(p) for p in installed[installed["available"]]["pairs"].iloc[0])[0]
    batch = {
        "src": np.array([src], dtype=object),
        "tgt": np.array([tgt], dtype=object),
        "query": np.array(["q"], dtype=object),
        "chunk": np.array([0]),
        "backend": np.array(["other@0"], dtype=object),
    }
    with pytest.raises(RuntimeError, match="same translation packages on every node"):
        TranslatorActor(None)(batch)
