"""Benchmark suite ``implicit-weights``: a play-count dataset read through the generic table reader
(:func:`recfunnel.data.readers.read_table`) with a per-user random 20% test holdout (the ``ratio``
split 70/10/20, seed 0; the 10% valid part for early stopping and tuning), K in 10/20/50 (Recall@20 and
NDCG@20 the headline): iALS on the play counts (``data.values = "weight"``) vs binary iALS vs EASE vs
MF-BPR, and the `implicit` library's CPU ALS fitted on the same train matrix with the same confidence,
factors, iterations and regularisation, its fit time set beside ours as a ratio (``comparison``).
The data: ``<data root>/play-counts/mapping.toml`` when present (a
:class:`~recfunnel.data.schema.ColumnMapping` whose ``path`` is read against that folder; it must name
a ``weight`` column), else a synthetic file written to a temporary CSV by
:func:`synthetic_play_counts` (the rows' ``data_source`` says which).

Rows follow :data:`recfunnel.bench.rows.ROW_CONTRACT`; every model is fitted by
:func:`recfunnel.run.fit` (implicit's ALS apart), with the entries and fitting of
:mod:`recfunnel.bench.ae`. Threads: torch and implicit (and BLAS inside it) pinned to `threads`
(default 1) while a model fits.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from recfunnel.bench.ae import KS, MF_BPR, Entry, entry_rows, fit_rows, pinned_threads, select_entries
from recfunnel.bench.rows import aggregate_seeds
from recfunnel.data.schema import ColumnMapping
from recfunnel.run import DataConfig, SplitConfig, evaluate_model, load_data, load_split
from recfunnel.settings import data_root as resolve_data_root

__all__ = ["WEIGHT_ENTRIES", "play_count_data", "run_implicit_weights_suite", "synthetic_play_counts"]


# Chosen on the valid part (NDCG@20, seed 0, CG solves). Weights: log confidence (eps 1) alpha 1 / reg 1
# 0.0609, reg 10 0.0644, reg 30 0.0758, reg 100 0.0318, alpha 3 0.0608, alpha 10 0.0493; linear alpha 0.1 /
# reg 1 0.0667, alpha 0.1 / reg 10 0.0713, alpha 1 / reg 1 0.0673, alpha 0.3 / reg 1, 10, 30, 60, 100: 0.0713,
# 0.0746, 0.0792, 0.0834, 0.0762. Binary: alpha 1 / reg 1, 10, 30, 60: 0.0463, 0.0497, 0.0642, 0.0317;
# alpha 3 / reg 1 0.0479, alpha 0.3 / reg 10 0.0499, alpha 10 / reg 10 0.0476. EASE l2 100, 250, 1000, 3000:
# 0.0561, 0.0609, 0.0590, 0.0514.
_IALS_WEIGHTS = {"factors": 64, "reg": 60.0, "alpha": 0.3, "confidence": "linear", "iterations": 15}
_TUNED = "alpha, reg and the confidence chosen on the valid part"
WEIGHT_ENTRIES: dict[str, Entry] = {
    "iALS-weights": Entry("ials", _IALS_WEIGHTS, values="weight", note=_TUNED),
    "iALS-weights-cg": Entry(
        "ials", dict(_IALS_WEIGHTS, solver="cg", cg_steps=3), values="weight", note=_TUNED + "; CG solves"
    ),
    "iALS-binary": Entry(
        "ials",
        {"factors": 64, "reg": 30.0, "alpha": 1.0, "iterations": 15},
        note="alpha, reg chosen on valid",
    ),
    "implicit-ALS-weights": Entry(
        "implicit-als", dict(_IALS_WEIGHTS, use_cg=False), values="weight", note="as iALS-weights"
    ),
    "implicit-ALS-weights-cg": Entry(
        "implicit-als", dict(_IALS_WEIGHTS, use_cg=True), values="weight", note="as iALS-weights-cg"
    ),
    "EASE": Entry("ease", {"l2": 250.0}, note="l2 chosen on the valid part"),
    "MF-BPR": MF_BPR,
}
# which of ours each implicit entry is timed against
_COUNTERPART = {"implicit-ALS-weights": "iALS-weights", "implicit-ALS-weights-cg": "iALS-weights-cg"}


# --------------------------------------------------------------------------------------------------
# implicit-weights


def synthetic_play_counts(
    path: str | Path, n_users: int = 6000, n_items: int = 4000, dim: int = 16, seed: int = 0
) -> str:
    """Write a play-count log (CSV: user, item, plays) drawn from a latent-factor model; returns how.

    Users and items get N(0, 1.5^2 / sqrt(dim)) factors (affinities of standard deviation 2.25) and
    items a log-normal popularity (sigma 1). A user's number of distinct items is log-normal (median
    30, 5 to 400); 70% are "taste" items, drawn without replacement by Gumbel top-k on affinity + log
    popularity, the rest "exploratory" ones on log popularity alone. Plays: 1 + Poisson(lambda) with
    log lambda = 0.3 + 0.9 z + N(0, 0.8^2) + a per-user N(0, 0.5^2), z the standardised affinity of the
    (user, item): heavy-tailed counts (median 3, 99th percentile about 60) that say, noisily, which
    items a user really likes."""
    rng = np.random.default_rng(seed)
    pu = rng.normal(size=(n_users, dim)) * 1.5 / dim**0.25
    qi = rng.normal(size=(n_items, dim)) * 1.5 / dim**0.25
    log_pop = rng.normal(0.0, 1.0, n_items)
    activity = np.clip(np.round(rng.lognormal(3.4, 0.8, n_users)), 5, 400).astype(np.int64)
    users, items, plays = [], [], []
    for lo in range(0, n_users, 500):  # blocks of users: [500, n_items] affinities at a time
        hi = min(n_users, lo + 500)
        aff = pu[lo:hi] @ qi.T
        taste = aff + log_pop + rng.gumbel(size=aff.shape)
        explore = log_pop + rng.gumbel(size=aff.shape)
        for b in range(hi - lo):
            k = int(activity[lo + b])
            n_taste = int(round(0.7 * k))
            chosen = np.argpartition(-taste[b], n_taste)[:n_taste]
            rest = explore[b].copy()
            rest[chosen] = -np.inf
            its = np.concatenate([chosen, np.argpartition(-rest, k - n_taste)[: k - n_taste]])
            z = (aff[b, its] - aff[b].mean()) / aff[b].std()
            lam = np.exp(0.3 + 0.9 * z + rng.normal(0.0, 0.8, len(its)) + rng.normal(0.0, 0.5))
            users.append(np.full(len(its), lo + b))
            items.append(its)
            plays.append(1 + rng.poisson(lam))
    frame = pl.DataFrame(
        {"user": np.concatenate(users), "item": np.concatenate(items), "plays": np.concatenate(plays)}
    )
    frame.sample(fraction=1.0, shuffle=True, seed=seed).write_csv(path)
    return (
        "synthetic play counts (recfunnel.bench.implicit_weights.synthetic_play_counts, "
        f"seed {seed}): {n_users} users, {n_items} items, {len(frame)} (user, item) pairs from a "
        f"{dim}-factor model, plays 1 + "
        "Poisson(exp(0.3 + 0.9 z + noise)) of the standardised affinity z"
    )


def play_count_data(data_root, folder: Path) -> tuple[DataConfig, str]:
    """The play-count data: ``<data root>/play-counts/mapping.toml`` when it exists, else a synthetic
    file written into `folder`; -> (data config, where it comes from)."""
    real = resolve_data_root(data_root) / "play-counts"
    if (real / "mapping.toml").is_file():
        raw = tomllib.loads((real / "mapping.toml").read_text("utf-8"))
        mapping = ColumnMapping.model_validate({**raw, "path": str(real / raw["path"])})
        if mapping.weight is None:
            raise ValueError(f"{real / 'mapping.toml'} names no weight column (the play counts)")
        return DataConfig(dataset=None, table=mapping), f"{mapping.path} (mapping {real / 'mapping.toml'})"
    path = folder / "plays.csv"
    how = synthetic_play_counts(path)
    return DataConfig(
        dataset=None, table=ColumnMapping(path=path, user="user", item="item", weight="plays")
    ), how


def _implicit_rows(suite, label, entry, ds, split, seed, quick, threads) -> list[dict]:
    """implicit's CPU ALS on our train matrix of confidences c = 1 + alpha f(value) (its alpha 1: it
    adds (c - 1) y y^T and c y per entry, HKV eq. 4 as ours), scored by an IALS holding its factors."""
    from implicit.cpu.als import AlternatingLeastSquares

    from recfunnel.models.ials import IALS, IALSConfig, confidence

    p = dict(entry.params)
    use_cg = p.pop("use_cg")
    cfg = IALSConfig(**dict(p, iterations=2 if quick else p["iterations"]))
    x = split.part(ds, "train").matrix(ds.n_users, ds.n_items, entry.values).tocsr()
    x.data = confidence(torch.from_numpy(x.data), cfg).numpy().astype(np.float32)
    params = {
        "factors": cfg.factors,
        "regularization": cfg.reg,
        "alpha": 1.0,
        "iterations": cfg.iterations,
        "use_cg": use_cg,
        "random_state": seed,
        "num_threads": threads or 0,
    }
    model = AlternatingLeastSquares(**params)
    t0 = time.perf_counter()
    model.fit(x, show_progress=False)
    seconds = time.perf_counter() - t0
    scorer = IALS(cfg, ds.n_users, ds.n_items)
    scorer.user_factors.copy_(torch.from_numpy(np.asarray(model.user_factors)))
    scorer.item_factors.copy_(torch.from_numpy(np.asarray(model.item_factors)))
    results = evaluate_model(scorer.eval(), ds, split, ("full",), "test", KS, name=label, seed=seed)
    extra = {
        "family": entry.family,
        "config": {
            "model": {"name": "implicit.cpu.als.AlternatingLeastSquares", "params": params},
            "data": {"values": entry.values, "confidence": p},
        },
        "params": int((ds.n_users + ds.n_items) * cfg.factors),
        "train_seconds": seconds,
        "fit_seconds": seconds,
        "epoch_seconds": None,
        "pretrain_seconds": None,
        "epochs_run": cfg.iterations,
        "best_epoch": None,
        "stopped_early": False,
        "samples_per_second": None,
        "pipeline_share": None,
        "valid_history": [],
    }
    return entry_rows(suite, label, entry, results, ds, split, extra, quick)


def _attach_comparison(rows: list[dict]) -> None:
    """On each of our iALS rows timed against implicit (same seed): both fit times, their ratio and
    the accuracy of both."""
    by_key = {(r["model"], r["seed"]): r for r in rows if not r.get("aggregate")}
    for theirs_label, ours_label in _COUNTERPART.items():
        for (label, seed), ours in by_key.items():
            theirs = by_key.get((theirs_label, seed))
            if label != ours_label or theirs is None:
                continue
            ours["comparison"] = {
                "against": theirs_label,
                "ours_fit_seconds": ours["fit_seconds"],
                "implicit_fit_seconds": theirs["fit_seconds"],
                "ratio_ours_over_implicit": ours["fit_seconds"] / theirs["fit_seconds"],
                "ours_metrics": {k: ours["metrics"][k] for k in ("recall@20", "ndcg@20")},
                "implicit_metrics": {k: theirs["metrics"][k] for k in ("recall@20", "ndcg@20")},
                "threads": {
                    "ours": ours["machine"]["torch_threads"],
                    "implicit": theirs["config"]["model"]["params"]["num_threads"],
                },
                "note": "fit wall time of the alternating sweeps on the same train matrix, same factors, "
                "iterations, regularisation and confidences; ours includes building the matrix from the "
                "interactions, implicit's its transpose; initialisations differ (ours N(0, 0.1^2/d), "
                "implicit's U(0, 0.01))",
            }


def _aggregate_comparison(rows: list[dict]) -> None:
    """On the ``aggregate`` rows: the mean fit time over the seeds (``fit_seconds``) and, for our iALS
    rows timed against implicit, both mean fit times, the median of the per-seed ratios (each seed's
    pair ran back to back, so a ratio compares like with like on a shared machine) and the mean
    accuracies."""
    seeded = [r for r in rows if not r.get("aggregate")]
    for agg in (r for r in rows if r.get("aggregate")):
        mine = [r for r in seeded if r["model"] == agg["model"] and r["protocol"] == agg["protocol"]]
        if all(r.get("fit_seconds") is not None for r in mine):
            agg["fit_seconds"] = float(np.mean([r["fit_seconds"] for r in mine]))
        per_seed = [r["comparison"] for r in mine if "comparison" in r]
        if not per_seed:
            continue
        ours = np.array([c["ours_fit_seconds"] for c in per_seed])
        theirs = np.array([c["implicit_fit_seconds"] for c in per_seed])
        agg["comparison"] = {
            **per_seed[0],
            "seeds": [r["seed"] for r in mine if "comparison" in r],
            "ours_fit_seconds": float(ours.mean()),
            "ours_fit_seconds_std": float(ours.std(ddof=1)) if len(ours) > 1 else 0.0,
            "implicit_fit_seconds": float(theirs.mean()),
            "implicit_fit_seconds_std": float(theirs.std(ddof=1)) if len(theirs) > 1 else 0.0,
            "ratio_ours_over_implicit": float(np.median(ours / theirs)),
            "ratio_of_means": float(ours.mean() / theirs.mean()),
            "ratio_per_seed": [float(x) for x in ours / theirs],
            "ours_metrics": {
                k: float(np.mean([c["ours_metrics"][k] for c in per_seed]))
                for k in per_seed[0]["ours_metrics"]
            },
            "implicit_metrics": {
                k: float(np.mean([c["implicit_metrics"][k] for c in per_seed]))
                for k in per_seed[0]["implicit_metrics"]
            },
        }


def run_implicit_weights_suite(
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    isolate=None,
    threads: int | None = 1,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> list[dict]:
    """Rows of ``implicit-weights`` (module docstring): every entry of :data:`WEIGHT_ENTRIES` (or
    `models`) per training seed, mean +- std ``aggregate`` rows, and the implicit comparison on our
    iALS rows. implicit's entries are skipped, with a message, when the package is absent."""
    suite = "implicit-weights"
    wanted = select_entries(WEIGHT_ENTRIES, models, suite)
    split_cfg = SplitConfig(method="ratio", fractions=(0.7, 0.1, 0.2), seed=0, eval_negatives=0)
    with tempfile.TemporaryDirectory(prefix="recfunnel-plays-") as tmp:
        data, source = play_count_data(data_root, Path(tmp))
        ds = load_data(data)
        split = load_split(split_cfg, ds)
    rows: list[dict] = []
    runnable = []
    for label in wanted:
        if WEIGHT_ENTRIES[label].family == "implicit-als":
            try:
                import implicit.cpu.als  # noqa: F401
            except ImportError:
                print(
                    f"[{suite}] skipping {label}: the optional 'implicit' package is not installed",
                    flush=True,
                )
                continue
        runnable.append(label)
    # seed-major: every model of a seed runs before the next seed, so ours and implicit's fits of
    # one seed run back to back (their ratio compares like with like on a shared machine)
    for seed in seeds:
        for label in runnable:
            entry = WEIGHT_ENTRIES[label]
            with pinned_threads(threads):
                if entry.family == "implicit-als":
                    got = _implicit_rows(suite, label, entry, ds, split, seed, quick, threads)
                else:
                    got = fit_rows(suite, label, entry, ds, split, data, split_cfg, seed, quick, progress)
            for r in got:
                r["data_source"] = source
            rows += got
    _attach_comparison(rows)
    rows += aggregate_seeds(rows) if len(seeds) > 1 else []
    _aggregate_comparison(rows)
    return rows
