"""The small public face: fit / recommend / similar_items with raw ids, save / load.

rec = Recommender("neumf").fit(dataset)            # trains on the split's train part
ids, scores = rec.recommend(["196", "22"], k=10)   # raw ids in and out, seen items excluded
rec.save("artifacts/neumf"); rec = Recommender.load("artifacts/neumf")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.errors import DataError
from recfunnel.data.sequences import from_lists
from recfunnel.data.splits import Split, make_split
from recfunnel.data.vocab import Vocab
from recfunnel.models.base import Factorised, HistoryAware, Model, model_class
from recfunnel.run.artifact import load_model, save_model, seen_matrix
from recfunnel.run.config import RunConfig, family_defaults
from recfunnel.run.fit import FitResult, fit
from recfunnel.run.scoring import candidate_scorer
from recfunnel.train.trainer import TrainConfig, TrainReport


class Recommender:
    """A model plus the vocabularies and seen-item lists needed to answer with raw ids.

    Args:
        model: a registered family name (see `recfunnel models`: user x item models, the two-tower,
            sequence models, and the CTR rankers / LightGBM, which score every item through their
            feature fields).
        params: the family's hyper-parameters (see its Config); defaults are the paper's.
        train: TrainConfig (or a dict of its fields) for trainable families; unset fields take the
            family's tuned settings (``train_defaults``, as ``recfunnel train`` does) when `run`
            is not given, else TrainConfig's defaults.
        run: a whole RunConfig (features, CTR task, objective, eval); `model`, `params` and
            `train` given here override its sections.
    """

    def __init__(
        self,
        model: str = "neumf",
        params: dict[str, Any] | None = None,
        train: TrainConfig | dict[str, Any] | None = None,
        run: RunConfig | None = None,
    ) -> None:
        model_class(model)  # fail early on an unknown name
        if train is None and run is not None:
            train = run.train
        self.family = model
        self.params = dict(params or {})
        # without a whole RunConfig, the family's tuned train/objective settings (as `recfunnel
        # train` uses them) sit under what is given here
        tuned = family_defaults(model) if run is None else {}
        if not isinstance(train, TrainConfig):
            train = TrainConfig(**{**tuned.get("train", {}), **(train or {})})
        self.train_config = train
        base = run or RunConfig.tuned({"model": {"name": model}})
        self.run_config = base.updated(
            {"model": {"name": model, "params": self.params}, "train": self.train_config.model_dump()}
        )
        self.model_: Model | None = None
        self.users_: Vocab | None = None
        self.items_: Vocab | None = None
        self.seen_: sp.csr_matrix | None = None
        self.titles_: list[str] | None = None
        self.report_: TrainReport | None = None
        self.metrics_: dict[str, Any] = {}
        self.split_: Split | None = None
        self.scorer_: Any = None  # scores (users, candidate items) for any family

    # ---- learning ---------------------------------------------------------------------------
    def fit(self, dataset: Dataset, split: Split | None = None, evaluate: bool = False) -> Recommender:
        """Train on `split`'s train part (when none is given: leave-one-out, a random holdout when
        the data has no time, a global temporal split for CTR rankers) through
        :func:`recfunnel.run.fit`; early stopping on its valid part. `evaluate`: also evaluate on
        the test part (``metrics_``)."""
        if split is None:
            fields = model_class(self.family).inputs == "fields"  # rankers: labelled rows over time
            method = "temporal" if fields and dataset.has_time else None
            method = method or ("leave_one_out" if dataset.has_time else "random_holdout")
            split = make_split(dataset, method)
            s = self.run_config.split
            if not fields and s.eval_negatives:
                try:
                    split = split.with_negatives(dataset, s.eval_negatives, s.seed)
                except DataError:  # a catalogue too small to sample from: validate by full ranking
                    if evaluate and any(p.startswith("sampled") for p in self.run_config.eval.protocols):
                        raise
        return self._adopt(fit(self.run_config, dataset, split, evaluate=evaluate))

    def _adopt(self, res: FitResult) -> Recommender:
        ds, split = res.dataset, res.split
        self.model_, self.report_, self.split_ = res.model, res.report, split
        self.users_, self.items_ = ds.users, ds.items
        self.seen_ = seen_matrix(ds, split)
        model = res.model
        if isinstance(model, HistoryAware):  # sequence models read the same rows, time-ordered
            from recfunnel.data.sequences import user_sequences

            rows = np.sort(np.concatenate([split.train, split.valid]))
            model.set_history(*user_sequences(ds.interactions.take(rows), ds.n_users))
        self.scorer_ = candidate_scorer(model, ds, split)
        self.titles_ = ds.item_titles()
        self.metrics_ = {f"{r.protocol}/{k}": v for r in res.results for k, v in r.metrics.items()}
        return self

    def _fitted(self) -> Model:
        if self.model_ is None:
            raise RuntimeError("this Recommender is not fitted: call fit() or Recommender.load()")
        return self.model_

    # ---- answering --------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(
        self,
        users: Sequence[object],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 1024,
        index: Any = None,
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-k raw item ids and scores for raw user ids, batch first: ([n][k] ids, float [n, k]).

        Unknown users raise KeyError naming them. With `exclude_seen`, items the user had in
        training are never returned (fewer than k only if the catalogue runs out). `index`: a
        `recfunnel.index` index built from this (factorised) model, searched instead of scoring
        every item; it must match the model's current item vectors."""
        model = self._fitted()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        idx = self.users_.encode(_id_list(users, "users"))
        k = min(k, len(self.items_))
        if index is not None:
            return self._recommend_via_index(model, idx, k, exclude_seen, index)
        all_ids, all_scores = [], []
        for start in range(0, len(idx), batch_size):
            ub = idx[start : start + batch_size]
            scores = self.scorer_.score_all(torch.from_numpy(ub)).float()
            if exclude_seen:
                sub = self.seen_[ub]
                rows = np.repeat(np.arange(len(ub)), np.diff(sub.indptr))
                scores[torch.from_numpy(rows), torch.from_numpy(sub.indices.astype(np.int64))] = float("-inf")
            top = torch.topk(scores, k, dim=1)
            all_ids.append(top.indices.numpy())
            all_scores.append(top.values.numpy())
        ids = np.concatenate(all_ids) if all_ids else np.zeros((0, k), np.int64)
        scores = np.concatenate(all_scores) if all_scores else np.zeros((0, k), np.float32)
        names = self.items_.ids
        out = [
            [names[i] for i, s in zip(r, sr, strict=True) if np.isfinite(s)]
            for r, sr in zip(ids, scores, strict=True)
        ]
        return out, scores

    def _recommend_via_index(
        self, model: Model, idx: np.ndarray, k: int, exclude_seen: bool, index: Any
    ) -> tuple[list[list[str]], np.ndarray]:
        from recfunnel.index import check_index_matches

        check_index_matches(index, model)
        queries = model.user_vectors(torch.from_numpy(idx)).float().numpy()
        ids, scores = index.search(queries, k, exclude=self.seen_[idx] if exclude_seen else None)
        names = self.items_.ids
        return [[names[i] for i in row if i >= 0] for row in ids.tolist()], scores

    @torch.no_grad()
    def recommend_from_items(
        self,
        item_lists: Sequence[Sequence[object]],
        k: int = 10,
        exclude_given: bool = True,
        unknown: str = "raise",
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-k raw item ids and scores for ad-hoc lists of raw item ids (oldest first), one list
        per request, no stored user needed: request-time freshness for sequence models.

        `exclude_given`: never return an item of the request's own list. `unknown`: "raise"
        (KeyError naming the ids) or "skip" (drop item ids the model does not know)."""
        model = self._fitted()
        if not isinstance(model, HistoryAware):
            raise TypeError(
                f"recommend_from_items needs a sequence model; {self.family!r} reads no item lists"
            )
        if isinstance(item_lists, (str, bytes)) or any(isinstance(x, (str, bytes)) for x in item_lists):
            raise TypeError("item_lists is one list of raw item ids per request, e.g. [['12', '7']]")
        if unknown not in ("raise", "skip"):
            raise ValueError(f"unknown must be 'raise' or 'skip', got {unknown!r}")
        mode = "raise" if unknown == "raise" else "mark"
        lists = [self.items_.encode(list(x), unknown=mode) for x in item_lists]
        indptr, items = from_lists([x[x >= 0] for x in lists])
        scores = (model.encode_items(indptr, items) @ model.item_vectors().T + model.item_bias_all()).float()
        if exclude_given and len(items):
            rows = torch.repeat_interleave(torch.arange(len(lists)), indptr.diff())
            scores[rows, items] = float("-inf")
        top = torch.topk(scores, min(k, model.n_items), dim=1)
        names = self.items_.ids
        out = [
            [names[i] for i, s in zip(r, sr, strict=True) if np.isfinite(s)]
            for r, sr in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        return out, top.values.numpy()

    @torch.no_grad()
    def similar_items(self, items: Sequence[object], k: int = 10) -> tuple[list[list[str]], np.ndarray]:
        """Items most similar to each raw item id (cosine of item vectors; EASE: its item-item
        weights), the item itself excluded."""
        model = self._fitted()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        idx = torch.from_numpy(self.items_.encode(_id_list(items, "items")))
        if isinstance(model, Factorised):
            v = torch.nn.functional.normalize(model.item_vectors().float(), dim=1)
            sims = v[idx] @ v.T
        elif hasattr(model, "weights") and model.weights.shape == (model.n_items, model.n_items):
            sims = model.weights[idx].clone()
        else:
            raise TypeError(
                f"similar_items needs item vectors; model {self.family!r} has none "
                "(it works for factorised families and EASE)"
            )
        sims[torch.arange(len(idx)), idx] = float("-inf")
        top = torch.topk(sims, min(k, model.n_items - 1), dim=1)
        return [[self.items_.ids[i] for i in r] for r in top.indices.tolist()], top.values.numpy()

    def titles(self, raw_items: Sequence[str]) -> list[str]:
        """Titles for raw item ids where the dataset had them (else the ids)."""
        if not self.titles_:
            return list(raw_items)
        return [self.titles_[self.items_.index(r)] for r in raw_items]

    # ---- persistence ------------------------------------------------------------------------
    def save(
        self, path: str | Path, metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write the artifact folder atomically (:func:`recfunnel.run.artifact.save_model`): weights,
        vocabularies, seen items, run config and split, each file checksummed."""
        return save_model(
            path,
            self._fitted(),
            users=self.users_,
            items=self.items_,
            seen=self.seen_,
            titles=self.titles_,
            run=self.run_config,
            split=self.split_,
            metrics=metrics or self.metrics_,
            extra=extra,
        )

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> Recommender:
        """Load an artifact folder of any family; the manifest and checksums are checked before
        any weight is read. Field families (CTR rankers, LightGBM) score items through the
        dataset's feature tables: `dataset`, else the one the run config names (it must be the
        data the model was trained on)."""
        art = load_model(path)
        run = art.run or RunConfig()
        rec = cls(art.family, art.model.config.model_dump(mode="json"), run.train, run=run)
        rec.model_, rec.users_, rec.items_, rec.seen_ = art.model, art.users, art.items, art.seen
        rec.titles_, rec.metrics_, rec.split_ = art.titles, art.metrics, art.split
        if art.schema is not None:
            from recfunnel.run.fit import load_data

            ds = dataset if dataset is not None else load_data(run.data)
            fingerprint = art.extra.get("fingerprint")
            if fingerprint and ds.fingerprint() != fingerprint:
                raise ValueError(
                    f"the dataset {ds.name!r} is not the one the {art.family!r} model at {path} was "
                    "trained on (fingerprints differ); pass that dataset"
                )
            rec.scorer_ = candidate_scorer(art.model, ds, art.split)
        else:
            rec.scorer_ = candidate_scorer(art.model)
        return rec


def _id_list(ids: Any, what: str) -> list[object]:
    """A list of raw ids; a bare string (or bytes) is refused, not iterated character by character."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} is a sequence of raw ids, e.g. [{ids!r}]; got the bare string {ids!r}")
    return list(ids)
