"""One Trainer for every trainable model: mini-batches from an objective, sparse-aware optimisers,
early stopping on a validation metric, atomic resumable checkpoints and a JSON epoch log; data
parallel across the processes of a launched run (:mod:`recfunnel.train.distributed`); on the
device ``TrainConfig.device`` names (CUDA when present), optionally under bf16 autocast."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from recfunnel.atomic import atomic_write_bytes, atomic_write_text
from recfunnel.nn.device import (
    DEVICE_HELP,
    autocast,
    check_device_spec,
    module_device,
    resolve_device,
    to_device,
)
from recfunnel.train import distributed
from recfunnel.train.checkpoint import (
    CheckpointError,
    check_identity,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from recfunnel.train.objectives import Objective
from recfunnel.train.row_optim import RowAdam, dense_adam


class TrainConfig(BaseModel):
    """How a model is trained (not what it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, description="maximum number of epochs")
    batch_size: int = Field(256, ge=1, description="rows per mini-batch (positives+negatives for BCE)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="dense optimiser; sparse embedding tables use RowAdam (SGD when 'sgd')"
    )
    weight_decay: float = Field(0.0, ge=0, description="weight decay on dense parameters")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="learning rate over the run: constant, or cosine decay from `lr` to 0 at the "
        "end of `epochs` (set per step; with early stopping the run may end before it reaches 0)",
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear warm-up from 0 to `lr` over this many epochs (fractions allowed)"
    )
    patience: int = Field(5, ge=0, description="epochs without validation gain before stopping; 0: never")
    monitor: str = Field("ndcg@10", description="validation metric for early stopping and best epoch")
    seed: int = Field(0, description="seed for initialisation, negatives and batch order")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads while training; None: the model family's choice "
        "(`train_threads`, e.g. 1 for the ID-table families), else torch's setting",
    )
    progress: bool = Field(True, description="show a progress bar")
    device: str = Field(
        "auto",
        description=f"where the model trains and validates: {DEVICE_HELP}; the trained model is "
        "handed back on the device it came on (the CPU for a new one)",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="forward pass and loss in fp32, or under bf16 autocast (weights, gradients and "
        "optimiser state stay fp32; on CPU too)",
    )

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        return check_device_spec(v)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before building the model)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Sparse embedding tables get :class:`~recfunnel.train.row_optim.RowAdam` (SparseAdam's lazy
    update, a step costing the rows looked up); everything else the configured dense optimiser,
    fused (:func:`~recfunnel.train.row_optim.dense_adam`) for models that declare
    ``fused_optimizer = True`` (the ID-table families), ``foreach`` otherwise."""
    sparse_ids = _sparse_tables(model)
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = [p for p in params if id(p) in sparse_ids]
    dense = [p for p in params if id(p) not in sparse_ids]
    if cfg.optimizer == "sgd":
        return [torch.optim.SGD(params, lr=cfg.lr)] if params else []
    opts: list[torch.optim.Optimizer] = []
    if dense:
        decoupled = cfg.optimizer == "adamw"
        if getattr(model, "fused_optimizer", False):
            opts.append(dense_adam(dense, cfg.lr, cfg.weight_decay, decoupled))
        else:
            cls = torch.optim.AdamW if decoupled else torch.optim.Adam
            opts.append(cls(dense, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True))
    if sparse:
        opts.append(RowAdam(sparse, lr=cfg.lr))
    return opts


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """The learning rate's multiplier after `progress` epochs (fractional) of a run of
    ``cfg.epochs``: the linear warm-up, then the schedule."""
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return progress / cfg.warmup_epochs
    if cfg.lr_schedule == "constant":
        return 1.0
    span = cfg.epochs - cfg.warmup_epochs
    t = min(1.0, (progress - cfg.warmup_epochs) / span) if span > 0 else 1.0
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _set_lr(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def _sparse_tables(model: torch.nn.Module) -> set[int]:
    """ids of the weights of the model's sparse embedding tables (sparse row gradients)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}


