"""Objectives of the sequence models: teacher-forcing windows of each user's training sequence and a
loss on every real position (apart from the models, like :mod:`recfunnel.train.objectives`).

* ``seq-bce``: binary cross-entropy on the next item and one sampled negative per position, the
  negative uniform over items outside the user's training sequence (Kang & McAuley 2018, eq. 7).
* ``seq-ce``: softmax cross-entropy over all items at every position (as in later work, e.g.
  Klenitskiy & Vasilev 2023, "Turning dross into gold loss: is BERT4Rec really better than
  SASRec?", which found it much stronger than the paper's BCE); GRU4Rec's cross-entropy.
* ``seq-sampled-ce``: softmax cross-entropy against `negatives` items shared by the batch
  (SASRec+ / gSASRec style sampled softmax; accidental hits masked), drawn uniformly or by
  training popularity, optionally with the logQ correction (Bengio & Senecal 2008; Jean et al.
  2015) so that the loss estimates the full softmax's.
* ``seq-bpr-max``: GRU4Rec's BPR-max with shared uniform negatives and score regularisation
  (Hidasi & Karatzoglou 2018, eq. 7-8).

Every epoch's order and negatives come from ``epoch_rng(seed, epoch)``, drawn by vectorised ops, so
a resumed run draws what an uninterrupted one would. Batches are cut to their longest real
sequence; the model's own ``max_len`` crops them further when it is shorter.

The registry of objectives is :data:`recfunnel.train.registry.OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import Interactions
from recfunnel.data.sampling import PositiveSet, sample_negatives
from recfunnel.data.sequences import training_windows, user_sequences
from recfunnel.train.objectives import epoch_rng

__all__ = [
    "SeqBCE",
    "SeqBPRMax",
    "SeqCE",
    "SeqSampledCE",
    "SequenceObjective",
    "full_softmax_ce",
    "sampled_softmax_ce",
]


class SequenceObjective:
    """Teacher forcing on the windows of each user's time-ordered training sequence.

    Args:
        train: the training interactions (ordered per user by timestamp, then file order).
        n_users, n_items: vocabulary sizes.
        max_len: window length (the pipeline passes the model's).
        windows: "last" (one window per user: the paper) or "all" (long sequences cut into chunks
            of `max_len` targets, so every training item is a target once per epoch).
        bucket: batch windows of similar length together (sorted within random chunks of 50
            batches, batch order shuffled), so a batch's width, cut to its longest window, is
            close to its windows' lengths; off: uniformly random batches (the paper).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        max_len: int = 50,
        windows: Literal["last", "all"] = "last",
        bucket: bool = False,
    ) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.bucket = bucket
        self._per_batch = 1.0  # mean real positions per batch, set by batches()
        indptr, items = user_sequences(train, n_users)
        self.windows = training_windows(indptr, items, max_len, windows)
        self.max_len = max_len

    def samples_per_epoch(self) -> int:
        return len(self.windows)

    @property
    def positions_per_epoch(self) -> int:
        """Next-item targets per epoch (the real positions of all windows)."""
        return self.windows.n_targets

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        w = self.windows
        perm = rng.permutation(len(w))
        starts = np.arange(0, len(w), batch_size)
        if self.bucket:
            chunk = np.arange(len(w)) // (50 * batch_size)
            perm = perm[np.lexsort((w.lengths.numpy()[perm], chunk))]  # by length within chunks
            starts = starts[rng.permutation(len(starts))]
        perm = torch.from_numpy(perm)
        self._per_batch = max(1.0, w.n_targets / max(1, len(starts)))
        extra = self.epoch_draws(rng, batch_size)
        for b, start in enumerate(starts.tolist()):
            idx = perm[start : start + batch_size]
            width = max(1, int(w.lengths[idx].max()))
            batch = {"inputs": w.inputs[idx, -width:], "targets": w.targets[idx, -width:]}
            for key, (per_window, value) in extra.items():
                batch[key] = value[idx, -width:] if per_window else value[b]
            yield batch

    def epoch_draws(self, rng: np.random.Generator, batch_size: int) -> dict[str, tuple[bool, torch.Tensor]]:
        """Random draws for the epoch: name -> (indexed like the windows?, tensor)."""
        return {}

    def states(
        self, model, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden states [N, d] at the real positions, their targets [N] (shifted), the position mask)."""
        inputs, targets = batch["inputs"], batch["targets"]
        if inputs.shape[1] > model.max_len:  # the model reads fewer items than the windows hold
            inputs, targets = inputs[:, -model.max_len :], targets[:, -model.max_len :]
        real = targets > 0
        h = model.encode(inputs)
        return h[real], targets[real], real

    def reduce(self, per_position: torch.Tensor) -> torch.Tensor:
        """Mean over the batch's positions; with `bucket`, the sum over the mean number of
        positions per batch, so a position weighs the same in a batch of short windows as in
        one of long windows (as it does, on average, in random batches)."""
        if self.bucket:
            return per_position.sum() / self._per_batch
        return per_position.mean()

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class SeqBCE(SequenceObjective):
    """-log sigma(r_t) - log(1 - sigma(r_neg)) averaged over real positions (Kang & McAuley eq. 7)."""

    name: ClassVar[str] = "seq-bce"

    def __init__(self, train: Interactions, n_users: int, n_items: int, **kwargs) -> None:
        super().__init__(train, n_users, n_items, **kwargs)
        self.positives = PositiveSet(train.user, train.item, n_users, n_items)

    def epoch_draws(self, rng: np.random.Generator, batch_size: int) -> dict[str, tuple[bool, torch.Tensor]]:
        w = self.windows
        real = w.targets > 0
        owners = w.owners.unsqueeze(1).expand_as(w.targets)[real].numpy()
        negs = torch.zeros_like(w.targets)
        negs[real] = torch.from_numpy(sample_negatives(owners, 1, self.positives, rng)[:, 0] + 1)
        return {"negatives": (True, negs)}

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, targets, real = self.states(model, batch)
        negs = batch["negatives"][:, -real.shape[1] :][real]
        logits = model.logits(h, torch.stack([targets, negs], dim=1))
        return self.reduce(F.softplus(-logits[:, 0]) + F.softplus(logits[:, 1]))


def _at_least_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """`t` in fp32 when it is in a half type (bf16 autocast), else unchanged."""
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t


class _FullSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of h @ W.T + b against `target`, the [N, n_items] logits kept
    once: backward turns them into the gradient in place (softmax - one-hot) instead of the
    several full-size temporaries of log_softmax + nll (~15% of a SASRec-CE step on this CPU)."""

    @staticmethod
    def forward(ctx, h, weight, bias, target):
        logits = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
        lse = torch.logsumexp(logits, dim=1)
        loss = (lse - logits.gather(1, target.unsqueeze(1)).squeeze(1)).mean()
        ctx.save_for_backward(h, weight, logits, lse, target)
        ctx.has_bias = bias is not None
        return loss

    @staticmethod
    def backward(ctx, grad):
        h, weight, logits, lse, target = ctx.saved_tensors
        n = len(h)
        scale = grad / n
        # scale * softmax, computed in the saved logits' memory (backward runs once)
        g = logits.sub_((lse - torch.log(scale)).unsqueeze(1)).exp_()
        g[torch.arange(n, device=g.device), target] -= scale
        return g @ weight, g.T @ h, g.sum(0) if ctx.has_bias else None, None


