"""Guardrail (beyond-accuracy) metrics of top-K lists: what a model recommends, not only whether it hits.

A model can gain NDCG by pushing the few most popular items to everyone; these metrics show it.
Every function takes the lists as ``top``: int ``[n_users, K]`` item indices, best first, padded
with ``-1`` where a user has fewer than K recommendable items (padding is never counted).
Popularity is the number of distinct *training* users of an item (:func:`item_popularity`).

* ``coverage@K``: share of the catalogue recommended to at least one user,
  ``|union of lists| / n_items``.
* ``gini@K``: Gini index of item exposure (how often each catalogue item appears in the lists,
  zeros included): 0 when every item is shown equally often, towards 1 when a few items take all
  slots. With counts sorted ascending ``x_(1) <= ... <= x_(n)``:
  ``G = sum_i (2 i - n - 1) x_(i) / (n sum_i x_i)``.
* ``diversity@K``: intra-list diversity, ``1 - mean_{i < j} cos(v_i, v_j)`` over the pairs of a
  list, averaged over users with two or more items (Ziegler et al. 2005). A zero vector (an item
  without genres) has cosine 0 with every item.
* ``novelty@K``: mean self-information ``-log2 p(i)`` of recommended items with
  ``p(i) = pop(i) / n_train_users`` (Zhou et al. 2010); an item no training user had counts as
  one user's (``pop = 1``), so the figure stays finite.
* ``pop_pct@K``: mean popularity percentile of recommended items, 0 = the least popular item of
  the catalogue, 100 = the most popular; tied items share their average rank.
* ``long_tail@K``: share of recommendations going to items outside the head, the head being the
  ``ceil(0.2 n_items)`` most popular items (items tied with the last of them are in the head too;
  an item no training user had never is).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

__all__ = [
    "GUARDRAILS",
    "coverage",
    "exposure_gini",
    "gini_index",
    "guardrail_metrics",
    "head_items",
    "intra_list_diversity",
    "item_feature_vectors",
    "item_popularity",
    "long_tail_share",
    "metric_bounds",
    "novelty",
    "popularity_percentile",
]

#: metric names, each reported as ``f"{name}@{K}"``
GUARDRAILS: tuple[str, ...] = ("coverage", "gini", "diversity", "novelty", "pop_pct", "long_tail")


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric ``name@K`` (or a bare name) lies in: ``pop_pct`` is a percentile (0-100),
    ``novelty`` is in bits (0 up), every other ranking metric is a rate in [0, 1]."""
    base = name.split("@", 1)[0]
    if base == "pop_pct":
        return 0.0, 100.0
    if base == "novelty":
        return 0.0, math.inf
    return 0.0, 1.0


def _lists(top: Any) -> tuple[np.ndarray, np.ndarray]:
    """The lists as int64 [n_users, K] and the mask of real (non-padding) entries."""
    t = np.asarray(top.cpu() if hasattr(top, "cpu") else top)
    if t.ndim != 2:
        raise ValueError(f"top-K lists must be 2-D [n_users, K], got shape {t.shape}")
    t = t.astype(np.int64, copy=False)
    if t.size and t.min() < -1:
        raise ValueError("top-K lists hold item indices >= 0, or -1 for padding")
    return t, t >= 0


def _items(top: Any, n_items: int) -> np.ndarray:
    t, valid = _lists(top)
    items = t[valid]
    if items.size and items.max() >= n_items:
        raise ValueError(f"top-K lists hold item {int(items.max())}, but the catalogue has {n_items} items")
    return items


def item_popularity(train: sp.spmatrix) -> np.ndarray:
    """Distinct training users of each item: int64 [n_items] from a user x item matrix (any values;
    a stored zero does not count)."""
    m = sp.csc_matrix(train, copy=True)
    m.eliminate_zeros()
    return np.diff(m.indptr).astype(np.int64)


