"""Build a :class:`~recfunnel.funnel.funnel.Funnel` from a :class:`FunnelConfig`: read the data and
split once, fit (or load) every model through :mod:`recfunnel.run`, build the retrievers and their
indexes, train the ranker on rows mined from the funnel's own retriever, and assemble the funnel.

    built = build_funnel(FunnelConfig.from_toml("examples/funnel-ml100k.toml"))
    built.funnel.recommend(users=["196"], k=10)
    save_bundle(built, "bundles/ml100k")                  # recfunnel.funnel.bundle

The funnel answers from the interactions of the train and valid parts (its "serving log": seen
items, histories, popularity, the ranker's history fields); the test part stays held out, so a
built funnel (or its bundle) is evaluated on it (:mod:`recfunnel.funnel.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.splits import Split
from recfunnel.funnel.config import FilterSpec, FunnelConfig, RankerSpec, RetrieverSpec
from recfunnel.funnel.filters import Filters
from recfunnel.funnel.funnel import Funnel
from recfunnel.funnel.ranker import Ranker, RetrievalScoreRanker, ScorerRanker
from recfunnel.funnel.ranker_data import ranker_parts, train_ranker
from recfunnel.funnel.retrievers import ANNRetriever, ItemToItemRetriever, PopularityRetriever, Retriever
from recfunnel.index import Index
from recfunnel.models.base import Factorised
from recfunnel.run.artifact import load_model
from recfunnel.run.config import CTRSection, RunConfig
from recfunnel.run.features import ctr_fields
from recfunnel.run.fit import FitResult, data_notes, fit, load_data, load_split

__all__ = ["BuiltFunnel", "build_funnel", "evaluate_built", "make_retriever", "serving_dataset"]

Log = Callable[[str], None]


@dataclass
class BuiltFunnel:
    """A funnel built from its config, with what it was built from (what a bundle stores)."""

    config: FunnelConfig
    funnel: Funnel
    dataset: Dataset  # the whole dataset (test part included)
    split: Split
    models: dict[str, Any]  # name under [models] -> fitted model (eval mode)
    ranker_model: Any | None  # the trained ranker's model (kind="model")
    fits: dict[str, FitResult] = field(default_factory=dict)  # the models trained here
    seconds: dict[str, float] = field(default_factory=dict)  # per build step
    evaluation: dict[str, Any] | None = None  # evaluate_built's figures (stored in the bundle)


def serving_dataset(dataset: Dataset, split: Split) -> Dataset:
    """`dataset` whose interactions are the train and valid parts only (file order kept): what the
    funnel answers from. Vocabularies and feature tables are unchanged (model indices stay valid)."""
    rows = np.sort(np.concatenate([split.train, split.valid]))
    return replace(dataset, interactions=dataset.interactions.take(rows))


def make_retriever(
    spec: RetrieverSpec, models: dict[str, Any], log: Dataset, index: Index | None = None
) -> Retriever:
    """The retriever `spec` describes over the fitted `models`; popularity counts `log`'s
    interactions. `index`: a saved index to use instead of building one (checked against the model)."""
    if spec.kind == "popular":
        window = None if spec.window_days is None else spec.window_days * 86400.0
        return PopularityRetriever(
            log.interactions,
            log.n_items,
            window_seconds=window,
            exclude_seen=spec.exclude_seen,
            name=spec.source,
        )
    model = models[spec.model]  # type: ignore[index]
    if not isinstance(model, Factorised):
        raise ValueError(
            f"retriever {spec.source!r}: model {spec.model!r} ({model.family}) has no item vectors; "
            "ann / item2item retrievers need a factorised model (two-tower, mf-bpr, sasrec, item2vec, ...)"
        )
    if spec.kind == "ann":
        return ANNRetriever(
            model, index, backend=spec.backend, exclude_seen=spec.exclude_seen, name=spec.source, **spec.index
        )
    return ItemToItemRetriever(
        model.item_vectors(),
        recent=spec.recent,
        index=index,
        backend=spec.backend,
        exclude_seen=spec.exclude_seen,
        name=spec.source,
        **spec.index,
    )


def _check_vocab(what: str, loaded: Any, dataset: Dataset) -> None:
    if loaded.users.ids != dataset.users.ids or loaded.items.ids != dataset.items.ids:
        raise ValueError(
            f"{what} was trained on other users/items than this dataset ({len(loaded.users)} users, "
            f"{len(loaded.items)} items vs {dataset.n_users}, {dataset.n_items}): train it on the same data"
        )


def _fit_models(
    cfg: FunnelConfig, dataset: Dataset, split: Split, evaluate: bool, log: Log
) -> tuple[dict[str, Any], dict[str, FitResult]]:
    models: dict[str, Any] = {}
    fits: dict[str, FitResult] = {}
    for name, spec in cfg.models.items():
        if spec.artifact is not None:
            loaded = load_model(spec.artifact)
            _check_vocab(f"model {name!r} ({spec.artifact})", loaded, dataset)
            models[name] = loaded.model
            log(f"model {name}: {loaded.family} read from {spec.artifact}")
            continue
        log(f"model {name}: training {spec.model.name}")
        res = fit(spec.run_config(cfg.data, cfg.split), dataset, split, evaluate=evaluate)
        models[name], fits[name] = res.model.eval(), res
        figures = ", ".join(f"{k} {v:.4f}" for r in res.results for k, v in r.metrics.items() if "@10" in k)
        log(f"model {name}: {res.seconds:.1f} s{'; test ' + figures if figures else ''}")
    return models, fits


def _ranker(
    spec: RankerSpec,
    cfg: FunnelConfig,
    dataset: Dataset,
    split: Split,
    retrievers: list[Retriever],
    log: Log,
) -> tuple[Ranker, Any | None]:
    if spec.kind == "retrieval":
        return RetrievalScoreRanker(source=spec.source, fusion=spec.fusion), None
    if spec.artifact is not None:
        loaded = load_model(spec.artifact)
        _check_vocab(f"the ranker ({spec.artifact})", loaded, dataset)
        model = loaded.model
        log(f"ranker: {loaded.family} read from {spec.artifact}")
    else:
        source = cfg.mine_from
        mine = next((r for r in retrievers if r.name == source), retrievers[0])
        specs = ctr_fields(dataset, spec.features, CTRSection(history=spec.history))
        t0 = time.perf_counter()
        schema, parts = ranker_parts(dataset, split, mine, specs=specs, cfg=spec.negatives)
        log(
            f"ranker: {len(parts['train']):,} training rows ({spec.negatives.negatives} negatives per "
            f"positive, {spec.negatives.hard_fraction:.0%} hard from {mine.name!r}) in "
            f"{time.perf_counter() - t0:.1f} s; training {spec.family}"
        )
        model = train_ranker(spec.family, schema, parts, params=spec.params, train=spec.train)
    return ScorerRanker.from_model(model, dataset, split), model


def funnel_filters(spec: FilterSpec) -> Filters:
    return Filters(exclude_seen=spec.exclude_seen)


def build_funnel(
    cfg: FunnelConfig,
    dataset: Dataset | None = None,
    split: Split | None = None,
    *,
    evaluate: bool = True,
    log: Log | None = None,
    indexes: Mapping[str, Index] | None = None,
) -> BuiltFunnel:
    """Fit every model of `cfg`, build its retrievers and ranker, and assemble the funnel.

    `dataset` / `split`: given, they are used as they are (else read from `cfg.data` /
    `cfg.split`). `evaluate`: evaluate each model trained here on the test part (its figures are
    logged and kept in `fits`). `log`: where progress lines go (default: nowhere). `indexes`:
    already built indexes by retriever source name, used instead of building them (each checked
    against its model's item vectors; its own search parameters apply)."""
    say: Log = log or (lambda _msg: None)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    run = RunConfig(data=cfg.data, split=cfg.split)
    ds = load_data(cfg.data) if dataset is None else dataset
    for note in data_notes(run, ds):
        say(f"data: {note}")
    sp = load_split(cfg.split, ds) if split is None else split
    seconds["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    models, fits = _fit_models(cfg, ds, sp, evaluate, say)
    seconds["models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    served = serving_dataset(ds, sp)
    given = dict(indexes or {})
    unknown = sorted(set(given) - {r.source for r in cfg.retrievers if r.kind != "popular"})
    if unknown:
        raise ValueError(f"indexes given for {unknown}: no ann / item2item retriever of this funnel")
    retrievers = [make_retriever(r, models, served, given.get(r.source)) for r in cfg.retrievers]
    seconds["retrievers"] = time.perf_counter() - t0
    say(f"retrievers: {', '.join(r.name for r in retrievers)} in {seconds['retrievers']:.1f} s")

    t0 = time.perf_counter()
    ranker, ranker_model = _ranker(cfg.ranker, cfg, ds, sp, retrievers, say)
    seconds["ranker"] = time.perf_counter() - t0

    mmr = cfg.filters.mmr_model
    funnel = Funnel.for_dataset(
        retrievers,
        [r.quota for r in cfg.retrievers],
        ranker,
        funnel_filters(cfg.filters),
        dataset=ds,
        split=sp,
        item_vectors=None if mmr is None else models[mmr].item_vectors().detach(),
        mmr_lambda=cfg.filters.mmr_lambda,
        max_recent=cfg.filters.max_recent,
    )
    return BuiltFunnel(cfg, funnel, ds, sp, models, ranker_model, fits, seconds)


def evaluate_built(built: BuiltFunnel, ks: tuple[int, ...] = (10,), candidates: int = 200) -> dict[str, Any]:
    """The built funnel, and its first ANN retriever alone (ranked by its own score, no ranker),
    evaluated on the test part (:func:`recfunnel.funnel.evaluate.evaluate_funnel`); kept in
    `built.evaluation` and returned: {"funnel": metrics, "retriever": metrics, "stage_ms": ...}."""
    from recfunnel.funnel.evaluate import evaluate_funnel

    funnel = built.funnel
    whole = evaluate_funnel(funnel, built.dataset, built.split, ks=ks, candidate_ks=(candidates,))
    out: dict[str, Any] = {"users": whole.n_users, "funnel": whole.metrics, "stage_ms": whole.stage_ms}
    ann = next((r for r in funnel.retrievers if isinstance(r, ANNRetriever)), None)
    if ann is not None:
        alone = Funnel.for_dataset(
            [ann],
            [max(candidates, *ks)],
            RetrievalScoreRanker(source=ann.name),
            funnel.filters,
            dataset=built.dataset,
            split=built.split,
        )
        out["retriever"] = evaluate_funnel(alone, built.dataset, built.split, ks=ks, candidate_ks=()).metrics
        out["retriever_source"] = ann.name
    built.evaluation = out
    return out
