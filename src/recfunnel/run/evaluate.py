"""Every evaluation protocol from one entry: ranking protocols (full, full-unmasked, sampled) for
user x item models, pointwise AUC / logloss / GAUC for field families (CTR rankers, LightGBM).

    results = evaluate_run(fit_result)                       # the run's own eval section, test part
    results = evaluate_run(fit_result, part="valid", protocols=("full",), ks=(10,))

Full-ranking results carry the guardrail metrics of the top-K lists at the headline K (coverage,
Gini, diversity, novelty, popularity percentile, long-tail share: :mod:`recfunnel.eval.guardrails`)
and every ranking result keeps NDCG / recall at that K per user (``Result.per_user``), unless
``guardrails=False`` / ``per_user=False``: one top-K per scored batch and two floats per user.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.splits import Split
from recfunnel.eval.ctr import evaluate_ctr
from recfunnel.eval.protocols import evaluate as evaluate_protocol
from recfunnel.eval.result import Result
from recfunnel.models.autoencoders import RowAutoencoder
from recfunnel.run.config import PROTOCOLS

if TYPE_CHECKING:
    from recfunnel.run.fit import FitResult

__all__ = ["PARTS", "evaluate_model", "evaluate_run"]

PARTS = ("valid", "test")


def evaluate_model(
    model: Any,
    dataset: Dataset,
    split: Split,
    protocols: Sequence[str] = ("full", "sampled"),
    part: str = "test",
    ks: Sequence[int] = (5, 10, 20),
    *,
    name: str = "",
    seed: int = 0,
    skip_unavailable: bool = True,
    guardrails: bool = True,
    per_user: bool = True,
) -> list[Result]:
    """One Result per ranking protocol for a user x item model on `part` of `split`. A sampled
    protocol needs the split's fixed negatives for `part`: without them it is skipped
    (`skip_unavailable`) or refused with the reason. `guardrails`: beyond-accuracy metrics of the
    full-ranking top-K lists; `per_user`: per-user NDCG / recall at the headline K."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"cut-offs K must be >= 1, got {list(ks)}")
    out = []
    for protocol in protocols:
        if protocol not in ("full", "full-unmasked") and not protocol.startswith("sampled"):
            raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if protocol.startswith("sampled") and split.negatives.get(part) is None:
            if skip_unavailable:
                continue
            raise ValueError(
                f"the sampled protocol needs fixed negatives for the {part} part; this split "
                f"({split.describe()}) has none (holdout splits made with eval_negatives > 0 do)"
            )
        out.append(
            evaluate_protocol(
                model,
                dataset,
                split,
                protocol,
                part,
                tuple(ks),
                name=name or model.family,
                seed=seed,
                guardrails=guardrails,
                per_user=per_user,
            )
        )
    return out


def evaluate_run(
    res: FitResult,
    part: str = "test",
    protocols: Sequence[str] | None = None,
    ks: Sequence[int] | None = None,
    name: str = "",
    *,
    guardrails: bool = True,
    per_user: bool = True,
    fold_in: bool = True,
) -> list[Result]:
    """Evaluate a fitted run on `part`: ranking protocols (default: the run's eval section) for
    user x item models; AUC / logloss / GAUC on the encoded rows for field families.
    `guardrails` / `per_user`: see :func:`evaluate_model`. `fold_in`: a user-row autoencoder
    (CDAE, Mult-DAE, Mult-VAE) scores the test part from each user's train + valid items, as a
    sequence model reads train + valid histories there (:func:`folded_rows`)."""
    cfg = res.config
    if res.parts is not None:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
        return [
            evaluate_ctr(
                res.model,
                res.parts[part],
                name=name or cfg.model.name,
                dataset=res.dataset.name,
                split=res.split.describe(),
                part_name=part,
                seed=cfg.train.seed,
            )
        ]
    with folded_rows(res, part, fold_in):
        return evaluate_model(
            res.model,
            res.dataset,
            res.split,
            protocols or cfg.eval.protocols,
            part,
            ks or cfg.eval.ks,
            name=name,
            seed=cfg.train.seed,
            guardrails=guardrails,
            per_user=per_user,
        )


@contextmanager
def folded_rows(res: FitResult, part: str, enabled: bool = True) -> Iterator[bool]:
    """Within the block, a user-row autoencoder reads each user's train + valid items (with the
    run's ``data.values``) as its input when `part` is "test" (Liang et al.'s fold-in: the user
    vector is a function of the row, and the valid item is known before the test item); it was
    trained and early-stopped on the train rows alone. Yields whether it folded; restores the
    training rows after."""
    model, split = res.model, res.split
    if not (enabled and part == "test" and isinstance(model, RowAutoencoder) and len(split.valid)):
        yield False
        return
    ds = res.dataset
    rows = np.sort(np.concatenate([split.train, split.valid]))
    model.fold_in(ds.interactions.take(rows).matrix(ds.n_users, ds.n_items, res.config.data.values))
    try:
        yield True
    finally:
        model.fold_in(None)
