"""A synthetic, heavy-tailed interaction dataset written as a folder of Parquet part files, for tests
and benchmarks at sizes no public dataset here has (:func:`generate_synthetic`).

How a row is drawn (all seeded, vectorised per record batch; the whole table is never in memory):

* users: activity ~ 1 / (rank + 10) ** ``user_exponent`` over a seeded random order of the user
  ids, so a few users are very active and most have a handful of rows;
* items: popularity ~ 1 / (rank + 1) ** ``item_exponent`` (zipf-like) over a random order of ids;
* latent clusters: every user and item belongs to one of ``clusters`` groups; with probability
  ``affinity`` a row's item is drawn by popularity among the items of the user's cluster, else
  from the whole catalogue, so a model has structure to learn beyond popularity;
* timestamps increase with the row number (one event every ``seconds_per_row`` seconds on
  average, from 2020-01-01 UTC), so leave-one-out by time is meaningful;
* weight: a play count, 1 + a geometric number of repeats (float32, always > 0).

Columns: ``user`` (int64), ``item`` (int64), ``timestamp`` (int64 unix seconds), ``weight``
(float32). Ids run from 1. The same (rows, users, items, files, seed, ...) always give the same
files. A (user, item) pair can repeat, as in a real log; readers aggregate repeats by default.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SyntheticSpec", "generate_synthetic"]

START = 1_577_836_800  # 2020-01-01T00:00:00Z
SCHEMA = pa.schema(
    [("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64()), ("weight", pa.float32())]
)


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`generate_synthetic` draws (see the module docstring)."""

    rows: int
    users: int
    items: int
    files: int = 4
    seed: int = 0
    clusters: int = 50
    affinity: float = 0.7
    user_exponent: float = 0.9
    item_exponent: float = 1.0
    seconds_per_row: float = 0.05
    batch_rows: int = 1_000_000

    def check(self) -> None:
        for name in ("rows", "users", "items", "files", "clusters", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.files > self.rows:
            raise ValueError(f"files ({self.files}) cannot exceed rows ({self.rows})")
        if not 0 <= self.affinity <= 1:
            raise ValueError(f"affinity must lie in [0, 1], got {self.affinity}")


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


class _Sampler:
    """The fixed parts of the generative model (orders, clusters, cumulative distributions)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        rng = np.random.default_rng([spec.seed, 0])
        u_rank = rng.permutation(spec.users)  # u_rank[r]: index of the user of activity rank r
        i_rank = rng.permutation(spec.items)
        self.user_of_rank = u_rank
        self.user_cdf = _cdf(1.0 / (np.arange(spec.users) + 10.0) ** spec.user_exponent)
        self.item_of_rank = i_rank
        self.item_cdf = _cdf(1.0 / (np.arange(spec.items) + 1.0) ** spec.item_exponent)
        k = min(spec.clusters, spec.items)
        self.k = k
        self.user_cluster = rng.integers(0, k, spec.users)
        item_cluster = rng.integers(0, k, spec.items)
        item_cluster[i_rank[:k]] = np.arange(k)  # every cluster holds at least one item
        # items grouped by cluster, by popularity rank within it; key = cluster + within-cluster CDF
        pop = np.empty(spec.items)
        pop[i_rank] = 1.0 / (np.arange(spec.items) + 1.0) ** spec.item_exponent
        order = np.lexsort((-pop, item_cluster))
        cl = item_cluster[order]
        within = np.cumsum(pop[order])
        starts = np.searchsorted(cl, np.arange(k))
        before = np.r_[0.0, within][starts]
        totals = np.r_[within[starts[1:] - 1], within[-1]] - before
        self.cluster_items = order
        self.cluster_keys = cl + (within - before[cl]) / totals[cl]
        self.cluster_keys[np.r_[starts[1:] - 1, len(cl) - 1]] = np.arange(k) + 1.0  # exact ends
        self.affinity = spec.affinity

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        users = self.user_of_rank[np.searchsorted(self.user_cdf, rng.random(n), side="right")]
        glob = self.item_of_rank[np.searchsorted(self.item_cdf, rng.random(n), side="right")]
        key = self.user_cluster[users] + rng.random(n)
        pos = np.minimum(np.searchsorted(self.cluster_keys, key, side="right"), len(self.cluster_keys) - 1)
        local = self.cluster_items[pos]
        items = np.where(rng.random(n) < self.affinity, local, glob)
        return users, items


def _readme(spec: SyntheticSpec, out: Path, stats: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in asdict(spec).items())
    return f"""# Synthetic interactions (recfunnel)

Generated by `recfunnel.data.synthetic.generate_synthetic` (command line:
`recfunnel datasets generate-synthetic --rows {spec.rows} --users {spec.users} --items {spec.items} \\
--files {spec.files} --seed {spec.seed} --out {out}`), not collected from people.

Parameters: {params}.

## What a row is

- `user` (int64, 1..{spec.users}): drawn with activity ~ 1/(rank + 10)^{spec.user_exponent} over a
  seeded random order of the users (heavy-tailed: most users have few rows).
- `item` (int64, 1..{spec.items}): with probability {spec.affinity} drawn by popularity among the
  items of the user's latent cluster ({spec.clusters} clusters), else from the whole catalogue;
  popularity ~ 1/(rank + 1)^{spec.item_exponent} (zipf-like) over a random order of the items.
- `timestamp` (int64 unix seconds): increases with the row number, about {spec.seconds_per_row} s a
  row from 2020-01-01 UTC.
- `weight` (float32 >= 1): a play count, 1 + a geometric number of repeats.

A (user, item) pair can appear more than once (a repeat play); recfunnel's readers aggregate
repeats by default (weights summed, the latest timestamp kept).

## Figures of this folder

{json.dumps(stats, indent=1)}

Files: `part-00000.parquet` ... one row group per record batch of at most {spec.batch_rows} rows,
written batch by batch (the generator never holds the whole table).
"""


def generate_synthetic(
    out: str | Path,
    rows: int,
    users: int,
    items: int,
    *,
    files: int = 4,
    seed: int = 0,
    **options: float | int,
) -> dict:
    """Write `rows` synthetic interactions as `files` Parquet part files (plus SOURCE.md) in the
    folder `out`, batch by batch; -> figures (rows, distinct users/items seen, top-1% item share,
    seconds). `options`: the other fields of :class:`SyntheticSpec`. The folder must hold no
    part files yet."""
    spec = SyntheticSpec(rows=rows, users=users, items=items, files=files, seed=seed, **options)  # type: ignore[arg-type]
    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("part-*.parquet")):
        raise FileExistsError(f"{out} already holds part files; choose an empty folder")
    t0 = time.perf_counter()
    sampler = _Sampler(spec)
    seen_users = np.zeros(spec.users, dtype=bool)
    item_counts = np.zeros(spec.items, dtype=np.int64)
    bounds = np.linspace(0, spec.rows, spec.files + 1).round().astype(np.int64)
    for f in range(spec.files):
        path = out / f"part-{f:05d}.parquet"
        with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
            for b, start in enumerate(range(int(bounds[f]), int(bounds[f + 1]), spec.batch_rows)):
                n = min(spec.batch_rows, int(bounds[f + 1]) - start)
                rng = np.random.default_rng([spec.seed, 1, f, b])
                u, i = sampler.draw(rng, n)
                seen_users[u] = True
                item_counts += np.bincount(i, minlength=spec.items)
                row = np.arange(start, start + n, dtype=np.float64)
                jitter = rng.random(n) * 0.5
                ts = START + np.floor((row + jitter) * spec.seconds_per_row).astype(np.int64)
                ts = np.maximum.accumulate(ts)  # non-decreasing within the batch (and across)
                weight = rng.geometric(0.5, n).astype(np.float32)
                table = pa.Table.from_arrays(
                    [pa.array(u + 1), pa.array(i + 1), pa.array(ts), pa.array(weight)], schema=SCHEMA
                )
                writer.write_table(table)
    top = np.sort(item_counts)[::-1][: max(1, spec.items // 100)].sum()
    stats = {
        "rows": spec.rows,
        "files": spec.files,
        "distinct_users": int(seen_users.sum()),
        "distinct_items": int((item_counts > 0).sum()),
        "top_1pct_items_share": round(float(top) / spec.rows, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "SOURCE.md").write_text(_readme(spec, out, stats))
    return stats
