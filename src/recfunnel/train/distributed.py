"""Data-parallel training over ``torch.distributed``, for processes started by torch's launcher
(``torchrun`` / ``python -m torch.distributed.run``), which sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT.

How the :class:`~recfunnel.train.trainer.Trainer` uses it (nothing here runs in one process):

* every rank draws the same global epoch (the objective's batches are seeded by (seed, epoch)) and
  trains on its contiguous slice of each global batch (:func:`shard_bounds`): the shard of a rank
  is a function of (seed, epoch, rank, world size), so a run is reproducible, and resuming with
  another world size continues the same sequence of global batches;
* after backward, :class:`GradientSync` sums the gradients weighted by each rank's share of the
  global batch (``n_rank / n_global``), so the update equals the one-process update on the whole
  global batch (the objectives' losses are means over rows) up to float summation order. Sparse
  row gradients (``nn.Embedding(sparse=True)``, MF-BPR's closed-form backward) are exchanged as
  rows (all-gather of the touched rows) or through a dense table (all-reduce of the whole table
  plus a touched-row mark), chosen by ``RECFUNNEL_SPARSE_ALLREDUCE`` (``rows`` | ``dense``);
* rank 0 validates, writes checkpoints and logs, then hands the metrics to the others
  (:func:`broadcast_object`), so every rank takes the same early-stopping decision.

Collectives time out after ``RECFUNNEL_DIST_TIMEOUT`` seconds (30 by default), so a dead peer
makes the others fail rather than hang; the once-an-epoch hand-over from rank 0 (which waits for
its validation and checkpoint) uses ``RECFUNNEL_DIST_EPOCH_TIMEOUT`` (600 s by default).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from recfunnel.errors import ConfigError
from recfunnel.train.row_optim import row_gradient
from recfunnel.train.seq_objectives import SequenceObjective

__all__ = [
    "GradientSync",
    "SPARSE_MODES",
    "broadcast_object",
    "broadcast_parameters",
    "init",
    "is_distributed",
    "is_main",
    "launched",
    "rank",
    "session",
    "shard_batch",
    "shard_bounds",
    "shard_weight",
    "shutdown",
    "world_size",
]

TIMEOUT_ENV = "RECFUNNEL_DIST_TIMEOUT"
EPOCH_TIMEOUT_ENV = "RECFUNNEL_DIST_EPOCH_TIMEOUT"
SPARSE_ENV = "RECFUNNEL_SPARSE_ALLREDUCE"
SPARSE_MODES = ("rows", "dense")
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_EPOCH_TIMEOUT_S = 600.0

_epoch_group: Any = None  # a gloo group with the long timeout, for rank 0's once-an-epoch hand-over


def launched() -> bool:
    """Whether this process was started by torch's launcher (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes checkpoints, logs and artifacts (rank 0, or no process group)."""
    return rank() == 0


def _seconds(env: str, given: float | None, default: float) -> float:
    if given is not None:
        value: Any = given
    else:
        value = os.environ.get(env, default)
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{env}={value!r} is not a number of seconds; valid: a positive number") from None
    if not seconds > 0:
        raise ConfigError(f"{env}={value!r}: the timeout must be a positive number of seconds")
    return seconds


def sparse_mode() -> str:
    """How sparse row gradients are exchanged: ``RECFUNNEL_SPARSE_ALLREDUCE`` (default ``rows``)."""
    mode = os.environ.get(SPARSE_ENV, "rows")
    if mode not in SPARSE_MODES:
        raise ConfigError(f"{SPARSE_ENV}={mode!r} is not a mode; valid: {', '.join(SPARSE_MODES)}")
    return mode


def init(device: str = "cpu", timeout: float | None = None) -> bool:
    """Join the process group the launcher's environment describes (gloo on CPU, nccl on CUDA);
    returns False (and does nothing) outside a launched process. `timeout`: seconds a collective
    waits for a peer (default ``RECFUNNEL_DIST_TIMEOUT`` or 30)."""
    global _epoch_group
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; valid: a build with it, or one process")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    wait = timedelta(seconds=_seconds(TIMEOUT_ENV, timeout, DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=wait)
    epoch_wait = timedelta(seconds=_seconds(EPOCH_TIMEOUT_ENV, None, DEFAULT_EPOCH_TIMEOUT_S))
    _epoch_group = dist.new_group(backend="gloo", timeout=max(wait, epoch_wait))
    return True


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    global _epoch_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _epoch_group = None


