"""Two-tower retrieval model (Yi et al. RecSys 2019; Covington et al. RecSys 2016).

User tower: user id embedding + user features (MovieLens: age bucket, gender, occupation, zip
prefix) + the mean-pooled embedding of the user's most recent training items. Item tower: item id
embedding + item features (genres multi-hot, release-year bucket) + the item's text vector. Each
tower is an MLP to a shared ``dim``-dimensional space, L2-normalised; the softmax objective divides
the dot products by a learned temperature. Factorised: ``user_vectors`` / ``item_vectors`` are the
unit-norm tower outputs, so score = cosine and the vectors feed an inner-product ANN index.

Every feature (ids included) goes through the shared :class:`recfunnel.nn.FieldEmbedding` layer,
read from the dataset's feature tables by a :class:`recfunnel.data.fields.FieldSchema` fitted on
the training rows. Ids never seen in training encode as UNK, whose embedding row is zero and gets no
gradient, so an unseen (cold-start) item's vector comes from its features and text alone;
``item_ids=False`` drops the item id from the item tower entirely (content-only mode).

The model needs the data at construction: build it with :meth:`TwoTower.from_dataset`. The fitted
schema is kept in the config (``fields_json``) and every per-user / per-item code table and the
text vectors are buffers, so ``build_model(config) + load_state_dict`` restores a saved model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recfunnel.data.fields import (
    PAD,
    Categorical,
    FieldSchema,
    FittedField,
    ItemHistory,
    MultiHot,
    encode_events,
    fit_schema,
)
from recfunnel.models.base import Model, ModelConfig, register
from recfunnel.nn.embeddings import FieldEmbedding
from recfunnel.nn.mlp import MLP

__all__ = ["TwoTower", "TwoTowerConfig", "movielens_tower_fields"]

ML_AGE_EDGES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
ML_YEAR_EDGES = (1940.0, 1960.0, 1970.0, 1980.0, 1990.0, 1993.0, 1994.0, 1995.0, 1996.0, 1997.0, 1998.0)


class TwoTowerConfig(ModelConfig):
    dim: int = Field(64, ge=1, description="shared output dimension of both towers")
    emb_dim: int = Field(32, ge=1, description="embedding dimension of every field")
    hidden: tuple[int, ...] = Field((128,), description="hidden layer sizes of each tower's MLP")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")
    user_ids: bool = Field(True, description="user id embedding in the user tower")
    item_ids: bool = Field(True, description="item id embedding in the item tower (False: content only)")
    use_features: bool = Field(True, description="user / item feature fields (age, genres, ...)")
    use_history: bool = Field(True, description="mean-pooled embedding of the user's recent items")
    history_len: int = Field(20, ge=1, description="recent training items pooled per user")
    use_text: bool = Field(False, description="the item's text vector in the item tower")
    text_dim: int = Field(384, ge=1, description="width of the text vectors")
    item_bias: bool = Field(
        False,
        description="a per-item score term from the item tower's inputs (content popularity for cold items); "
        "with it a score is logit_scale * cosine + bias and user vectors carry the scale",
    )
    temperature: float = Field(0.05, gt=0, description="initial softmax temperature")
    learn_temperature: bool = Field(True, description="learn the temperature (else fixed)")
    zip_prefix: int = Field(2, ge=1, description="leading zip characters kept (region)")
    fields_json: str | None = Field(None, description="the fitted field schema (set by from_dataset)")


def movielens_tower_fields(zip_prefix: int = 2, history_len: int = 20) -> tuple:
    """Field declarations for MovieLens (ids, user features, item features, recent items)."""
    return (
        Categorical("user_id", "user", "id"),
        Categorical("item_id", "item", "id"),
        Categorical("age", "user", "age", buckets=ML_AGE_EDGES),
        Categorical("gender", "user", "gender"),
        Categorical("occupation", "user", "occupation"),
        Categorical("zip", "user", "zip", prefix=zip_prefix),
        MultiHot("genres", "item", "genres", pooling="mean"),
        Categorical("year", "item", "year", buckets=ML_YEAR_EDGES),
        ItemHistory("history", shares="item_id", max_len=history_len, pooling="mean"),
    )


def _tower_fields(dataset, cfg: TwoTowerConfig) -> tuple:
    """The MovieLens fields whose columns this dataset has (ids and history always)."""
    out = []
    for spec in movielens_tower_fields(cfg.zip_prefix, cfg.history_len):
        if isinstance(spec, ItemHistory) or spec.column == "id":
            out.append(spec)
            continue
        table = dataset.user_features if spec.source == "user" else dataset.item_features
        if table is not None and spec.column in table.columns:
            out.append(spec)
    return tuple(out)


def _buffer_name(f: FittedField) -> str:
    return f"codes_{f.name}"


@register
class TwoTower(Model):
    family = "two-tower"
    Config = TwoTowerConfig
    objective = "in-batch-softmax"

    def __init__(self, config: TwoTowerConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        if config.fields_json is None:
            raise ValueError(
                "TwoTower reads the dataset's feature tables: build it with "
                "TwoTower.from_dataset(dataset, split) (and pass it to train_model as init=...)"
            )
        schema = FieldSchema.from_json(config.fields_json)
        self.schema = schema
        self.embedding = FieldEmbedding(list(schema), config.emb_dim)
        self.user_fields = [f for f in schema if self._uses(f, "user")]
        self.item_fields = [f for f in schema if self._uses(f, "item")]
        for f in schema:
            n = n_users if f.source in ("user", "event") else n_items
            shape = (n,) if f.kind == "categorical" else (n, f.max_len)
            init = torch.full(shape, PAD, dtype=torch.int64)
            self.register_buffer(_buffer_name(f), init)
        d_user = config.emb_dim * len(self.user_fields)
        d_item = config.emb_dim * len(self.item_fields) + (config.text_dim if config.use_text else 0)
        if d_user == 0 or d_item == 0:
            raise ValueError("each tower needs at least one input (ids, features, history or text)")
        self.register_buffer("item_text", torch.zeros(n_items, config.text_dim if config.use_text else 0))
        self.user_mlp = MLP(d_user, config.hidden, config.dim, dropout=config.dropout)
        self.item_mlp = MLP(d_item, config.hidden, config.dim, dropout=config.dropout)
        self.bias_head = nn.Linear(d_item, 1) if config.item_bias else None
        if self.bias_head is not None:
            nn.init.zeros_(self.bias_head.weight)
            nn.init.zeros_(self.bias_head.bias)
        self.log_inv_temp = nn.Parameter(
            torch.tensor(float(np.log(1.0 / config.temperature))), requires_grad=config.learn_temperature
        )

    def _uses(self, f: FittedField, side: str) -> bool:
        c = self.config
        if f.kind == "sequence":
            return side == "user" and c.use_history
        if f.source != side:
            return False
        if f.column == "id":
            return c.user_ids if side == "user" else c.item_ids
        return c.use_features

    # ---- construction from data ---------------------------------------------------------------
    @classmethod
    def from_dataset(
        cls,
        dataset,
        split=None,
        config: TwoTowerConfig | dict | None = None,
        *,
        train_rows: np.ndarray | None = None,
        text_vectors: np.ndarray | None = None,
        text_cache_dir: str | Path | None = None,
    ) -> TwoTower:
        """Fit the field schema on the training rows (``split.train`` or ``train_rows``; default
        all interactions) and fill the code tables, recent items and (``use_text``) text vectors."""
        cfg = config if isinstance(config, TwoTowerConfig) else TwoTowerConfig(**(config or {}))
        if train_rows is None:
            train_rows = split.train if split is not None else np.arange(len(dataset.interactions))
        train_rows = np.sort(np.asarray(train_rows, np.int64))
        schema = fit_schema(_tower_fields(dataset, cfg), dataset, train_rows)
        model = cls(
            cfg.model_copy(update={"fields_json": schema.to_json()}), dataset.n_users, dataset.n_items
        )
        model.fill_from_dataset(dataset, train_rows, text_vectors, text_cache_dir)
        return model

    @torch.no_grad()
    def fill_from_dataset(
        self,
        dataset,
        train_rows: np.ndarray,
        text_vectors: np.ndarray | None = None,
        text_cache_dir: str | Path | None = None,
    ) -> None:
        from recfunnel.data.sequences import user_sequences

        plain = FieldSchema(tuple(f for f in self.schema if f.kind != "sequence"))
        nu, ni = self.n_users, self.n_items
        by_user = encode_events(plain, dataset, np.arange(nu), np.full(nu, -1), None)
        by_item = encode_events(plain, dataset, np.full(ni, -1), np.arange(ni), None)
        for f in plain:
            src = by_user if f.source == "user" else by_item
            getattr(self, _buffer_name(f)).copy_(src[f.name])
        for f in self.schema:
            if f.kind != "sequence":
                continue
            item_codes = getattr(self, _buffer_name(self.schema[f.shares]))
            indptr, items = user_sequences(dataset.interactions.take(train_rows), nu)
            lengths = indptr.diff()
            keep = torch.clamp(lengths, max=f.max_len)
            user = torch.repeat_interleave(torch.arange(nu), lengths)
            pos = torch.arange(len(items)) - indptr[:-1][user]  # position from the oldest
            from_end = lengths[user] - 1 - pos
            sel = from_end < keep[user]
            hist = torch.full((nu, f.max_len), PAD, dtype=torch.int64)
            hist[user[sel], (f.max_len - 1 - from_end)[sel]] = item_codes[items[sel]]
            getattr(self, _buffer_name(f)).copy_(hist)
        if self.config.use_text:
            if text_vectors is None:
                from recfunnel.text import encode_texts, item_texts

                text_vectors = encode_texts(item_texts(dataset), cache_dir=text_cache_dir)
            tv = torch.as_tensor(np.asarray(text_vectors, np.float32))
            if tv.shape != self.item_text.shape:
                raise ValueError(
                    f"text vectors have shape {tuple(tv.shape)}, expected {tuple(self.item_text.shape)}"
                )
            self.item_text.copy_(tv)

    # ---- towers -------------------------------------------------------------------------------
    def user_embed(self, users: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm user vectors [B, dim]. `targets` [B]: item indices removed from each user's
        pooled recent items (training: the item being predicted is not an input)."""
        parts = []
        for f in self.user_fields:
            x = getattr(self, _buffer_name(f))[users]
            if f.kind == "sequence" and targets is not None:
                code = getattr(self, _buffer_name(self.schema[f.shares]))[targets]
                x = x.masked_fill(x == code.unsqueeze(1), PAD)
            parts.append(self.embedding.embed(f, x))
        return F.normalize(self.user_mlp(torch.cat(parts, dim=1)), dim=-1)

    def _item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        parts = [self.embedding.embed(f, getattr(self, _buffer_name(f))[items]) for f in self.item_fields]
        if self.config.use_text:
            parts.append(self.item_text[items])
        return torch.cat(parts, dim=1)

    def item_embed(self, items: torch.Tensor) -> torch.Tensor:
        """Unit-norm item vectors [B, dim] of item indices [B]."""
        return F.normalize(self.item_mlp(self._item_inputs(items)), dim=-1)

    def candidate_bias(self, items: torch.Tensor) -> torch.Tensor | None:
        """The additive score term [B] of item indices [B] (``item_bias``), else None."""
        if self.bias_head is None:
            return None
        return self.bias_head(self._item_inputs(items)).squeeze(-1)

    def logit_scale(self) -> torch.Tensor:
        """1 / temperature (clamped to at most 100)."""
        return self.log_inv_temp.clamp(max=float(np.log(100.0))).exp()

    # ---- capabilities -------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Unit-norm user vectors; with ``item_bias``, times the logit scale, so that
        <user, item> + item bias is the trained logit."""
        u = self.user_embed(users)
        return u * self.logit_scale() if self.bias_head is not None else u

    def _all_items(self, fn) -> torch.Tensor:
        return torch.cat(
            [fn(torch.arange(s, min(s + 65536, self.n_items))) for s in range(0, self.n_items, 65536)]
        )

    def item_vectors(self) -> torch.Tensor:
        return self._all_items(self.item_embed)

    def item_bias_all(self) -> torch.Tensor | float:
        return 0.0 if self.bias_head is None else self._all_items(self.candidate_bias)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(users)
        flat = items.reshape(-1)
        v = self.item_embed(flat).view(*items.shape, -1)
        s = (u.unsqueeze(1) * v).sum(-1)
        b = self.candidate_bias(flat)
        return s if b is None else s + b.view(items.shape)
