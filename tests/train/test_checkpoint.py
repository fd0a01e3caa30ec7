import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from recfunnel.errors import RecfunnelError
from recfunnel.train.checkpoint import (
    CheckpointError,
    fingerprint_arrays,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)

N_ITEMS, DIM = 20, 6


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(N_ITEMS, DIM, sparse=True)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(DIM, 1)

    def forward(self, ids):
        return self.head(self.drop(self.emb(ids))).squeeze(-1)


def _make(dense_opt=torch.optim.Adam, seed=0, **dense_kwargs):
    torch.manual_seed(seed)
    model = Tiny()
    opts = [
        torch.optim.SparseAdam(model.emb.parameters(), lr=0.05),
        dense_opt(model.head.parameters(), lr=0.05, **dense_kwargs),
    ]
    return model, opts


def _batch(step):
    g = torch.Generator().manual_seed(1000 + step)  # data independent of the global RNG
    return torch.randint(0, N_ITEMS, (8,), generator=g), torch.randn(8, generator=g)


def _train(model, opts, steps):
    model.train()
    for step in steps:
        ids, y = _batch(step)
        loss = ((model(ids) - y) ** 2).mean()
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()


def _assert_same_params(a, b):
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb
        assert torch.equal(pa, pb), na


def _assert_same_opt_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for pid in sa["state"]:
        assert sa["state"][pid].keys() == sb["state"][pid].keys()
        for name, va in sa["state"][pid].items():
            vb = sb["state"][pid][name]
            assert type(va) is type(vb), name
            if isinstance(va, torch.Tensor):
                assert va.dtype == vb.dtype and torch.equal(va, vb), name
            else:
                assert va == vb, name


@pytest.mark.parametrize(
    ("dense_opt", "kwargs"),
    [(torch.optim.Adam, {}), (torch.optim.AdamW, {"amsgrad": True, "weight_decay": 0.1})],
    ids=["adam", "adamw-amsgrad"],
)
def test_resumed_training_matches_uninterrupted_training_exactly(tmp_path, dense_opt, kwargs):
    model, opts = _make(dense_opt, **kwargs)
    _train(model, opts, range(3))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"epoch": 3})
    _train(model, opts, range(3, 6))

    # Fresh objects with a different init; building them also moves the global RNG on.
    fresh, fresh_opts = _make(dense_opt, seed=123, **kwargs)
    torch.rand(17)
    load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    _train(fresh, fresh_opts, range(3, 6))

    _assert_same_params(model, fresh)
    for a, b in zip(opts, fresh_opts, strict=True):
        _assert_same_opt_state(a, b)


def test_rng_state_restore_is_what_makes_dropout_resume_exactly(tmp_path):
    model, opts = _make()
    _train(model, opts, range(3))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    _train(model, opts, range(3, 6))

    fresh, fresh_opts = _make(seed=5)
    load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    torch.manual_seed(99)  # clobber the restored RNG: dropout masks now differ
    _train(fresh, fresh_opts, range(3, 6))
    assert not torch.equal(model.head.weight, fresh.head.weight)


def test_optimizer_state_round_trips_with_types_intact(tmp_path):
    model, opts = _make()
    _train(model, opts, range(2))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    fresh, fresh_opts = _make(seed=7)
    load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    _assert_same_params(model, fresh)
    for a, b in zip(opts, fresh_opts, strict=True):
        _assert_same_opt_state(a, b)
    # What torch 2.x stores: SparseAdam keeps an int step, Adam a 0-dim float32 tensor.
    assert isinstance(fresh_opts[0].state_dict()["state"][0]["step"], int)
    adam_step = fresh_opts[1].state_dict()["state"][0]["step"]
    assert isinstance(adam_step, torch.Tensor) and adam_step.dim() == 0
    assert fresh_opts[1].param_groups[0]["betas"] == (0.9, 0.999)


