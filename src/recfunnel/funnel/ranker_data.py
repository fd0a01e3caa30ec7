"""Training data for a ranker trained for this funnel, and its training.

A ranker only ever sees what the retrievers propose, so it should learn to tell the items a user
takes from the near misses the retrievers rank high, not only from random items (the hard
negatives of Covington et al. 2016 and Huang et al. 2020, "Embedding-based Retrieval in Facebook
Search", sec. 6: a mix of hard and random negatives works best). Per positive (an interaction of the
part), ``negatives`` items are drawn: a ``hard_fraction`` of them uniformly from the retriever's
top ``hard_pool`` candidates for that user (which skip the user's known items), the rest uniformly
over all items the user has no known interaction with.

The rows are encoded with the feature fields (:func:`recfunnel.data.fields.encode_events`: each
negative at its positive's time, so its history is the same), labelled 1 / 0, in the
:class:`~recfunnel.data.fields.CTRPart` that :class:`~recfunnel.train.labelled.LabelledBCE` and the
CTR families train on::

    schema, parts = ranker_parts(dataset, split, ann_retriever, cfg=RankerDataConfig(hard_fraction=0.5))
    model = train_ranker("deepfm", schema, parts, train=TrainConfig(epochs=3))
    ranker = ScorerRanker.from_model(model, dataset, split)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields import CTRPart, FieldSchema, FieldSpec, encode_events, fit_schema
from recfunnel.data.sampling import PositiveSet, sample_negatives
from recfunnel.data.splits import Split
from recfunnel.eval.ctr import ctr_validator
from recfunnel.funnel.request import resolve_requests
from recfunnel.funnel.retrievers import Retriever
from recfunnel.models.ctr.base import build_ctr
from recfunnel.run.config import CTRSection, FeatureSection
from recfunnel.run.features import ctr_fields
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = ["RankerDataConfig", "mine_negatives", "ranker_parts", "ranker_rows", "train_ranker"]


class RankerDataConfig(BaseModel):
    """How a funnel ranker's training rows are built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    negatives: int = Field(4, ge=1, description="negatives per positive")
    hard_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the negatives drawn from the retriever's top candidates (funnel-ml100k, 3 "
        "seeds: 0.0 ranked best; 0.5 fell below the retriever alone: the retriever's top holds the users' "
        "later items, which hard mining labels negative)",
    )
    hard_pool: int = Field(50, ge=1, description="the retriever's top candidates hard negatives come from")
    threshold: float | None = Field(
        None, description="positives: rows with rating >= this (None: every interaction of the part)"
    )
    seed: int = Field(0, description="seed of the negative draws")

    @property
    def n_hard(self) -> int:
        return int(round(self.negatives * self.hard_fraction))


def mine_negatives(
    users: np.ndarray,
    retriever: Retriever,
    known: PositiveSet,
    cfg: RankerDataConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives for positives of `users` [n]: (items int64 [n, negatives], hard bool [n, negatives]).

    Hard ones come from the retriever's top `cfg.hard_pool` for each user (asked once per distinct
    user, with the user's `known` items as seen); a user the retriever gives nothing gets random
    ones instead. Random ones avoid the user's `known` items."""
    users = np.asarray(users, np.int64)
    n, n_hard = len(users), cfg.n_hard
    items = sample_negatives(users, cfg.negatives, known, rng)  # random everywhere, then hard ones over
    hard = np.zeros((n, cfg.negatives), bool)
    if n_hard == 0 or n == 0:
        return items, hard
    distinct, owner = np.unique(users, return_inverse=True)
    req = resolve_requests(
        distinct.tolist(), n_users=known.n_users, n_items=known.n_items, seen=_known_matrix(known)
    )
    pool = retriever.retrieve(req, cfg.hard_pool).items  # [U, P], -1 empty, best first
    length = (pool >= 0).sum(axis=1)[owner]  # [n]
    pick = np.floor(rng.random((n, n_hard)) * np.maximum(length, 1)[:, None]).astype(np.int64)
    filled_first = np.argsort(pool < 0, axis=1, kind="stable")  # [U, P] filled slots first, in order
    col = filled_first[owner[:, None], np.minimum(pick, pool.shape[1] - 1)]
    drawn = pool[owner[:, None], col]
    ok = (length > 0)[:, None] & (drawn >= 0)
    items[:, :n_hard] = np.where(ok, drawn, items[:, :n_hard])
    hard[:, :n_hard] = ok
    return items, hard


def _known_matrix(known: PositiveSet) -> sp.csr_matrix:
    """CSR [n_users, n_items] of the pairs in `known`."""
    u, i = np.divmod(known.keys, known.n_items)
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(known.n_users, known.n_items))


