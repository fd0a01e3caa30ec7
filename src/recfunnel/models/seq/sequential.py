"""What every sequence model shares: the user vector is the encoder's output at the last position of
the user's recent items (Factorised), and those items come from a history set by the caller
(HistoryAware).

Item index ``i`` enters the encoder as ``i + 1``; 0 is padding (:mod:`recfunnel.data.sequences`).
The output side is an item table of ``n_items + 1`` rows (row 0 unused) and an optional bias, so
``score(u, i) = <user_vector(u), table[i + 1]> + bias[i + 1]``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from recfunnel.data.sequences import left_padded
from recfunnel.models.base import Model, ModelConfig


class SequenceModel(Model):
    """Base of GRU4Rec and SASRec. Subclasses implement :meth:`encode` and :meth:`output_table`."""

    objective: ClassVar[str] = "seq-ce"

    def __init__(self, config: ModelConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.max_len: int = config.max_len  # type: ignore[attr-defined]
        # Not a buffer: the history is data, not a weight; it changes with the evaluated part and
        # the Recommender saves it beside the weights.
        self._history: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- what a subclass provides -------------------------------------------------------------
    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Left-padded shifted items [B, W] (0 = pad) -> hidden state at every position [B, W, d]."""
        raise NotImplementedError

    def output_table(self) -> torch.Tensor:
        """Output item embeddings [n_items + 1, d] (row i + 1 is item i)."""
        raise NotImplementedError

    def encode_last(self, seq: torch.Tensor) -> torch.Tensor:
        """The hidden state at the last position only, [B, d] (a subclass may compute less)."""
        return self.encode(seq)[:, -1]

    def output_bias(self) -> torch.Tensor | None:
        """Output item bias [n_items + 1], or None."""
        return None

    # ---- logits for the objectives ----------------------------------------------------------
    def logits(self, h: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, d] against shifted items [N, K] -> [N, K]."""
        table = self.output_table()
        out = (h.unsqueeze(1) * table[shifted]).sum(-1)
        bias = self.output_bias()
        return out if bias is None else out + bias[shifted]

    def all_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, d] against every item -> [N, n_items] (column i is item i)."""
        out = h @ self.output_table()[1:].T
        bias = self.output_bias()
        return out if bias is None else out + bias[1:]

    # ---- HistoryAware -----------------------------------------------------------------------
    def set_history(self, indptr: torch.Tensor, items: torch.Tensor) -> None:
        """Each user's time-ordered item indices, CSR-like: user u's are items[indptr[u]:indptr[u+1]]."""
        indptr = torch.as_tensor(indptr, dtype=torch.long)
        items = torch.as_tensor(items, dtype=torch.long)
        if indptr.shape != (self.n_users + 1,):
            raise ValueError(
                f"history indptr must have n_users + 1 = {self.n_users + 1} entries, "
                f"got shape {tuple(indptr.shape)}"
            )
        if int(indptr[-1]) != len(items) or (
            len(items) and (int(items.min()) < 0 or int(items.max()) >= self.n_items)
        ):
            raise ValueError(f"history items must be {int(indptr[-1])} item indices in 0..{self.n_items - 1}")
        self._history = (indptr, items)

    def get_history(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._history

    def encode_items(self, indptr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """User vectors [B, d] of ad-hoc item lists (CSR-like, item indices, oldest first); only
        the last `max_len` items of each list count."""
        return self._encode_last(indptr, items, torch.arange(len(indptr) - 1))

    #: rows encoded together when scoring; rows are grouped by history length first
    SCORE_CHUNK: ClassVar[int] = 256

    def _encode_last(self, indptr: torch.Tensor, items: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The encoder's output at the newest position of each selected sequence -> [B, d].

        Large batches are encoded in chunks of similar history length, each cut to its own
        longest sequence (padding never changes an output), so scoring many users with mostly
        short histories does not pay for the longest one."""
        # histories are kept on the CPU, where the windows are cut; the encoder runs on its device
        rows = torch.as_tensor(rows).to(indptr.device)
        device = self.output_table().device
        if len(rows) <= self.SCORE_CHUNK:
            return self.encode_last(left_padded(indptr, items, rows, self.max_len).to(device))
        lengths = (indptr[rows + 1] - indptr[rows]).clamp(max=self.max_len)
        out = None
        for part in torch.argsort(lengths, stable=True).split(self.SCORE_CHUNK):
            h = self.encode_last(left_padded(indptr, items, rows[part], self.max_len).to(device))
            if out is None:
                out = h.new_empty(len(rows), h.shape[1])
            out[part] = h
        return out

    def eval_order(self, users: np.ndarray) -> np.ndarray:
        """The order to score `users` in during evaluation: by history length (stable), so the
        evaluation's batches hold histories of similar length and pad little (in file order a batch
        of a few hundred users nearly always holds one full window, padding every short history
        to `max_len`)."""
        if self._history is None:
            return np.arange(len(users))
        indptr = self._history[0].numpy()
        users = np.asarray(users, dtype=np.int64)
        lengths = np.minimum(indptr[users + 1] - indptr[users], self.max_len)
        return np.argsort(lengths, kind="stable")

    # ---- Factorised -------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, d]: the encoding of each user's last `max_len` history items."""
        if self._history is None:
            raise RuntimeError(
                f"{self.family}: no user histories set; call set_history(indptr, items) "
                "(evaluation and the Recommender set them), or use encode_items for ad-hoc lists"
            )
        indptr, items = self._history
        return self._encode_last(indptr, items, users)

    def item_vectors(self) -> torch.Tensor:
        return self.output_table()[1:]

    def item_bias_all(self) -> torch.Tensor | float:
        bias = self.output_bias()
        return 0.0 if bias is None else bias[1:]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Users [B] against items [B, C] -> [B, C]."""
        return self.logits(self.user_vectors(users), items + 1)
