"""The ``ann`` suite: each index backend against exact search, on synthetic and on model vectors.

For every vector set (1M synthetic clustered 64-d vectors; trained model item vectors, by default
MF-BPR and the logQ two-tower of ``retrieval-ml100k`` on MovieLens-100K) and every backend, one row
per value of its search parameter (HNSW
``ef_search``, IVF ``nprobe``)::

    {suite: "ann", model: <backend>, backend, dataset, params, search_param, default,
     metrics: {"recall@10", "recall@100", "qps_1t", "qps_2t", "qps_1t_k100"},
     widened_queries: {"k10", "k100"}, served: {...},
     speedup_1t, speedup_2t, build_seconds, build_threads, index_mb, n_items, dim, n_queries, ...}

Measurement rules:

* Every figure in ``metrics`` is measured at the row's ``search_param`` and nothing else: one search
  pass with ``search(..., widen=False)``, so a query whose probed cells hold fewer than k items (IVF
  with a small ``nprobe`` on a small catalogue) comes back short and its empty places count as misses.
  Recall is then non-decreasing in the effort (IVF-Flat by construction: more cells probed, exact
  scores; tested with IVF-PQ and HNSW in tests/index/test_recall_monotone.py).
* Ground truth is :class:`~recfunnel.index.ExactIndex` (torch matmul + topk) on the same prepared
  vectors; recall@K = |ANN top-K ∩ exact top-K| / K, averaged over queries. recall@10 comes from a
  k=10 search, recall@100 from a k=100 search (HNSW explores max(ef_search, k) candidates).
* Queries per second: the whole query set submitted as one batch (what a batch of users asking at once
  looks like, and the setting most favourable to exact search's matmul), k=10, with 1 and with 2
  threads (torch and OpenMP), median of ``repeats`` runs. Exact search is timed in the same run and
  process, just before the backends: ``speedup_*`` = backend QPS / exact QPS. On a machine shared
  with other work the 2-thread numbers mean little (``load_average_*`` are in every row).
* ``widened_queries`` and ``served``: what a caller of ``search()`` gets by default, where the short
  queries are searched again wider (IVF nprobe x4, HNSW ef x2 per round) and merged with their first
  pass. ``widened_queries``: how many queries that fired for (k=10, k=100); ``served``: recall@10 and
  recall@100 of those default searches, and per k the ``<param>_used`` (min / mean / max over queries)
  the results actually came from. Until 2026-11 the rows held these served recalls under
  ``metrics`` labelled with the configured value, so on ml-100k (41 cells of ~41 items) IVF nprobe 1
  and 2 at k=100 showed the recall of nprobe 4 and 8, and recall looked non-monotone in nprobe.
* ``build_seconds``: wall time of build() (k-means training included) with ``build_threads`` threads.
* ``index_mb``: bytes of the search structure (vectors / graph / codes; faiss.serialize_index size),
  the int64 id mapping (8 bytes per item, the same for every backend) excluded.

Run: ``python -m recfunnel.bench.ann [--quick] [--sets synthetic mf two-tower] [--out FILE]``
(full runs default to bench/results/ann.json);
with ``--sets`` naming fewer than all sets, rows of the other sets already in ``--out`` are kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.index import INDEXES, ExactIndex, Index, model_item_vectors, recall_at_k

__all__ = [
    "SWEEPS",
    "BUILD_PARAMS",
    "VectorSet",
    "synthetic_clusters",
    "mf_vectors",
    "two_tower_vectors",
    "run_ann_suite",
]

#: backend -> (search parameter, values swept)
SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "hnsw": ("ef_search", (16, 32, 64, 128, 256, 512)),
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128)),
    "ivfpq": ("nprobe", (1, 4, 16, 64)),
    "milvus": ("ef_search", (32, 128, 512)),  # its default index type is HNSW
}
QUICK_SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "hnsw": ("ef_search", (32, 128)),
    "ivf": ("nprobe", (4, 16)),
    "ivfpq": ("nprobe", (16,)),
    "milvus": ("ef_search", (128,)),
}
#: backends run only when named: milvus-lite (the test stand-in for a Milvus server) searches
#: brute force for several index types and costs ~35 ms a query at 100k vectors, not a speed figure
NOT_DEFAULT = ("milvus",)
#: build-time parameters per backend (the rest are the backend defaults)
BUILD_PARAMS: dict[str, dict[str, Any]] = {"hnsw": {}, "ivf": {}, "ivfpq": {}, "milvus": {}}
#: builds run single-threaded: on the shared 2-core machine OpenMP with 2 threads built slower
#: (HNSW 50k: 14 s vs 8 s; IVF-PQ: 26 s vs 9 s) because the other thread waits on busy cores
BUILD_THREADS = 1
DEFAULT_REPO_OUT = Path(__file__).resolve().parents[3] / "bench" / "results" / "ann.json"


@dataclass(frozen=True)
class VectorSet:
    """Item vectors to index and the queries to ask (with how the index should treat them)."""

    name: str  # the rows' "dataset"
    items: np.ndarray  # [n, d]
    queries: np.ndarray  # [q, d]
    bias: np.ndarray | None = None  # [n] item bias -> exact MIPS (normalize must be False)
    normalize: bool = True
    note: str = ""


def synthetic_clusters(
    n: int, dim: int = 64, clusters: int = 1000, n_queries: int = 1000, spread: float = 0.5, seed: int = 0
) -> VectorSet:
    """`n` vectors from a mixture of `clusters` Gaussians (centres ~ N(0, I), each point centre +
    `spread` * N(0, I), uneven cluster sizes from Dirichlet(1) weights), and `n_queries` fresh draws
    from the same mixture as queries. Seeded; indexed as cosine (normalised).

    Caveat: IVF's default nlist ~ sqrt(n) is 1000 at 1M, as many cells as the mixture has clusters,
    so this set flatters IVF; HNSW does not depend on it."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    weights = rng.dirichlet(np.ones(clusters))

    def draw(m: int) -> np.ndarray:
        which = rng.choice(clusters, size=m, p=weights)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x *= spread
        x += centres[which]
        return x

    items, queries = draw(n), draw(n_queries)
    label = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return VectorSet(
        name=f"synthetic-{label}-{dim}d",
        items=items,
        queries=queries,
        note=f"{clusters} Gaussian clusters (spread {spread}), Dirichlet(1) sizes, seed {seed}; cosine",
    )