class _DataParallel:
    """What a step and an epoch of a distributed fit add: each rank backpropagates its slice of
    the global batch, gradients are summed weighted by the slice's share of the global batch's
    loss (:func:`~recfunnel.train.distributed.shard_weight`: the global batch's gradient),
    and rank 0's epoch entry (validation included) is handed to the others once it has written
    its checkpoint."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        amp: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.amp = amp
        self.main = self.rank == 0
        sparse_ids = _sparse_tables(model)
        params = [p for p in model.parameters() if p.requires_grad]
        self.sync = distributed.GradientSync(
            params, [p for p in params if id(p) in sparse_ids], distributed.sparse_mode()
        )
        self.shard = getattr(objective, "shard", None) or distributed.shard_batch
        distributed.broadcast_parameters(model)  # equal on every rank already; made sure

    def backward(
        self, model: torch.nn.Module, objective: Objective, batch: dict, fused: Callable | None
    ) -> tuple[float, int]:
        """Backward on this rank's rows of `batch`, then the gradient all-reduce; -> (the global
        batch's mean loss, its rows)."""
        n = distributed.batch_rows(batch)
        lo, hi = distributed.shard_bounds(n, self.rank, self.world)
        loss, weight = None, 0.0
        if hi > lo:  # a global batch smaller than the world leaves some ranks without rows
            part = self.shard(batch, lo, hi)
            weight = distributed.shard_weight(objective, batch, part, lo, hi)
            loss = _step_loss(model, objective, part, fused, self.amp)
        return self.sync(weight, loss), n


