"""The model layer: any classifier that maps (query, target) rows to p(relevant).

The engine improves the *data*, so the model is a plug-in: anything with
``fit(df_train, df_valid=None)`` and ``predict_proba(df)`` works. Three ship here:

- :class:`EmbeddingMLP` (default, CPU-fast): frozen multilingual sentence
  embeddings of query and target, the pair features of InferSent / SBERT
  (Conneau et al. 2017; Reimers & Gurevych 2019) ``[q, t, q*t, |q-t|, cos]``,
  and a small MLP trained per task with early stopping.
- :class:`HFCrossEncoder`: fine-tunes a local Hugging Face sequence
  classification model on ``(query, target)`` pairs (GPU recommended).
- :class:`HFYesNoJudge`: a local causal language model asked whether each pair is
  relevant, p(" yes") against p(" no"); ``fit`` trains low-rank adapters (or the
  whole model), ``epochs=0`` keeps it zero-shot.

:func:`tune_threshold` picks the decision threshold that maximises positive-class
F1 on dev data.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn

from noiseforge.relevance.embed import Encoder, USEEncoder, embed_cached
from noiseforge.relevance.groups import query_groups
from noiseforge.relevance.label_features import LabelStatistics


@runtime_checkable
class RelevanceModel(Protocol):
    """A relevance classifier on the table (see ``relevance.schema``)."""

    def fit(self, df_train: pd.DataFrame, df_valid: pd.DataFrame | None = None) -> RelevanceModel:
        """Train on labelled rows; ``df_valid`` (optional) for early stopping."""
        ...

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """(n,) float p(label = 1) for each row."""
        ...


def tune_threshold(y_true, proba, *, grid: Sequence[float] | None = None) -> tuple[float, float]:
    """The threshold t maximising positive-class F1 of ``proba >= t`` on (y, p).

    Without ``grid`` every distinct probability is a candidate (exact, O(n log n));
    the returned t is the midpoint between the chosen cut and the next lower
    probability, so it is robust to ties. Returns ``(threshold, f1)``.
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(proba, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true and proba must be equal-length 1-D, got {y.shape}, {p.shape}")
    if grid is not None:
        best = max(
            ((float(t), _f1(y, p >= t)) for t in grid), key=lambda tf: (tf[1], -abs(tf[0] - 0.5))
        )
        return best
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # cut after position i (predict the top i+1 positive); only at the end of a tie run
    last_of_run = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last_of_run]
    k = np.flatnonzero(last_of_run) + 1
    f1 = 2 * tp / (k + y.sum())
    i = int(np.argmax(f1))
    cut_pos = np.flatnonzero(last_of_run)[i]
    lower = ps[cut_pos + 1] if cut_pos + 1 < ps.size else ps[cut_pos] - 1e-6
    return float((ps[cut_pos] + lower) / 2), float(f1[i])


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = np.sum(y & pred)
    den = 2 * tp + np.sum(~y & pred) + np.sum(y & ~pred)
    return float(2 * tp / den) if den else 0.0


def grouped_split(
    df: pd.DataFrame, fraction: float, seed: int, group_col: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, held_mask): about ``fraction`` of the groups held out, every row
    of a group on the same side. Groups: query families (:func:`query_groups`: a
    query, case aside, with its translations and mined rows) unless ``group_col``
    names a column."""
    groups = query_groups(df) if group_col is None else df[group_col].to_numpy()
    uniq = pd.unique(groups)
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(uniq)[: round(fraction * len(uniq))].tolist())
    held_mask = np.fromiter((g in held for g in groups), dtype=bool, count=len(groups))
    return ~held_mask, held_mask


def pair_features(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[q, t, q*t, |q-t|, cos(q, t)]`` for (n, d) vectors -> (n, 4d + 1) float32."""
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    cos = np.sum(qn * tn, axis=1, keepdims=True)
    return np.concatenate([q, t, q * t, np.abs(q - t), cos], axis=1).astype(np.float32)