def full_softmax_ce(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T + bias, target)`` with less memory traffic.

    h [N, d], weight [C, d], bias [C] or None, target int64 [N] in 0..C-1."""
    if len(h) == 0:
        return h.sum() * 0.0
    with torch.autocast(h.device.type, enabled=False):  # fp32 under bf16 autocast (its own backward)
        return _FullSoftmaxCE.apply(_at_least_fp32(h), _at_least_fp32(weight), _at_least_fp32(bias), target)


class SeqCE(SequenceObjective):
    """Softmax cross-entropy of the next item against every item, at every real position."""

    name: ClassVar[str] = "seq-ce"

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, targets, _ = self.states(model, batch)
        bias = model.output_bias()
        mean = full_softmax_ce(h, model.output_table()[1:], None if bias is None else bias[1:], targets - 1)
        return mean * (len(h) / self._per_batch) if self.bucket else mean


class _SharedNegatives(SequenceObjective):
    """Objectives scoring each position against `negatives` items shared by the batch.

    `sampling`: "uniform" over all items, or "popularity": item j with probability
    q_j proportional to (count_j + 1) ** `alpha`, count_j its training targets (+1: every item stays
    reachable, so none escapes the push-down of the loss)."""

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        negatives: int = 256,
        sampling: Literal["uniform", "popularity"] = "uniform",
        alpha: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(train, n_users, n_items, **kwargs)
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")
        self.k = negatives
        self.sampling = sampling
        counts = torch.bincount(self.windows.targets.flatten(), minlength=n_items + 1)[1:].double()
        q = (counts + 1.0) ** alpha if sampling == "popularity" else torch.ones(n_items, dtype=torch.float64)
        q = q / q.sum()
        self._cdf = np.cumsum(q.numpy())
        #: log(K q_j) per shifted item (row 0 unused): the logQ correction of a sampled item
        self.log_kq = torch.cat([torch.zeros(1), torch.log(negatives * q).float()])

    def epoch_draws(self, rng: np.random.Generator, batch_size: int) -> dict[str, tuple[bool, torch.Tensor]]:
        n_batches = -(-len(self.windows) // batch_size)
        if self.sampling == "uniform":
            negs = rng.integers(1, self.n_items + 1, size=(n_batches, self.k), dtype=np.int64)
        else:
            u = rng.random((n_batches, self.k))
            negs = np.minimum(np.searchsorted(self._cdf, u, side="right"), self.n_items - 1) + 1
        return {"negatives": (False, torch.from_numpy(negs.astype(np.int64)))}

    def scores(
        self,
        model,
        batch: dict[str, torch.Tensor],
        shift: torch.Tensor | None = None,
        hit: float = float("-inf"),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive logits [N], negative logits [N, K] minus `shift` [K] (if given), accidental
        hits set to `hit`)."""
        h, targets, _ = self.states(model, batch)
        negs = batch["negatives"]
        table, bias = model.output_table(), model.output_bias()
        pos = model.logits(h, targets.unsqueeze(1))[:, 0]
        offset = None if bias is None else bias[negs]
        if shift is not None:
            offset = -shift if offset is None else offset - shift
        # one [N, K] pass for product, bias and shift; the hits masked in that buffer
        neg = h @ table[negs].T if offset is None else torch.addmm(offset, h, table[negs].T)
        return pos, neg.masked_fill_(negs.unsqueeze(0) == targets.unsqueeze(1), hit)


