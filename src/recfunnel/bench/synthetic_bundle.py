"""A synthetic funnel bundle with a large catalogue (default 1,000,000 items), for the serving
latency benchmark (:mod:`recfunnel.bench.serve_latency`): the cost of every stage where the
catalogue is big, built through the funnel's own path and loaded by the service like any bundle.

What it holds:

* a :class:`~recfunnel.data.dataset.Dataset` built from a polars frame: `n_items` items in
  `clusters` Gaussian clusters of uneven size (Dirichlet(1)), each item with a category (a
  ``genres`` list column, one category per item, mostly its cluster's) and a zipf-like popularity;
  `n_users` users, each with `history` (20-40) distinct items drawn from 2-4 clusters of their own
  (popular items more often), timestamps increasing per user;
* an MF model whose weights are set directly (no training on 1M items): item vectors = cluster
  centre + noise, item bias = a small log-popularity term, user vectors = the weighted mean of the
  user's cluster centres + noise; saved with :func:`~recfunnel.run.artifact.save_model` and named as
  ``models.mf.artifact`` in the :class:`~recfunnel.funnel.config.FunnelConfig`;
* retrievers: ANN over the MF model in an HNSW index (quota 150) and all-time popularity (quota 50),
  so the ranker scores 200 candidates;
* a DeepFM ranker trained briefly through the funnel's own path (``ranker.kind = "model"``,
  features preset "movielens", which on this data keeps the id fields, the item's category
  (``genres``), the event hour and weekday and the recent-items history; rows mined from the ANN).

:func:`build_synthetic_bundle` builds it with :func:`~recfunnel.funnel.build.build_funnel` and
:func:`~recfunnel.funnel.bundle.save_bundle` under ``cache/<name>-<hash>/bundle`` (hash of the
spec, so a changed spec builds anew and a rerun reuses it), measures the HNSW index's recall
against exact search on a sample of users, and writes ``info.json`` beside the bundle (build
seconds per step, recall, sizes). The HNSW index (26 minutes to build single-threaded at a million
items) is reused from a cached bundle whose spec draws the same vectors and builds the same graph
(:func:`index_key`: every field but the quotas, ef_search and the ranker's), so changing a quota or
the ranker rebuilds only the ranker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.splits import Split, leave_one_out
from recfunnel.funnel.build import build_funnel
from recfunnel.funnel.bundle import save_bundle
from recfunnel.funnel.config import FunnelConfig
from recfunnel.index import index_from_model, load_index, recall_at_k
from recfunnel.models.mf import MF, MFConfig
from recfunnel.run.artifact import save_model, seen_matrix

__all__ = ["SyntheticSpec", "build_synthetic_bundle", "synthetic_dataset", "TINY", "MILLION"]

Log = Callable[[str], None]
T0 = 1_700_000_000  # 2023-11-14, the first synthetic event


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and settings of a synthetic catalogue and its funnel (every field enters the cache key)."""

    n_items: int = 1_000_000
    n_users: int = 20_000
    dim: int = 64
    clusters: int = 1000
    categories: int = 50
    history: tuple[int, int] = (20, 40)  # items per user, inclusive range
    user_clusters: tuple[int, int] = (2, 4)  # clusters per user, inclusive range
    spread: float = 1.0  # item noise around its cluster centre (0.5: tight clusters, HNSW recall@200 0.73)
    zipf: float = 0.9  # popularity ~ rank ** -zipf
    item_norm: float = 8.0  # every item vector has this norm (the index then ranks like cosine)
    bias_scale: float = 0.05  # item bias = bias_scale * log(popularity / top popularity)
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 256
    ann_quota: int = 150  # + popular 50: the ranker scores 200 candidates (issue 13's bar)
    popular_quota: int = 50
    ranker_negatives: int = 2
    ranker_epochs: int = 1
    ranker_hidden: tuple[int, ...] = (400, 400, 400)
    recall_queries: int = 500
    seed: int = 0

    @property
    def name(self) -> str:
        n = self.n_items
        label = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
        return f"synthetic-{label}"

    def key(self) -> str:
        """Hash of the spec: the cache folder's suffix."""
        return _hash(dataclasses.asdict(self))


#: spec fields that change neither the item vectors nor the HNSW graph
_NOT_INDEX = ("ann_quota", "popular_quota", "hnsw_ef_search", "ranker_negatives", "ranker_epochs")
_NOT_INDEX += ("ranker_hidden", "recall_queries")


def _hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def index_key(spec: dict[str, Any]) -> str:
    """Hash of the spec fields the HNSW index depends on (a spec as a dict, e.g. from info.json)."""
    return _hash({k: v for k, v in spec.items() if k not in _NOT_INDEX})


