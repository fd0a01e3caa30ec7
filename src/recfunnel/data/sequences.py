"""Per-user time-ordered item sequences and the batches sequence models train and score on.

One layout everywhere, CSR-like: ``items[indptr[u]:indptr[u + 1]]`` are user ``u``'s item indices,
oldest first (ordered by (timestamp, position in the source file), the splits' tie rule). Session
data (e.g. ``diginetica-sample``) takes the same path: each session is a user.

Sequence batches follow the SASRec convention: an item index ``i`` is written as ``i + 1`` and
:data:`PAD` (0) is padding, so an embedding table of ``n_items + 1`` rows has a padding row 0.
Batches are **left-padded** (the newest item is always in the last column) and cut to the longest
real sequence of the batch, so a batch of short sequences costs only its real width. Everything is
built by tensor ops on index arrays, never a Python loop per user or per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.splits import Split

__all__ = [
    "PAD",
    "TrainingWindows",
    "from_lists",
    "left_padded",
    "split_histories",
    "training_windows",
    "user_sequences",
]

#: Padding value of sequence batches; item index i is written as i + 1.
PAD = 0


def user_sequences(ints: Interactions, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's items ordered by (timestamp, file order), as CSR-like tensors.

    Args:
        ints: interaction rows (any part of a split, or a whole dataset).
        n_users: size of the user vocabulary (users without rows get empty sequences).
    Returns:
        (indptr int64 [n_users + 1], items int64 [len(ints)]): user u's items, oldest first, are
        ``items[indptr[u]:indptr[u + 1]]``.
    """
    keys = [ints.order] if ints.timestamp is None else [ints.order, ints.timestamp]
    order = np.lexsort((*keys, ints.user))  # last key sorts first: user, then time, then file order
    counts = np.bincount(ints.user, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return torch.from_numpy(indptr), torch.from_numpy(np.ascontiguousarray(ints.item[order]))


def split_histories(
    dataset: Dataset, split: Split, parts: Sequence[str] = ("train",)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-ordered histories built from `parts` of a split (e.g. ("train", "valid") for the
    history a model may see when it predicts the test item)."""
    rows = np.concatenate([split.rows(p) for p in parts]) if parts else np.zeros(0, np.int64)
    return user_sequences(dataset.interactions.take(np.sort(rows)), dataset.n_users)


def tail_codes(
    indptr: np.ndarray, items: np.ndarray, codes: np.ndarray, width: int, pad: int = 0
) -> np.ndarray:
    """int64 [B, width]: the last `width` items of each ragged row (indptr [B + 1], items, oldest
    first) mapped through `codes` [n_items], most recent last, `pad` on the left: the layout of a
    history field."""
    indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(len(lengths)), lengths)
    from_end = lengths[row] - 1 - (np.arange(len(items)) - indptr[:-1][row])
    sel = from_end < width
    out = np.full((len(lengths), width), pad, np.int64)
    out[row[sel], width - 1 - from_end[sel]] = np.asarray(codes, np.int64)[items[sel]]
    return out


def from_lists(item_lists: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ad-hoc item lists (item indices, oldest first) as (indptr [B + 1], items [nnz])."""
    counts = np.fromiter((len(x) for x in item_lists), dtype=np.int64, count=len(item_lists))
    indptr = np.zeros(len(item_lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    flat = np.fromiter((int(i) for x in item_lists for i in x), dtype=np.int64, count=int(indptr[-1]))
    return torch.from_numpy(indptr), torch.from_numpy(flat)


def left_padded(
    indptr: torch.Tensor, items: torch.Tensor, rows: torch.Tensor, max_len: int, trim: bool = True
) -> torch.Tensor:
    """The last `max_len` items of each selected sequence, left-padded, shifted by one (0 = pad).

    Args:
        indptr, items: CSR-like sequences (see :func:`user_sequences`).
        rows: int64 [B] which sequences (users).
        max_len: window length.
        trim: cut the batch to its longest real sequence (at least one column); else width max_len.
    Returns:
        int64 [B, W] with W <= max_len; row b ends with its newest item in column W - 1.
    """
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = (ends - starts).clamp(max=max_len)
    width = max(1, int(lengths.max())) if trim and len(rows) else max_len
    if len(items) == 0:
        return torch.zeros(len(rows), width, dtype=torch.long)
    # column j of row b holds item ends[b] - width + j, when that is still inside the window
    pos = ends.unsqueeze(1) - width + torch.arange(width)
    real = pos >= (ends - lengths).unsqueeze(1)
    return torch.where(real, items[pos.clamp(0, len(items) - 1)] + 1, PAD)


@dataclass(frozen=True)
class TrainingWindows:
    """Teacher-forcing windows: position t of `inputs` predicts position t of `targets`.

    Attributes:
        inputs: int64 [S, max_len] left-padded shifted items (0 = pad).
        targets: int64 [S, max_len] the next item of each input position (0 where none).
        owners: int64 [S] the user each window comes from.
        lengths: int64 [S] real positions per window (targets > 0).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    owners: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return len(self.owners)

    @property
    def n_targets(self) -> int:
        return int(self.lengths.sum())


def training_windows(
    indptr: torch.Tensor,
    items: torch.Tensor,
    max_len: int,
    windows: Literal["last", "all"] = "last",
) -> TrainingWindows:
    """Windows for next-item training (Kang & McAuley 2018, sec. III-F).

    A sequence s_1..s_n gives inputs s_1..s_{n-1} and targets s_2..s_n; only the last `max_len`
    of them when ``windows="last"`` (the paper: one window per user), or, with ``"all"``, also
    the earlier chunks of `max_len` targets, so long histories are used in full. Sequences with
    fewer than two items give no window.
    """
    if windows not in ("last", "all"):
        raise ValueError(f"windows must be 'last' or 'all', got {windows!r}")
    n_targets = (indptr[1:] - indptr[:-1] - 1).clamp(min=0)
    if windows == "last":
        per_user = (n_targets > 0).long()
    else:
        per_user = (n_targets + max_len - 1) // max_len
    owners = torch.repeat_interleave(torch.arange(len(n_targets)), per_user)
    # k-th window of a user counted from its end: targets end at position n - k * max_len
    first = torch.cumsum(per_user, 0) - per_user
    k = torch.arange(len(owners)) - torch.repeat_interleave(first, per_user)
    target_end = indptr[owners + 1] - k * max_len  # exclusive end (absolute index into items)
    lengths = torch.minimum(target_end - indptr[owners] - 1, torch.full_like(target_end, max_len))
    if len(owners) == 0:
        empty = torch.zeros(0, max_len, dtype=torch.long)
        return TrainingWindows(empty, empty.clone(), owners, lengths)
    col = torch.arange(max_len)
    tpos = target_end.unsqueeze(1) - max_len + col  # absolute index of each column's target
    real = col >= (max_len - lengths).unsqueeze(1)
    safe = tpos.clamp(1, len(items) - 1)  # a window's targets never start before item 1 of its user
    targets = torch.where(real, items[safe] + 1, PAD)
    inputs = torch.where(real, items[safe - 1] + 1, PAD)
    return TrainingWindows(inputs, targets, owners, lengths)
