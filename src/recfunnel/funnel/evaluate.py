"""Offline evaluation of a whole funnel: the final list's ranking quality, the recall of the merged
candidate set before ranking, and the time each stage takes per request.

For every user with held-out items in a part of the split (leave-one-out: one item), the funnel is
asked for its top ``max(ks)`` as a known user (its stored seen items and histories are train +
valid, :meth:`Funnel.for_dataset` with the split), and

* ``ndcg@k``, ``recall@k``, ``hr@k``, ``mrr@k`` score the final list (the metrics of
  :func:`recfunnel.eval.metrics.ranking_metrics`, the held-out item's rank being its place in the
  list; an item the funnel does not return is a miss);
* ``cand_recall@c`` is the share of held-out items among the first ``c`` merged candidates (the
  merge keeps source order: the first source's claims, then the next source's, ...), and
  ``cand_recall`` among all of them: what the best possible ranker could reach;
* ``stage_ms`` is each stage's mean milliseconds per request (a batch's stage time over its users).

    res = evaluate_funnel(funnel, dataset, split, ks=(10,), candidate_ks=(200,))
    res.metrics["ndcg@10"], res.metrics["cand_recall@200"], res.stage_ms["rank"]
    res.per_user["ndcg@10"]  # one value per evaluated user (res.users), for paired tests

The final lists come from :meth:`Funnel.recommend` (its timings are the ones reported); the merged
candidates from a second :meth:`Funnel.resolve` + :meth:`Funnel.candidates` of the same batch (the
result does not carry them), checked to hold every recommended item.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.splits import Split
from recfunnel.eval.metrics import ranking_metrics
from recfunnel.funnel.candidates import is_member
from recfunnel.funnel.funnel import Funnel

__all__ = ["FunnelEval", "evaluate_funnel"]

#: metrics of the final list kept per cut-off (those of recfunnel.eval.metrics.ranking_metrics)
LIST_METRICS = ("ndcg", "recall", "hr", "mrr")


@dataclass(frozen=True)
class FunnelEval:
    """A funnel's figures on one part of a split.

    Attributes:
        metrics: mean over users: ``ndcg@k``, ``recall@k``, ``hr@k``, ``mrr@k`` of the final list,
            ``cand_recall@c`` of the first c merged candidates and ``cand_recall`` of all of them.
        per_user: the same keys, float64 [n_users] each (the users of `users`, in that order).
        stage_ms: mean milliseconds per request of each stage of :attr:`FunnelResult.timings_ms`
            ("resolve", "retrieve.<source>", "merge", "rank", "filter", "order", "total").
        n_users: users evaluated.
        users: int64 [n_users] their dataset indices (sorted; equal across funnels of one split).
        mean_candidates: merged candidates per request, on average.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    stage_ms: dict[str, float]
    n_users: int
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mean_candidates: float = 0.0


