"""The funnel's config: which models, which retrievers with which quotas, which ranker, which
filters. A TOML file maps onto :class:`FunnelConfig` (see ``examples/funnel-ml100k.toml``)::

    [data]                       # as in a run config; [split] too (the serving log: train + valid)
    dataset = "ml-100k"

    [models.tower]               # a model trained here through recfunnel.run (a run config's
    model = { name = "two-tower" }   # model / features / objective / train / eval sections),
                                 # or `artifact = "path"`: a model trained before on the same data

    [[retrievers]]               # in merge priority order
    kind = "ann"                 # ann | item2item | popular
    model = "tower"
    quota = 200
    backend = "hnsw"

    [ranker]
    kind = "model"               # model (a CTR family or lightgbm, trained for this funnel) | retrieval
    family = "deepfm"
    negatives = { negatives = 4, hard_fraction = 0.5 }

Every model named by a retriever must be declared under ``[models]``; names are checked when the
config is read, with the valid ones in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from recfunnel.funnel.ranker_data import RankerDataConfig
from recfunnel.funnel.request import MAX_RECENT
from recfunnel.run.config import (
    DataConfig,
    EvalSection,
    FeatureSection,
    ModelSection,
    ObjectiveSection,
    RunConfig,
    SplitConfig,
    deep_merge,
    with_family_defaults,
)
from recfunnel.train.trainer import TrainConfig

__all__ = ["FilterSpec", "FunnelConfig", "ModelSpec", "RankerSpec", "RetrieverSpec"]

RANKER_MODEL = "ranker"  # the bundle's name of the ranker's artifact (not usable under [models])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A model the funnel uses: trained here (a run's model sections) or read from `artifact`."""

    artifact: Path | None = Field(
        None, description="a saved model (recfunnel train --out) of the same dataset, instead of training"
    )
    model: ModelSection = ModelSection(name="two-tower")
    features: FeatureSection = FeatureSection()
    objective: ObjectiveSection = ObjectiveSection()
    train: TrainConfig = TrainConfig()
    eval: EvalSection = Field(
        EvalSection(protocols=("full",), ks=(10, 50, 200), valid_protocol="full"),
        description="how the model alone is evaluated after training (and early-stopped)",
    )

    @model_validator(mode="before")
    @classmethod
    def _tuned(cls, raw: Any) -> Any:
        """A model trained here takes its family's tuned train/objective settings under the
        given ones (as ``recfunnel train`` does)."""
        if not isinstance(raw, dict) or raw.get("artifact") is not None:
            return raw
        section = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in raw.items()}
        section.setdefault("model", {"name": cls.model_fields["model"].default.name})
        return with_family_defaults(section)

    def run_config(self, data: DataConfig, split: SplitConfig) -> RunConfig:
        """This model's run config over the funnel's data and split."""
        return RunConfig(
            data=data,
            split=split,
            model=self.model,
            features=self.features,
            objective=self.objective,
            train=self.train,
            eval=self.eval,
        )


class RetrieverSpec(_Strict):
    """One candidate source."""

    kind: Literal["ann", "item2item", "popular"] = Field(
        description="ann: nearest items to the user vector; item2item: items close to the recent "
        "items; popular: most interacted-with items (with window_days: lately)"
    )
    name: str | None = Field(None, description="source name in results (default: the kind; 'trending')")
    model: str | None = Field(None, description="ann / item2item: the name of a model under [models]")
    quota: int = Field(ge=0, description="candidates this source may add per request after de-duplication")
    backend: str = Field("hnsw", description="ann / item2item: index backend (exact, hnsw, ivf, ivfpq)")
    index: dict[str, Any] = Field(default_factory=dict, description="the backend's parameters")
    recent: int = Field(20, ge=1, description="item2item: how many of the newest recent items count")
    window_days: float | None = Field(None, gt=0, description="popular: count only the last days")
    exclude_seen: bool = Field(True, description="skip the user's seen items (spends no quota on them)")

    @property
    def source(self) -> str:
        if self.name:
            return self.name
        if self.kind == "popular":
            return "popular" if self.window_days is None else "trending"
        return self.kind

    @model_validator(mode="after")
    def _model_named(self) -> RetrieverSpec:
        if self.kind in ("ann", "item2item") and not self.model:
            raise ValueError(f"a {self.kind!r} retriever needs `model`, the name of a model under [models]")
        if self.kind == "popular" and self.model:
            raise ValueError("a 'popular' retriever reads the log, not a model: drop `model`")
        return self


