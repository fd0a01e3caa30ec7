"""The catalogues the ``serve-latency`` suite serves (:mod:`recfunnel.bench.serve_latency`) and
what is checked about them besides speed: the MovieLens-100K bundle of
``examples/funnel-ml100k.toml`` and the synthetic ones of :mod:`recfunnel.bench.synthetic_bundle`
(built once and cached), the request bodies drawn from a bundle's serving log, and how the ranker's
bf16 serving precision agrees with fp32.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recfunnel.atomic import atomic_write_text
from recfunnel.bench.synthetic_bundle import MILLION, TINY, build_synthetic_bundle
from recfunnel.data.store import read_dataset
from recfunnel.errors import RecfunnelError
from recfunnel.funnel.bundle import load_bundle, read_bundle_manifest
from recfunnel.funnel.config import FunnelConfig
from recfunnel.funnel.evaluate import evaluate_funnel
from recfunnel.funnel.ranker import ScorerRanker
from recfunnel.run import load_data, load_split

__all__ = [
    "CATALOGUES",
    "DEFAULT_CACHE",
    "QUICK_CATALOGUES",
    "bf16_agreement",
    "catalogue_bundle",
    "ml100k_bundle",
    "request_bodies",
]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "funnel-ml100k.toml"
DEFAULT_CACHE = REPO / "bench" / "cache"
CATALOGUES = ("ml-100k", "synthetic-1M")
QUICK_CATALOGUES = ("synthetic-2k",)
Log = Callable[[str], None]


def ml100k_bundle(cache: Path, data_root: Any, log: Log, progress: bool) -> tuple[Path, dict[str, Any]]:
    """The bundle of ``examples/funnel-ml100k.toml`` (built once per example text and data root)."""
    from recfunnel.funnel.build import build_funnel
    from recfunnel.funnel.bundle import save_bundle
    from recfunnel.funnel.config import FunnelConfig

    key = hashlib.sha256(EXAMPLE.read_bytes() + str(data_root).encode()).hexdigest()[:10]
    folder = cache / f"ml-100k-{key}"
    bundle, info_path = folder / "bundle", folder / "info.json"
    if info_path.is_file() and (bundle / "bundle.json").is_file():
        log(f"ml-100k: cached bundle {bundle}")
        return bundle, json.loads(info_path.read_text("utf-8"))
    over = {"data": {"data_root": str(data_root)}} if data_root is not None else None
    cfg = FunnelConfig.from_toml(EXAMPLE, over)
    cfg = cfg if progress else cfg.without_progress()
    log(f"ml-100k: building {EXAMPLE.name} (two-tower, HNSW, DeepFM)")
    t0 = time.perf_counter()
    built = build_funnel(cfg, evaluate=False, log=lambda m: log(f"ml-100k: {m}"))
    save_bundle(built, bundle)
    info = {"name": "ml-100k", "seconds": {**built.seconds, "total": time.perf_counter() - t0}}
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    log(f"ml-100k: bundle saved to {bundle} in {info['seconds']['total']:.0f} s")
    return bundle, info


def catalogue_bundle(name: str, cache: Path, data_root: Any, log: Log, progress: bool) -> tuple[Path, dict]:
    """The bundle of catalogue `name` under `cache` (built unless cached) -> (path, info)."""
    if name == "ml-100k":
        return ml100k_bundle(cache, data_root, log, progress)
    spec = {"synthetic-1M": MILLION, "synthetic-2k": TINY}[name]
    return build_synthetic_bundle(spec, cache, log=log, progress=progress)


def request_bodies(bundle: Path, n: int = 4000, seed: int = 0) -> dict[str, list[str]]:
    """JSON bodies drawn from the bundle's serving log: ``/recommend`` for known users (90%) and
    anonymous visitors with 3-5 recent items (10%), k=10; ``/events``: one event of a known user."""
    ds = read_dataset(bundle / "data")
    rng = np.random.default_rng(seed)
    users, items = ds.users.ids, ds.items.ids
    logged = np.asarray(ds.interactions.item)
    rec = []
    for _ in range(n):
        if rng.random() < 0.9:
            rec.append({"user_id": users[int(rng.integers(len(users)))], "k": 10})
        else:
            recent = logged[rng.integers(0, len(logged), int(rng.integers(3, 6)))]
            rec.append({"recent_items": [items[int(i)] for i in recent], "k": 10})
    events = [
        {"events": [{"user": users[int(rng.integers(len(users)))], "item": items[int(logged[j])]}]}
        for j in rng.integers(0, len(logged), n)
    ]
    return {"/recommend": [json.dumps(b) for b in rec], "/events": [json.dumps(b) for b in events]}


def bf16_agreement(bundle: Path, data_root: Any = None, n_users: int = 300, seed: int = 0) -> dict | None:
    """The ranker in fp32 against bf16 on one bundle: the top-10 of `n_users` stored users (mean
    overlap, share of lists in the same order) and, where the bundle's data can be read (not a
    synthetic catalogue), the funnel's test NDCG@10 / Recall@10 with each. None when the bundle has
    no trained ranker."""
    a = load_bundle(bundle, mmap=True, ranker_precision="fp32").funnel
    if not isinstance(a.ranker, ScorerRanker):
        return None
    b = load_bundle(bundle, mmap=True, ranker_precision="bf16").funnel
    ids = a.user_vocab.ids if a.user_vocab is not None else []
    pick = np.random.default_rng(seed).choice(len(ids), min(n_users, len(ids)), replace=False)
    users = [ids[i] for i in pick]
    overlap, same = [], []
    for start in range(0, len(users), 50):
        chunk = users[start : start + 50]
        x = a.recommend(users=chunk, k=10).items  # at one second after the last logged event
        y = b.recommend(users=chunk, k=10).items
        overlap += [len(set(p) & set(q)) / 10 for p, q in zip(x.tolist(), y.tolist(), strict=True)]
        same += [p == q for p, q in zip(x.tolist(), y.tolist(), strict=True)]
    out: dict[str, Any] = {
        "users": len(users),
        "top10_overlap": float(np.mean(overlap)),
        "same_order": float(np.mean(same)),
    }
    cfg = FunnelConfig.model_validate(read_bundle_manifest(bundle, verify=False)["config"])
    try:
        data = cfg.data if data_root is None else cfg.data.model_copy(update={"data_root": Path(data_root)})
        ds = load_data(data)
        split = load_split(cfg.split, ds)
    except (RecfunnelError, OSError, ValueError):  # a synthetic catalogue: no files to read
        return out
    for name, funnel in (("fp32", a), ("bf16", b)):
        metrics = evaluate_funnel(funnel, ds, split, "test", ks=(10,), candidate_ks=()).metrics
        out[f"test_ndcg@10_{name}"] = metrics["ndcg@10"]
        out[f"test_recall@10_{name}"] = metrics["recall@10"]
    return out