def _cached_index(spec: SyntheticSpec, cache: Path) -> tuple[Any, Path] | None:
    """An ANN index built for the same vectors and graph settings in another cached bundle, with
    this spec's ef_search; None if there is none (or it does not load)."""
    want = index_key(dataclasses.asdict(spec))
    for info_path in sorted(cache.glob(f"{spec.name}-*/info.json")):
        path = info_path.parent / "bundle" / "indexes" / "ann"
        try:
            other = json.loads(info_path.read_text("utf-8"))["spec"]
            if index_key(other) != want or not path.is_dir():
                continue
            index = load_index(path)
        except (OSError, ValueError, KeyError):  # a broken cache entry: build instead
            continue
        index.set_params(ef_search=spec.hnsw_ef_search)
        return index, path
    return None


#: the benchmark's catalogue and the CI-sized one
MILLION = SyntheticSpec()
TINY = SyntheticSpec(
    n_items=2000,
    n_users=300,
    dim=16,
    clusters=20,
    categories=5,
    history=(8, 15),
    ranker_hidden=(32,),
    recall_queries=100,
)


@dataclass(frozen=True)
class SyntheticData:
    """The dataset, its split and the MF weights the generator drew."""

    dataset: Dataset
    split: Split
    item_vectors: np.ndarray  # [n_items, dim] in vocabulary order
    item_bias: np.ndarray  # [n_items]
    user_vectors: np.ndarray  # [n_users, dim] in vocabulary order


def _events(spec: SyntheticSpec, rng: np.random.Generator, cluster: np.ndarray, pop: np.ndarray):
    """(user, item, timestamp, user cluster ids [U, K], user cluster weights [U, K]) of the log."""
    n_users, c = spec.n_users, spec.clusters
    mass = np.bincount(cluster, weights=pop, minlength=c)
    k_lo, k_hi = spec.user_clusters
    ks = rng.integers(k_lo, k_hi + 1, n_users)
    ucl = np.zeros((n_users, k_hi), np.int64)
    uw = np.zeros((n_users, k_hi))
    p = mass / mass.sum()
    for u in range(n_users):  # ~20k small draws without replacement: about a second
        ucl[u, : ks[u]] = rng.choice(c, ks[u], replace=False, p=p)
        uw[u, : ks[u]] = rng.dirichlet(np.ones(ks[u]))
    # draw 2.5x the wanted length, drop repeated (user, item) pairs, keep each user's first L
    h_lo, h_hi = spec.history
    want = rng.integers(h_lo, h_hi + 1, n_users)
    draws = np.ceil(want * 2.5).astype(np.int64) + 5
    owner = np.repeat(np.arange(n_users), draws)
    pick = (rng.random(len(owner))[:, None] > np.cumsum(uw, axis=1)[owner]).sum(axis=1)
    ev_cluster = ucl[owner, np.minimum(pick, ks[owner] - 1)]
    # an item within the event's cluster with probability ~ popularity: items sorted by cluster,
    # one global cumulative sum, searchsorted inside each cluster's span
    by_cluster = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[by_cluster], np.arange(c))
    ends = np.searchsorted(cluster[by_cluster], np.arange(c), side="right")
    cum = np.cumsum(pop[by_cluster])
    base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    target = base[ev_cluster] + rng.random(len(owner)) * mass[ev_cluster]
    pos = np.clip(np.searchsorted(cum, target, side="right"), starts[ev_cluster], ends[ev_cluster] - 1)
    item = by_cluster[pos]
    _, first = np.unique(owner * np.int64(spec.n_items) + item, return_index=True)
    kept = np.sort(first)  # each (user, item) pair's first draw; owners stay in order
    ko = owner[kept]
    rank = np.arange(len(kept)) - np.searchsorted(ko, ko, side="left")  # place among the user's draws
    sel = kept[rank < want[ko]]
    user, item = owner[sel], item[sel]
    # timestamps: each user starts somewhere in 180 days, events ~6 hours apart on average
    gaps = rng.exponential(6 * 3600, len(user)).astype(np.int64) + 1
    csum = np.cumsum(gaps)
    first_ev = np.searchsorted(user, user, side="left")
    ts = T0 + rng.integers(0, 180 * 86400, n_users)[user] + csum - csum[first_ev] + gaps[first_ev]
    return user, item, ts, ucl, uw * (np.arange(k_hi)[None, :] < ks[:, None])