class EmbeddingMLP:
    """Pair features of frozen embeddings + label statistics + an MLP, one network per task.

    Input of a row: the pair features of the query and target embeddings (and of
    the query and the target's leaf, see ``target_parts``) and, with
    ``label_features``, the standardised :class:`LabelStatistics` of the row
    against the training rows of its task (category label rates, query word x
    top-level rates, kNN labels), computed out of fold on the training rows.

    Parameters
    ----------
    encoder: an :class:`~noiseforge.relevance.embed.Encoder` (default :class:`USEEncoder`).
    cache_dir: embedding cache folder (default ``default_cache_dir()/embeddings``).
    hidden: widths of the hidden layers.
    dropout, lr, weight_decay, batch_size, max_epochs, patience: training of the MLP
        (AdamW, binary cross-entropy, best-validation-loss weights restored).
    valid_fraction: share of training queries held out for early stopping (and the
        per-task F1 threshold ``thresholds_``) when ``fit`` gets no ``df_valid``.
    class_weight: ``None``, ``"balanced"`` or a float weight of the negative class.
    target_parts: also embed the last ``target_parts`` comma-separated levels of
        the target (for QC: the leaf category) and add their pair features; 0 to skip.
    label_features: add the label-statistics features (the main gain on QC data).
    te_smoothing, knn_k, oof_folds: their smoothing pseudo-count, kNN sizes and
        number of out-of-fold folds on the training rows.
    seed: seeds the split, the folds, the initialisation and the batch order.
    threads: torch CPU threads while training/predicting (default 1: the MLP is
        small, and on a busy machine extra OpenMP threads spin and slow it down
        by 10-50x).

    Attributes after ``fit``: ``nets_`` and ``thresholds_`` (positive-class-F1
    threshold on the validation rows, 0.5 without them) per task, ``history_``.
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 40,
        patience: int = 4,
        valid_fraction: float = 0.1,
        class_weight: str | float | None = None,
        target_parts: int = 1,
        label_features: bool = True,
        te_smoothing: float = 5.0,
        knn_k: Sequence[int] = (5, 20),
        oof_folds: int = 5,
        seed: int = 0,
        threads: int = 1,
        progress: bool = False,
    ) -> None:
        self.encoder = encoder
        self.threads = threads
        self.cache_dir = cache_dir
        self.hidden = tuple(hidden)
        self.dropout, self.lr, self.weight_decay = dropout, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience = batch_size, max_epochs, patience
        self.valid_fraction, self.class_weight = valid_fraction, class_weight
        self.target_parts, self.seed, self.progress = target_parts, seed, progress
        self.label_features, self.te_smoothing = label_features, te_smoothing
        if oof_folds < 2:
            raise ValueError(f"oof_folds must be >= 2, got {oof_folds}")
        self.knn_k, self.oof_folds = tuple(knn_k), oof_folds
        self.nets_: dict[str, nn.Module] = {}
        self.history_: dict[str, list[float]] = {}
        self.thresholds_: dict[str, float] = {}
        self._side: dict[str, tuple[LabelStatistics, np.ndarray, np.ndarray]] = {}
        self._reference: dict[str, pd.DataFrame] = {}

    # ------------------------------------------------------------------ features
    def _embed(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(query, target, target-leaf or None) vectors of the rows."""
        if self.encoder is None:
            self.encoder = USEEncoder()
        q_txt = df["query"].astype(str).tolist()
        t_txt = df["target"].astype(str).tolist()
        texts = q_txt + t_txt
        if self.target_parts:
            texts += [",".join(t.split(",")[-self.target_parts :]).strip() for t in t_txt]
        vec = embed_cached(self.encoder, texts, cache_dir=self.cache_dir, progress=self.progress)
        n = len(df)
        return vec[:n], vec[n : 2 * n], (vec[2 * n :] if self.target_parts else None)

    @staticmethod
    def _pair(q: np.ndarray, t: np.ndarray, leaf: np.ndarray | None) -> np.ndarray:
        feats = [pair_features(q, t)]
        if leaf is not None:
            feats.append(pair_features(q, leaf)[:, 2 * q.shape[1] :])  # q*l, |q-l|, cos
        return np.concatenate(feats, axis=1)

    def _features(self, df: pd.DataFrame, task: str | None = None) -> np.ndarray:
        """(n, d) float32 model input of rows of one task (fitted label statistics)."""
        q, t, leaf = self._embed(df)
        x = self._pair(q, t, leaf)
        if self.label_features and task is not None:
            stats, mu, sd = self._side[task]
            side = stats.transform(df["query"].astype(str).tolist(), df["target"].tolist(), q, t)
            x = np.concatenate([x, (side - mu) / sd], axis=1)
        return x.astype(np.float32)

    def _train_features(self, task: str, tr: pd.DataFrame) -> np.ndarray:
        """Model input of the training rows: label statistics out of fold; fits ``_side``."""
        q, t, leaf = self._embed(tr)
        x = self._pair(q, t, leaf)
        if not self.label_features:
            return x
        stats = LabelStatistics(smoothing=self.te_smoothing, ks=self.knn_k)
        # folds by query family (a translation never informs its original's features);
        # mined negatives get features but do not feed the label rates (their label is 0
        # by construction, which would bias the rates of the targets they were mined for)
        reference = None
        if "strategy" in tr.columns:
            reference = (tr["strategy"] != "semantic_negative").to_numpy()
        side = stats.out_of_fold(
            tr["query"].astype(str).tolist(),
            tr["target"].astype(str).tolist(),
            tr["label"].to_numpy(),
            q,
            t,
            folds=self.oof_folds,
            seed=self.seed,
            groups=query_groups(tr.reset_index(drop=True)),
            reference=reference,
        )
        mu, sd = side.mean(0), side.std(0) + 1e-6
        self._side[task] = (stats, mu, sd)
        return np.concatenate([x, (side - mu) / sd], axis=1).astype(np.float32)

    def _net(self, d: int) -> nn.Module:
        layers: list[nn.Module] = []
        for h in self.hidden:
            layers += [nn.Linear(d, h), nn.GELU(), nn.Dropout(self.dropout)]
            d = h
        layers.append(nn.Linear(d, 1))
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ fit / predict
    def fit(self, df_train: pd.DataFrame, df_valid: pd.DataFrame | None = None) -> EmbeddingMLP:
        _check_labelled(df_train, "df_train")
        if df_valid is None:
            tr, va = grouped_split(df_train, self.valid_fraction, self.seed)
            df_train, df_valid = df_train[tr], df_train[va]
        else:
            _check_labelled(df_valid, "df_valid")
            missing = sorted(set(df_train["task"]) - set(df_valid["task"]))
            if missing:
                raise ValueError(
                    f"df_valid has no rows of task(s) {missing}: early stopping and the "
                    "threshold need dev rows of every trained task (or pass no df_valid)"
                )
        self.nets_, self.history_, self.thresholds_ = {}, {}, {}
        self._side, self._reference = {}, {}
        with _torch_threads(self.threads):
            for task in sorted(df_train["task"].unique()):
                tr = df_train[df_train["task"] == task]
                va = df_valid[df_valid["task"] == task]
                # the rows the label statistics were fitted on (what load() refits)
                ref = (
                    tr
                    if "strategy" not in tr.columns
                    else tr[tr["strategy"] != "semantic_negative"]
                )
                self._reference[task] = ref[["query", "target", "label"]].reset_index(drop=True)
                self.nets_[task] = self._fit_one(task, tr, va)
        return self

    def _fit_one(self, task: str, tr: pd.DataFrame, va: pd.DataFrame) -> nn.Module:
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        x = torch.from_numpy(self._train_features(task, tr))
        y = torch.from_numpy(tr["label"].to_numpy(np.float32))
        xv = torch.from_numpy(self._features(va, task)) if len(va) else None
        yv = torch.from_numpy(va["label"].to_numpy(np.float32)) if len(va) else None
        net = self._net(x.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        w_neg = self._negative_weight(y)
        best, best_state, bad, hist = float("inf"), None, 0, []
        for _epoch in range(self.max_epochs):
            net.train()
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                logit = net(x[idx]).squeeze(1)
                yb = y[idx]
                w = torch.where(yb > 0.5, 1.0, w_neg)
                loss = nn.functional.binary_cross_entropy_with_logits(logit, yb, weight=w)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if xv is None:
                continue
            net.eval()
            with torch.no_grad():
                lv = net(xv).squeeze(1)
                wv = torch.where(yv > 0.5, 1.0, w_neg)
                vloss = float(nn.functional.binary_cross_entropy_with_logits(lv, yv, weight=wv))
            hist.append(vloss)
            if vloss < best - 1e-4:
                best, best_state, bad = vloss, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.history_[task] = hist
        net.eval()
        self.thresholds_[task] = 0.5
        if xv is not None and bool((yv > 0.5).any()):
            with torch.no_grad():
                pv = torch.sigmoid(net(xv).squeeze(1)).numpy()
            self.thresholds_[task] = tune_threshold(yv.numpy(), pv)[0]
        return net

    def _negative_weight(self, y: torch.Tensor) -> float:
        if self.class_weight is None:
            return 1.0
        if self.class_weight == "balanced":
            pos = float(y.mean())
            return pos / max(1.0 - pos, 1e-6)
        return float(self.class_weight)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if not self.nets_:
            raise RuntimeError("EmbeddingMLP.predict_proba called before fit")
        out = np.full(len(df), np.nan, dtype=np.float32)
        tasks = df["task"].to_numpy()
        for task in pd.unique(tasks):
            if task not in self.nets_:
                raise ValueError(f"no model for task {task!r}: fit saw only {sorted(self.nets_)}")
            mask = tasks == task
            with torch.no_grad(), _torch_threads(self.threads):
                x = torch.from_numpy(self._features(df[mask], task))
                out[mask] = torch.sigmoid(self.nets_[task](x).squeeze(1)).numpy()
        return out

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """(n,) int 0/1: ``predict_proba >= thresholds_[task]`` (tuned on the validation rows)."""
        p = self.predict_proba(df)
        th = df["task"].map(self.thresholds_).to_numpy(np.float64)
        return (p >= th).astype(int)

    # ------------------------------------------------------------------ persistence
    _FORMAT = "noiseforge.relevance.EmbeddingMLP"

    def _config(self) -> dict:
        return {
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "valid_fraction": self.valid_fraction,
            "class_weight": self.class_weight,
            "target_parts": self.target_parts,
            "label_features": self.label_features,
            "te_smoothing": self.te_smoothing,
            "knn_k": list(self.knn_k),
            "oof_folds": self.oof_folds,
            "seed": self.seed,
            "threads": self.threads,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to one torch file (tensors, numbers and strings only).

        Stores the config, the encoder's name, and per task the network's state
        dict, threshold, feature standardisation and the training rows (query,
        target, label) the label statistics are rebuilt from on :meth:`load`
        (their embeddings come back from the cache). Returns the path.
        """
        if not self.nets_:
            raise RuntimeError("EmbeddingMLP.save called before fit")
        if self.encoder is None:
            self.encoder = USEEncoder()
        tasks = {}
        for task, net in self.nets_.items():
            ref = self._reference[task]
            entry = {
                "state": net.state_dict(),
                "threshold": float(self.thresholds_.get(task, 0.5)),
                "queries": ref["query"].astype(str).tolist(),
                "targets": ref["target"].astype(str).tolist(),
                "labels": torch.tensor(ref["label"].to_numpy(np.int64)),
            }
            if self.label_features:
                _, mu, sd = self._side[task]
                entry["side_mean"], entry["side_std"] = torch.from_numpy(mu), torch.from_numpy(sd)
            tasks[task] = entry
        blob = {
            "format": self._FORMAT,
            "version": 1,
            "encoder": self.encoder.name,
            "config": self._config(),
            "tasks": tasks,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        encoder: Encoder | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> EmbeddingMLP:
        """Read a model written by :meth:`save`.

        ``encoder`` must be the one it was trained with (same ``name``; default
        :class:`USEEncoder`). Raises ``FileNotFoundError`` for a missing file and
        ``ValueError`` for a file that is not a saved EmbeddingMLP or an encoder
        that does not match.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"EmbeddingMLP.load: no file at {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"{path} is not a saved EmbeddingMLP (torch.load failed: {exc}); "
                "write one with EmbeddingMLP.save"
            ) from exc
        if not isinstance(blob, dict) or blob.get("format") != cls._FORMAT:
            raise ValueError(
                f"{path} is not a saved EmbeddingMLP (format tag missing); "
                "write one with EmbeddingMLP.save"
            )
        if blob.get("version") != 1:
            raise ValueError(f"{path}: unsupported EmbeddingMLP file version {blob.get('version')}")
        encoder = encoder if encoder is not None else USEEncoder()
        if encoder.name != blob["encoder"]:
            raise ValueError(
                f"{path} was trained with encoder {blob['encoder']!r}, got {encoder.name!r}: "
                "pass the same encoder to EmbeddingMLP.load (on the command line: --encoder "
                "use | hashing | the model path used for training)"
            )
        model = cls(encoder, cache_dir=cache_dir, progress=progress, **blob["config"])
        with _torch_threads(model.threads):
            for task, entry in blob["tasks"].items():
                ref = pd.DataFrame(
                    {
                        "query": entry["queries"],
                        "target": entry["targets"],
                        "label": entry["labels"].numpy(),
                    }
                )
                model._reference[task] = ref
                if model.label_features:
                    q, t, _ = model._embed(ref)
                    stats = LabelStatistics(smoothing=model.te_smoothing, ks=model.knn_k)
                    stats.fit(ref["query"].tolist(), ref["target"].tolist(), ref["label"], q, t)
                    model._side[task] = (
                        stats,
                        entry["side_mean"].numpy(),
                        entry["side_std"].numpy(),
                    )
                first = entry["state"]["0.weight"]
                net = model._net(first.shape[1])
                net.load_state_dict(entry["state"])
                model.nets_[task] = net.eval()
                model.thresholds_[task] = float(entry["threshold"])
        return model


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_labelled(df: pd.DataFrame, name: str) -> None:
    missing = {"task", "query", "target", "label"} - set(df.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)} (see relevance.schema)")
    bad = ~df["label"].isin((0, 1))
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} rows without a 0/1 label "
            f"(first id {df.loc[bad].iloc[0].get('id', '?')}); training needs labelled rows"
        )


