"""Label-statistics side features of a (query, target) row, learned from training labels.

Frozen embeddings say how *similar* a query and a category are; the labels of
the training rows say how a category (and queries like this one) were actually
judged. Two families, both computed per task:

- **Target encodings** (Micci-Barreca 2001): the smoothed label rate
  ``(sum_y + a * prior) / (n + a)`` and ``log(1 + n)`` of the full target, its
  leaf, top level and first two levels (targets are comma-separated paths), and
  of each (lower-cased query word, top level) pair, summarised per row by
  mean / min / max rate and the largest count.
- **kNN labels**: the similarity-weighted label mean of the ``k`` nearest
  training rows by joint similarity ``(q.q' + t.t') / 2`` and, separately, by
  query similarity among rows with the same top-level category; plus the best
  similarity overall, to a positive and to a negative neighbour.

On the training rows themselves the features must be *out of fold*
(:meth:`LabelStatistics.out_of_fold`), or the model learns to trust statistics
that include its own label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

_WORD = re.compile(r"\w+")


def target_levels(target: str) -> tuple[str, str, str, str]:
    """``(path, leaf, top, top two levels)`` of a comma-separated category path."""
    parts = [p.strip() for p in str(target).split(",")]
    return ",".join(parts), parts[-1], parts[0], ",".join(parts[:2])


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class LabelStatistics:
    """Target-encoding and kNN-label features against a set of labelled reference rows.

    Parameters
    ----------
    smoothing: ``a`` of the smoothed rates (pseudo-count of the prior).
    ks: neighbour counts of the kNN label means.
    chunk: rows scored at once in the kNN search (memory ``chunk * n_reference``).
    """

    names_te = [
        f"{stat}_{level}" for level in ("path", "leaf", "top", "top2") for stat in ("rate", "logn")
    ] + ["word_top_rate_mean", "word_top_rate_min", "word_top_rate_max", "word_top_logn_max"]

    def __init__(self, *, smoothing: float = 5.0, ks: Sequence[int] = (5, 20), chunk: int = 2048):
        self.smoothing, self.ks, self.chunk = float(smoothing), tuple(int(k) for k in ks), chunk

    @property
    def names(self) -> list[str]:
        """Column names of :meth:`transform`'s output, in order."""
        knn = []
        for block in ("joint", "same_top"):
            knn += [f"knn_{block}_mean{k}" for k in self.ks]
            knn += [f"knn_{block}_best", f"knn_{block}_best_pos", f"knn_{block}_best_neg"]
        return self.names_te + knn

    # ------------------------------------------------------------------ fit / transform
    def fit(
        self, queries: Sequence[str], targets: Sequence[str], labels, qvec, tvec
    ) -> LabelStatistics:
        """Remember the reference rows: texts, 0/1 labels, (n, d) query/target vectors."""
        y = np.asarray(labels, dtype=np.float32)
        if not len(y):
            raise ValueError("LabelStatistics.fit needs at least one labelled row")
        self.prior_ = float(y.mean())
        lv = [target_levels(t) for t in targets]
        self.level_stats_ = [_rate_table(keys, y) for keys in zip(*lv, strict=True)]
        pairs = [
            (w + "|" + top, yy)
            for q, (_, _, top, _), yy in zip(queries, lv, y, strict=True)
            for w in set(_WORD.findall(str(q).lower()))
        ]
        self.word_top_ = _rate_table(*zip(*pairs, strict=True)) if pairs else _rate_table([], [])
        self.y_ = torch.from_numpy(y)
        self.qvec_ = torch.from_numpy(_unit(qvec))
        self.tvec_ = torch.from_numpy(_unit(tvec))
        self.tops_ = [top for _, _, top, _ in lv]
        return self

    def transform(self, queries: Sequence[str], targets: Sequence[str], qvec, tvec) -> np.ndarray:
        """(n, len(names)) float32 features of new rows against the reference rows."""
        return np.concatenate(
            [self._target_encoding(queries, targets), self._knn(targets, qvec, tvec)], axis=1
        )

    def out_of_fold(
        self,
        queries,
        targets,
        labels,
        qvec,
        tvec,
        *,
        folds: int = 5,
        seed: int = 0,
        groups=None,
        reference=None,
    ) -> np.ndarray:
        """Features of the training rows, each from a model of the other folds.

        Folds group rows by query, or by ``groups`` (e.g. query families that join a
        query with its translations), so a row never sees its own label, a duplicate
        of its query or a translation of it. ``reference`` (bool mask) limits the rows
        whose labels feed the statistics (e.g. leave out synthetic negatives, whose
        labels are 0 by construction); every row still gets features. Leaves ``self``
        fitted on all reference rows. Returns (n, len(names)) float32.
        """
        queries, targets = list(map(str, queries)), list(map(str, targets))
        y, qvec, tvec = np.asarray(labels), np.asarray(qvec), np.asarray(tvec)
        if groups is None:
            codes, uniq = pd.factorize(pd.Series(queries))
            n_groups = len(uniq)
        else:
            codes = np.asarray(groups, dtype=np.int64)
            if codes.shape != y.shape:
                raise ValueError(f"groups has shape {codes.shape}, labels {y.shape}")
            n_groups = int(codes.max()) + 1 if len(codes) else 0
        if folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}")
        use = np.ones(len(y), bool) if reference is None else np.asarray(reference, bool)
        if not use.any():
            raise ValueError("no reference rows: the statistics need labelled original rows")
        fold_of_query = np.random.default_rng(seed).permutation(n_groups) % folds
        fold = fold_of_query[codes]
        out = np.zeros((len(y), len(self.names)), dtype=np.float32)
        for f in np.unique(fold):
            held, ref = np.flatnonzero(fold == f), np.flatnonzero((fold != f) & use)
            if not len(ref):
                raise ValueError(
                    f"fold {f} of the label statistics has no reference rows outside it: "
                    "give more original rows or fewer folds"
                )
            self.fit(
                [queries[i] for i in ref], [targets[i] for i in ref], y[ref], qvec[ref], tvec[ref]
            )
            out[held] = self.transform(
                [queries[i] for i in held], [targets[i] for i in held], qvec[held], tvec[held]
            )
        keep = np.flatnonzero(use)
        self.fit(
            [queries[i] for i in keep], [targets[i] for i in keep], y[keep], qvec[keep], tvec[keep]
        )
        return out

    # ------------------------------------------------------------------ the two families
    def _smoothed(self, table: pd.DataFrame, keys) -> tuple[np.ndarray, np.ndarray]:
        j = table.reindex(pd.Index(list(keys), dtype=object))
        n = j["n"].fillna(0.0).to_numpy()
        s = j["s"].fillna(0.0).to_numpy()
        return (s + self.smoothing * self.prior_) / (n + self.smoothing), np.log1p(n)

    def _target_encoding(self, queries, targets) -> np.ndarray:
        lv = [target_levels(t) for t in targets]
        cols = []
        for table, keys in zip(
            self.level_stats_, zip(*lv, strict=True) if lv else [[]] * 4, strict=True
        ):
            cols += list(self._smoothed(table, keys))
        rows, keys = [], []
        for i, (q, (_, _, top, _)) in enumerate(zip(queries, lv, strict=True)):
            for w in set(_WORD.findall(str(q).lower())):
                rows.append(i)
                keys.append(w + "|" + top)
        n = len(lv)
        agg = np.tile(np.array([self.prior_, self.prior_, self.prior_, 0.0]), (n, 1))
        if rows:
            rate, logn = self._smoothed(self.word_top_, keys)
            g = pd.DataFrame({"i": rows, "r": rate, "c": logn}).groupby("i")
            stats = g.agg(mean=("r", "mean"), min=("r", "min"), max=("r", "max"), c=("c", "max"))
            agg[stats.index.to_numpy()] = stats.to_numpy()
        return np.concatenate([np.stack(cols, axis=1), agg], axis=1).astype(np.float32)

    def _knn(self, targets, qvec, tvec) -> np.ndarray:
        q, t = torch.from_numpy(_unit(qvec)), torch.from_numpy(_unit(tvec))
        top_codes = pd.factorize(pd.Series(self.tops_ + [target_levels(x)[2] for x in targets]))[0]
        ref_top = torch.from_numpy(top_codes[: len(self.tops_)])
        new_top = torch.from_numpy(top_codes[len(self.tops_) :])
        k = min(max(self.ks), len(self.y_))
        out = []
        for s in range(0, len(q), self.chunk):
            sq = q[s : s + self.chunk] @ self.qvec_.T
            joint = (sq + t[s : s + self.chunk] @ self.tvec_.T) / 2
            same_top = torch.where(new_top[s : s + self.chunk, None] == ref_top[None, :], sq, -2.0)
            feats = []
            for sim in (joint, same_top):
                val, idx = torch.topk(sim, k, dim=1)
                lab = self.y_[idx]
                valid = val > -1.5  # same_top: fewer than k rows share the top level
                w = (val.clamp_min(0) + 1e-3) * valid
                for kk in self.ks:
                    num = (w[:, :kk] * lab[:, :kk]).sum(1)
                    den = w[:, :kk].sum(1)
                    feats.append(torch.where(den > 0, num / den.clamp_min(1e-12), self.prior_))
                feats.append(torch.where(valid[:, 0], val[:, 0], -1.0))
                feats.append(torch.where(valid & (lab > 0.5), val, -1.0).max(1).values)
                feats.append(torch.where(valid & (lab < 0.5), val, -1.0).max(1).values)
            out.append(torch.stack(feats, 1))
        if not out:
            return np.zeros((0, len(self.names) - len(self.names_te)), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


def _rate_table(keys, labels) -> pd.DataFrame:
    """Per key: label sum ``s`` and count ``n``."""
    df = pd.DataFrame({"k": pd.Series(list(keys), dtype=object), "y": np.asarray(labels, float)})
    return df.groupby("k")["y"].agg(s="sum", n="count")