def mf_vectors(data_root: Any = None, quick: bool = False, progress: bool = False) -> VectorSet | None:
    """MF-BPR (the ncf-ml100k suite's settings) trained on ml-100k leave-one-out: item vectors + bias
    as the index holds them for the model's own score, every user's vector as a query. None when
    ml-100k is absent."""
    from recfunnel.run import DataConfig, ModelSection, ObjectiveSection, RunConfig, TrainConfig, fit
    from recfunnel.settings import dataset_dir

    try:
        dataset_dir("ml-100k", data_root)
    except FileNotFoundError:
        return None
    epochs = 1 if quick else 10
    cfg = RunConfig(
        data=DataConfig(dataset="ml-100k", data_root=data_root),  # leave-one-out, 99 negatives
        model=ModelSection(name="mf", params={"factors": 64}),
        objective=ObjectiveSection(name="bpr", params={"reg": 1e-3}),
        train=TrainConfig(
            epochs=epochs, batch_size=1024, lr=0.01, optimizer="adam", patience=0, progress=progress
        ),
    )
    res = fit(cfg, evaluate=False)
    note = f"MF-BPR factors 64, {epochs} epochs; the model's score <u,v>+b (bias column, not normalised)"
    return _model_set("ml-100k MF-BPR", res.model, res.dataset.n_users, note)


