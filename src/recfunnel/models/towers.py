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

The model needs the data at construction: :func:`recfunnel.run.towers.build_two_tower` fits the
field schema on the training rows, encodes every user and item and hands the tables to
:meth:`TwoTower.set_tables`. The fitted schema is kept in the config (``fields_json``) and every
per-user / per-item code table and the text vectors are buffers, so ``build_model(config) +
load_state_dict`` restores a saved model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recfunnel.data.fields import PAD, UNK, FieldSchema, FittedField
from recfunnel.data.sequences import tail_codes
from recfunnel.models.base import Model, ModelConfig
from recfunnel.nn.embeddings import FieldEmbedding
from recfunnel.nn.mlp import MLP

__all__ = ["TwoTower", "TwoTowerConfig"]


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
    fields_json: str | None = Field(
        None, description="the fitted field schema (set by recfunnel.run.towers.build_two_tower)"
    )


def _buffer_name(f: FittedField) -> str:
    return f"codes_{f.name}"


class TwoTower(Model):
    """Two-tower retrieval model (Yi et al. 2019): user and item towers over feature fields, recent
    items and text, trained with the in-batch softmax (logQ correction); build with
    recfunnel.run.towers.build_two_tower."""

    family = "two-tower"
    Config = TwoTowerConfig
    objective = "in-batch-softmax"

    def __init__(self, config: TwoTowerConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        if config.fields_json is None:
            raise ValueError(
                "TwoTower reads the dataset's feature tables: build it with "
                "recfunnel.run.towers.build_two_tower(dataset, split, params)"
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

    # ---- the code tables ----------------------------------------------------------------------
    @torch.no_grad()
    def set_tables(self, codes: Mapping[str, torch.Tensor], text: torch.Tensor | None = None) -> None:
        """Fill the per-user / per-item inputs, already encoded by the schema
        (:func:`recfunnel.run.towers.build_two_tower` does the data work).

        Args:
            codes: field name -> int64 codes of every user (user fields, ``history``) or every item
                (item fields): [n] for a categorical field, [n, max_len] for multi-hot and
                sequence fields (PAD-padded; a history holds the user's recent items, most recent
                last).
            text: float32 [n_items, text_dim] text vectors (``use_text`` only).
        """
        missing = [f.name for f in self.schema if f.name not in codes]
        if missing:
            raise ValueError(
                f"no codes for the fields {', '.join(missing)}; every field of the schema needs a table"
            )
        for f in self.schema:
            buf = getattr(self, _buffer_name(f))
            table = torch.as_tensor(codes[f.name])
            if table.shape != buf.shape:
                raise ValueError(
                    f"codes of field {f.name!r} have shape {tuple(table.shape)}, expected {tuple(buf.shape)}"
                )
            buf.copy_(table)
        if self.config.use_text:
            if text is None:
                raise ValueError("use_text=True: the item text vectors are needed")
            tv = torch.as_tensor(text, dtype=torch.float32)
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

    def user_vectors_from_recent(
        self, users: torch.Tensor, indptr: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """User vectors at request time (:class:`~recfunnel.models.base.RecentEncoder`): each
        user's own fields (an anonymous -1: UNK id and categories, no multi-hot values) with the
        history field made of the given recent items instead of the stored training ones."""
        device = self.item_text.device  # the model's (the code tables are buffers)
        users = torch.as_tensor(users, dtype=torch.int64).to(device)
        anon = users < 0
        parts = []
        for f in self.user_fields:
            table = getattr(self, _buffer_name(f))
            if f.kind == "sequence":
                codes = getattr(self, _buffer_name(self.schema[f.shares]))
                x = torch.from_numpy(
                    tail_codes(
                        np.asarray(_cpu(indptr)),
                        np.asarray(_cpu(items)),
                        codes.cpu().numpy(),
                        table.shape[1],
                        PAD,
                    )
                ).to(device)
            else:
                x = table[users.clamp(min=0)].clone()
                x[anon] = UNK if x.dim() == 1 else PAD
            parts.append(self.embedding.embed(f, x))
        u = F.normalize(self.user_mlp(torch.cat(parts, dim=1)), dim=-1)
        return u * self.logit_scale() if self.bias_head is not None else u

    def _all_items(self, fn) -> torch.Tensor:
        return torch.cat(
            [
                fn(torch.arange(s, min(s + 65536, self.n_items), device=self.item_text.device))
                for s in range(0, self.n_items, 65536)
            ]
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


def _cpu(x: object) -> object:
    """A tensor on the CPU (numpy reads it there); anything else unchanged."""
    return x.cpu() if isinstance(x, torch.Tensor) else x
