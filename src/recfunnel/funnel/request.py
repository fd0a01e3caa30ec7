"""A batch of resolved requests: who asks (a known user, a list of recent items, or nobody), what
they have seen, what they exclude, and which ids were not understood.

Everything is in dataset index space and batch-first: row b of every array is request b. Per-request
item sets are CSR rows over the catalogue (``seen``, ``exclude``), the form
:meth:`recfunnel.index.Index.search` takes as ``exclude``; the time-ordered recent items are
(indptr [B + 1], items [nnz]), the form :func:`recfunnel.data.sequences.from_lists` builds and
``HistoryAware.encode_items`` reads.

:func:`resolve_requests` turns what a caller sends (raw ids through the vocabularies, or indices)
into :class:`Requests`. Unknown item ids are dropped from histories and exclusions and reported
(never fatal); an unknown user id is reported and the request is served as an anonymous one (its
recent items, else popularity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.vocab import UNKNOWN, Vocab

__all__ = ["Requests", "ragged_concat", "ragged_tail", "resolve_requests"]

#: recent items kept per request by default (the stored history's tail plus the request's own)
MAX_RECENT = 50


@dataclass(frozen=True)
class Requests:
    """B resolved requests (indices into the dataset's vocabularies).

    Attributes:
        users: int64 [B] user index, -1 where the request names no known user.
        recent_indptr, recent_items: int64 [B + 1], [nnz]: each request's recent items, oldest
            first (the user's stored history tail followed by the items the request sent).
        seen: CSR [B, n_items]: items each request has interacted with (stored + recent).
        exclude: CSR [B, n_items]: items the caller asked never to return.
        timestamp: request time (unix seconds) or None: "now" of the log.
        unknown_users: per request the raw user id that was not known, else None.
        unknown_items: per request the raw item ids (history or exclusions) that were not known.
        fresh: int64 [B]: how many of the recent items (at the tail) the request itself sent
            (events newer than the stored log); None: none.
    """

    users: np.ndarray
    recent_indptr: np.ndarray
    recent_items: np.ndarray
    seen: sp.csr_matrix
    exclude: sp.csr_matrix
    timestamp: int | None = None
    unknown_users: tuple[str | None, ...] = ()
    unknown_items: tuple[tuple[str, ...], ...] = ()
    fresh: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return self.seen.shape[1]

    @property
    def known(self) -> np.ndarray:
        """bool [B]: the request names a stored user."""
        return self.users >= 0

    @property
    def recent_lengths(self) -> np.ndarray:
        return np.diff(self.recent_indptr)

    @property
    def fresh_lengths(self) -> np.ndarray:
        """int64 [B]: recent items the request sent (0 where it sent none)."""
        return np.zeros(len(self), np.int64) if self.fresh is None else self.fresh

    def recent(self, rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(indptr, items) tensors of the recent items of `rows` (default: all requests)."""
        if rows is None:
            return torch.from_numpy(self.recent_indptr), torch.from_numpy(self.recent_items)
        indptr, items = _take_rows(self.recent_indptr, self.recent_items, np.asarray(rows, np.int64))
        return torch.from_numpy(indptr), torch.from_numpy(items)

    def blocked(self, seen: bool = True) -> sp.csr_matrix:
        """CSR [B, n_items] of items no stage may return: the exclusions, plus seen items when
        `seen`."""
        if not seen:
            return self.exclude
        cached = self.__dict__.get("_blocked")
        if cached is None:  # every stage asks; the union is built once (O(nnz), no n_items work)
            cached = _union(self.seen, self.exclude)
            object.__setattr__(self, "_blocked", cached)
        return cached


def _take_rows(indptr: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = indptr[rows + 1] - indptr[rows]
    out = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    owner = np.repeat(np.arange(len(rows)), lengths)
    pos = np.arange(int(out[-1])) - out[owner]
    return out, items[indptr[rows][owner] + pos]


def ragged_concat(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise concatenation of two ragged arrays (indptr, values) with the same row count: row r
    is a's row r followed by b's row r."""
    (ia, va), (ib, vb) = a, b
    la, lb = np.diff(ia), np.diff(ib)
    indptr = np.zeros(len(la) + 1, np.int64)
    np.cumsum(la + lb, out=indptr[1:])
    out = np.empty(int(indptr[-1]), dtype=np.result_type(va, vb))
    ra, rb = np.repeat(np.arange(len(la)), la), np.repeat(np.arange(len(lb)), lb)
    out[indptr[ra] + np.arange(len(va)) - ia[ra]] = va
    out[indptr[rb] + la[rb] + np.arange(len(vb)) - ib[rb]] = vb
    return indptr, out


def ragged_tail(indptr: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `n` values of each row of a ragged array."""
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(len(lengths)), lengths)
    keep = (indptr[1:][row] - np.arange(len(values))) <= n
    new = np.zeros_like(indptr)
    np.cumsum(np.minimum(lengths, n), out=new[1:])
    return new, values[keep]


def _union(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise union of two 0/1 CSR matrices of the same shape, every entry 1 (O(nnz): scipy's
    `a + b` allocates per-column work arrays when the indices are not known to be sorted)."""
    return _csr(*ragged_concat((a.indptr, a.indices), (b.indptr, b.indices)), a.shape[1])


def _csr(indptr: np.ndarray, items: np.ndarray, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix(
        (np.ones(len(items), np.float32), items.astype(np.int64), indptr.astype(np.int64)),
        shape=(len(indptr) - 1, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _batch_size(users: Any, recent_items: Any, exclude: Any) -> int:
    sizes = {
        name: len(v)
        for name, v in (("users", users), ("recent_items", recent_items), ("exclude", exclude))
        if v is not None
    }
    for name, v in (("users", users), ("recent_items", recent_items), ("exclude", exclude)):
        if isinstance(v, (str, bytes)):
            raise TypeError(f"{name} is one entry per request, e.g. [{v!r}]; got the bare string {v!r}")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"one entry per request in each argument; got lengths {sizes}")
    return next(iter(sizes.values())) if sizes else 1


def _encode_items(
    lists: Sequence[Sequence[Any]] | None, b: int, vocab: Vocab | None, n_items: int, what: str
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """(indptr, known indices, unknown raw ids per request) of `lists` of item ids."""
    if lists is None:
        return np.zeros(b + 1, np.int64), np.zeros(0, np.int64), [[] for _ in range(b)]
    flat, lengths = [], np.zeros(b, np.int64)
    for r, row in enumerate(lists):
        if row is None:
            continue
        if isinstance(row, (str, bytes)):
            raise TypeError(f"{what}[{r}] is a list of item ids, e.g. [{row!r}]; got a bare string")
        row = list(row)
        flat.extend(row)
        lengths[r] = len(row)
    owner = np.repeat(np.arange(b), lengths)
    idx = _encode_ids(flat, vocab, n_items)
    bad = idx == UNKNOWN
    unknown: list[list[str]] = [[] for _ in range(b)]
    for r, raw in zip(owner[bad].tolist(), (flat[i] for i in np.flatnonzero(bad)), strict=True):
        unknown[r].append(str(raw))
    indptr = np.zeros(b + 1, np.int64)
    np.cumsum(np.bincount(owner[~bad], minlength=b), out=indptr[1:])
    return indptr, idx[~bad], unknown


def _encode_ids(raw: Sequence[Any], vocab: Vocab | None, n: int) -> np.ndarray:
    """Indices of ids: through `vocab` when given (raw ids), else integers checked against
    range(n); UNKNOWN where not known."""
    if vocab is not None:
        return vocab.encode(list(raw), unknown="mark")
    out = np.full(len(raw), UNKNOWN, np.int64)
    for j, x in enumerate(raw):
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= int(x) < n:
            out[j] = int(x)
    return out


def resolve_requests(
    users: Sequence[Any] | None = None,
    recent_items: Sequence[Sequence[Any] | None] | None = None,
    exclude: Sequence[Sequence[Any] | None] | None = None,
    *,
    n_users: int,
    n_items: int,
    user_vocab: Vocab | None = None,
    item_vocab: Vocab | None = None,
    seen: sp.csr_matrix | None = None,
    histories: tuple[np.ndarray, np.ndarray] | None = None,
    max_recent: int = MAX_RECENT,
    timestamp: int | None = None,
) -> Requests:
    """Resolve B requests from what a caller sends.

    Args:
        users: one user per request: an id, or None for an anonymous request. Ids are raw ids
            when `user_vocab` is given, else indices in range(n_users). None: all anonymous.
        recent_items: one list of item ids per request (oldest first) or None: events the stored
            log does not hold yet, or the whole history of an anonymous visitor.
        exclude: one list of item ids per request that must never be returned.
        n_users, n_items: vocabulary sizes.
        user_vocab, item_vocab: map raw ids to indices (else ids are indices).
        seen: CSR [n_users, n_items] of items each stored user has interacted with.
        histories: (indptr [n_users + 1], items) each stored user's items, oldest first
            (:func:`recfunnel.data.sequences.split_histories`): their tail starts each known
            user's recent items.
        max_recent: recent items kept per request (the newest).
        timestamp: the request time (unix seconds), or None.
    Returns:
        :class:`Requests`; B = the length of whichever of users / recent_items / exclude is given
        (1 when none is: one anonymous request).
    """
    b = _batch_size(users, recent_items, exclude)
    if users is None:
        u = np.full(b, UNKNOWN, np.int64)
        unknown_users: list[str | None] = [None] * b
    else:
        raw = list(users)
        given = [x is not None for x in raw]
        u = np.full(b, UNKNOWN, np.int64)
        pos = np.flatnonzero(given)
        u[pos] = _encode_ids([raw[i] for i in pos], user_vocab, n_users)
        unknown_users = [str(x) if g and i < 0 else None for x, g, i in zip(raw, given, u, strict=True)]
    r_indptr, r_items, unknown_r = _encode_items(recent_items, b, item_vocab, n_items, "recent_items")
    e_indptr, e_items, unknown_e = _encode_items(exclude, b, item_vocab, n_items, "exclude")
    known = u >= 0
    sent = np.diff(r_indptr)
    if histories is not None:
        h_indptr, h_items = (np.asarray(x, np.int64) for x in histories)
        rows = np.where(known, u, 0)
        s_indptr, s_items = _take_rows(h_indptr, h_items, rows)
        lengths = np.where(known, np.diff(s_indptr), 0)  # anonymous rows take no stored history
        keep = np.repeat(known, np.diff(s_indptr))
        s_indptr = np.concatenate([[0], np.cumsum(lengths)])
        r_indptr, r_items = ragged_concat((s_indptr, s_items[keep]), (r_indptr, r_items))
    seen_rows = (r_indptr, r_items)  # every history item, before the tail is cut
    if seen is not None and known.any():
        seen = seen if isinstance(seen, sp.csr_matrix) else sp.csr_matrix(seen)
        st_indptr, st_items = _take_rows(seen.indptr.astype(np.int64), seen.indices, np.where(known, u, 0))
        lengths = np.where(known, np.diff(st_indptr), 0)  # anonymous rows add nothing stored
        keep = np.repeat(known, np.diff(st_indptr))
        stored = (np.concatenate([[0], np.cumsum(lengths)]), st_items[keep].astype(np.int64))
        seen_rows = ragged_concat(seen_rows, stored)
    seen_rows = _csr(*seen_rows, n_items)
    r_indptr, r_items = ragged_tail(r_indptr, r_items, max_recent)
    return Requests(
        fresh=np.minimum(sent, np.diff(r_indptr)),
        users=u,
        recent_indptr=r_indptr,
        recent_items=r_items,
        seen=seen_rows,
        exclude=_csr(e_indptr, e_items, n_items),
        timestamp=timestamp,
        unknown_users=tuple(unknown_users),
        unknown_items=tuple(tuple(a + b_) for a, b_ in zip(unknown_r, unknown_e, strict=True)),
    )