def _model_set(name: str, model: Any, n_users: int, note: str) -> VectorSet:
    """A trained factorised model's item vectors (+ bias) as the index holds them for the model's
    own score, and every user's vector as a query."""
    model.eval()
    items, bias, normalize = model_item_vectors(model, "model")
    with torch.no_grad():
        users = model.user_vectors(torch.arange(n_users)).float().numpy()
    return VectorSet(name=name, items=items, queries=users, bias=bias, normalize=normalize, note=note)


def two_tower_vectors(data_root: Any = None, quick: bool = False, progress: bool = False) -> VectorSet | None:
    """The ``TwoTower-logQ`` model of the retrieval-ml100k suite (same config, ml-100k leave-one-out,
    early stopping on the valid part): its unit-norm item vectors, every user's vector as a query
    (cosine, as the model scores). None when ml-100k is absent."""
    from recfunnel.bench.retrieval import warm_config
    from recfunnel.run import fit
    from recfunnel.settings import dataset_dir

    try:
        dataset_dir("ml-100k", data_root)
    except FileNotFoundError:
        return None
    res = fit(warm_config("TwoTower-logQ", 0, quick, progress, data_root), evaluate=False)
    epochs = len(res.report.history) if res.report is not None else 0
    note = f"retrieval-ml100k TwoTower-logQ ({epochs} epochs, best valid epoch kept); unit norm, cosine"
    return _model_set("ml-100k TwoTower-logQ", res.model, res.dataset.n_users, note)


#: model vector sets by --sets name (the synthetic set is built in run_ann_suite)
MODEL_SETS: dict[str, Callable[..., VectorSet | None]] = {"mf": mf_vectors, "two-tower": two_tower_vectors}
SET_NAMES = ("synthetic", *MODEL_SETS)


def _as_vector_set(name: str, value: Any) -> VectorSet:
    if isinstance(value, VectorSet):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        items, queries = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in value)
        return VectorSet(name, items.astype(np.float32), queries.astype(np.float32), note="given vectors")
    raise TypeError(f"vectors[{name!r}] must be a VectorSet or an (items, queries) pair of arrays")


def _median_qps(index: Index, queries: np.ndarray, k: int, threads: int, repeats: int) -> float:
    """Queries per second of one batch search at the configured effort (no widening pass)."""
    index.threads = threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        index.search(queries, k, widen=False)
        times.append(time.perf_counter() - t0)
    index.threads = None
    return len(queries) / statistics.median(times)