@dataclass
class TrainReport:
    """What a fit did: the epoch log, the best epoch and throughput figures."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = -math.inf
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def samples_per_second(self) -> float:
        n = sum(h["samples"] for h in self.history)
        t = sum(h["train_seconds"] for h in self.history)
        return n / t if t else 0.0

    @property
    def pipeline_share(self) -> float:
        """Share of epoch training time spent outside forward/backward/step (sampling, batching)."""
        t = sum(h["train_seconds"] for h in self.history)
        c = sum(h["compute_seconds"] for h in self.history)
        return (t - c) / t if t else 0.0


class Trainer:
    """Train `model` on `objective`; validate with `validate(model) -> {metric: value}` each epoch.

    Checkpoints (when `checkpoint_dir` is given) are written after every epoch: `last/` (model,
    optimisers, RNG, trainer state) and `best.safetensors`; `resume=True` continues from `last/`
    and ends with the same weights as an uninterrupted run. `log.json` holds the epoch log.

    In a process group (:mod:`recfunnel.train.distributed`), every rank trains on its slice of
    each global batch of `batch_size` rows and the gradients are averaged over the global batch
    before each step; rank 0 validates and writes the checkpoints and log, and every rank takes
    its early-stopping decision from rank 0's metrics. A checkpoint holds the global state, so a
    run resumes with any number of processes.

    The model trains and validates on ``config.device`` (:func:`~recfunnel.nn.device.resolve_device`:
    ``auto`` is CUDA when torch sees a GPU); batches are moved there, and the model is handed back
    on the device it came on. Checkpoints are read onto the CPU and copied into place, so a run
    resumes on another device. ``config.precision = "bf16"`` runs forward and loss under bf16
    autocast.
    """

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    def fit(
        self,
        model: torch.nn.Module,
        objective: Objective,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        max_epochs: int | None = None,
        *,
        identity: dict[str, str] | None = None,
    ) -> TrainReport:
        """Run the loop. `max_epochs` stops after that many epochs in this call (for tests that
        simulate an interruption); the configured `epochs` is the run's total.

        `identity`: what this run trains on, {name: fingerprint} (e.g.
        ``data_identity(dataset, split, model=..., objective=...)`` from
        :mod:`recfunnel.train.checkpoint`), recorded in every checkpoint. With `resume`, a checkpoint
        whose identity differs in any key (or records none) is refused with a CheckpointError naming
        the key, before any weight is loaded; without `identity` nothing is compared."""
        cfg = self.config
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        device = resolve_device(cfg.device)  # an absent GPU fails here, before any work
        if device.type == "cuda" and distributed.is_distributed():
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's (its local rank)
        home = module_device(model)
        model.to(device)  # before the optimisers: their state lives beside the parameters
        try:
            return self._fit(model, objective, validate, ckpt, resume, max_epochs, identity, device)
        finally:
            model.to(home)

    def _fit(
        self,
        model: torch.nn.Module,
        objective: Objective,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None,
        ckpt: Path | None,
        resume: bool,
        max_epochs: int | None,
        identity: dict[str, str] | None,
        device: torch.device,
    ) -> TrainReport:
        """:meth:`fit` with the model on `device`."""
        cfg = self.config
        optimizers = build_optimizers(model, cfg)
        amp = (lambda: autocast(device, cfg.precision)) if cfg.precision != "fp32" else None
        # an objective may compute its loss and gradients in one fused pass (MF-BPR's closed form)
        fused_backward = getattr(objective, "backward", None)
        main = distributed.is_main()
        report = TrainReport()
        best_state: dict[str, torch.Tensor] | None = None
        start_epoch, bad_epochs = 0, 0
        if resume:
            if ckpt is None or not (ckpt / "last").exists():
                raise FileNotFoundError(f"nothing to resume: no checkpoint at {ckpt}/last")
            if identity is not None:
                check_identity(ckpt, read_checkpoint_meta(ckpt / "last").get("identity"), identity)
            state = load_checkpoint(ckpt / "last", model=model, optimizers=optimizers)
            saved = state.get("config")
            if saved is not None and saved != _resume_key(cfg):
                raise CheckpointError(
                    f"cannot resume: the checkpoint at {ckpt} was trained with {saved}, this run asks for "
                    f"{_resume_key(cfg)}; resuming needs the same settings to equal an uninterrupted run. "
                    f"Delete {ckpt} to start afresh, or resume with the original settings"
                )
            lacking = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else _STATE_KEYS
            if lacking:
                raise CheckpointError(
                    f"the checkpoint at {ckpt / 'last'} was not written by Trainer (its state lacks "
                    f"{', '.join(lacking)}); delete {ckpt} to start afresh"
                )
            start_epoch, bad_epochs = state["epoch"] + 1, state["bad_epochs"]
            report.history = state["history"]
            report.best_epoch, report.best_metric = state["best_epoch"], state["best_metric"]
            if (ckpt / "best.safetensors").exists():
                best_state = safetensors.torch.load_file(str(ckpt / "best.safetensors"))
        ddp = _DataParallel(model, objective, amp) if distributed.is_distributed() else None
        t_fit = time.perf_counter()
        end_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, start_epoch + max_epochs)
        if resume and validate is not None and cfg.patience and bad_epochs >= cfg.patience:
            # the saved run had already stopped early: an uninterrupted run would train no further
            end_epoch, report.stopped_early = start_epoch, True
        threads = cfg.threads if cfg.threads is not None else getattr(model, "train_threads", None)
        scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
        with (
            _torch_threads(threads),
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                disable=not (cfg.progress and main),
                transient=True,
            ) as progress,
        ):
            for epoch in range(start_epoch, end_epoch):
                n_batches = math.ceil(objective.samples_per_epoch() / cfg.batch_size)
                task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=n_batches, info="")
                model.train()
                t0 = time.perf_counter()
                compute, total_loss, n_seen, step = 0.0, 0.0, 0, 0
                for batch in objective.batches(epoch, cfg.seed, cfg.batch_size):
                    c0 = time.perf_counter()
                    if scheduled:
                        _set_lr(optimizers, cfg.lr * lr_factor(cfg, epoch + min(1.0, step / n_batches)))
                    if device.type != "cpu":
                        batch = to_device(batch, device, non_blocking=True)
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    if ddp is not None:
                        batch_loss, n = ddp.backward(model, objective, batch, fused_backward)
                    else:
                        loss = _step_loss(model, objective, batch, fused_backward, amp)
                        n = next(iter(batch.values())).shape[0]
                        batch_loss = float(loss.detach())
                    for opt in optimizers:
                        opt.step()
                    compute += time.perf_counter() - c0
                    total_loss += batch_loss * n
                    n_seen += n
                    step += 1
                    if step % 50 == 0 or step == n_batches:
                        el = time.perf_counter() - t0
                        progress.update(
                            task,
                            completed=step,
                            info=f"loss {total_loss / n_seen:.4f}  {n_seen / el:,.0f} samples/s",
                        )
                train_seconds = time.perf_counter() - t0
                progress.remove_task(task)
                entry = {
                    "epoch": epoch,
                    "loss": total_loss / max(1, n_seen),
                    "samples": n_seen,
                    "train_seconds": train_seconds,
                    "compute_seconds": compute,
                    "samples_per_second": n_seen / train_seconds if train_seconds else 0.0,
                }
                if ddp is not None:
                    entry["processes"] = ddp.world
                improved = True
                if ddp is not None and not ddp.main:
                    entry = distributed.broadcast_object(None)  # rank 0's, once it has checkpointed
                if validate is not None:
                    if main:
                        v0 = time.perf_counter()
                        entry["valid"] = validate(model)
                        entry["valid_seconds"] = time.perf_counter() - v0
                    metrics = entry["valid"]
                    if cfg.monitor not in metrics:
                        raise KeyError(f"monitor {cfg.monitor!r} not in validation metrics {sorted(metrics)}")
                    value = metrics[cfg.monitor]
                    improved = value > report.best_metric
                    if improved:
                        report.best_metric, report.best_epoch = value, epoch
                        bad_epochs = 0
                    else:
                        bad_epochs += 1
                else:
                    report.best_epoch = epoch
                if improved:  # kept on the CPU: no second copy of the model on the GPU
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                report.history.append(entry)
                if progress.disable is False:
                    progress.console.print(_epoch_line(entry, cfg.monitor))
                if ckpt is not None and main:
                    ckpt.mkdir(parents=True, exist_ok=True)
                    if improved and best_state is not None:
                        atomic_write_bytes(
                            ckpt / "best.safetensors",
                            safetensors.torch.save({k: v.contiguous() for k, v in best_state.items()}),
                        )
                    save_checkpoint(
                        ckpt / "last",
                        model=model,
                        optimizers=optimizers,
                        state={
                            "epoch": epoch,
                            "bad_epochs": bad_epochs,
                            "history": report.history,
                            "best_epoch": report.best_epoch,
                            "best_metric": report.best_metric,
                            "config": _resume_key(cfg),
                        },
                        identity=identity,
                    )
                    atomic_write_text(ckpt / "log.json", json.dumps(report.history, indent=1))
                if ddp is not None and ddp.main:
                    distributed.broadcast_object(entry)
                if cfg.patience and bad_epochs >= cfg.patience:
                    report.stopped_early = True
                    break
        report.seconds = time.perf_counter() - t_fit
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return report


_STATE_KEYS = ["epoch", "bad_epochs", "history", "best_epoch", "best_metric"]


def _step_loss(
    model: torch.nn.Module,
    objective: Objective,
    batch: dict,
    fused: Callable | None,
    amp: Callable[[], contextlib.AbstractContextManager[None]] | None,
) -> torch.Tensor:
    """One batch's loss with its gradients added: the objective's fused pass (loss and gradients
    together), else its loss and ``backward()``; forward and loss under `amp` (bf16 autocast)
    when given, backward outside it (as torch advises)."""
    if fused is not None:
        with amp() if amp is not None else contextlib.nullcontext():
            return fused(model, batch)
    with amp() if amp is not None else contextlib.nullcontext():
        loss = objective.loss(model, batch)
    loss.backward()
    return loss


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block (unchanged when None)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _resume_key(cfg: TrainConfig) -> dict:
    """Settings that must not change between an interrupted run and its resumption (the schedule's
    only when there is one, so checkpoints written before schedules existed still resume)."""
    keys = {"batch_size", "lr", "optimizer", "weight_decay", "seed", "monitor"}
    if cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0:
        keys |= {"lr_schedule", "warmup_epochs", "epochs"}
    return cfg.model_dump(include=keys)


def _epoch_line(entry: dict, monitor: str) -> str:
    s = (
        f"epoch {entry['epoch'] + 1}: loss {entry['loss']:.4f}, "
        f"{entry['samples_per_second']:,.0f} samples/s, "
        f"{entry['train_seconds']:.1f}s"
    )
    if "valid" in entry:
        s += f", valid {monitor} {entry['valid'][monitor]:.4f}"
    return s