class HFCrossEncoder:
    """Fine-tunes a local Hugging Face sequence-classification model on (query, target).

    ``path``: a local model directory (``AutoModelForSequenceClassification``; a
    2-label head is created when the checkpoint has none). Needs ``transformers``.
    p(relevant) is the softmax of label 1.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_length: int = 64,
        batch_size: int = 32,
        epochs: int = 1,
        lr: float = 2e-5,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"HFCrossEncoder: no model directory at {self.path}")
        try:
            import transformers
        except ImportError as exc:
            raise ImportError(
                "HFCrossEncoder needs transformers: pip install transformers "
                "(and a local model directory)"
            ) from exc
        self._tf = transformers
        self.max_length, self.batch_size, self.epochs, self.lr = max_length, batch_size, epochs, lr
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.seed = seed
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path))
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(self.path), num_labels=2
        ).to(self.device)

    def _batches(self, df: pd.DataFrame):
        q, t = df["query"].astype(str).tolist(), df["target"].astype(str).tolist()
        for i in range(0, len(df), self.batch_size):
            enc = self.tokenizer(
                q[i : i + self.batch_size],
                t[i : i + self.batch_size],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            yield i, {k: v.to(self.device) for k, v in enc.items()}

    def fit(self, df_train: pd.DataFrame, df_valid: pd.DataFrame | None = None) -> HFCrossEncoder:
        _check_labelled(df_train, "df_train")
        torch.manual_seed(self.seed)
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        labels = torch.tensor(df_train["label"].to_numpy(), dtype=torch.long)
        for epoch in range(self.epochs):
            order = np.random.default_rng(self.seed + epoch).permutation(len(df_train))
            shuffled, y = df_train.iloc[order], labels[order]
            self.model.train()
            for i, batch in self._batches(shuffled):
                out = self.model(**batch, labels=y[i : i + self.batch_size].to(self.device))
                opt.zero_grad()
                out.loss.backward()
                opt.step()
        self.model.eval()
        return self

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(df), dtype=np.float32)
        self.model.eval()
        with torch.no_grad():
            for i, batch in self._batches(df):
                logits = self.model(**batch).logits
                out[i : i + len(logits)] = torch.softmax(logits, -1)[:, 1].float().cpu().numpy()
        return out


class HFYesNoJudge:
    """A local causal language model as the relevance judge: p(relevant) =
    p(" yes") / (p(" yes") + p(" no")) for the next token after a prompt that shows
    the query and the category path (QC) or item title (QI).

    ``fit`` trains on that two-way choice (cross-entropy on the yes/no logits):
    with ``lora=True`` (default) only low-rank adapters are trained (``peft``;
    ``target_modules`` names the layers for architectures peft does not know),
    with ``lora=False`` the whole model; ``epochs=0`` keeps the model as it is
    (zero-shot). Needs ``transformers`` (and ``peft`` for LoRA) and a local model
    directory; nothing is downloaded.
    """

    PROMPT = "Query: {query}\n{kind}: {target}\nIs the {kind_lower} relevant to the query? Answer:"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        lora: bool = True,
        lora_r: int = 8,
        lora_alpha: int = 16,
        target_modules: Sequence[str] | None = None,
        max_length: int = 128,
        batch_size: int = 16,
        epochs: int = 1,
        lr: float = 1e-4,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"HFYesNoJudge: no model directory at {self.path}")
        try:
            import transformers
        except ImportError as exc:
            raise ImportError(
                "HFYesNoJudge needs transformers: pip install transformers "
                "(and a local model directory)"
            ) from exc
        if epochs < 0 or batch_size < 1 or max_length < 8:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and max_length >= 8")
        self.lora, self.epochs, self.lr, self.seed = lora, epochs, lr, seed
        self.max_length, self.batch_size = max_length, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = transformers.AutoTokenizer.from_pretrained(str(self.path))
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(f"{self.path}: the tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # the answer is predicted at the last position of every row
        self.tokenizer = tok
        self.answer_ids = []
        for word in (" yes", " no"):
            ids = tok(word, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"{self.path}: the tokenizer cannot encode {word.strip()!r}")
            self.answer_ids.append(ids[0])  # the first token decides between the two
        if self.answer_ids[0] == self.answer_ids[1]:
            raise ValueError(f"{self.path}: ' yes' and ' no' start with the same token")
        model = transformers.AutoModelForCausalLM.from_pretrained(str(self.path))
        if lora and epochs > 0:
            try:
                import peft
            except ImportError as exc:
                raise ImportError(
                    "LoRA needs peft: pip install peft (or HFYesNoJudge(..., lora=False) to "
                    "fine-tune every weight)"
                ) from exc
            config = peft.LoraConfig(
                r=lora_r,
                lora_alpha=lora_alpha,
                target_modules=list(target_modules) if target_modules else None,
                task_type="CAUSAL_LM",
            )
            try:
                model = peft.get_peft_model(model, config)
            except ValueError as exc:
                raise ValueError(
                    f"{self.path}: peft cannot place LoRA adapters on this architecture by "
                    f"itself ({exc}); pass target_modules=[...] (e.g. ['c_attn'] for GPT-2, "
                    "['q_proj', 'v_proj'] for Llama/Qwen)"
                ) from None
        self.model = model.to(self.device)

    def _prompts(self, df: pd.DataFrame) -> list[str]:
        out = []
        for task, q, t in zip(df["task"], df["query"], df["target"], strict=True):
            kind = "Category" if task == "QC" else "Title"
            out.append(self.PROMPT.format(query=q, target=t, kind=kind, kind_lower=kind.lower()))
        return out

    def _logits(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            prompts,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        last = self.model(**enc).logits[:, -1, :]  # left padding: the prompt's last token
        return last[:, self.answer_ids]  # (n, 2): yes, no

    def fit(self, df_train: pd.DataFrame, df_valid: pd.DataFrame | None = None) -> HFYesNoJudge:
        """Trains ``epochs`` passes (``df_valid`` is not used: pick epochs on dev)."""
        _check_labelled(df_train, "df_train")
        if self.epochs == 0:
            return self
        torch.manual_seed(self.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr)
        prompts = self._prompts(df_train)
        # class 0 = " yes" (relevant), class 1 = " no"
        target = torch.tensor(1 - df_train["label"].to_numpy(np.int64), dtype=torch.long)
        self.model.train()
        for epoch in range(self.epochs):
            order = np.random.default_rng(self.seed + epoch).permutation(len(prompts))
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                logits = self._logits([prompts[i] for i in idx])
                loss = nn.functional.cross_entropy(logits, target[idx].to(self.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model.eval()
        return self

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        prompts = self._prompts(df)
        out = np.empty(len(df), dtype=np.float32)
        self.model.eval()
        with torch.no_grad():
            for s in range(0, len(prompts), self.batch_size):
                logits = self._logits(prompts[s : s + self.batch_size])
                out[s : s + len(logits)] = torch.softmax(logits.float(), -1)[:, 0].cpu().numpy()
        return out
