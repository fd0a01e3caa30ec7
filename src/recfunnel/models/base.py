"""What a model can do (capability protocols), typed configs, and the registry of model families.

Capabilities (DESIGN.md): every model is a **Scorer** (`score(users, items)`); **Factorised**
models add `user_vectors` / `item_vectors` (score = dot product) and can feed an ANN index;
every model here is also a **FullScorer** (`score_all(users)`), factorised ones for free.
The evaluator, index and funnel ask for a Protocol, never a model class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from recfunnel.errors import ConfigError


class ModelConfig(BaseModel):
    """Base of every model's typed hyper-parameters; round-trips through TOML and manifests."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class Scorer(Protocol):
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for users [B] against items [B, C] -> [B, C]."""
        ...


@runtime_checkable
class FullScorer(Protocol):
    n_items: int

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of users [B] against every item -> [B, n_items]."""
        ...


@runtime_checkable
class Factorised(Protocol):
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, d]."""
        ...

    def item_vectors(self) -> torch.Tensor:
        """[n_items, d]."""
        ...


@runtime_checkable
class HistoryAware(Protocol):
    """A model whose user vectors are a function of the user's time-ordered history (sequence
    models, issue 6). The caller sets the history up to the point it scores: evaluation sets the
    train items for the valid part and train + valid for the test part; the Recommender sets
    what it treats as seen."""

    def set_history(self, indptr: torch.Tensor, items: torch.Tensor) -> None:
        """Per-user item indices, oldest first: user u's are items[indptr[u]:indptr[u + 1]]."""
        ...

    def get_history(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (indptr, items) set last, or None."""
        ...

    def encode_items(self, indptr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """User vectors [B, d] of B ad-hoc item lists in the same layout (request-time histories)."""
        ...


@runtime_checkable
class RecentEncoder(Protocol):
    """A model whose user vector can take a history given at request time instead of the one
    stored at training time (the two-tower's pooled recent items): fresh events change the user
    vector without retraining, and an unseen visitor gets one from their items alone."""

    def user_vectors_from_recent(
        self, users: torch.Tensor, indptr: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """users [B] (-1: anonymous) and each one's recent items (indptr [B + 1], items, oldest
        first) -> user vectors [B, d] in the space of ``item_vectors``."""
        ...


@runtime_checkable
class TwoTowerLike(Protocol):
    """A model with separate user and item towers, trained by the in-batch softmax: unit-norm
    tower outputs, a (learned) logit scale and an optional per-candidate score term."""

    def user_embed(self, users: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """[B] -> [B, d]; `targets` [B]: items left out of each user's pooled inputs."""
        ...

    def item_embed(self, items: torch.Tensor) -> torch.Tensor:
        """[C] -> [C, d]."""
        ...

    def logit_scale(self) -> torch.Tensor:
        """Scalar multiplying the dot products (1 / temperature)."""
        ...

    def candidate_bias(self, items: torch.Tensor) -> torch.Tensor | None:
        """[C] additive score per candidate, or None."""
        ...


@runtime_checkable
class Regularised(Protocol):
    """A model with an explicit L2 term over the rows a batch touches (BPR's `reg`)."""

    def regulariser(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SkipGram(Protocol):
    """A model trained by skip-gram with negative sampling (Item2Vec)."""

    def sgns_scores(self, centre: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """centre items [B], candidate context items [B, C] -> [B, C] logits."""
        ...


#: With ``sparse="auto"``, ID tables with at least this many parameters (rows x dim) get sparse
#: row gradients, stepped by RowAdam (the Trainer's lazy row Adam), and smaller ones a dense
#: gradient stepped by the fused TableAdam of the ID-table families. From `recfunnel bench optim`
#: (bench/results/optim.json, `table_over_row`: dense TableAdam's step time over RowAdam's, 3 x 1024
#: lookups a step, 1 thread): 0.66 at 2k x 64 rows, 0.78 at 10k x 64, 0.79 at 15k x 64, 0.99 at
#: 20k x 64, 3.4 at 100k x 64, so the line sits near 20k x 64 = 1.28M parameters.
SPARSE_MIN_PARAMS = 1_300_000

SPARSE_HELP = (
    "sparse row gradients (stepped by RowAdam, a lazy row Adam) for the ID tables: true, false, or "
    "'auto': only for tables of >= 1.3M parameters (rows x dim), where they pay off (smaller "
    "tables step faster dense)"
)
Sparse = bool | Literal["auto"]


def sparse_table(setting: Sparse, rows: int, dim: int) -> bool:
    """Whether an ID table of `rows` x `dim` gets sparse gradients: `setting` unless "auto", then
    by size (:data:`SPARSE_MIN_PARAMS`)."""
    return rows * dim >= SPARSE_MIN_PARAMS if setting == "auto" else bool(setting)


class Model(nn.Module):
    """Base of recfunnel models: holds the config and sizes; gives a default `score_all`.

    Subclasses set `family`, `Config`, and either `trainable = True` with a default
    `objective` name (trained by the Trainer) or implement `fit_matrix` (closed form).
    """

    family: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True
    objective: ClassVar[str] = "bce"
    #: "user-item": built from (n_users, n_items) by build_model; "fields": a CTR ranker built on
    #: a fitted field schema (recfunnel.models.ctr.build_ctr)
    inputs: ClassVar[str] = "user-item"

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__()
        self.config = config
        self.n_users = n_users
        self.n_items = n_items

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        """Closed-form fit on the binary user x item training matrix (non-trainable models)."""
        raise NotImplementedError(f"{self.family} is trained by the Trainer, not in closed form")

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, item_chunk: int = 65536) -> torch.Tensor:
        """[B] -> [B, n_items]. Factorised models take one matmul; others score all pairs,
        in item chunks so memory stays bounded."""
        if isinstance(self, Factorised):
            scores = self.user_vectors(users) @ self.item_vectors().T
            bias = self.item_bias_all()
            # a fresh matrix: the bias goes in in place, and a zero bias costs no pass over it
            return scores if isinstance(bias, (int, float)) and bias == 0 else scores.add_(bias)
        out = []
        for start in range(0, self.n_items, item_chunk):
            items = torch.arange(start, min(start + item_chunk, self.n_items), device=users.device)
            out.append(self.score(users, items.expand(len(users), -1)))
        return torch.cat(out, dim=1)

    def item_bias_all(self) -> torch.Tensor | float:
        """Per-item additive score term for factorised models with item biases (else 0)."""
        return 0.0

    def extra_state_for_save(self) -> dict[str, Any]:
        return {}


def model_class(name: str) -> type[Model]:
    """The class of family `name` in :data:`recfunnel.models.registry.MODELS`; an unknown name
    gives the list of valid ones."""
    from recfunnel.models.registry import MODELS

    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}") from None


def user_item_class(name: str) -> type[Model]:
    """The registered user x item family `name`; CTR rankers (built on a field schema) are refused
    with the way to build them."""
    cls = model_class(name)
    if cls.inputs == "fields":
        raise ConfigError(
            f"{name!r} is a CTR ranker over a field schema, not a user x item model: build it with "
            "recfunnel.models.ctr.build_ctr(name, schema, config), or train it with recfunnel.run.fit "
            "(a RunConfig with model.name = " + repr(name) + ")"
        )
    return cls


def build_model(
    name: str, n_users: int, n_items: int, config: dict[str, Any] | ModelConfig | None = None
) -> Model:
    cls = user_item_class(name)
    cfg = config if isinstance(config, ModelConfig) else cls.Config(**(config or {}))
    return cls(cfg, n_users, n_items)