def test_trainer_state_is_returned(tmp_path):
    model, opts = _make()
    state = {"epoch": 4, "best": {"ndcg@10": 0.31}, "history": [{"loss": 1.5}, {"loss": 1.2}]}
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state=state)
    assert load_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts) == state


def test_checkpoint_before_any_step_round_trips(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"epoch": 0})
    fresh, fresh_opts = _make(seed=3)
    load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    _assert_same_params(model, fresh)
    assert fresh_opts[1].state_dict()["state"] == {}


def test_loading_uses_no_pickle(tmp_path, monkeypatch):
    model, opts = _make()
    _train(model, opts, range(1))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})

    def forbidden(*a, **k):
        raise AssertionError("pickle used")

    for mod, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(mod, name, forbidden)
    fresh, fresh_opts = _make(seed=1)
    load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    _assert_same_params(model, fresh)


def test_checkpoint_folder_contains_only_safetensors_and_json(tmp_path):
    model, opts = _make()
    _train(model, opts, range(1))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["checkpoint.json", "model.safetensors", "train.safetensors"]
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert [o["class"] for o in meta["optimizers"]] == ["SparseAdam", "Adam"]


def test_saving_again_replaces_previous_checkpoint(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"epoch": 1})
    _train(model, opts, range(1))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"epoch": 2})
    fresh, fresh_opts = _make(seed=1)
    assert load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts) == {"epoch": 2}
    _assert_same_params(model, fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_missing_checkpoint_folder_raises_checkpoint_error(tmp_path):
    model, opts = _make()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope", model=model, optimizers=opts)


def test_half_written_checkpoint_folder_raises_and_lists_contents(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    (tmp_path / "ckpt" / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="half-written.*model.safetensors"):
        load_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts)


def test_corrupt_checkpoint_file_is_detected_and_model_left_untouched(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    p = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    fresh, fresh_opts = _make(seed=9)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="model.safetensors .*corrupt"):
        load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_wrong_number_or_class_of_optimizers_is_rejected(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    with pytest.raises(CheckpointError, match="2 optimizer"):
        load_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts[:1])
    other = [opts[0], torch.optim.SGD(model.head.parameters(), lr=0.1)]
    with pytest.raises(CheckpointError, match="was Adam, got SGD"):
        load_checkpoint(tmp_path / "ckpt", model=model, optimizers=other)


def test_checkpoint_for_another_model_shape_is_rejected_without_modifying_model(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    other = nn.Sequential()
    other.emb = nn.Embedding(N_ITEMS + 1, DIM, sparse=True)
    other.drop = nn.Dropout(0.5)
    other.head = nn.Linear(DIM, 1)
    before = other.head.weight.detach().clone()
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(tmp_path / "ckpt", model=other, optimizers=opts)
    assert torch.equal(other.head.weight, before)


def test_non_json_trainer_state_is_rejected_before_writing(tmp_path):
    model, opts = _make()
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"x": object()})
    assert not (tmp_path / "ckpt").exists()