def ranker_rows(
    dataset: Dataset,
    split: Split,
    part: str,
    retriever: Retriever,
    schema: FieldSchema,
    cfg: RankerDataConfig = RankerDataConfig(),
) -> CTRPart:
    """The labelled rows of one part: its positives and `cfg.negatives` mined negatives each.

    Known items (what negatives avoid) and the histories the fields read are the interactions up
    to and including this part (train; train + valid), so no later part leaks in. `rows` holds each
    positive's interaction row and -1 for negatives."""
    parts = ("train",) if part == "train" else ("train", part)
    log_rows = np.sort(np.concatenate([split.rows(p) for p in parts]))
    log = dataset.interactions.take(log_rows)
    rows = split.rows(part)
    ints = dataset.interactions
    if cfg.threshold is not None:
        if ints.rating is None:
            raise ValueError(f"threshold={cfg.threshold} needs ratings; dataset {dataset.name!r} has none")
        rows = rows[ints.rating[rows] >= cfg.threshold]
    known = PositiveSet(log.user, log.item, dataset.n_users, dataset.n_items)
    rng = np.random.default_rng([cfg.seed, ("train", "valid", "test").index(part)])
    negatives, _ = mine_negatives(ints.user[rows], retriever, known, cfg, rng)
    k = cfg.negatives
    users = np.concatenate([ints.user[rows], np.repeat(ints.user[rows], k)])
    items = np.concatenate([ints.item[rows], negatives.reshape(-1)])
    times = None
    if ints.timestamp is not None:
        times = np.concatenate([ints.timestamp[rows], np.repeat(ints.timestamp[rows], k)])
    labels = np.concatenate([np.ones(len(rows), np.float32), np.zeros(len(rows) * k, np.float32)])
    fields = encode_events(schema, dataset, users, items, times, log)
    return CTRPart(
        fields, torch.from_numpy(labels), users, items, np.concatenate([rows, np.full(len(rows) * k, -1)])
    )


def ranker_parts(
    dataset: Dataset,
    split: Split,
    retriever: Retriever,
    *,
    specs: Sequence[FieldSpec] | None = None,
    cfg: RankerDataConfig = RankerDataConfig(),
) -> tuple[FieldSchema, dict[str, CTRPart]]:
    """Fit the fields `specs` (default: a run's default CTR fields present in the data) on the
    train part and build the train and valid rows (:func:`ranker_rows`)."""
    if specs is None:
        specs = ctr_fields(dataset, FeatureSection(), CTRSection())
    schema = fit_schema(specs, dataset, split.train)
    parts = {p: ranker_rows(dataset, split, p, retriever, schema, cfg) for p in ("train", "valid")}
    return schema, parts


def train_ranker(
    family: str,
    schema: FieldSchema,
    parts: dict[str, CTRPart],
    *,
    params: dict[str, Any] | None = None,
    train: TrainConfig | None = None,
) -> Any:
    """Train CTR family `family` (or "lightgbm") on `parts["train"]`, stopping early on the AUC of
    `parts["valid"]` when it has rows; -> the fitted model in eval mode."""
    train = (train or TrainConfig()).model_copy(update={"monitor": "auc"})
    valid = parts.get("valid")
    if family == "lightgbm":
        from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker

        lcfg = LightGBMConfig(**{"num_threads": torch.get_num_threads(), **(params or {})})
        model: Any = LightGBMRanker(lcfg, schema, seed=train.seed)
        if valid is None or not len(valid):
            raise ValueError("LightGBM stops early on parts['valid']: it needs rows")
        tr = parts["train"]
        model.fit(tr.fields, tr.labels.numpy(), valid.fields, valid.labels.numpy())
        return model
    seed_everything(train.seed)
    model = build_ctr(family, schema, params)
    validate = ctr_validator(valid) if valid is not None and len(valid) else None
    Trainer(train).fit(model, LabelledBCE(parts["train"]), validate)
    return model.eval()
