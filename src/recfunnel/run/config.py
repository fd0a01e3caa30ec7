"""One typed config for every run: data -> split -> model (+ features / CTR task) -> objective ->
train -> eval. A TOML file maps onto :class:`RunConfig`; every result and artifact prints it back.

Sections: ``data`` (which interactions), ``split`` (how they are held out), ``model`` (family and
hyper-parameters), ``features`` (feature fields for the families that read feature tables:
two-tower, the CTR rankers, LightGBM), ``ctr`` (the labelled-row task of a CTR ranker),
``objective``, ``train`` and ``eval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from recfunnel.data.schema import ColumnMapping
from recfunnel.train.trainer import TrainConfig

__all__ = [
    "CTRSection",
    "DataConfig",
    "EvalSection",
    "FeatureSection",
    "ModelSection",
    "ObjectiveSection",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "deep_merge",
    "family_defaults",
    "with_family_defaults",
]

PROTOCOLS = ("full", "full-unmasked", "sampled")


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
    duplicates: Literal["aggregate", "refuse", "keep"] | None = Field(
        None,
        description="rows repeating a (user, item) pair: aggregate (one row, weights summed, latest "
        "time), refuse (an error naming the line) or keep (sequence/session logs); None: the "
        "dataset's own policy (a table's `duplicates`, else aggregate; sequence data keeps repeats)",
    )
    values: Literal["binary", "weight", "rating"] = Field(
        "binary",
        description="entries of the user x item matrix handed to the families that read one (Popularity, "
        "EASE, iALS, the autoencoders): binary (1 per pair), weight (the weight column, e.g. play "
        "counts, summed over repeats) or rating; the other families see each pair as one positive",
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
    finetune: TrainConfig | None = Field(
        None, description="NeuMF with pretrain: train settings of the fine-tuning (default: `train`)"
    )


class FeatureSection(_Strict):
    """Feature fields of the families that read feature tables (two-tower, CTR rankers, LightGBM)."""

    preset: Literal["movielens", "ids"] = Field(
        "movielens",
        description="field declarations: 'movielens' (ids, user age/gender/occupation/zip, item "
        "genres/year, recent items: those whose columns the data has) or 'ids' (ids and recent items)",
    )
    text: Literal["none", "title"] = Field(
        "none",
        description="two-tower: 'title' feeds each item's offline sentence vector of its title "
        "(recfunnel.text) to the item tower (the same as params use_text=true)",
    )
    text_cache: Path | None = Field(None, description="folder for cached text vectors (default: none)")


class CTRSection(_Strict):
    """A CTR ranker's task: labelled rows (label = rating >= threshold) with the feature fields."""

    label: Literal["rating"] = Field("rating", description="the column the label is derived from")
    threshold: float = Field(4.0, description="label = 1 when the rating is >= this")
    history: int = Field(10, ge=1, description="recent items before each row in its history field")
    dense: bool = Field(True, description="also standardised numerics (age, release year) for DLRM")


class ObjectiveSection(_Strict):
    name: str | None = Field(
        None, description="objective (see `recfunnel models`); default: the family's own"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="e.g. k (negatives per positive), reg")


class EvalSection(_Strict):
    protocols: tuple[str, ...] = Field(
        ("full", "sampled"),
        description="full ranking (seen items masked), full-unmasked (session data: repeats count) "
        "and/or sampled ranking; CTR rankers are always evaluated by AUC / logloss / GAUC",
    )
    ks: tuple[int, ...] = Field((5, 10, 20), description="cut-offs K")
    valid_protocol: str = Field("sampled", description="protocol used for early stopping on the valid part")

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if p not in ("full", "full-unmasked") and not p.startswith("sampled")]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; valid: {', '.join(PROTOCOLS)}")
        return v

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"cut-offs K must be >= 1, got {list(v)}")
        return v


class RunConfig(_Strict):
    """Everything that defines a run; printed back in every result and stored in the artifact."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelSection = ModelSection()
    features: FeatureSection = FeatureSection()
    ctr: CTRSection = CTRSection()
    objective: ObjectiveSection = ObjectiveSection()
    train: TrainConfig = TrainConfig()
    eval: EvalSection = EvalSection()

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        """The file's config (then `overrides`) over the model family's tuned defaults
        (:func:`with_family_defaults`), as ``recfunnel train --config`` reads it."""
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        return cls.tuned(deep_merge(raw, overrides or {}))

    @classmethod
    def tuned(cls, raw: dict[str, Any] | None = None) -> RunConfig:
        """A config from plain sections with the family's tuned train/objective settings under
        them: ``RunConfig.tuned({"model": {"name": "mf"}})`` trains MF-BPR as its benchmark chose
        (``RunConfig(...)`` itself takes every unset field from the generic defaults)."""
        return cls.model_validate(with_family_defaults(raw or {}))

    def updated(self, overrides: dict[str, Any]) -> RunConfig:
        return RunConfig.model_validate(deep_merge(self.model_dump(), overrides))

    def resolved(self) -> RunConfig:
        """This config with every data path made absolute (what an artifact stores, so that
        `recfunnel evaluate` finds the data from any working directory); a relative data root,
        table or dataset path is read against the current directory, as the run read it."""
        data: dict[str, Any] = {}
        if self.data.data_root is not None:
            data["data_root"] = str(Path(self.data.data_root).expanduser().resolve())
        if self.data.table is not None:
            data["table"] = {"path": str(Path(self.data.table.path).expanduser().resolve())}
        if self.data.dataset and Path(self.data.dataset).expanduser().exists():
            data["dataset"] = str(Path(self.data.dataset).expanduser().resolve())
        if self.split.path is not None:
            split = {"path": str(Path(self.split.path).expanduser().resolve())}
            return self.updated({"data": data, "split": split})
        return self.updated({"data": data}) if data else self


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`, section by section (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def family_defaults(name: str, objective: str | None = None) -> dict[str, Any]:
    """RunConfig sections holding family `name`'s tuned defaults: its ``train_defaults`` (train
    settings) and, when it trains with its own objective (`objective` None or that one), its
    ``objective_defaults`` (objective parameters): the configuration its benchmark suite chose on
    the valid part. {} for families without them and for unknown names (those fail later, when
    the config is used, with the list of valid ones)."""
    from recfunnel.models.base import model_class

    try:
        cls = model_class(name)
    except (KeyError, ValueError):
        return {}
    out: dict[str, Any] = {}
    if getattr(cls, "train_defaults", None):
        out["train"] = dict(cls.train_defaults)
    if getattr(cls, "objective_defaults", None) and objective in (None, getattr(cls, "objective", None)):
        out["objective"] = {"params": dict(cls.objective_defaults)}
    return out


def with_family_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (RunConfig sections as plain dicts) merged over its model family's tuned defaults
    (:func:`family_defaults`); the family is ``raw["model"]["name"]`` or the default one."""
    name = (raw.get("model") or {}).get("name") or ModelSection.model_fields["name"].default
    objective = (raw.get("objective") or {}).get("name")
    return deep_merge(family_defaults(name, objective), raw)