def test_tensor_valued_learning_rate_round_trips(tmp_path):
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    opt = torch.optim.Adam(lin.parameters(), lr=torch.tensor(0.01))
    lin(torch.randn(2, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ckpt", model=lin, optimizers=[opt], state={})
    lin2 = nn.Linear(3, 1)
    opt2 = torch.optim.Adam(lin2.parameters(), lr=torch.tensor(0.5))
    load_checkpoint(tmp_path / "ckpt", model=lin2, optimizers=[opt2])
    lr = opt2.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(0.01)
    _assert_same_opt_state(opt, opt2)


# ------------------------------------------------------------------------------------------
# Identity (what the run trained on) and refusals with a sentence
# ------------------------------------------------------------------------------------------

IDENTITY = {"dataset": "d" * 64, "split": "5" * 64, "model": "gmf"}


def test_identity_is_recorded_and_an_equal_one_resumes(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={"epoch": 1}, identity=IDENTITY)
    assert read_checkpoint_meta(tmp_path / "ckpt")["identity"] == IDENTITY
    fresh, fresh_opts = _make(seed=2)
    state = load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts, identity=dict(IDENTITY))
    assert state == {"epoch": 1}
    _assert_same_params(model, fresh)


@pytest.mark.parametrize(
    ("saved", "wanted", "key"),
    [
        (IDENTITY, {**IDENTITY, "dataset": "e" * 64}, "dataset"),
        (IDENTITY, {**IDENTITY, "split": "6" * 64}, "split"),
        (IDENTITY, {**IDENTITY, "objective": "bpr"}, "objective"),
        (None, IDENTITY, "dataset"),
    ],
    ids=["other-dataset", "other-split", "new-key", "not-recorded"],
)
def test_another_identity_is_refused_naming_the_key_both_values_and_the_way_out(tmp_path, saved, wanted, key):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={}, identity=saved)
    fresh, fresh_opts = _make(seed=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=fresh_opts, identity=wanted)
    msg = str(err.value)
    assert f"saved with {key} " in msg and f"this run has {key} " in msg
    old = (saved or {}).get(key)
    assert (repr(old[:16] + "...") if old else "not recorded") in msg
    assert "Delete" in msg and f"original {key}" in msg
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_identity_values_must_be_strings(tmp_path):
    model, opts = _make()
    with pytest.raises(CheckpointError, match="identity must map names to strings"):
        save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={}, identity={"dataset": 3})


def test_a_model_shape_change_names_the_shapes_and_what_to_do(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    other = Tiny()
    other.emb = nn.Embedding(N_ITEMS + 1, DIM, sparse=True)
    other_opts = [torch.optim.SparseAdam(other.emb.parameters()), torch.optim.Adam(other.head.parameters())]
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ckpt", model=other, optimizers=other_opts)
    msg = str(err.value)
    assert f"emb.weight [{N_ITEMS}, {DIM}] -> [{N_ITEMS + 1}, {DIM}]" in msg
    assert "delete the checkpoint folder" in msg
    assert isinstance(err.value, RecfunnelError) and isinstance(err.value, ValueError)


def test_optimizer_state_for_parameters_of_other_shapes_is_refused_before_any_step(tmp_path):
    model, opts = _make()
    _train(model, opts, range(2))
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    fresh, _ = _make(seed=4)
    # same model, same optimiser classes, but the dense optimiser lists its parameters in another
    # order: torch would load the state and fail at the next step() with a raw shape error
    swapped = [
        torch.optim.SparseAdam(fresh.emb.parameters(), lr=0.05),
        torch.optim.Adam([fresh.head.bias, fresh.head.weight], lr=0.05),
    ]
    with pytest.raises(CheckpointError, match=r"optimizer 1 \(Adam\) group 0 .*shapes \[\[1, 6\], \[1\]\]"):
        load_checkpoint(tmp_path / "ckpt", model=fresh, optimizers=swapped)


def test_a_file_added_to_a_checkpoint_is_refused(tmp_path):
    model, opts = _make()
    save_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts, state={})
    (tmp_path / "ckpt" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"holds notes\.txt, not listed in checkpoint\.json"):
        load_checkpoint(tmp_path / "ckpt", model=model, optimizers=opts)


def test_fingerprint_arrays_sees_dtype_shape_order_and_content():
    a = np.arange(6, dtype=np.int64)
    base = fingerprint_arrays(a, None)
    assert base == fingerprint_arrays(a.copy(), None) == fingerprint_arrays(torch.arange(6), None)
    others = [
        fingerprint_arrays(a.astype(np.int32), None),
        fingerprint_arrays(a.reshape(2, 3), None),
        fingerprint_arrays(None, a),
        fingerprint_arrays(a[::-1], None),
        fingerprint_arrays(a),
    ]
    assert len({base, *others}) == 6