def _served(
    index: Index, queries: np.ndarray, truths: Mapping[int, np.ndarray], pname: str
) -> dict[str, Any]:
    """Recall of the default search() (short queries widened) per k, how many queries were widened,
    and the search-parameter value the results actually came from (min / mean / max over queries)."""
    out: dict[str, Any] = {"widened_queries": {}}
    for k, truth in truths.items():
        found, _ = index.search(queries, k)
        out[f"recall@{k}"] = recall_at_k(found, truth, k)
        out["widened_queries"][f"k{k}"] = index.last_widened
        used = index.last_effort
        if used is not None and len(used):
            out[f"{pname}_used@{k}"] = {
                "min": int(used.min()),
                "mean": float(used.mean()),
                "max": int(used.max()),
            }
    return out


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[ann {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run_set(
    vs: VectorSet,
    backends: Sequence[str],
    sweeps: Mapping[str, tuple[str, tuple[int, ...]]],
    repeats: int,
    build_threads: int,
    progress: bool,
    base: dict[str, Any],
) -> list[dict]:
    rows: list[dict] = []
    n, dim = vs.items.shape
    common = {
        **base,
        "dataset": vs.name,
        "vectors_note": vs.note,
        "n_items": int(n),
        "dim": int(dim),
        "n_queries": int(len(vs.queries)),
        "normalize": vs.normalize,
        "item_bias": vs.bias is not None,
    }

    def make(name: str, **params: Any) -> tuple[Index, float]:
        index = INDEXES[name](normalize=vs.normalize, threads=build_threads, **params)
        t0 = time.perf_counter()
        index.build(vs.items, bias=vs.bias)
        return index, time.perf_counter() - t0

    exact, exact_build = make("exact")
    assert isinstance(exact, ExactIndex)
    truth10, _ = exact.search(vs.queries, 10)
    truth100, _ = exact.search(vs.queries, 100)
    exact_qps = {
        "qps_1t": _median_qps(exact, vs.queries, 10, 1, repeats),
        "qps_2t": _median_qps(exact, vs.queries, 10, 2, repeats),
        "qps_1t_k100": _median_qps(exact, vs.queries, 100, 1, repeats),
    }
    _log(
        progress, f"{vs.name}: exact {exact_qps['qps_1t']:.0f} q/s (1 thread), {exact_qps['qps_2t']:.0f} (2)"
    )
    rows.append(
        {
            **common,
            "model": "exact",
            "backend": "exact",
            "params": exact.params.model_dump(),
            "search_param": None,
            "default": True,
            "metrics": {"recall@10": 1.0, "recall@100": 1.0, **exact_qps},
            "speedup_1t": 1.0,
            "speedup_2t": 1.0,
            "build_seconds": exact_build,
            "build_threads": build_threads,
            "index_mb": exact.nbytes / 2**20,
        }
    )
    del exact
    for name in backends:
        if name == "exact":
            continue
        pname, values = sweeps[name]
        try:
            index, build_s = make(name, **BUILD_PARAMS.get(name, {}))
        except ValueError as exc:  # e.g. too few vectors for IVF-PQ's codebooks
            _log(progress, f"{vs.name}: {name} skipped: {exc}")
            continue
        default = INDEXES[name].Params.model_fields[pname].default
        mb = index.nbytes / 2**20
        _log(progress, f"{vs.name}: {name} built in {build_s:.1f}s ({mb:.0f} MB) {index.params}")
        for value in values:
            index.set_params(**{pname: value})
            served = _served(index, vs.queries, {10: truth10, 100: truth100}, pname)
            metrics = {
                "recall@10": recall_at_k(index.search(vs.queries, 10, widen=False)[0], truth10, 10),
                "recall@100": recall_at_k(index.search(vs.queries, 100, widen=False)[0], truth100, 100),
                "qps_1t": _median_qps(index, vs.queries, 10, 1, repeats),
                "qps_2t": _median_qps(index, vs.queries, 10, 2, repeats),
                "qps_1t_k100": _median_qps(index, vs.queries, 100, 1, repeats),
            }
            rows.append(
                {
                    **common,
                    "model": name,
                    "backend": name,
                    "params": index.params.model_dump(),
                    "search_param": {pname: value},
                    "default": value == default,
                    "metrics": metrics,
                    "widened_queries": served.pop("widened_queries"),
                    "served": served,
                    "speedup_1t": metrics["qps_1t"] / exact_qps["qps_1t"],
                    "speedup_2t": metrics["qps_2t"] / exact_qps["qps_2t"],
                    "build_seconds": build_s,
                    "build_threads": build_threads,
                    "index_mb": mb,
                }
            )
            _log(
                progress,
                f"{vs.name}: {name} {pname}={value}: recall@10 {metrics['recall@10']:.3f} "
                f"@100 {metrics['recall@100']:.3f}, {metrics['qps_1t']:.0f} q/s 1t "
                f"({rows[-1]['speedup_1t']:.1f}x exact), {metrics['qps_2t']:.0f} q/s 2t; served "
                f"(widened {rows[-1]['widened_queries']}): recall@10 {served['recall@10']:.3f} "
                f"@100 {served['recall@100']:.3f}",
            )
        del index
    return rows


def run_ann_suite(
    quick: bool = False,
    data_root: Any = None,
    progress: bool = True,
    vectors: Mapping[str, VectorSet | tuple[Any, Any]] | None = None,
    *,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    synthetic_size: int | None = None,
    repeats: int | None = None,
    out: str | os.PathLike[str] | None = None,
    sets: Sequence[str] | None = None,
) -> list[dict]:
    """Run the ``ann`` suite and return its rows (see the module docstring).

    Args:
        quick: 50k synthetic vectors, 200 queries, two values per sweep, one timing run, no model
            training (model vectors only when `vectors` is given).
        data_root: where ml-100k is found (for the default model vectors).
        vectors: model vector sets by name (a VectorSet, or an (item vectors, query vectors) pair,
            indexed as cosine); None: the `sets` (full runs); {}: synthetic only.
        sets: which of ``SET_NAMES`` to run when `vectors` is None (default all; quick runs train no
            model); with fewer than all and `out` an existing file, that file's rows of the other
            sets are kept.
        models: backends to run (exact always runs: it is the reference); default all but
            ``NOT_DEFAULT`` (milvus).
        isolate: accepted for the suite signature; the suite runs in this process.
        synthetic_size: override the synthetic set's size (1,000,000; quick 50,000).
        repeats: timing runs per measurement, the median kept (default 3; quick 1).
        out: also write the rows as JSON here (atomically).
    """
    from recfunnel.bench.rows import machine_info, merged_with_file, write_json

    del isolate
    backends = (
        list(models) if models is not None else [b for b in INDEXES if b not in ("exact", *NOT_DEFAULT)]
    )
    unknown = set(backends) - set(INDEXES)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)} in suite ann; valid: {', '.join(INDEXES)}")
    sweeps = QUICK_SWEEPS if quick else SWEEPS
    repeats = repeats or (1 if quick else 3)
    n = synthetic_size or (50_000 if quick else 1_000_000)
    base = {
        "suite": "ann",
        "protocol": "recall vs exact, one batch of queries",
        "quick": quick,
        "repeats": repeats,
        "machine": machine_info(),
        "load_average_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    wanted = list(SET_NAMES if sets is None else sets)
    bad = set(wanted) - set(SET_NAMES)
    if bad:
        raise ValueError(f"unknown vector set(s) {sorted(bad)}; valid: {', '.join(SET_NAMES)}")
    makers: list[Callable[[], VectorSet | None]] = []
    if "synthetic" in wanted:
        makers.append(lambda: synthetic_clusters(n, n_queries=200 if quick else 1000))
    if vectors is None and not quick:
        makers += [
            lambda f=MODEL_SETS[name]: f(data_root, progress=progress)
            for name in wanted
            if name in MODEL_SETS
        ]
    elif vectors is not None:
        makers += [lambda name=name, v=v: _as_vector_set(name, v) for name, v in vectors.items()]
    rows: list[dict] = []
    t0 = time.perf_counter()
    for make_set in makers:
        vs = make_set()
        if vs is None:
            _log(progress, "ml-100k not found: model vectors skipped")
            continue
        rows += _run_set(vs, backends, sweeps, repeats, BUILD_THREADS, progress, base)
    for r in rows:
        r["suite_seconds"] = time.perf_counter() - t0
        r["load_average_end"] = os.getloadavg()[0]
    if out is not None:
        if sets is not None and set(wanted) != set(SET_NAMES):
            ours = {r["dataset"] for r in rows}
            rows_out = merged_with_file(rows, out, lambda r: r.get("dataset") in ours)
        else:
            rows_out = rows
        write_json(rows_out, out)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recfunnel.bench.ann", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k vectors, short sweeps, < 30 s")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"JSON rows (full run default: {DEFAULT_REPO_OUT})"
    )
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--backends", nargs="*", default=None, help=f"subset of {list(INDEXES)}")
    parser.add_argument("--size", type=int, default=None, help="synthetic set size")
    parser.add_argument(
        "--sets", nargs="*", default=None, choices=SET_NAMES, help="vector sets to run (default all)"
    )
    args = parser.parse_args(argv)
    out = args.out or (None if args.quick else DEFAULT_REPO_OUT)
    rows = run_ann_suite(
        args.quick,
        args.data_root,
        True,
        models=args.backends,
        synthetic_size=args.size,
        out=out,
        sets=args.sets,
    )
    if out:
        print(f"{len(rows)} rows written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