@contextlib.contextmanager
def session(device: str = "cpu", timeout: float | None = None) -> Iterator[bool]:
    """:func:`init` on entry, :func:`shutdown` on exit; yields whether the process is distributed."""
    joined = init(device, timeout)
    try:
        yield joined
    finally:
        if joined:
            shutdown()


# --------------------------------------------------------------------------------------------------
# shards


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch of `n` rows that `rank` of `world` trains on: contiguous
    slices whose sizes differ by at most one (a rank may get none when n < world)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return rank * n // world, (rank + 1) * n // world


def batch_rows(batch: dict[str, Any]) -> int:
    """Rows of a batch: the length of its first value (the objectives put a per-row value first)."""
    first = next(iter(batch.values()))
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(first)


def shard_batch(batch: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    """Rows [lo, hi) of a batch. A value with ``take`` (FieldBatch) is taken; a tensor is sliced
    when it is per-row: its first dimension is the batch's rows and it has at least as many
    dimensions as the first value (so a sequence batch's shared negatives [K] stay whole beside
    its [B, L] windows). An objective whose batches need more (in-batch candidates) defines
    ``shard(batch, lo, hi)``, which the Trainer calls instead."""
    first = next(iter(batch.values()))
    n, ndim = batch_rows(batch), getattr(first, "ndim", 1)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            per_row = value.ndim >= max(1, ndim) and value.shape[0] == n
            out[key] = value[lo:hi] if per_row else value
        elif hasattr(value, "take"):
            out[key] = value.take(slice(lo, hi))
        else:
            out[key] = value
    return out


def shard_weight(objective: object, batch: dict[str, Any], part: dict[str, Any], lo: int, hi: int) -> float:
    """What a shard's loss counts for in the global batch's loss: the weights of the ranks sum the
    shard losses into the global one. Rows share for losses that are means over rows; for
    sequence objectives the share of the real positions (their loss is a mean over positions), or 1
    with `bucket` (a sum over a per-epoch constant); an objective may say with
    ``shard_weight(batch, part)``."""
    custom = getattr(objective, "shard_weight", None)
    if custom is not None:
        return float(custom(batch, part))
    if isinstance(objective, SequenceObjective):
        if objective.bucket:
            return 1.0
        return float((part["targets"] > 0).sum()) / max(1.0, float((batch["targets"] > 0).sum()))
    return (hi - lo) / batch_rows(batch)


# --------------------------------------------------------------------------------------------------
# collectives


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Every rank's parameters and buffers set to rank 0's (one broadcast per tensor)."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank, over the long-timeout group (rank 0
    may be validating and writing a checkpoint meanwhile)."""
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_epoch_group)
    return box[0]


class GradientSync:
    """Sum of the ranks' gradients, each weighted by its share of the global batch; with losses
    that are means over rows this is the gradient of the global batch's mean loss.

    Dense gradients travel in one flat all-reduce, with a flag per parameter (a parameter no rank
    touched keeps ``grad = None``, as in one process) and the weighted loss. Sparse ones (the
    parameters in `sparse`) as their touched rows (mode ``rows``: all-gathers of the rows and
    values, duplicates summed by the row optimiser) or through the dense table (mode ``dense``:
    one all-reduce of [rows, dim + 1], the last column marking touched rows)."""

    def __init__(self, params: Sequence[torch.Tensor], sparse: Sequence[torch.Tensor], mode: str) -> None:
        if mode not in SPARSE_MODES:
            raise ConfigError(f"sparse all-reduce mode {mode!r}; valid: {', '.join(SPARSE_MODES)}")
        sparse_ids = {id(p) for p in sparse}
        self.dense = [p for p in params if id(p) not in sparse_ids]
        self.sparse = [p for p in params if id(p) in sparse_ids]
        self.mode = mode
        self.world = dist.get_world_size()

    def __call__(self, weight: float, loss: torch.Tensor | None) -> float:
        """All-reduce this step's gradients (in place of each ``.grad``); -> the global mean loss."""
        total = self._dense(weight, loss)
        if self.sparse:
            (self._sparse_rows if self.mode == "rows" else self._sparse_dense)(weight)
        return total

    def _dense(self, weight: float, loss: torch.Tensor | None) -> float:
        parts = [
            p.grad.reshape(-1) * weight if p.grad is not None else p.new_zeros(p.numel()) for p in self.dense
        ]
        flags = [1.0 if p.grad is not None else 0.0 for p in self.dense]
        flags.append(float(loss) * weight if loss is not None else 0.0)
        params = self.dense or self.sparse
        device = params[0].device if params else torch.device("cpu")  # nccl: CUDA tensors
        buf = torch.cat([*parts, torch.tensor(flags, dtype=torch.float32, device=device)])
        dist.all_reduce(buf)
        tail = buf[-len(flags) :].tolist()
        offset = 0
        for p, flag in zip(self.dense, tail, strict=False):
            n = p.numel()
            p.grad = buf[offset : offset + n].view_as(p) if flag > 0 else None
            offset += n
        return tail[-1]

    def _local_rows(self, p: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        g = p.grad
        if g is None:
            return torch.empty(0, dtype=torch.long, device=p.device), p.new_zeros((0, *p.shape[1:]))
        if g.is_sparse:
            rows, values = row_gradient(g)
            return rows, values * weight
        return torch.arange(p.shape[0], device=p.device), g * weight  # a dense gradient: every row

    def _sparse_rows(self, weight: float) -> None:
        local = [self._local_rows(p, weight) for p in self.sparse]
        device = self.sparse[0].device  # nccl exchanges CUDA tensors, gloo CPU ones
        counts = torch.tensor([len(r) for r, _ in local], dtype=torch.long, device=device)
        all_counts = [torch.empty_like(counts) for _ in range(self.world)]
        dist.all_gather(all_counts, counts)
        table = torch.stack(all_counts)  # [world, params]
        widths = [p[0].numel() for p in self.sparse]  # values per row
        rows_len = int(table.sum(1).max())
        vals_len = int((table * torch.tensor(widths, device=device)).sum(1).max())
        rows = torch.zeros(rows_len, dtype=torch.long, device=device)
        vals = torch.zeros(vals_len, dtype=self.sparse[0].dtype, device=device)
        r_at = v_at = 0
        for (r, v), w in zip(local, widths, strict=True):
            rows[r_at : r_at + len(r)] = r
            vals[v_at : v_at + len(r) * w] = v.reshape(-1)
            r_at, v_at = r_at + len(r), v_at + len(r) * w
        got_rows = [torch.empty_like(rows) for _ in range(self.world)]
        got_vals = [torch.empty_like(vals) for _ in range(self.world)]
        dist.all_gather(got_rows, rows)
        dist.all_gather(got_vals, vals)
        pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.sparse]
        for k in range(self.world):
            r_at = v_at = 0
            for j, w in enumerate(widths):
                c = int(table[k, j])
                pieces[j].append((got_rows[k][r_at : r_at + c], got_vals[k][v_at : v_at + c * w]))
                r_at, v_at = r_at + c, v_at + c * w
        for p, got in zip(self.sparse, pieces, strict=True):
            idx = torch.cat([r for r, _ in got])
            if not len(idx):
                p.grad = None
                continue
            values = torch.cat([v for _, v in got]).view(len(idx), *p.shape[1:])
            # uncoalesced: the row optimiser sums duplicate rows (as for one process's row gradients)
            p.grad = torch.sparse_coo_tensor(idx.unsqueeze(0), values, p.shape)

    def _sparse_dense(self, weight: float) -> None:
        tables = []
        for p in self.sparse:
            rows, values = self._local_rows(p, weight)
            t = p.new_zeros(p.shape[0], p[0].numel() + 1)
            t[rows, :-1] = values.reshape(len(rows), -1)
            t[rows, -1] = 1.0
            tables.append(t)
        buf = torch.cat([t.reshape(-1) for t in tables])
        dist.all_reduce(buf)
        offset = 0
        for p, t in zip(self.sparse, tables, strict=True):
            t = buf[offset : offset + t.numel()].view_as(t)
            offset += t.numel()
            rows = torch.nonzero(t[:, -1] > 0).squeeze(1)
            if not len(rows):
                p.grad = None
                continue
            values = t[rows, :-1].reshape(len(rows), *p.shape[1:])
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, p.shape, is_coalesced=True)
