"""`fit(cfg)`: one run of any family, from a :class:`RunConfig`: data -> split -> model -> objective
-> Trainer -> test evaluation -> artifact (when asked).

Families and how they are fitted (none of the callers rebuilds this sequence):

* closed form (Popularity, EASE, iALS): ``fit_matrix`` on the train matrix of ``data.values``
  (binary, weights or ratings);
* trained user x item models (MF, GMF, MLP, NeuMF, Item2Vec, GRU4Rec, SASRec, the autoencoders):
  their objective over the train interactions, early stopping on the valid part (the autoencoders,
  ``MatrixInput``, are first handed the train matrix of ``data.values``); NeuMF with
  ``model.pretrain`` is first built from a trained GMF and MLP (He et al. 2017, eq. 13) and
  fine-tuned with ``model.finetune``;
* two-tower: its feature fields fitted on the train part (:func:`recfunnel.run.towers.build_two_tower`);
* field families (the CTR rankers and LightGBM): labelled rows (label = rating >= ``ctr.threshold``)
  encoded with the feature fields, early stopping on the valid part's AUC.

The Trainer's families (every one but the closed forms and LightGBM) checkpoint every epoch into
``checkpoint_dir`` and continue from it with ``resume``, in any number of processes; LightGBM has
no epochs nor checkpoints, and ``resume`` for it is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields import CTRPart, FieldSchema, ctr_parts
from recfunnel.data.readers import load_dataset, read_table
from recfunnel.data.sequences import user_sequences
from recfunnel.data.splits import Split, make_split
from recfunnel.errors import ConfigError
from recfunnel.eval.ctr import ctr_validator
from recfunnel.eval.protocols import evaluate as evaluate_protocol
from recfunnel.eval.result import Result
from recfunnel.models.autoencoders import MatrixInput
from recfunnel.models.base import HistoryAware, Model, build_model, model_class
from recfunnel.models.ctr.base import build_ctr
from recfunnel.run.config import DataConfig, RunConfig, SplitConfig
from recfunnel.run.evaluate import evaluate_run
from recfunnel.run.features import ctr_fields
from recfunnel.train import distributed
from recfunnel.train.checkpoint import data_identity
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.registry import SEQUENCE_OBJECTIVES, build_objective
from recfunnel.train.trainer import TrainConfig, Trainer, TrainReport, seed_everything

__all__ = ["FitResult", "data_notes", "fit", "load_data", "load_split"]

#: validation metrics a field family can stop early on (higher is better)
CTR_MONITORS = ("auc",)


@dataclass
class FitResult:
    """What a run produced: the fitted model, its training report, the data and split it saw, the
    test results, and (field families) the fitted field schema and encoded parts."""

    config: RunConfig
    model: Any  # a Model, a CTRModel or a LightGBMRanker
    report: TrainReport | None
    dataset: Dataset
    split: Split
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole fit (pre-training and validation included)
    pretrain_seconds: float | None = None
    objective: Any = None  # the objective object trained with (None: closed form, LightGBM)
    schema: FieldSchema | None = None
    parts: dict[str, CTRPart] | None = None
    path: Path | None = None  # the artifact written, if asked

    @property
    def family(self) -> str:
        return self.config.model.name

    @property
    def is_field_model(self) -> bool:
        return self.schema is not None


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a config names, with the rating threshold applied."""
    if cfg.table is not None:
        table = cfg.table
        if cfg.duplicates is not None:
            table = table.model_copy(update={"duplicates": cfg.duplicates})
        ds = read_table(table)
    else:
        ds = load_dataset(cfg.dataset or "ml-100k", cfg.data_root, duplicates=cfg.duplicates)
    if cfg.rating_threshold is not None:
        ds = ds.with_positive_threshold(cfg.rating_threshold)
    return ds


def data_notes(cfg: RunConfig, dataset: Dataset) -> list[str]:
    """What a user should know about the data a run reads: the readers' notes (merged duplicate
    rows, repeats kept, ...) and that the run ignores a weight column."""
    notes = list(dataset.notes)
    if dataset.interactions.weight is not None and cfg.data.values != "weight":
        notes.append(
            f"{cfg.model.name} ignores the weight column: each (user, item) pair counts as one "
            "positive whatever its weight (data.values = 'weight' hands the weights to Popularity, "
            "EASE, iALS and the autoencoders)"
        )
    return notes


def load_split(cfg: SplitConfig, dataset: Dataset) -> Split:
    """The saved split `cfg.path` (checked against `dataset`), else a new one; holdout splits get
    `eval_negatives` fixed negatives per user for the sampled protocol."""
    if cfg.path is not None:
        split = Split.load(cfg.path)
        split.check(dataset)
        return split
    split = make_split(dataset, cfg.method, seed=cfg.seed, fractions=cfg.fractions)
    if cfg.eval_negatives and cfg.method in ("leave_one_out", "random_holdout"):
        split = split.with_negatives(dataset, cfg.eval_negatives, cfg.seed)
    return split