def synthetic_dataset(spec: SyntheticSpec) -> SyntheticData:
    """Draw the catalogue, the users' histories and the MF weights (seeded: the same spec gives
    the same data); split leave-one-out."""
    rng = np.random.default_rng(spec.seed)
    n, d, c = spec.n_items, spec.dim, spec.clusters
    centres = rng.standard_normal((c, d), dtype=np.float32)
    cluster = rng.choice(c, n, p=rng.dirichlet(np.ones(c)))
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    vectors *= spec.spread
    vectors += centres[cluster]
    vectors *= spec.item_norm / np.linalg.norm(vectors, axis=1, keepdims=True)
    pop = (rng.permutation(n) + 1.0) ** -spec.zipf
    cat_of_cluster = rng.integers(0, spec.categories, c)
    category = np.where(rng.random(n) < 0.9, cat_of_cluster[cluster], rng.integers(0, spec.categories, n))
    user, item, ts, ucl, uw = _events(spec, rng, cluster, pop)
    order = np.argsort(ts, kind="stable")
    frame = pl.DataFrame({"user": user[order], "item": item[order], "timestamp": ts[order]})
    items = pl.DataFrame(
        {"id": np.arange(n), "genres": [[f"cat{x:02d}"] for x in category.tolist()]},
        schema={"id": pl.Int64, "genres": pl.List(pl.Utf8)},
    )
    ds = build_dataset(spec.name, frame, item_features=items, source="recfunnel.bench.synthetic_bundle")
    # vocabularies sort integer ids numerically: item index i is raw id i, user index u is raw id u
    assert ds.n_items == n and ds.items.ids[-1] == str(n - 1) and ds.users.ids[-1] == str(spec.n_users - 1)
    users = (uw[:, :, None] * centres[ucl]).sum(axis=1).astype(np.float32)
    users += 0.1 * rng.standard_normal(users.shape, dtype=np.float32)
    bias = (spec.bias_scale * np.log(pop / pop.max())).astype(np.float32)
    return SyntheticData(ds, leave_one_out(ds), vectors, bias, users)


def _mf_artifact(data: SyntheticData, path: Path) -> Path:
    """An MF model holding the drawn vectors (no training), saved as a model artifact."""
    ds = data.dataset
    model = MF(MFConfig(factors=data.item_vectors.shape[1]), ds.n_users, ds.n_items)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.from_numpy(data.user_vectors))
        model.item_emb.weight.copy_(torch.from_numpy(data.item_vectors))
        model.item_bias.weight.copy_(torch.from_numpy(data.item_bias)[:, None])
    model.eval()
    return save_model(path, model, users=ds.users, items=ds.items, seen=seen_matrix(ds, data.split))


def funnel_config(spec: SyntheticSpec, artifact: Path, progress: bool = False) -> FunnelConfig:
    """The funnel over the synthetic catalogue: ANN (HNSW over the MF artifact) and popularity
    retrievers, a DeepFM ranker trained for `ranker_epochs` on rows mined from the ANN."""
    train = {"epochs": spec.ranker_epochs, "batch_size": 1024, "lr": 0.001, "patience": 0}
    return FunnelConfig.model_validate(
        {
            "data": {"dataset": spec.name},
            "split": {"method": "leave_one_out", "eval_negatives": 0},
            "models": {"mf": {"artifact": str(artifact), "model": {"name": "mf"}}},
            "retrievers": [
                {
                    "kind": "ann",
                    "model": "mf",
                    "quota": spec.ann_quota,
                    "backend": "hnsw",
                    "index": {
                        "m": spec.hnsw_m,
                        "ef_construction": spec.hnsw_ef_construction,
                        "ef_search": spec.hnsw_ef_search,
                        "threads": 1,  # builds ran faster single-threaded on the shared 2-core box
                    },
                },
                {"kind": "popular", "quota": spec.popular_quota},
            ],
            "ranker": {
                "kind": "model",
                "family": "deepfm",
                # sparse gradients: dense Adam over the 1M-row item tables took 5,000 s for one epoch
                "params": {"hidden": list(spec.ranker_hidden), "sparse": True},
                "features": {"preset": "movielens"},
                "history": 10,
                "negatives": {"negatives": spec.ranker_negatives, "hard_fraction": 0.5, "hard_pool": 50},
                "train": {**train, "progress": progress, "monitor": "auc"},
            },
            "filters": {"exclude_seen": True},
        }
    )