class _SampledSoftmaxCE(torch.autograd.Function):
    """Per-position sampled softmax cross-entropy -r_t + log(exp(r_t) + sum_j exp(h . w_j + o_j)),
    the [N, K] negative logits kept once: forward turns them into exp(logit - max) in place, and
    backward turns that into the logits' gradient in place, instead of the several [N, K]
    temporaries of addmm + masked_fill + logsumexp + logaddexp and their autograd (about 60% of a
    SASRec-SCE step with 8,192 negatives on this CPU was that element-wise traffic)."""

    @staticmethod
    def forward(ctx, h, weight, offset, pos, hit_rows, hit_cols):
        logits = h @ weight.T if offset is None else torch.addmm(offset, h, weight.T)
        logits[hit_rows, hit_cols] = torch.finfo(logits.dtype).min  # accidental hits: no negative
        m = torch.maximum(logits.amax(1), pos)
        e = logits.sub_(m.unsqueeze(1)).exp_()
        z = e.sum(1) + torch.exp(pos - m)
        ctx.save_for_backward(h, weight, e, z, m, pos)
        ctx.has_offset = offset is not None
        return m + torch.log(z) - pos

    @staticmethod
    def backward(ctx, grad):
        h, weight, e, z, m, pos = ctx.saved_tensors
        coef = grad / z
        g = e.mul_(coef.unsqueeze(1))  # d loss / d logit_nj (backward runs once: e is reused)
        grad_offset = g.sum(0) if ctx.has_offset and ctx.needs_input_grad[2] else None
        grad_pos = grad * (torch.exp(pos - m) / z - 1.0)
        return g @ weight, g.T @ h, grad_offset, grad_pos, None, None