def fit(
    cfg: RunConfig,
    dataset: Dataset | None = None,
    split: Split | None = None,
    *,
    evaluate: bool = True,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    out: str | Path | None = None,
) -> FitResult:
    """Fit the family `cfg.model.name` on the train part of `split` (made from `cfg.split` when
    None) of `dataset` (read from `cfg.data` when None); evaluate on the test part with
    `cfg.eval` (AUC / logloss / GAUC for field families) unless `evaluate` is False; write the
    artifact folder `out` when given (:func:`recfunnel.run.artifact.save_fit`). The Trainer's
    families checkpoint every epoch into `checkpoint_dir` (when given) and, with `resume`, continue
    from its last checkpoint to the weights an uninterrupted run ends with (CTR rankers included;
    LightGBM refuses `resume`).

    In a process group (:func:`recfunnel.train.distributed.init`) every rank trains its share and
    rank 0 alone evaluates and writes the artifact (the other ranks' results stay empty)."""
    cls = model_class(cfg.model.name)  # an unknown family fails before any data is read
    cls.Config(**cfg.model.params)
    ds = load_data(cfg.data) if dataset is None else dataset
    sp = load_split(cfg.split, ds) if split is None else split
    t0 = time.perf_counter()
    if cls.inputs == "fields":
        res = _fit_fields(cfg, ds, sp, checkpoint_dir, resume)
    else:
        res = _fit_user_item(cfg, ds, sp, checkpoint_dir, resume)
    res.seconds = time.perf_counter() - t0
    if evaluate and distributed.is_main():
        res.results = evaluate_run(res)
    if out is not None and distributed.is_main():
        from recfunnel.run.artifact import save_fit

        res.path = save_fit(res, out)
    return res


# --------------------------------------------------------------------------------------------------
# user x item families


