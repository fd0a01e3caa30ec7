"""Is a difference real? Confidence intervals of a mean, paired comparison of two models on the same
users, Holm's correction when one baseline is compared with many models, and the compact form
per-user metric vectors take in JSON rows.

    lo, hi = bootstrap_ci(res.per_user["ndcg@10"], seed=0)           # 95% percentile bootstrap
    cmp = paired_test(mine.per_user["ndcg@10"], base.per_user["ndcg@10"])
    cmp.t_p, cmp.wilcoxon_p, cmp.mean_diff, cmp.d_z
    adjusted = holm([c.wilcoxon_p for c in comparisons])              # family-wise error control

The users must be the same, in the same order, in both vectors of a paired comparison: results of
one split and part are (:attr:`recfunnel.eval.result.Result.users`).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "PairedTest",
    "bootstrap_ci",
    "holm",
    "pack_vector",
    "paired_test",
    "t_interval",
    "t_interval_of",
    "unpack_vector",
]


def _vector(x: Any, name: str = "x") -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return v


def bootstrap_ci(
    x: Any, level: float = 0.95, n_boot: int = 2000, seed: int = 0, chunk_elems: int = 1 << 22
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `x` [n] (Efron & Tibshirani 1993,
    ch. 13): the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of `n_boot` means of samples
    of size n drawn with replacement. Seeded: the same input and seed give the same interval.
    Resamples are drawn in blocks of at most `chunk_elems` indices (memory stays bounded for
    tens of thousands of users)."""
    v = _vector(x)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = v.size
    per_block = max(1, chunk_elems // n)
    means = np.empty(n_boot, dtype=np.float64)
    for s in range(0, n_boot, per_block):
        b = min(per_block, n_boot - s)
        means[s : s + b] = v[rng.integers(0, n, size=(b, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def t_interval(x: Any, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of a few values (e.g. one metric over seeds):
    ``mean -+ t_{(1 + level) / 2, n - 1} * sd / sqrt(n)``; a single value gives ``(x, x)``."""
    v = _vector(x)
    return t_interval_of(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, v.size, level)


def t_interval_of(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """:func:`t_interval` from a summary: the mean, standard deviation (ddof=1) and count of the
    values (an aggregate row keeps these, not the values)."""
    if n < 2:
        return mean, mean
    half = float(_st.t.ppf((1 + level) / 2, n - 1) * sd / np.sqrt(n))
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedTest:
    """Two models on the same users: means, the effect and two tests of "no difference".

    Attributes:
        n: users compared.
        mean_a, mean_b: the mean of each model's vector.
        mean_diff: mean of ``a - b`` (positive: `a` is better on a higher-is-better metric).
        d_z: Cohen's d_z, ``mean_diff / sd(a - b)`` (ddof=1): the effect in units of the spread of
            the per-user differences; 0 when every difference is 0.
        t_stat, t_p: paired t-test (``scipy.stats.ttest_rel``), two-sided.
        wilcoxon_stat, wilcoxon_p: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
            zero differences dropped), two-sided; p = 1 when every difference is 0.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    d_z: float
    t_stat: float
    t_p: float
    wilcoxon_stat: float
    wilcoxon_p: float


def paired_test(a: Any, b: Any) -> PairedTest:
    """Paired comparison of two per-user metric vectors [n] of the same users in the same order."""
    va, vb = _vector(a, "a"), _vector(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired vectors must have the same users: got {va.size} and {vb.size} values")
    d = va - vb
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    mean_diff = float(d.mean())
    d_z = mean_diff / sd if sd > 0 else 0.0
    if not d.any():  # identical vectors: nothing to test
        t_stat, t_p, w_stat, w_p = 0.0, 1.0, 0.0, 1.0
    else:
        t = _st.ttest_rel(va, vb)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
        if sd == 0:  # a constant non-zero difference: the t statistic is infinite
            t_stat, t_p = float(np.sign(mean_diff) * np.inf), 0.0
        w = _st.wilcoxon(va, vb)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    return PairedTest(d.size, float(va.mean()), float(vb.mean()), mean_diff, d_z, t_stat, t_p, w_stat, w_p)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: with p sorted ascending,
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``. Rejecting where ``adj <= alpha`` keeps
    the family-wise error rate at alpha. NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def pack_vector(x: Any) -> str:
    """A per-user vector as compact text for JSON: float32, zlib, base64 (a leave-one-out NDCG
    vector takes a few distinct values and shrinks well below the size of a list of numbers)."""
    raw = np.ascontiguousarray(np.asarray(x, dtype="<f4")).tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def unpack_vector(data: Any) -> np.ndarray:
    """The float64 vector of :func:`pack_vector`'s text (a plain list of numbers is read as is)."""
    if isinstance(data, str):
        return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype="<f4").astype(np.float64)
    return np.asarray(data, dtype=np.float64)