def _recall(built: Any, data: SyntheticData, n_queries: int, seed: int, quota: int) -> dict[str, Any]:
    """Recall@10 and @`quota` of the ANN retriever's index against exact search (same prepared
    vectors, no exclusions) for a sample of users, and milliseconds per query (one at a time) of
    what a request asks: k = quota + 30 (the seen items it skips)."""
    ann = next(r for r in built.funnel.retrievers if r.name == "ann")
    model = ann.model
    users = np.random.default_rng(seed).choice(data.dataset.n_users, n_queries, replace=False)
    with torch.no_grad():
        queries = model.user_vectors(torch.from_numpy(users)).float().numpy()
    exact = index_from_model(model, "exact")
    out: dict[str, Any] = {"queries": int(n_queries), "ef_search": ann.index.params.ef_search}
    for k in sorted({10, quota}):
        truth, _ = exact.search(queries, k)
        found, _ = ann.index.search(queries, k)
        out[f"recall@{k}"] = float(recall_at_k(found, truth, k))
    t0 = time.perf_counter()
    for q in queries[:200]:
        ann.index.search(q[None, :], quota + 30)
    out["ms_per_query"] = (time.perf_counter() - t0) * 1000 / min(200, len(queries))
    out["ms_per_query_k"] = quota + 30
    return out


def build_synthetic_bundle(
    spec: SyntheticSpec, cache: str | Path, *, log: Log | None = None, progress: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The bundle of `spec` under `cache` (built unless already there) -> (bundle path, info).

    Steps (each timed and logged): draw the data, save the MF artifact, build the funnel (HNSW
    index, ranker rows mined from the ANN, DeepFM training), save the bundle, measure the index's
    recall. ``info.json`` beside the bundle records the seconds, the recall and the sizes."""
    say: Log = log or (lambda _m: None)
    folder = Path(cache) / f"{spec.name}-{spec.key()}"
    bundle, info_path = folder / "bundle", folder / "info.json"
    if info_path.is_file() and (bundle / "bundle.json").is_file():
        info = json.loads(info_path.read_text("utf-8"))
        say(f"{spec.name}: cached bundle {bundle} (built in {info['seconds']['total']:.0f} s)")
        return bundle, info
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = t0 = time.perf_counter()
    data = synthetic_dataset(spec)
    ds = data.dataset
    seconds["data"] = time.perf_counter() - t0
    say(
        f"{spec.name}: data {ds.n_users:,} users, {ds.n_items:,} items, {len(ds.interactions):,} "
        f"interactions in {seconds['data']:.1f} s"
    )
    t0 = time.perf_counter()
    artifact = _mf_artifact(data, folder / "mf")
    seconds["mf_artifact"] = time.perf_counter() - t0
    say(f"{spec.name}: MF artifact (vectors set, not trained) in {seconds['mf_artifact']:.1f} s")
    cfg = funnel_config(spec, artifact, progress)
    reused = _cached_index(spec, Path(cache))
    if reused is not None:
        say(f"{spec.name}: reusing the HNSW index of {reused[1]} (same vectors and graph settings)")
    say(
        f"{spec.name}: building the funnel (HNSW m={spec.hnsw_m} ef_construction="
        f"{spec.hnsw_ef_construction} over {ds.n_items:,} x {spec.dim}, then the ranker)"
    )
    t0 = time.perf_counter()
    built = build_funnel(
        cfg,
        ds,
        data.split,
        evaluate=False,
        log=lambda m: say(f"{spec.name}: {m}"),
        indexes={"ann": reused[0]} if reused is not None else None,
    )
    seconds.update({f"funnel.{k}": v for k, v in built.seconds.items()})
    seconds["funnel"] = time.perf_counter() - t0
    say(
        f"{spec.name}: funnel built in {seconds['funnel']:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in built.seconds.items())
        + ")"
    )
    t0 = time.perf_counter()
    save_bundle(built, bundle)
    seconds["save_bundle"] = time.perf_counter() - t0
    say(f"{spec.name}: bundle saved to {bundle} in {seconds['save_bundle']:.1f} s")
    t0 = time.perf_counter()
    recall = _recall(built, data, min(spec.recall_queries, ds.n_users), spec.seed, spec.ann_quota)
    seconds["recall"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    say(
        f"{spec.name}: HNSW ef_search={recall['ef_search']}: recall@10 {recall['recall@10']:.4f}, "
        f"recall@{spec.ann_quota} {recall[f'recall@{spec.ann_quota}']:.4f} against exact search "
        f"({recall['queries']} users); {recall['ms_per_query']:.2f} ms per single query of "
        f"k={recall['ms_per_query_k']}"
    )
    ranker = built.ranker_model
    info = {
        "name": spec.name,
        "spec": dataclasses.asdict(spec),
        "seconds": seconds,
        "recall": recall,
        "n_items": ds.n_items,
        "n_users": ds.n_users,
        "n_interactions": len(ds.interactions),
        "ranker_params": int(sum(p.numel() for p in ranker.parameters())) if ranker is not None else None,
        "index_mb": built.funnel.retrievers[0].index.nbytes / 1e6,
        "index_key": index_key(dataclasses.asdict(spec)),
        "index_reused_from": str(reused[1]) if reused is not None else None,
    }
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    return bundle, info
