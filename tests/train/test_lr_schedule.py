"""The learning-rate schedule: warm-up and cosine decay by hand-computed values, set on every
optimiser (sparse tables included) during training, and a resumed scheduled run equal to an
uninterrupted one."""

import math

import pytest
import torch

from recfunnel.train.trainer import TrainConfig, _resume_key, build_optimizers, lr_factor
from tests.train.test_trainer import _groups, assert_same_params, fit, gmf, losses


@pytest.fixture(scope="module")
def data():
    return _groups()


def test_constant_schedule_is_one_everywhere():
    cfg = TrainConfig(epochs=10)
    assert [lr_factor(cfg, p) for p in (0.0, 3.3, 10.0)] == [1.0, 1.0, 1.0]


def test_warmup_is_linear_then_cosine_reaches_zero_at_the_last_epoch():
    cfg = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=2)
    assert lr_factor(cfg, 0.0) == 0.0
    assert lr_factor(cfg, 1.0) == pytest.approx(0.5)
    assert lr_factor(cfg, 2.0) == pytest.approx(1.0)
    # halfway through the 8 decay epochs: cos(pi / 2) -> 0.5; a quarter: (1 + cos(pi / 4)) / 2
    assert lr_factor(cfg, 6.0) == pytest.approx(0.5)
    assert lr_factor(cfg, 4.0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(cfg, 12.0) == pytest.approx(0.0, abs=1e-12)  # never below 0 past the end


def test_warmup_alone_keeps_the_rate_constant_after_it():
    cfg = TrainConfig(epochs=10, warmup_epochs=0.5)
    assert lr_factor(cfg, 0.25) == pytest.approx(0.5)
    assert lr_factor(cfg, 0.5) == lr_factor(cfg, 9.0) == 1.0


def test_the_schedule_reaches_every_optimiser_and_ends_near_zero(data, monkeypatch):
    seen: list[list[float]] = []
    real = build_optimizers

    def spy(model, cfg):
        opts = real(model, cfg)
        for opt in opts:
            step = opt.step

            def recorded(*a, _opt=opt, _step=step, **k):
                seen.append([g["lr"] for g in _opt.param_groups])
                return _step(*a, **k)

            opt.step = recorded
        return opts

    monkeypatch.setattr("recfunnel.train.trainer.build_optimizers", spy)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.01, patience=0, progress=False, lr_schedule="cosine")
    fit(data, gmf, cfg, validate=False)
    flat = [lr for group in seen for lr in group]
    assert flat[0] == pytest.approx(0.01)  # the first step at full rate (no warm-up)
    assert min(flat) < 0.001 and max(flat) == pytest.approx(0.01)
    # decreasing step by step (GMF: a sparse-table optimiser and a dense one, same rate)
    firsts = [group[0] for group in seen]
    assert all(b <= a + 1e-12 for a, b in zip(firsts, firsts[1:], strict=False))


def test_a_scheduled_run_differs_from_a_constant_one(data):
    const = TrainConfig(epochs=3, batch_size=64, lr=0.01, patience=0, progress=False, seed=1)
    sched = const.model_copy(update={"lr_schedule": "cosine", "warmup_epochs": 1.0})
    a, _ = fit(data, gmf, const, validate=False)
    b, _ = fit(data, gmf, sched, validate=False)
    assert any(not torch.allclose(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_resuming_a_scheduled_run_equals_an_uninterrupted_one(tmp_path, data):
    cfg = TrainConfig(
        epochs=4,
        batch_size=128,
        lr=0.01,
        patience=0,
        progress=False,
        seed=3,
        lr_schedule="cosine",
        warmup_epochs=1.0,
    )
    whole, whole_report = fit(data, gmf, cfg, tmp_path / "whole")
    fit(data, gmf, cfg, tmp_path / "parts", max_epochs=2)
    resumed, resumed_report = fit(data, gmf, cfg, tmp_path / "parts", resume=True)
    assert_same_params(whole, resumed)
    assert losses(resumed_report) == pytest.approx(losses(whole_report), abs=1e-7)


def test_the_schedule_is_part_of_the_resume_key_only_when_there_is_one():
    plain = _resume_key(TrainConfig(epochs=10))
    assert "lr_schedule" not in plain and "epochs" not in plain  # old checkpoints still resume
    keyed = _resume_key(TrainConfig(epochs=10, lr_schedule="cosine"))
    assert keyed["lr_schedule"] == "cosine" and keyed["epochs"] == 10