def sampled_softmax_ce(
    h: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor | None,
    pos: torch.Tensor,
    hit_rows: torch.Tensor,
    hit_cols: torch.Tensor,
) -> torch.Tensor:
    """Per-position ``logsumexp([pos_n, h_n @ weight.T + offset]) - pos_n`` with the entries
    (hit_rows, hit_cols) of the negative block left out -> [N].

    h [N, d], weight [K, d], offset [K] or None, pos [N] (the positives' logits), hit_rows /
    hit_cols int64 [H]. Computed in fp32 (under bf16 autocast too: its backward is its own)."""
    with torch.autocast(h.device.type, enabled=False):
        h, weight, offset, pos = (_at_least_fp32(t) for t in (h, weight, offset, pos))
        return _SampledSoftmaxCE.apply(h, weight, offset, pos, hit_rows, hit_cols)


class SeqSampledCE(_SharedNegatives):
    """Softmax cross-entropy of the next item against `negatives` shared sampled items:
    -r_t + log(exp(r_t) + sum_j exp(r_j - c_j)), c_j = log(K q_j) with `logq` (the sum then
    estimates the sum over every other item, so the loss estimates full softmax CE), else 0.

    The batch's draws are scored once per distinct item: an item drawn n_j times enters the sum
    once with log(n_j) added to its logit, the same sum (and gradient) as n_j copies at a fraction
    of the cost (8,192 popularity draws over amazon-video-seq's 23.7k items are ~5.2k distinct)."""

    name: ClassVar[str] = "seq-sampled-ce"

    def __init__(self, train: Interactions, n_users: int, n_items: int, logq: bool = False, **kwargs) -> None:
        super().__init__(train, n_users, n_items, **kwargs)
        self.logq = logq

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, targets, _ = self.states(model, batch)
        negs, counts = torch.unique(batch["negatives"], return_counts=True)  # sorted
        table, bias = model.output_table(), model.output_bias()
        pos = model.logits(h, targets.unsqueeze(1))[:, 0]
        offset = counts.float().log_()
        if self.logq:
            offset -= self.log_kq.to(negs.device)[negs]
        if bias is not None:
            offset = offset + bias[negs]
        # each target is at most one distinct negative: find it by binary search, not an [N, K] test
        col = torch.searchsorted(negs, targets).clamp_(max=len(negs) - 1)
        hit = negs[col] == targets
        rows = torch.nonzero(hit).squeeze(1)
        return self.reduce(sampled_softmax_ce(h, table[negs], offset, pos, rows, col[rows]))


class SeqBPRMax(_SharedNegatives):
    """BPR-max: -log sum_j s_j sigma(r_t - r_j) + reg * sum_j s_j r_j^2, s = softmax over the
    negatives' scores (Hidasi & Karatzoglou 2018)."""

    name: ClassVar[str] = "seq-bpr-max"

    def __init__(self, train: Interactions, n_users: int, n_items: int, reg: float = 1.0, **kwargs) -> None:
        super().__init__(train, n_users, n_items, **kwargs)
        self.reg = reg

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pos, neg = self.scores(model, batch)
        s = torch.softmax(neg, dim=1)
        hit = (s * torch.sigmoid(pos.unsqueeze(1) - neg)).sum(1)
        penalty = (s * torch.nan_to_num(neg, neginf=0.0).pow(2)).sum(1)
        return self.reduce(-torch.log(hit + 1e-24) + self.reg * penalty)
