"""Layers of the sequence models: a cheap dropout and SASRec's causal self-attention block.

(Kept beside the sequence models rather than in ``recfunnel.nn`` while the CTR work fills that
package; they depend on nothing but torch and can move there unchanged.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PoolDropout", "SelfAttentionBlock", "attention_mask"]


class PoolDropout(nn.Module):
    """Inverted dropout whose masks are windows of one pre-drawn random pool.

    ``F.dropout`` draws a fresh Bernoulli per element each call, which on this CPU cost about a
    third of a SASRec training step; here each call takes a window of a fixed pool of
    ``{0, 1/(1-p)}`` values at a random offset, so a dropout costs one multiply. Each element is
    still dropped with probability p; masks of different calls are shifted windows of the same
    pool (correlated only through the pool, 4M draws long). The pool comes from a generator seeded
    by ``torch.initial_seed()`` the first time it is needed and is never redrawn, so a run resumed
    from a checkpoint draws the same masks as an uninterrupted one (offsets use the global torch
    RNG, which checkpoints save).
    """

    POOL = 1 << 22
    _pools: dict[tuple[float, int, int], torch.Tensor] = {}  # shared by every instance with that p

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def _pool(self, n: int, device: torch.device) -> torch.Tensor:
        seed = torch.initial_seed() % (2**63)
        size = max(self.POOL, 1 << (2 * n - 1).bit_length())  # powers of two: few distinct pools
        key = (self.p, seed, size, str(device))
        pool = PoolDropout._pools.get(key)
        if pool is None:
            if len(PoolDropout._pools) > 8:
                PoolDropout._pools.clear()
            g = torch.Generator().manual_seed(seed + 7919)
            pool = (torch.rand(size, generator=g) >= self.p).float().mul_(1.0 / (1.0 - self.p))
            PoolDropout._pools[key] = pool = pool.to(device)  # drawn on the CPU: same mask anywhere
        return pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        pool = self._pool(n, x.device)
        off = int(torch.randint(0, len(pool) - n + 1, (1,)))
        return x * pool[off : off + n].view_as(x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention_mask(seq: torch.Tensor) -> torch.Tensor:
    """Additive mask [B, 1, W, W] for left-padded `seq` [B, W] (0 = pad): position t attends to
    real positions <= t (causal, Kang & McAuley 2018 sec. III-B) and always to itself, so padded
    query rows stay finite and padding never changes the output of a real position."""
    w, device = seq.shape[1], seq.device
    causal = torch.ones(w, w, dtype=torch.bool, device=device).tril()
    allowed = causal & (seq != 0).unsqueeze(1)  # [B, W(query), W(key)]
    allowed = allowed | torch.eye(w, dtype=torch.bool, device=device)
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=device)
    return mask.masked_fill_(~allowed, float("-inf")).unsqueeze(1)


class SelfAttentionBlock(nn.Module):
    """One SASRec block (sec. III-B/C, as in the authors' code): queries from LayerNorm(x), keys
    and values from x, residual on the normalised queries; then a point-wise two-layer ReLU
    feed-forward network on LayerNorm of that, with its own residual. Dropout on the attention
    weights and after each feed-forward layer."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden size {d} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.attn_drop = PoolDropout(dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn1 = nn.Linear(d, d)
        self.ffn2 = nn.Linear(d, d)
        self.drop1 = PoolDropout(dropout)
        self.drop2 = PoolDropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, W, d], mask [B, 1, W, W] additive -> [B, W, d]; with `last_only`, the output at
        the last position alone, [B, 1, d] (its query attends over every position as before)."""
        b, w, d = x.shape
        h = self.heads
        q_in = self.attn_norm(x[:, -1:] if last_only else x)
        wq = q_in.shape[1]
        q = self.q(q_in).view(b, wq, h, d // h).transpose(1, 2)
        k, v = self.kv(x).view(b, w, 2, h, d // h).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h)) + mask[:, :, -wq:]
        att = self.attn_drop(torch.softmax(scores, dim=-1))
        y = self.out((att @ v).transpose(1, 2).reshape(b, wq, d))
        x = q_in + y
        z = self.ffn_norm(x)
        return z + self.drop2(self.ffn2(self.drop1(torch.relu(self.ffn1(z)))))