def _padded(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored columns of CSR rows as [len(rows), R] padded with -1, and their counts."""
    sub = m[rows]
    counts = np.diff(sub.indptr).astype(np.int64)
    out = np.full((len(rows), max(1, int(counts.max(initial=0)))), -1, np.int64)
    r = np.repeat(np.arange(len(rows)), counts)
    out[r, np.arange(len(sub.indices)) - np.repeat(sub.indptr[:-1], counts)] = sub.indices
    return out, counts


def _positions(items: np.ndarray, wanted: np.ndarray, missing: int) -> np.ndarray:
    """int64 [B, R]: the place of each `wanted` [B, R] item (-1: padding) in its row of `items`
    [B, L] (-1: empty), `missing` where it is not there."""
    eq = (items[:, None, :] == wanted[:, :, None]) & (wanted >= 0)[:, :, None]  # [B, R, L]
    if items.shape[1] == 0:
        return np.full(wanted.shape, missing, np.int64)
    return np.where(eq.any(axis=2), eq.argmax(axis=2), missing).astype(np.int64)


def evaluate_funnel(
    funnel: Funnel,
    dataset: Dataset,
    split: Split,
    part: str = "test",
    ks: Sequence[int] = (10,),
    candidate_ks: Sequence[int] = (200,),
    batch_size: int = 256,
    progress: bool = False,
) -> FunnelEval:
    """Evaluate `funnel` on the held-out items of `part` of `split` (see the module docstring).

    Args:
        funnel: a funnel over `dataset` (its seen items and histories: the parts before `part`,
            e.g. ``Funnel.for_dataset(..., dataset=dataset, split=split)`` for the test part).
        dataset, split: the data and the split whose `part` holds the held-out items.
        part: "test" or "valid".
        ks: cut-offs of the final list (the funnel is asked for ``max(ks)`` items).
        candidate_ks: cut-offs of the merged candidate list (``cand_recall@c``).
        batch_size: users per :meth:`Funnel.recommend` call.
        progress: print a line per batch to stderr.
    """
    if part not in ("valid", "test"):
        raise ValueError(f"unknown part {part!r}; valid: valid, test")
    ks, candidate_ks = [int(k) for k in ks], [int(c) for c in candidate_ks]
    if not ks or min(ks) < 1 or (candidate_ks and min(candidate_ks) < 1):
        raise ValueError(f"cut-offs must be >= 1, got ks={ks}, candidate_ks={candidate_ks}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (funnel.n_users, funnel.n_items) != (dataset.n_users, dataset.n_items):
        raise ValueError(
            f"the funnel covers {funnel.n_users} users x {funnel.n_items} items, the dataset "
            f"{dataset.n_users} x {dataset.n_items}: build it over this dataset"
        )
    k = max(ks)
    target = split.part(dataset, part).matrix(dataset.n_users, dataset.n_items).tocsr()
    users = split.eval_users(dataset, part).astype(np.int64)
    absent = max([dataset.n_items, *candidate_ks]) + 1  # a rank no candidate list reaches
    vocab = funnel.user_vocab
    per_user: dict[str, list[np.ndarray]] = {}
    stage_sums: dict[str, float] = {}
    n_candidates = n_blocked = 0
    for start in range(0, len(users), batch_size):
        ub = users[start : start + batch_size]
        ids = [vocab.ids[u] for u in ub] if vocab is not None else ub.tolist()
        res = funnel.recommend(users=ids, k=k)
        for stage, ms in res.timings_ms.items():
            stage_sums[stage] = stage_sums.get(stage, 0.0) + float(ms)
        cand = funnel.candidates(funnel.resolve(ids)).items
        n_candidates += int((cand >= 0).sum())
        shown = _positions(cand, res.items, -1)
        if bool(((shown < 0) & (res.items >= 0)).any()):
            raise RuntimeError(
                "a recommended item is not among the merged candidates of a second retrieval of the "
                "same requests: a retriever answers differently each time, so Recall@C cannot be "
                "measured this way"
            )
        rel, counts = _padded(target, ub)
        if funnel.seen is not None:
            n_blocked += int(is_member(funnel.seen[ub], rel).sum())
        n_rel = torch.from_numpy(counts)
        final = ranking_metrics(torch.from_numpy(_positions(res.items, rel, k)), n_rel, ks, n_items=k)
        values = {f"{m}@{c}": final[f"{m}@{c}"] for c in ks for m in LIST_METRICS}
        ranks = torch.from_numpy(_positions(cand, rel, absent))
        retrieved = ranking_metrics(ranks, n_rel, [*candidate_ks, absent], n_items=absent)
        values |= {f"cand_recall@{c}": retrieved[f"recall@{c}"] for c in candidate_ks}
        values["cand_recall"] = retrieved[f"recall@{absent}"]
        for name, v in values.items():
            per_user.setdefault(name, []).append(v.numpy().astype(np.float64))
        if progress:
            print(f"[evaluate_funnel] {start + len(ub)}/{len(users)} users", file=sys.stderr, flush=True)
    n = len(users)
    if n_blocked:
        warnings.warn(
            f"{n_blocked} held-out item(s) of the {part} part are among the funnel's stored seen items, "
            "which it never recommends (for the valid part, build the funnel with the train items as "
            "seen)",
            stacklevel=2,
        )
    vectors = {name: np.concatenate(parts) for name, parts in per_user.items()}
    return FunnelEval(
        metrics={name: float(v.mean()) for name, v in vectors.items()},
        per_user=vectors,
        stage_ms={stage: total / n for stage, total in stage_sums.items()} if n else {},
        n_users=n,
        users=users,
        mean_candidates=n_candidates / n if n else 0.0,
    )
