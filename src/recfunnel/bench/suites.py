"""The benchmark suites: fixed, named model line-ups whose configs, timings and metrics land in JSON rows.

A suite is a function ``(quick, data_root, progress, models, isolate, threads) -> list[dict]`` registered in
:data:`SUITES`; :func:`run_suite` dispatches by name. Every suite fits through
:func:`recfunnel.run.fit`; every row is one (model, protocol) pair following
:data:`recfunnel.bench.rows.ROW_CONTRACT`::

    {suite, model, dataset, protocol, split, seed, metrics: {"hr@5": ..., "ndcg@10": ...},
     train_seconds, eval_seconds, peak_rss_mb, params, config, ...extra keys of the suite}

The suites: ``ncf-ml100k`` (:mod:`recfunnel.bench.ncf`, where the timing and memory rules are
written), ``ctr-ml100k`` (:mod:`~recfunnel.bench.ctr`), ``retrieval-ml100k``
(:mod:`~recfunnel.bench.retrieval`), ``seq-video`` / ``seq-ml100k`` / ``session-diginetica``
(:mod:`~recfunnel.bench.seq`), ``ann`` (:mod:`~recfunnel.bench.ann`), ``optim``
(:mod:`~recfunnel.bench.optim`) and ``serve-latency`` (:mod:`~recfunnel.bench.serve_latency`: the
HTTP service under load).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from recfunnel.bench.ncf import run_ncf_suite
from recfunnel.bench.rows import (
    ROW_CONTRACT,
    aggregate_seeds,
    machine_info,
    merged_with_file,
    write_json,
)

__all__ = [
    "ROW_CONTRACT",
    "SUITES",
    "aggregate_seeds",
    "machine_info",
    "merged_with_file",
    "run_suite",
    "write_json",
]


def _lazy(module: str, attr: str, key: str | None = None) -> Callable[..., list[dict]]:
    """A suite living in another module, imported only when run (so that listing the suites or
    running one does not import every suite's dependencies); `key`: the suite is `attr[key]` (a
    dict of suites in that module)."""

    def run(**kwargs):
        import importlib

        fn = getattr(importlib.import_module(module), attr)
        if key is not None:
            fn = fn[key]
        accepted = inspect.signature(fn).parameters
        if kwargs.get("seeds") is not None and "seeds" not in accepted:
            raise ValueError(f"suite {key or attr} does not take seeds")
        return fn(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})

    run.__doc__ = f"suite from {module}.{attr}"
    run.lazy = True  # type: ignore[attr-defined]
    return run


def _is_lazy(fn: Callable[..., list[dict]]) -> bool:
    return bool(getattr(fn, "lazy", False))


SUITES: dict[str, Callable[..., list[dict]]] = {
    "ncf-ml100k": run_ncf_suite,
    "ctr-ml100k": _lazy("recfunnel.bench.ctr", "run_ctr_suite"),
    "ctr-deepctr": _lazy("recfunnel.bench.ctr_peer", "run_ctr_peer_suite"),
    "ann": _lazy("recfunnel.bench.ann", "run_ann_suite"),
    "retrieval-ml100k": _lazy("recfunnel.bench.retrieval", "run_retrieval_suite"),
    "ae-ml100k": _lazy("recfunnel.bench.ae", "run_ae_suite"),
    "implicit-weights": _lazy("recfunnel.bench.implicit_weights", "run_implicit_weights_suite"),
    "funnel-ml100k": _lazy("recfunnel.bench.funnel", "run_funnel_suite"),
    "optim": _lazy("recfunnel.bench.optim", "run_optim_suite"),
    "serve-latency": _lazy("recfunnel.bench.serve_latency", "run_serve_latency_suite"),
    "milvus-server": _lazy("recfunnel.bench.milvus_server", "run"),
    "out-of-core": _lazy("recfunnel.bench.out_of_core", "run"),
    "ease-memory": _lazy("recfunnel.bench.ease_memory", "run"),
    **{
        n: _lazy("recfunnel.bench.seq", "SEQ_SUITES", n)
        for n in ("seq-video", "seq-ml100k", "session-diginetica")
    },
}


def run_suite(
    name: str,
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    *,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    threads: int | None = 1,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Run the suite `name` and return its rows (see the module docstring for the row keys).

    `quick`: a CI-sized run (1-2 epochs per model), rows marked ``"quick": true``.
    `models`: run only these model labels of the suite. `isolate`: one fresh Python subprocess per model
    (per-model peak RSS); default True for full runs, False for quick ones. `threads`: torch intra-op
    threads (and implicit's threads) while a model runs; None keeps torch's default. The default 1
    is deliberate: these models are too small to gain from intra-op parallelism, and on a shared
    machine two OpenMP threads per process oversubscribe the cores and run up to 100x slower."""
    try:
        fn = SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; valid: {', '.join(sorted(SUITES))}") from None
    extra = {} if seeds is None else {"seeds": tuple(seeds)}
    if seeds is not None and "seeds" not in inspect.signature(fn).parameters and not _is_lazy(fn):
        raise ValueError(f"suite {name} does not take seeds")
    return fn(
        quick=quick,
        data_root=data_root,
        progress=progress,
        models=models,
        isolate=isolate,
        threads=threads,
        **extra,
    )