def coverage(top: Any, n_items: int) -> float:
    """Share of the `n_items` catalogue items that appear in at least one list."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return float(np.unique(_items(top, n_items)).size / n_items)


def gini_index(counts: Any) -> float:
    """Gini index of non-negative `counts` [n]: 0 for equal counts, (n - 1) / n when one holds all.
    0 when every count is zero (nothing is unequal)."""
    x = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    if x.size == 0 or x.sum() == 0:
        return 0.0
    if x[0] < 0:
        raise ValueError("gini_index needs non-negative counts")
    n = x.size
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def exposure_gini(top: Any, n_items: int) -> float:
    """Gini index of how often each of the `n_items` catalogue items appears in the lists."""
    return gini_index(np.bincount(_items(top, n_items), minlength=n_items))


def intra_list_diversity(top: Any, item_vectors: Any, chunk: int = 4096) -> float:
    """``1 - mean pairwise cosine`` of each list's item vectors, averaged over lists with two or
    more items (NaN when there is none).

    Args:
        top: int [n_users, K] lists, -1 padding.
        item_vectors: [n_items, d] (genre multi-hot, text vectors or a model's item vectors).
        chunk: users per block (memory: chunk x K x d floats).
    """
    t, valid = _lists(top)
    v = np.asarray(item_vectors.detach().cpu() if hasattr(item_vectors, "detach") else item_vectors)
    v = v.astype(np.float64)
    if v.ndim != 2:
        raise ValueError(f"item_vectors must be [n_items, d], got shape {v.shape}")
    if t.size and t.max() >= v.shape[0]:
        raise ValueError(f"top-K lists hold item {int(t.max())}, but item_vectors has {v.shape[0]} rows")
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    total, users = 0.0, 0
    for s in range(0, len(t), chunk):
        tb, vb = t[s : s + chunk], valid[s : s + chunk]
        x = unit[np.where(vb, tb, 0)] * vb[..., None]  # [b, K, d], padding zeroed
        sims = np.einsum("bkd,bjd->bkj", x, x)
        n = vb.sum(axis=1).astype(np.float64)
        pairs = n * (n - 1)  # ordered pairs i != j
        off_diag = sims.sum(axis=(1, 2)) - np.einsum("bkk->b", sims)
        ok = pairs > 0
        total += float((1.0 - off_diag[ok] / pairs[ok]).sum())
        users += int(ok.sum())
    return total / users if users else float("nan")


def novelty(top: Any, popularity: Any, n_train_users: int) -> float:
    """Mean ``-log2(pop(i) / n_train_users)`` over recommended items (pop clamped to >= 1)."""
    if n_train_users < 1:
        raise ValueError(f"n_train_users must be >= 1, got {n_train_users}")
    pop = np.asarray(popularity, dtype=np.float64)
    items = _items(top, len(pop))
    if items.size == 0:
        return float("nan")
    p = np.maximum(pop[items], 1.0) / n_train_users
    return float(-np.log2(p).mean())


def popularity_percentile(top: Any, popularity: Any) -> float:
    """Mean popularity percentile (0 least popular .. 100 most popular) of recommended items."""
    pop = np.asarray(popularity, dtype=np.float64)
    items = _items(top, len(pop))
    if items.size == 0:
        return float("nan")
    n = len(pop)
    pct = np.full(n, 50.0) if n == 1 else 100.0 * (rankdata(pop, method="average") - 1.0) / (n - 1)
    return float(pct[items].mean())


def head_items(popularity: Any, head_share: float = 0.2) -> np.ndarray:
    """Boolean [n_items]: the ``ceil(head_share * n_items)`` most popular items, those tied with
    the last of them, never an item of popularity 0."""
    pop = np.asarray(popularity, dtype=np.float64)
    if pop.size == 0:
        return np.zeros(0, dtype=bool)
    n_head = max(1, math.ceil(head_share * pop.size))
    threshold = np.sort(pop)[::-1][n_head - 1]
    return (pop >= threshold) & (pop > 0)


def long_tail_share(top: Any, popularity: Any, head_share: float = 0.2) -> float:
    """Share of recommended (non-padding) slots holding an item outside the popularity head."""
    pop = np.asarray(popularity)
    items = _items(top, len(pop))
    if items.size == 0:
        return float("nan")
    return float((~head_items(pop, head_share)[items]).mean())


def item_feature_vectors(item_features: Any, column: str | None = None) -> np.ndarray | None:
    """Multi-hot float32 [n_items, n_values] of a list column of an item table (row i = item
    index i), e.g. MovieLens genres; None when the table has no such column.

    `column`: the list column to read (default: "genres" when present, else the first column of
    lists of strings)."""
    if item_features is None:
        return None
    if column is None:
        lists = [
            c for c, t in zip(item_features.columns, item_features.dtypes, strict=True) if "List" in str(t)
        ]
        column = "genres" if "genres" in lists else (lists[0] if lists else None)
        if column is None:
            return None
    values = item_features[column].to_list()
    vocab = {v: j for j, v in enumerate(sorted({x for row in values for x in (row or ())}))}
    if not vocab:
        return None
    rows = np.repeat(np.arange(len(values)), [len(row or ()) for row in values])
    cols = np.fromiter((vocab[x] for row in values for x in (row or ())), dtype=np.int64, count=len(rows))
    out = np.zeros((len(values), len(vocab)), dtype=np.float32)
    out[rows, cols] = 1.0
    return out


def guardrail_metrics(
    top: Any,
    popularity: Any,
    n_train_users: int,
    item_vectors: Any = None,
    head_share: float = 0.2,
) -> dict[str, float]:
    """Every guardrail of the lists, keyed ``f"{name}@{K}"`` (K = the lists' width).

    Args:
        top: int [n_users, K] item indices, best first, -1 padding.
        popularity: [n_items] distinct training users per item (:func:`item_popularity`); its
            length is the catalogue size.
        n_train_users: users in the training data (the denominator of novelty's p(i)).
        item_vectors: [n_items, d] for diversity; without them ``diversity@K`` is left out.
        head_share: share of the catalogue that is the popularity head (default 0.2).

    A figure that is undefined for these lists (diversity without a list of two items, any figure
    without a single recommended item) is left out rather than NaN.
    """
    t, _ = _lists(top)
    k = t.shape[1]
    n_items = len(np.asarray(popularity))
    out = {
        f"coverage@{k}": coverage(t, n_items),
        f"gini@{k}": exposure_gini(t, n_items),
        f"novelty@{k}": novelty(t, popularity, n_train_users),
        f"pop_pct@{k}": popularity_percentile(t, popularity),
        f"long_tail@{k}": long_tail_share(t, popularity, head_share),
    }
    if item_vectors is not None:
        out[f"diversity@{k}"] = intra_list_diversity(t, item_vectors)
    # an undefined figure (no list of two items for diversity, no item at all) is left out, not NaN
    return {f"{g}@{k}": out[f"{g}@{k}"] for g in GUARDRAILS if not math.isnan(out.get(f"{g}@{k}", math.nan))}
