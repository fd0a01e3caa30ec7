"""Optimisers for ID embedding tables: a row step for large tables, one fused pass for small ones.

* :class:`RowAdam`: lazy Adam on sparse row gradients (``nn.Embedding(sparse=True)``), the update of
  :class:`torch.optim.SparseAdam` (the moments of the rows looked up only, bias correction from the
  table's step count) without its sparse-tensor bookkeeping: a step sums the gradient's duplicate rows
  with one ``unique`` + ``index_add_`` (no sort-based ``coalesce``), reads and writes the moments of
  those rows with ``index_select`` / ``index_copy_`` and moves the table with one ``index_add_``.
  Its cost follows the rows a batch looks up, not the table size.
* :func:`dense_adam`: Adam / AdamW for dense parameters, torch's fused kernel (one pass over each
  tensor) where this torch has it, else the ``foreach`` implementation. Small ID tables step faster
  dense than any row update (``recfunnel bench optim``), which is what ``sparse="auto"`` chooses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["RowAdam", "TableAdam", "dense_adam", "row_gradient"]


def row_gradient(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, values) of a sparse row gradient with duplicate rows summed: rows [u] ascending and
    distinct, values [u, d]. Works on coalesced and uncoalesced COO tensors alike."""
    if grad.is_coalesced():
        return grad._indices()[0], grad._values()
    idx = grad._indices()[0]
    vals = grad._values()
    rows, inv = torch.unique(idx, sorted=True, return_inverse=True)
    out = torch.zeros((len(rows), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
    out.index_add_(0, inv, vals)
    return rows, out


class RowAdam(torch.optim.Optimizer):
    """Lazy Adam for tables with sparse row gradients: :class:`torch.optim.SparseAdam`'s update
    (and its state: ``step``, ``exp_avg``, ``exp_avg_sq``) at a fraction of its bookkeeping.

    Only the rows present in a step's gradient change, in the table and in both moments; the bias
    correction uses the number of steps the table took. Dense gradients are refused (give those
    parameters a dense optimiser, e.g. :func:`dense_adam`)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if not eps >= 0:
            raise ValueError(f"invalid eps {eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(
                        "RowAdam takes sparse row gradients (nn.Embedding(sparse=True)); give dense "
                        "parameters a dense optimiser (recfunnel.train.row_optim.dense_adam)"
                    )
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"]
                rows, g = row_gradient(p.grad)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                m = exp_avg.index_select(0, rows).lerp_(g, 1 - beta1)
                v = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
                exp_avg.index_copy_(0, rows, m)
                exp_avg_sq.index_copy_(0, rows, v)
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps)), alpha=-step_size)
        return loss


class TableAdam(torch.optim.Adam):
    """:class:`torch.optim.Adam` with torch's fused kernel, stepped with less Python around it: the
    same update and state (``step``, ``exp_avg``, ``exp_avg_sq``; a fused Adam's ``state_dict``),
    one ``_fused_adam_`` call over the parameters that have a gradient. For the small dense ID tables
    and towers of the NCF family, where the step is taken thousands of times an epoch and
    ``Adam.step``'s bookkeeping cost as much as its arithmetic. Falls back to Adam's own step when
    this torch has no fused kernel, for AMSGrad / maximize, or tensor learning rates."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        groups = []
        for group in self.param_groups:
            if (
                group["amsgrad"]
                or group["maximize"]
                or group.get("decoupled_weight_decay", False)
                or torch.is_tensor(group["lr"])
            ):
                return super().step(closure)
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                return super().step(closure)  # Adam's own error
            groups.append((group, params))
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, params in groups:
            if not params:
                continue
            steps, exp_avgs, exp_avg_sqs = [], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                steps.append(state["step"])
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params,
                [p.grad for p in params],
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        return loss


def dense_adam(
    params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0, decoupled: bool = False
) -> torch.optim.Optimizer:
    """Adam (:class:`TableAdam`) or AdamW (when `decoupled`) with torch's fused kernel where this
    torch has one for these tensors, else the ``foreach`` implementation."""
    params = list(params)
    try:
        if decoupled:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        if hasattr(torch, "_fused_adam_"):
            return TableAdam(params, lr=lr, weight_decay=weight_decay)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for these tensors here
        pass
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, foreach=True)
