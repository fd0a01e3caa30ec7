"""Train / validation / test splits that can be saved and reloaded.

Tie-break for events with equal timestamps (documented rule): rows are ordered by
(timestamp, position in the source file), so among simultaneous events the one written later in
the file counts as later.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recfunnel.atomic import atomic_write_bytes
from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.errors import DataError
from recfunnel.data.sampling import PositiveSet, sample_distinct_negatives

SPLIT_FORMAT = 1
SPLITS = ("leave_one_out", "temporal", "ratio", "random_holdout")


@dataclass(frozen=True)
class Split:
    """Row indices of a dataset's interactions for train / valid / test, plus sampled-eval negatives.

    `negatives[part]` is int64 [n_users_in_part, n] of item indices, aligned with
    `eval_users(part)` (sorted unique users of that part); empty when none were drawn.
    """

    method: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    dataset_fingerprint: str
    params: dict[str, object] = field(default_factory=dict)
    negatives: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, part: str) -> np.ndarray:
        if part not in ("train", "valid", "test"):
            raise ValueError(f"unknown split part {part!r}; valid: train, valid, test")
        return getattr(self, part)

    def part(self, dataset: Dataset, part: str) -> Interactions:
        return dataset.interactions.take(self.rows(part))

    def eval_users(self, dataset: Dataset, part: str) -> np.ndarray:
        return np.unique(dataset.interactions.user[self.rows(part)])

    def describe(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.method}({p})" if p else self.method

    def with_negatives(self, dataset: Dataset, n: int = 99, seed: int = 0) -> Split:
        """Draw `n` fixed negatives per valid and test user, distinct, uniform over items the user
        never interacted with in the whole dataset (so no held-out positive can be a negative).
        A DataError says so when a user has fewer than `n` such items."""
        ints = dataset.interactions
        pos = PositiveSet(ints.user, ints.item, dataset.n_users, dataset.n_items)
        rng = np.random.default_rng(seed)
        negs = {}
        for part in ("valid", "test"):
            users = self.eval_users(dataset, part)
            negs[part] = (
                sample_distinct_negatives(users, n, pos, rng) if len(users) else np.zeros((0, n), np.int64)
            )
        params = dict(self.params, eval_negatives=n, negatives_seed=seed)
        return Split(self.method, self.train, self.valid, self.test, self.dataset_fingerprint, params, negs)

    def check(self, dataset: Dataset) -> None:
        if self.dataset_fingerprint != dataset.fingerprint():
            raise DataError(
                f"this split was made for another dataset (fingerprint {self.dataset_fingerprint[:12]}, "
                f"dataset {dataset.name!r} has {dataset.fingerprint()[:12]})",
                expected="the dataset the split was saved from",
            )

    def save(self, path: str | Path) -> Path:
        """Write the split as one .npz (no pickle) with its metadata, atomically."""
        path = Path(path)
        meta = {
            "format": SPLIT_FORMAT,
            "method": self.method,
            "params": self.params,
            "dataset_fingerprint": self.dataset_fingerprint,
        }
        arrays = {
            "train": self.train,
            "valid": self.valid,
            "test": self.test,
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        arrays.update({f"neg_{k}": v for k, v in self.negatives.items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        path = Path(path)
        if not path.is_file():
            raise DataError("split file not found", path=path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files}
        # EOFError: empty file; BadZipFile: torn or truncated .npz (neither is a ValueError/OSError)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"not a readable split file ({e})", path=path) from None
        if not isinstance(meta, dict):
            raise DataError("split file metadata is not a JSON object", path=path)
        if meta.get("format") != SPLIT_FORMAT:
            raise DataError(
                "split file format unknown",
                path=path,
                value=meta.get("format"),
                expected=f"format {SPLIT_FORMAT}",
            )
        missing = [k for k in ("method", "params", "dataset_fingerprint") if k not in meta]
        missing += [k for k in ("train", "valid", "test") if k not in arrays]
        if missing:
            raise DataError(f"split file lacks {', '.join(missing)}", path=path)
        negs = {k[4:]: v for k, v in arrays.items() if k.startswith("neg_")}
        return cls(
            meta["method"],
            arrays["train"],
            arrays["valid"],
            arrays["test"],
            meta["dataset_fingerprint"],
            meta["params"],
            negs,
        )


def _refuse_empty(split: Split, dataset: Dataset, why: dict[str, str]) -> Split:
    """`split`, or a DataError when its train or test part is empty (too little data to learn from
    or to test on); `why[part]` explains how the method came to leave that part empty."""
    for part in ("train", "test"):
        if len(split.rows(part)) == 0:
            n = len(dataset.interactions)
            raise DataError(
                f"split {split.describe()!r} leaves the {part} part empty on dataset {dataset.name!r} "
                f"({n} interactions, {dataset.n_users} users): {why[part]}",
                path=dataset.source or None,
                expected="more interactions, or another split method or fractions (a model needs a "
                "non-empty train part and an evaluation a non-empty test part)",
            )
    return split


def _per_user_positions(
    users: np.ndarray, keys: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (user, *keys); return (order, position within user, count of the user's rows)."""
    order = np.lexsort(tuple(reversed([users] + keys)))
    su = users[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    counts = np.diff(np.r_[starts, len(su)])
    run = np.repeat(np.arange(len(starts)), counts)
    pos = np.arange(len(su)) - starts[run]
    return order, pos, counts[run]


def _need_time(dataset: Dataset, method: str) -> np.ndarray:
    ts = dataset.interactions.timestamp
    if ts is None:
        raise DataError(
            f"split {method!r} orders events by time, but dataset {dataset.name!r} has no timestamp column",
            expected="a timestamp column in the mapping, or split 'random_holdout' or 'ratio'",
        )
    return ts


def _holdout_last(dataset: Dataset, method: str, keys: list[np.ndarray], params: dict) -> Split:
    users = dataset.interactions.user
    order, pos, count = _per_user_positions(users, keys)
    # Users with >= 3 events: last -> test, second to last -> valid. With 2: last -> test.
    # With 1: train only (nothing to learn from otherwise).
    test = (pos == count - 1) & (count >= 2)
    valid = (pos == count - 2) & (count >= 3)
    train = ~(test | valid)
    split = Split(
        method,
        np.sort(order[train]),
        np.sort(order[valid]),
        np.sort(order[test]),
        dataset.fingerprint(),
        params,
    )
    held = "no user has 2 or more interactions, and a user's only interaction stays in train"
    return _refuse_empty(split, dataset, {"train": "the dataset has no interactions", "test": held})


def leave_one_out(dataset: Dataset) -> Split:
    """Per user, by time: last interaction -> test, second to last -> valid, the rest -> train.

    Users with 2 interactions give no validation row, users with 1 only train. Ties on timestamp
    are broken by file order (see module docstring)."""
    ts = _need_time(dataset, "leave_one_out")
    return _holdout_last(dataset, "leave_one_out", [ts, dataset.interactions.order], {})


def random_holdout(dataset: Dataset, seed: int = 0) -> Split:
    """Per user, one random interaction -> test and another -> valid; for data with no time."""
    rng = np.random.default_rng(seed)
    key = rng.permutation(len(dataset.interactions))
    return _holdout_last(dataset, "random_holdout", [key], {"seed": seed})


def temporal(dataset: Dataset, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Global split by time: the earliest `fractions[0]` of events train, the next valid, the last test."""
    _check_fractions(fractions)
    ts = _need_time(dataset, "temporal")
    order = np.lexsort((dataset.interactions.order, ts))
    n = len(order)
    a = int(round(fractions[0] * n))
    b = int(round((fractions[0] + fractions[1]) * n))
    split = Split(
        "temporal",
        np.sort(order[:a]),
        np.sort(order[a:b]),
        np.sort(order[b:]),
        dataset.fingerprint(),
        {"fractions": list(fractions)},
    )
    sizes = f"fractions {tuple(fractions)} of {n} rows round to train {a}, valid {b - a}, test {n - b}"
    return _refuse_empty(split, dataset, {"train": sizes, "test": sizes})


def ratio(dataset: Dataset, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Per user, a seeded random `fractions` share of their interactions to train / valid / test.

    Each user's counts are floor(f * n) for valid and test (so every user keeps most rows in train)."""
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    key = rng.permutation(len(dataset.interactions))
    order, pos, count = _per_user_positions(dataset.interactions.user, [key])
    n_test = np.floor(fractions[2] * count).astype(np.int64)
    n_valid = np.floor(fractions[1] * count).astype(np.int64)
    test = pos >= count - n_test
    valid = (pos >= count - n_test - n_valid) & ~test
    train = ~(test | valid)
    split = Split(
        "ratio",
        np.sort(order[train]),
        np.sort(order[valid]),
        np.sort(order[test]),
        dataset.fingerprint(),
        {"fractions": list(fractions), "seed": seed},
    )
    most = int(count.max()) if len(count) else 0
    test_why = (
        f"each user sends floor({fractions[2]:g} x their interaction count) rows to test, and the most "
        f"any user has is {most}"
        + (f" (at least {int(np.ceil(1 / fractions[2] - 1e-9))} are needed)" if fractions[2] > 0 else "")
    )
    train_why = f"train fraction {fractions[0]:g} leaves every user's rows to valid and test"
    return _refuse_empty(split, dataset, {"train": train_why, "test": test_why})


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")


def make_split(
    dataset: Dataset, method: str, *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Dispatch by name; the error lists the valid methods."""
    if method == "leave_one_out":
        return leave_one_out(dataset)
    if method == "random_holdout":
        return random_holdout(dataset, seed)
    if method == "temporal":
        return temporal(dataset, fractions)
    if method == "ratio":
        return ratio(dataset, fractions, seed)
    raise ValueError(f"unknown split {method!r}; valid: {', '.join(SPLITS)}")
