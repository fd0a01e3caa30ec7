"""The GPU path (issue 16, item 4), checked on the CPU: device settings resolve in one place and an
absent GPU is refused with the valid devices named; the Trainer moves the model and its batches to
the configured device and hands the model back where it came from; bf16 autocast is really on in
the forward pass and a model trains under it to a loss close to fp32's."""

import math

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError

from recfunnel.data.dataset import build_dataset
from recfunnel.data.fields import FieldBatch
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.protocols import evaluate_full, evaluate_sampled
from recfunnel.models.mf import MF, MFConfig
from recfunnel.models.ncf import NeuMF, NeuMFConfig
from recfunnel.nn import device as devmod
from recfunnel.nn.device import DeviceError, autocast, module_device, resolve_device, to_device
from recfunnel.train.objectives import PointwiseBCE
from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@pytest.fixture(scope="module")
def data():
    """48 users in 2 taste groups over 30 items, 10 events each; leave-one-out, 20 negatives."""
    rng = np.random.default_rng(3)
    users, items, ts = [], [], []
    for u in range(48):
        liked = rng.choice(15, size=10, replace=False) + 15 * (u % 2)
        users += [u] * 10
        items += liked.tolist()
        ts += list(range(10))
    ds = build_dataset("two-groups", pl.DataFrame({"user": users, "item": items, "timestamp": ts}))
    return ds, leave_one_out(ds).with_negatives(ds, n=20, seed=0)


def _gpus(monkeypatch, n: int) -> None:
    """torch answering as if it saw `n` CUDA devices (resolution logic only: nothing is moved)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


# ---- resolution -------------------------------------------------------------------------------


def test_auto_is_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devmod.available_devices() == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]


def test_a_gpu_that_is_not_there_is_refused_naming_the_valid_ones(monkeypatch):
    _gpus(monkeypatch, 0)
    with pytest.raises(DeviceError, match=r"no CUDA device.*valid here: auto, cpu$"):
        resolve_device("cuda")
    _gpus(monkeypatch, 1)
    with pytest.raises(
        DeviceError, match=r"'cuda:1' is not available: torch sees 1 CUDA.*auto, cpu, cuda, cuda:0"
    ):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="valid: auto"):
        resolve_device("tpu")
    assert isinstance(DeviceError("x"), ValueError)  # the CLI's one-line refusals catch it


def test_train_config_checks_the_form_not_the_machine():
    assert TrainConfig(device="cuda:3").device == "cuda:3"  # resolved when training starts
    with pytest.raises(ValidationError, match="valid: auto"):
        TrainConfig(device="gpu")
    with pytest.raises(ValidationError):
        TrainConfig(precision="fp16")


@no_gpu
def test_training_on_an_absent_gpu_fails_before_any_step(data):
    ds, split = data
    model = MF(MFConfig(factors=4), ds.n_users, ds.n_items)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=1)
    with pytest.raises(DeviceError, match="valid here: auto, cpu"):
        Trainer(TrainConfig(epochs=1, device="cuda", progress=False)).fit(model, objective)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- moving ---------------------------------------------------------------------------------


def test_to_device_moves_what_a_batch_holds():
    batch = {
        "users": torch.arange(3),
        "fields": FieldBatch({"a": torch.zeros(3, dtype=torch.long)}),
        "pair": (False, torch.ones(2)),
        "n": 3,
    }
    meta = to_device(batch, torch.device("meta"))  # a device that is surely not the CPU
    assert meta["users"].device.type == "meta" and meta["fields"]["a"].device.type == "meta"
    assert meta["pair"][0] is False and meta["pair"][1].device.type == "meta" and meta["n"] == 3
    same = to_device(batch, torch.device("cpu"))
    assert same["users"] is batch["users"]  # nothing copied where it already is


def test_the_trainer_puts_model_and_batches_on_its_device_and_hands_the_model_back(data, monkeypatch):
    """The Trainer trains on the resolved device: here the CPU named through `device`, with the
    resolver's answer observed, and every batch the loss sees on the model's device."""
    ds, split = data
    asked: list[str] = []
    real = devmod.resolve_device

    def spy(spec):
        asked.append(spec)
        return real(spec)

    monkeypatch.setattr("recfunnel.train.trainer.resolve_device", spy)
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=1)
    seen: list[tuple[torch.device, torch.device]] = []
    loss = objective.loss

    def checked(model, batch):
        seen.append((batch["users"].device, module_device(model)))
        return loss(model, batch)

    objective.loss = checked
    model = NeuMF(NeuMFConfig(factors=4, layers=(8, 4)), ds.n_users, ds.n_items)
    Trainer(TrainConfig(epochs=1, batch_size=128, device="cpu", progress=False)).fit(model, objective)
    assert asked == ["cpu"] and seen and all(b == m == torch.device("cpu") for b, m in seen)
    assert module_device(model) == torch.device("cpu") and not model.training


# ---- bf16 ---------------------------------------------------------------------------------------


def test_autocast_contexts():
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        autocast(torch.device("cpu"), "fp8")


def _train(data, precision: str, epochs: int = 6):
    ds, split = data
    seed_everything(0)
    model = NeuMF(NeuMFConfig(factors=8, layers=(16, 8)), ds.n_users, ds.n_items)
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=2)
    on: list[bool] = []
    loss = objective.loss

    def watched(m, batch):
        on.append(torch.is_autocast_enabled("cpu"))
        return loss(m, batch)

    objective.loss = watched
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, precision=precision, progress=False)
    report = Trainer(cfg).fit(model, objective)
    return model, report, on


def test_bf16_autocast_trains_on_the_cpu_to_a_loss_near_fp32(data):
    ds, split = data
    m32, r32, on32 = _train(data, "fp32")
    m16, r16, on16 = _train(data, "bf16")
    assert on16 and all(on16) and not any(on32)  # autocast around forward and loss, and only then
    assert not torch.is_autocast_enabled("cpu")  # and left afterwards
    first, last = r16.history[0]["loss"], r16.history[-1]["loss"]
    assert math.isfinite(last) and last < 0.85 * first  # it learns
    assert abs(last - r32.history[-1]["loss"]) < 0.05  # to about fp32's loss (0.69 at the start)
    assert all(p.dtype == torch.float32 for p in m16.parameters())  # weights stay fp32
    hr16 = evaluate_sampled(m16, ds, split, "test", ks=(10,)).metrics["hr@10"]
    hr32 = evaluate_sampled(m32, ds, split, "test", ks=(10,)).metrics["hr@10"]
    assert hr16 > 0.6 and abs(hr16 - hr32) < 0.15  # two taste groups: far above chance (0.48)


def test_evaluation_hands_the_model_its_inputs_on_its_device(data):
    """Full and sampled ranking give a model its users / candidates on its device (`module_device`)
    and read the scores back on the CPU."""
    ds, split = data
    model = MF(MFConfig(factors=4), ds.n_users, ds.n_items)
    got: list[torch.device] = []
    score_all, score = model.score_all, model.score
    model.score_all = lambda users: (got.append(users.device), score_all(users))[1]
    model.score = lambda users, items: (got.extend([users.device, items.device]), score(users, items))[1]
    evaluate_full(model, ds, split, "test", ks=(10,))
    evaluate_sampled(model, ds, split, "test", ks=(10,))
    assert got and set(got) == {module_device(model)}