def _validator(cfg: RunConfig, ds: Dataset, sp: Split):
    if not len(sp.valid):
        return None
    protocol = cfg.eval.valid_protocol
    if protocol.startswith("sampled") and sp.negatives.get("valid") is None:
        protocol = "full"  # no fixed negatives to sample against

    def validate(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_protocol(m, ds, sp, protocol, "valid", ks=(10,)).metrics

    return validate


def _train(
    model: Model,
    cfg: RunConfig,
    train_cfg: TrainConfig,
    ds: Dataset,
    sp: Split,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> tuple[TrainReport, Any]:
    """Train a user x item model with its (or the configured) objective; -> (report, objective)."""
    train = sp.part(ds, "train")
    if not model.trainable:
        _one_process(model.family)
        t0 = time.perf_counter()
        model.fit_matrix(_train_matrix(cfg, ds, train))
        return TrainReport(seconds=time.perf_counter() - t0), None
    if isinstance(model, MatrixInput):
        model.set_matrix(_train_matrix(cfg, ds, train))
    name, params = cfg.objective.name or model.objective, dict(cfg.objective.params)
    if name in SEQUENCE_OBJECTIVES and hasattr(model.config, "max_len"):
        params.setdefault("max_len", model.config.max_len)  # windows as long as the model reads
    objective = build_objective(name, train, ds.n_users, ds.n_items, **params)
    del train  # the objective keeps the columns it reads; the others need not last the training
    values = {"values": cfg.data.values} if cfg.data.values != "binary" else {}
    settings = json.dumps(
        {"model": model.config.model_dump(mode="json"), "objective": params, **values},
        sort_keys=True,
        default=str,
    )
    identity = data_identity(
        ds, sp, model=model.family, objective=name, settings=hashlib.sha256(settings.encode()).hexdigest()
    )
    report = Trainer(train_cfg).fit(
        model,
        objective,
        _validator(cfg, ds, sp),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        identity=identity,
    )
    return report, objective


def _one_process(family: str) -> None:
    """Refuse a family that the Trainer does not train in a process group of several processes."""
    if distributed.is_distributed():
        raise ConfigError(
            f"{family!r} is not trained by gradient steps, so it has no distributed training; run it "
            "in one process (valid with several: the families the Trainer trains, e.g. mf, neumf, "
            "sasrec, two-tower, deepfm)"
        )


def _train_matrix(cfg: RunConfig, ds: Dataset, train: Any) -> Any:
    """The user x item train matrix with the entries `cfg.data.values` names."""
    values = cfg.data.values
    if values != "binary" and getattr(train, values) is None:
        have = [f"'{v}'" for v in ("weight", "rating") if getattr(train, v) is not None]
        raise ConfigError(
            f"data.values = {values!r}, but dataset {ds.name!r} has no {values} column; valid here: "
            + ", ".join(["'binary'", *have])
        )
    return train.matrix(ds.n_users, ds.n_items, values)


def _fit_user_item(
    cfg: RunConfig, ds: Dataset, sp: Split, checkpoint_dir: Path | None, resume: bool
) -> FitResult:
    name, params = cfg.model.name, dict(cfg.model.params)
    pre_seconds = None
    train_cfg = cfg.train
    if name == "two-tower":
        from recfunnel.run.towers import build_two_tower

        if cfg.features.text == "title":
            params["use_text"] = True
        seed_everything(train_cfg.seed)
        model = build_two_tower(ds, sp, params, text_cache_dir=cfg.features.text_cache)
        seed_everything(train_cfg.seed)  # as retrieval-ml100k was measured: seeded again to train
    elif cfg.model.pretrain:
        if name != "neumf":
            raise ValueError(f"model.pretrain applies to neumf only, not {name!r}")
        t0 = time.perf_counter()
        model = _pretrained_neumf(cfg, ds, sp)
        pre_seconds = time.perf_counter() - t0
        train_cfg = cfg.model.finetune or cfg.train
        seed_everything(train_cfg.seed)
        checkpoint_dir = None  # pre-trained runs are not resumable (three fits in one)
    else:
        seed_everything(train_cfg.seed)
        model = build_model(name, ds.n_users, ds.n_items, params)
    report, objective = _train(model, cfg, train_cfg, ds, sp, checkpoint_dir, resume)
    if isinstance(model, HistoryAware):  # answer as the artifact will: train + valid histories
        rows = np.sort(np.concatenate([sp.train, sp.valid]))
        model.set_history(*user_sequences(ds.interactions.take(rows), ds.n_users))
    return FitResult(cfg, model.eval(), report, ds, sp, pretrain_seconds=pre_seconds, objective=objective)


def _pretrained_neumf(cfg: RunConfig, ds: Dataset, sp: Split) -> Model:
    """Train GMF and MLP with the NeuMF config's sizes, then build NeuMF from them (eq. 13)."""
    p = build_model("neumf", ds.n_users, ds.n_items, cfg.model.params).config
    parts = {}
    for family, params in (
        ("gmf", {"factors": p.factors, "sparse": p.sparse}),
        ("mlp", {"layers": p.layers, "dropout": p.dropout, "sparse": p.sparse}),
    ):
        seed_everything(cfg.train.seed)
        m = build_model(family, ds.n_users, ds.n_items, params)
        _train(m, cfg, cfg.train, ds, sp)
        parts[family] = m
    model = build_model("neumf", ds.n_users, ds.n_items, p)
    model.load_pretrained(parts["gmf"], parts["mlp"], cfg.model.alpha)
    return model


# --------------------------------------------------------------------------------------------------
# field families (CTR rankers, LightGBM)


def _fit_fields(
    cfg: RunConfig, ds: Dataset, sp: Split, checkpoint_dir: Path | None, resume: bool
) -> FitResult:
    if resume and cfg.model.name == "lightgbm":
        raise ConfigError(
            "lightgbm has no --resume: it is not trained in epochs by the Trainer and writes no "
            "checkpoints; run it again without --resume (a fit takes seconds)"
        )
    specs = ctr_fields(ds, cfg.features, cfg.ctr)
    schema, parts = ctr_parts(ds, sp, specs, threshold=cfg.ctr.threshold)
    if not len(parts["train"]) or not len(parts["valid"]):
        raise ValueError(
            f"the {cfg.model.name!r} ranker needs labelled rows in the train and valid parts; "
            f"the split gave {len(parts['train'])} and {len(parts['valid'])}"
        )
    if cfg.model.name == "lightgbm":
        _one_process("lightgbm")
        from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker

        lcfg = LightGBMConfig(**{"num_threads": torch.get_num_threads(), **cfg.model.params})
        model: Any = LightGBMRanker(lcfg, schema, seed=cfg.train.seed)
        model.fit(
            parts["train"].fields,
            parts["train"].labels.numpy(),
            parts["valid"].fields,
            parts["valid"].labels.numpy(),
        )
        return FitResult(cfg, model, None, ds, sp, schema=schema, parts=parts)
    train_cfg = cfg.train
    if train_cfg.monitor not in CTR_MONITORS:  # a ranking metric (the default): rankers watch AUC
        train_cfg = train_cfg.model_copy(update={"monitor": "auc"})
    seed_everything(train_cfg.seed)
    model = build_ctr(cfg.model.name, schema, cfg.model.params)
    objective = LabelledBCE(parts["train"])
    report = Trainer(train_cfg).fit(
        model,
        objective,
        ctr_validator(parts["valid"]),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        identity=_field_identity(cfg, ds, sp, model, schema),
    )
    return FitResult(cfg, model.eval(), report, ds, sp, objective=objective, schema=schema, parts=parts)


def _field_identity(
    cfg: RunConfig, ds: Dataset, sp: Split, model: Model, schema: FieldSchema
) -> dict[str, str]:
    """What a ranker's checkpoint records so that ``--resume`` on other data, fields or labels is
    refused: the dataset and split fingerprints, the family and objective, and a digest of the
    model's hyper-parameters, the task (label threshold, history length, numerics) and the fitted
    field schema (every field and its vocabulary)."""
    settings = json.dumps(
        {
            "model": model.config.model_dump(mode="json"),
            "ctr": cfg.ctr.model_dump(mode="json"),
            "schema": hashlib.sha256(schema.to_json().encode()).hexdigest(),
        },
        sort_keys=True,
        default=str,
    )
    return data_identity(
        ds,
        sp,
        model=cfg.model.name,
        objective=LabelledBCE.name,
        settings=hashlib.sha256(settings.encode()).hexdigest(),
    )