class RankerSpec(_Strict):
    """The ranking stage: a feature-rich model trained for this funnel, or the retrievers' scores."""

    kind: Literal["model", "retrieval"] = Field(
        "model", description="model: a CTR family / lightgbm over feature fields; retrieval: fused scores"
    )
    family: str = Field("deepfm", description="kind=model: the ranker's family (a CTR family or lightgbm)")
    params: dict[str, Any] = Field(default_factory=dict, description="the family's hyper-parameters")
    artifact: Path | None = Field(
        None, description="kind=model: a ranker saved before (same dataset), instead of training one"
    )
    features: FeatureSection = FeatureSection()
    history: int = Field(10, ge=1, description="recent items in the ranker's history field")
    negatives: RankerDataConfig = RankerDataConfig()
    mine_from: str | None = Field(
        None, description="the source hard negatives come from (default: the first ann retriever)"
    )
    train: TrainConfig = TrainConfig(epochs=10, batch_size=1024, lr=0.001, patience=2, monitor="auc")
    fusion: Literal["rrf", "claimed"] = Field("rrf", description="kind=retrieval: how source scores fuse")
    source: str | None = Field(None, description="kind=retrieval: rank by this one source's score")


class FilterSpec(_Strict):
    exclude_seen: bool = Field(True, description="drop the user's seen items (stored and request events)")
    mmr_lambda: float | None = Field(
        None, ge=0, le=1, description="diversify by MMR with this lambda (None: plain top-k)"
    )
    mmr_model: str | None = Field(None, description="the model whose item vectors MMR compares")
    max_recent: int = Field(MAX_RECENT, ge=1, description="recent items kept per request")


class FunnelConfig(_Strict):
    """Everything that defines a funnel bundle; stored in it and printed back."""

    data: DataConfig = DataConfig()
    split: SplitConfig = Field(
        SplitConfig(eval_negatives=0), description="the held-out parts (the funnel is judged by full ranking)"
    )
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    retrievers: tuple[RetrieverSpec, ...] = Field(min_length=1)
    ranker: RankerSpec = RankerSpec()
    filters: FilterSpec = FilterSpec()
    k: int = Field(10, ge=1, description="items per request by default")

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for name in v:
            if name == RANKER_MODEL or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"model name {name!r}: use letters, digits, - and _ ({RANKER_MODEL!r} is reserved)"
                )
        return v

    @model_validator(mode="after")
    def _references(self) -> FunnelConfig:
        names = [r.source for r in self.retrievers]
        if len(set(names)) != len(names):
            raise ValueError(f"retriever names must be distinct, got {names}: set `name` on the repeats")
        for r in self.retrievers:
            if r.model is not None and r.model not in self.models:
                raise ValueError(
                    f"retriever {r.source!r} names model {r.model!r}; declared models: {sorted(self.models)}"
                )
        if sum(r.quota for r in self.retrievers) < self.k:
            total = sum(r.quota for r in self.retrievers)
            raise ValueError(f"the quotas hold {total} candidates, fewer than k={self.k}")
        ranker = self.ranker
        if ranker.kind == "model" and ranker.artifact is None:
            mine = ranker.mine_from or next((r.source for r in self.retrievers if r.kind == "ann"), None)
            if ranker.negatives.hard_fraction > 0 and mine not in names:
                raise ValueError(
                    f"hard negatives come from a retriever: set ranker.mine_from to one of {names} "
                    "(or negatives.hard_fraction = 0)"
                )
        if ranker.source is not None and ranker.source not in names:
            raise ValueError(f"ranker.source {ranker.source!r} is not a retriever; valid: {names}")
        if self.filters.mmr_model is not None and self.filters.mmr_model not in self.models:
            raise ValueError(f"filters.mmr_model {self.filters.mmr_model!r}; declared: {sorted(self.models)}")
        if self.filters.mmr_lambda is not None and self.filters.mmr_model is None:
            raise ValueError("MMR compares item vectors: set filters.mmr_model to a model under [models]")
        return self

    @property
    def mine_from(self) -> str | None:
        """The retriever hard negatives are mined from."""
        return self.ranker.mine_from or next((r.source for r in self.retrievers if r.kind == "ann"), None)

    def without_progress(self) -> FunnelConfig:
        """This config with every training progress bar off."""

        def quiet(spec: Any) -> Any:
            return spec.model_copy(update={"train": spec.train.model_copy(update={"progress": False})})

        models = {n: quiet(m) for n, m in self.models.items()}
        return self.model_copy(update={"models": models, "ranker": quiet(self.ranker)})

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> FunnelConfig:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        return cls.model_validate(deep_merge(raw, overrides or {}))

    def resolved(self) -> FunnelConfig:
        """Data paths (and model artifacts) absolute, as a bundle stores them."""
        data = RunConfig(data=self.data, split=self.split).resolved()
        models = {
            n: m.model_copy(update={"artifact": m.artifact.expanduser().resolve()}) if m.artifact else m
            for n, m in self.models.items()
        }
        return self.model_copy(update={"data": data.data, "split": data.split, "models": models})
