"""The funnel's ranking stage: a score for every (request, candidate) pair, which orders the final
list.

* :class:`ScorerRanker` - any candidate scorer (:func:`recfunnel.run.candidate_scorer`): a CTR
  ranker or LightGBM scoring each pair through its feature fields (the user's and item's table
  values, the request time, the user's history), or a user x item model's own score;
* :class:`RetrievalScoreRanker` - the retrievers' own scores (fused by reciprocal rank, or one
  source's), for a funnel without a trained ranker.

A ranker trained for this funnel (hard negatives from its own retrievers) is built by
:mod:`recfunnel.funnel.ranker_data`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from recfunnel.errors import ConfigError
from recfunnel.funnel.candidates import Candidates
from recfunnel.funnel.request import Requests
from recfunnel.nn import set_mlp_dtype
from recfunnel.run.scoring import CandidateScorer, FieldModelScorer, candidate_scorer

__all__ = [
    "RANKER_PRECISIONS",
    "Ranker",
    "RetrievalScoreRanker",
    "ScorerRanker",
    "resolve_ranker_precision",
    "set_ranker_precision",
]

#: numeric precision of a trained ranker's MLP layers at serving time
RANKER_PRECISIONS = ("auto", "fp32", "bf16")


def _bf16_matmul_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch, or a CPU torch cannot query
        return False


def resolve_ranker_precision(precision: str) -> str:
    """ "auto" -> "bf16" where the CPU has AMX (a 400-400-400 MLP over 250 rows ran 3.5x faster in
    bf16 there, one thread), else "fp32"; "fp32" / "bf16" as given. Anything else: ConfigError."""
    if precision not in RANKER_PRECISIONS:
        raise ConfigError(f"ranker precision {precision!r} is not one of {', '.join(RANKER_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if _bf16_matmul_fast() else "fp32"
    return precision


def set_ranker_precision(model: Any, precision: str) -> int:
    """Run `model`'s MLP layers in `precision` ("fp32" / "bf16"; "auto" resolved first) for
    inference; embeddings, FM and cross terms stay float32. -> how many MLP blocks were set (0 for
    a model without any, e.g. LightGBM: precision then changes nothing)."""
    precision = resolve_ranker_precision(precision)
    if not isinstance(model, torch.nn.Module):
        return 0
    return set_mlp_dtype(model, torch.bfloat16 if precision == "bf16" else None)


@runtime_checkable
class Ranker(Protocol):
    name: str

    def rank(self, requests: Requests, candidates: Candidates) -> np.ndarray:
        """float32 [B, C]: a score per candidate slot (higher first), -inf in empty slots."""
        ...


class RetrievalScoreRanker:
    """The retrievers' own scores as the ranking score.

    Scores of different sources are not on one scale (a popularity count, a cosine, a logit), so
    by default they are fused by rank: reciprocal rank fusion (Cormack et al., SIGIR 2009),
    ``sum over the sources s that proposed the item of 1 / (rrf_k + rank_s)`` with rank_s its place
    in s's answer from 1; an item several sources propose rises.

    Args:
        source: rank by this source's score instead (items it did not propose come last).
        fusion: "rrf" (default) or "claimed": the score of the source that claimed each item, as
            it is (only meaningful with one source, or sources on one scale).
        rrf_k: the RRF constant (60 in the paper).
    """

    def __init__(
        self, source: str | None = None, fusion: str = "rrf", rrf_k: float = 60.0, name: str = "retrieval"
    ) -> None:
        if fusion not in ("rrf", "claimed"):
            raise ValueError(f"fusion must be 'rrf' or 'claimed', got {fusion!r}")
        self.source, self.fusion, self.rrf_k, self.name = source, fusion, rrf_k, name

    def rank(self, requests: Requests, candidates: Candidates) -> np.ndarray:
        if self.source is not None:
            if self.source not in candidates.sources:
                raise ValueError(f"no source {self.source!r} among {list(candidates.sources)}")
            s = candidates.source_scores[:, :, candidates.sources.index(self.source)]
            scores = np.where(np.isnan(s), -np.inf, s)
        elif self.fusion == "claimed":
            scores = candidates.scores
        else:
            ranks = candidates.source_ranks
            scores = np.where(ranks >= 0, 1.0 / (self.rrf_k + 1.0 + ranks), 0.0).sum(axis=2)
        return np.where(candidates.valid, scores, -np.inf).astype(np.float32)


class ScorerRanker:
    """Scores candidates with a :class:`~recfunnel.run.scoring.CandidateScorer`.

    Field scorers (CTR rankers, LightGBM) score every request at its timestamp, with the request's
    recent items as the history field: the stored history's tail followed by the events the
    request (or the service's event store) adds, so features are those of request time, not frozen
    at training; an anonymous request has UNK user fields and its own items as history. A user x
    item scorer has no row for an anonymous request: those rows keep their retrieval scores
    (`candidates.scores`).

    Args:
        scorer: the candidate scorer (e.g. ``candidate_scorer(model, dataset, split)``).
        name: the stage name in results.
    """

    def __init__(self, scorer: CandidateScorer, name: str = "ranker") -> None:
        self.scorer, self.name = scorer, name
        self.scores_anonymous = isinstance(scorer, FieldModelScorer)

    @classmethod
    def from_model(cls, model: Any, dataset: Any = None, split: Any = None, **kwargs: Any) -> ScorerRanker:
        """Over any fitted model (field families need the dataset; histories: the split's train +
        valid parts)."""
        return cls(candidate_scorer(model, dataset, split), **kwargs)

    @torch.no_grad()
    def rank(self, requests: Requests, candidates: Candidates) -> np.ndarray:
        items, valid = candidates.items, candidates.valid
        out = np.where(valid, candidates.scores, -np.inf).astype(np.float32)
        rows = np.arange(len(requests)) if self.scores_anonymous else np.flatnonzero(requests.known)
        rows = rows[valid[rows].any(axis=1)]
        if not len(rows) or not items.shape[1]:
            return out
        users = torch.from_numpy(requests.users[rows])
        cand = torch.from_numpy(np.where(valid[rows], items[rows], 0))  # empty slots scored, then dropped
        if self.scores_anonymous:
            scores = self.scorer.score(users, cand, requests.timestamp, requests.recent(rows))  # type: ignore[call-arg]
        else:
            scores = self.scorer.score(users, cand)
        scores = scores.detach().float().cpu().numpy()
        out[rows] = np.where(valid[rows], scores, -np.inf)
        return out
