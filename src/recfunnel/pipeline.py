"""A run, end to end: data -> split -> model -> train -> evaluate -> artifact, from one typed config.

The CLI and the benchmark suites are thin shells over `run()`; a TOML file maps onto `RunConfig`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import recfunnel.train.retrieval_objectives  # noqa: F401  (registers in-batch-softmax, sgns)
from recfunnel.data.dataset import Dataset
from recfunnel.data.readers import load_dataset, read_table
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.splits import Split, make_split
from recfunnel.eval.protocols import evaluate
from recfunnel.eval.result import Result
from recfunnel.models.base import Model, build_model, model_class
from recfunnel.train.objectives import build_objective
from recfunnel.train.seq_objectives import SEQUENCE_OBJECTIVES  # also registers them in OBJECTIVES
from recfunnel.train.trainer import TrainConfig, Trainer, TrainReport, seed_everything


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dataset: str | None = Field(
        "ml-100k", description="a named dataset under the data root, or a folder/file path"
    )
    table: ColumnMapping | None = Field(
        None, description="your own CSV/TSV/Parquet file (instead of dataset)"
    )
    data_root: Path | None = Field(
        None, description="data root (default: $RECFUNNEL_DATA, else ../shared/data)"
    )
    rating_threshold: float | None = Field(
        None, description="keep ratings >= this as positives (explicit -> implicit)"
    )


class SplitConfig(_Strict):
    method: Literal["leave_one_out", "random_holdout", "temporal", "ratio"] = Field(
        "leave_one_out", description="how interactions are held out (temporal/leave_one_out need timestamps)"
    )
    fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/valid/test for temporal, ratio"
    )
    seed: int = Field(0, description="seed for random splits and evaluation negatives")
    eval_negatives: int = Field(
        99, ge=0, description="fixed negatives per held-out user for the sampled protocol"
    )
    path: Path | None = Field(
        None, description="load this saved split instead of making one (same dataset only)"
    )


class ModelSection(_Strict):
    name: str = Field("neumf", description="model family (see `recfunnel models`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the family's hyper-parameters")
    pretrain: bool = Field(False, description="NeuMF only: initialise from trained GMF and MLP (alpha below)")
    alpha: float = Field(0.5, ge=0, le=1, description="NeuMF pre-training trade-off (He et al. eq. 13)")


class ObjectiveSection(_Strict):
    name: str | None = Field(None, description="bce or bpr; default: the model family's own")
    params: dict[str, Any] = Field(default_factory=dict, description="e.g. k (negatives per positive), reg")


class EvalSection(_Strict):
    protocols: tuple[str, ...] = Field(
        ("full", "sampled"),
        description="full ranking (seen items masked), full-unmasked (session data: repeats count) "
        "and/or sampled ranking",
    )
    ks: tuple[int, ...] = Field((5, 10, 20), description="cut-offs K")
    valid_protocol: str = Field("sampled", description="protocol used for early stopping on the valid part")

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if p not in ("full", "full-unmasked") and not p.startswith("sampled")]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; valid: full, full-unmasked, sampled")
        return v


class RunConfig(_Strict):
    """Everything that defines a run; printed back in every result and stored in the artifact."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelSection = ModelSection()
    objective: ObjectiveSection = ObjectiveSection()
    train: TrainConfig = TrainConfig()
    eval: EvalSection = EvalSection()

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        return cls.model_validate(_deep_merge(raw, overrides or {}))

    def updated(self, overrides: dict[str, Any]) -> RunConfig:
        return RunConfig.model_validate(_deep_merge(self.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a config names, with the rating threshold applied."""
    ds = (
        read_table(cfg.table)
        if cfg.table is not None
        else load_dataset(cfg.dataset or "ml-100k", cfg.data_root)
    )
    if cfg.rating_threshold is not None:
        ds = ds.with_positive_threshold(cfg.rating_threshold)
    return ds


def load_split(cfg: SplitConfig, dataset: Dataset) -> Split:
    if cfg.path is not None:
        split = Split.load(cfg.path)
        split.check(dataset)
        return split
    split = make_split(dataset, cfg.method, seed=cfg.seed, fractions=cfg.fractions)
    if cfg.eval_negatives and cfg.method in ("leave_one_out", "random_holdout"):
        split = split.with_negatives(dataset, cfg.eval_negatives, cfg.seed)
    return split


def train_model(
    name: str,
    params: dict[str, Any],
    dataset: Dataset,
    split: Split,
    train_cfg: TrainConfig,
    objective: ObjectiveSection = ObjectiveSection(),
    valid_protocol: str = "sampled",
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    init: Model | None = None,
) -> tuple[Model, TrainReport | None]:
    """Build and fit one model on the split's train part (early stopping on its valid part)."""
    seed_everything(train_cfg.seed)
    if init is None and hasattr(model_class(name), "from_dataset"):  # models that read feature tables
        init = model_class(name).from_dataset(dataset, split, params)
    model = init if init is not None else build_model(name, dataset.n_users, dataset.n_items, params)
    train = split.part(dataset, "train")
    if not model.trainable:
        t0 = time.perf_counter()
        model.fit_matrix(train.matrix(dataset.n_users, dataset.n_items))
        return model, TrainReport(seconds=time.perf_counter() - t0)
    obj_name, obj_params = objective.name or model.objective, dict(objective.params)
    if obj_name in SEQUENCE_OBJECTIVES and hasattr(model.config, "max_len"):
        obj_params.setdefault("max_len", model.config.max_len)  # windows as long as the model reads
    obj = build_objective(obj_name, train, dataset.n_users, dataset.n_items, **obj_params)
    validate = None
    if len(split.valid):
        protocol = valid_protocol
        if protocol.startswith("sampled") and split.negatives.get("valid") is None:
            protocol = "full"  # no fixed negatives to sample against

        def validate(m: torch.nn.Module) -> dict[str, float]:
            return evaluate(m, dataset, split, protocol, "valid", ks=(10,)).metrics

    report = Trainer(train_cfg).fit(model, obj, validate, checkpoint_dir=checkpoint_dir, resume=resume)
    return model, report


def pretrained_neumf(cfg: RunConfig, dataset: Dataset, split: Split) -> tuple[Model, float]:
    """Train GMF and MLP with the NeuMF config's sizes, then build NeuMF from them (eq. 13)."""
    t0 = time.perf_counter()
    p = build_model("neumf", dataset.n_users, dataset.n_items, cfg.model.params).config
    gmf, _ = train_model(
        "gmf",
        {"factors": p.factors, "sparse": p.sparse},
        dataset,
        split,
        cfg.train,
        cfg.objective,
        cfg.eval.valid_protocol,
    )
    mlp, _ = train_model(
        "mlp",
        {"layers": p.layers, "dropout": p.dropout, "sparse": p.sparse},
        dataset,
        split,
        cfg.train,
        cfg.objective,
        cfg.eval.valid_protocol,
    )
    model = build_model("neumf", dataset.n_users, dataset.n_items, p)
    model.load_pretrained(gmf, mlp, cfg.model.alpha)
    return model, time.perf_counter() - t0


def evaluate_all(
    model: Model, dataset: Dataset, split: Split, cfg: RunConfig, name: str = ""
) -> list[Result]:
    out = []
    for protocol in cfg.eval.protocols:
        if protocol.startswith("sampled") and split.negatives.get("test") is None:  # needs a holdout split
            continue
        out.append(
            evaluate(
                model,
                dataset,
                split,
                protocol,
                "test",
                cfg.eval.ks,
                name=name or model.family,
                seed=cfg.train.seed,
            )
        )
    return out
