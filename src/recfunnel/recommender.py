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

from recfunnel import __version__
from recfunnel.artifacts import ArtifactError, load_artifact, save_artifact
from recfunnel.data.dataset import Dataset
from recfunnel.data.sequences import from_lists, user_sequences
from recfunnel.data.splits import Split
from recfunnel.data.vocab import Vocab
from recfunnel.models.base import Factorised, HistoryAware, Model, build_model, model_class
from recfunnel.train.trainer import TrainConfig, TrainReport


class Recommender:
    """A model plus the vocabularies and seen-item lists needed to answer with raw ids.

    Args:
        model: a registered family name ("popularity", "ease", "mf", "gmf", "mlp", "neumf").
        params: the family's hyper-parameters (see its Config); defaults are the paper's.
        train: TrainConfig (or a dict of its fields) for trainable families.
    """

    def __init__(
        self,
        model: str = "neumf",
        params: dict[str, Any] | None = None,
        train: TrainConfig | dict[str, Any] | None = None,
    ) -> None:
        model_class(model)  # fail early on an unknown name
        self.family = model
        self.params = dict(params or {})
        self.train_config = train if isinstance(train, TrainConfig) else TrainConfig(**(train or {}))
        self.model_: Model | None = None
        self.users_: Vocab | None = None
        self.items_: Vocab | None = None
        self.seen_: sp.csr_matrix | None = None
        self.titles_: list[str] | None = None
        self.report_: TrainReport | None = None
        self.metrics_: dict[str, Any] = {}

    # ---- learning ---------------------------------------------------------------------------
    def fit(self, dataset: Dataset, split: Split | None = None, **kwargs: Any) -> Recommender:
        """Train on `split`'s train part (a leave-one-out split when none is given, or a random
        holdout when the data has no time); early stopping on its valid part."""
        from recfunnel.data.splits import make_split
        from recfunnel.pipeline import train_model

        if split is None:
            split = make_split(dataset, "leave_one_out" if dataset.has_time else "random_holdout")
            split = split.with_negatives(dataset)
        model, report = train_model(self.family, self.params, dataset, split, self.train_config, **kwargs)
        return self._adopt(model, dataset, split, report)

    def _adopt(self, model: Model, dataset: Dataset, split: Split, report: TrainReport | None) -> Recommender:
        self.model_, self.report_ = model.eval(), report
        self.users_, self.items_ = dataset.users, dataset.items
        seen_rows = np.concatenate([split.train, split.valid])
        seen = dataset.interactions.take(np.sort(seen_rows))
        self.seen_ = seen.matrix(dataset.n_users, dataset.n_items)
        if isinstance(model, HistoryAware):  # sequence models read the same rows, time-ordered
            model.set_history(*user_sequences(seen, dataset.n_users))
        self.titles_ = dataset.item_titles()
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
        idx = self.users_.encode(list(users))
        k = min(k, model.n_items)
        if index is not None:
            return self._recommend_via_index(model, idx, k, exclude_seen, index)
        all_ids, all_scores = [], []
        for start in range(0, len(idx), batch_size):
            ub = idx[start : start + batch_size]
            scores = model.score_all(torch.from_numpy(ub)).float()
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
        idx = torch.from_numpy(self.items_.encode(list(items)))
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
        """Write the artifact folder atomically: manifest.json + weights.safetensors + vocabularies."""
        model = self._fitted()
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors["seen.indptr"] = torch.from_numpy(self.seen_.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.from_numpy(self.seen_.indices.astype(np.int64))
        history = model.get_history() if isinstance(model, HistoryAware) else None
        if history is not None:  # sequence models: the time-ordered histories recommend() reads
            tensors["history.indptr"], tensors["history.items"] = history
        vocabs = {"users": list(self.users_.ids), "items": list(self.items_.ids)}
        if self.titles_:
            vocabs["item_titles"] = [t if isinstance(t, str) else "" for t in self.titles_]
        config = {
            "model": model.config.model_dump(mode="json"),
            "train": self.train_config.model_dump(mode="json"),
            "n_users": model.n_users,
            "n_items": model.n_items,
        }
        return save_artifact(
            path,
            family=self.family,
            config=config,
            tensors=tensors,
            vocabs=vocabs,
            metrics=metrics or self.metrics_,
            extra=extra,
        )

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load an artifact folder; the manifest is checked before any weight is read."""
        art = load_artifact(path)
        try:
            cfg = art.config
            rec = cls(art.family, cfg["model"], cfg["train"])
            model = build_model(art.family, cfg["n_users"], cfg["n_items"], cfg["model"])
            state = {k[len("model.") :]: v for k, v in art.tensors.items() if k.startswith("model.")}
            _resize_buffers(model, state)
            model.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as e:
            raise ArtifactError(
                f"artifact at {path} does not match recfunnel {__version__}'s {art.family!r} model: {e}"
            ) from None
        rec.model_ = model.eval()
        rec.users_ = Vocab(tuple(art.vocabs["users"]), name="user")
        rec.items_ = Vocab(tuple(art.vocabs["items"]), name="item")
        n_u, n_i = len(rec.users_), len(rec.items_)
        rec.seen_ = sp.csr_matrix(
            (
                np.ones(len(art.tensors["seen.indices"]), np.float32),
                art.tensors["seen.indices"].numpy(),
                art.tensors["seen.indptr"].numpy(),
            ),
            shape=(n_u, n_i),
        )
        if isinstance(model, HistoryAware) and "history.indptr" in art.tensors:
            model.set_history(art.tensors["history.indptr"], art.tensors["history.items"])
        rec.titles_ = art.vocabs.get("item_titles")
        rec.metrics_ = art.metrics or {}
        return rec


def _resize_buffers(model: Model, state: dict[str, torch.Tensor]) -> None:
    """Buffers whose size depends on the data (EASE's user histories) take the saved size."""
    own = dict(model.named_buffers())
    for name, value in state.items():
        if name in own and own[name].shape != value.shape and own[name].dim() == 1:
            mod_name, _, attr = name.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            setattr(mod, attr, torch.empty_like(value))
