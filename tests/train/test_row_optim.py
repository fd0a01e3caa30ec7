"""Row optimisers for ID tables: RowAdam is torch's SparseAdam (duplicates, untouched rows, state,
resuming), TableAdam is torch's fused Adam."""

import pytest
import torch
from torch import nn

from recfunnel.train.row_optim import RowAdam, TableAdam, dense_adam, row_gradient


def _tables(seed: int = 0) -> list[nn.Embedding]:
    torch.manual_seed(seed)
    return [nn.Embedding(13, 4, sparse=True), nn.Embedding(7, 3, sparse=True)]


def _twin(tables: list[nn.Embedding]) -> list[nn.Embedding]:
    out = []
    for t in tables:
        c = nn.Embedding(t.num_embeddings, t.embedding_dim, sparse=True)
        c.load_state_dict(t.state_dict())
        out.append(c)
    return out


def _step(tables, opt, batches) -> None:
    """One step: every table looked up by its batch (duplicates included), a loss that weights each
    lookup differently so duplicate rows get different gradient parts."""
    opt.zero_grad()
    loss = 0.0
    for t, idx in zip(tables, batches, strict=True):
        rows = t(idx)
        w = torch.arange(1, rows.numel() + 1, dtype=rows.dtype).view_as(rows) / rows.numel()
        loss = loss + (rows * w).sum() + rows.pow(2).sum()
    loss.backward()
    opt.step()


BATCHES = [
    (torch.tensor([0, 3, 3, 3, 12, 5]), torch.tensor([1, 1, 6])),  # repeated rows
    (torch.tensor([5, 0, 7, 7]), torch.tensor([2, 6, 2, 2, 0])),
    (torch.tensor([3]), torch.tensor([6, 6])),
    (torch.tensor([9, 12, 0, 0, 0, 0]), torch.tensor([4])),
]


@pytest.mark.parametrize("lr, betas, eps", [(1e-3, (0.9, 0.999), 1e-8), (0.05, (0.5, 0.9), 1e-3)])
def test_row_adam_equals_sparse_adam_on_every_row_over_steps_with_duplicates(lr, betas, eps):
    ours, ref = _tables(), _tables()
    opt = RowAdam([p for t in ours for p in t.parameters()], lr=lr, betas=betas, eps=eps)
    ref_opt = torch.optim.SparseAdam([p for t in ref for p in t.parameters()], lr=lr, betas=betas, eps=eps)
    before = [t.weight.detach().clone() for t in ours]
    for batches in BATCHES * 2:
        _step(ours, opt, batches)
        _step(ref, ref_opt, batches)
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-7)
    for p, q in zip(opt.param_groups[0]["params"], ref_opt.param_groups[0]["params"], strict=True):
        s, r = opt.state[p], ref_opt.state[q]
        assert s["step"] == r["step"] == 2 * len(BATCHES)
        torch.testing.assert_close(s["exp_avg"], r["exp_avg"], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(s["exp_avg_sq"], r["exp_avg_sq"], rtol=1e-5, atol=1e-10)
    # rows never looked up did not move (lazy moments: no momentum carries them)
    touched = [set(), set()]
    for batches in BATCHES:
        for k, idx in enumerate(batches):
            touched[k] |= set(idx.tolist())
    for k, t in enumerate(ours):
        idle = [r for r in range(t.num_embeddings) if r not in touched[k]]
        assert idle and torch.equal(t.weight[idle], before[k][idle])


def test_row_adam_state_dict_resumes_to_the_same_weights():
    straight = _tables()
    opt = RowAdam([p for t in straight for p in t.parameters()], lr=0.01)
    for batches in BATCHES:
        _step(straight, opt, batches)

    first = _tables()
    opt1 = RowAdam([p for t in first for p in t.parameters()], lr=0.01)
    for batches in BATCHES[:2]:
        _step(first, opt1, batches)
    resumed = _twin(first)
    opt2 = RowAdam([p for t in resumed for p in t.parameters()], lr=0.01)
    opt2.load_state_dict(opt1.state_dict())
    for batches in BATCHES[2:]:
        _step(resumed, opt2, batches)
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a.weight, b.weight)


def test_row_adam_refuses_dense_gradients():
    t = nn.Embedding(5, 2)
    opt = RowAdam(t.parameters())
    t(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse row gradients"):
        opt.step()


def test_row_gradient_sums_duplicates_like_coalesce():
    idx = torch.tensor([[4, 1, 4, 0, 1, 4]])
    vals = torch.arange(12, dtype=torch.float32).view(6, 2)
    g = torch.sparse_coo_tensor(idx, vals, (6, 2), check_invariants=True)
    rows, values = row_gradient(g)
    ref = g.coalesce()
    assert torch.equal(rows, ref.indices()[0])
    torch.testing.assert_close(values, ref.values())
    rows2, values2 = row_gradient(ref)  # already coalesced: returned as is
    assert torch.equal(rows2, rows) and torch.equal(values2, values)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_table_adam_equals_torch_fused_adam_including_steps_without_a_gradient(weight_decay):
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(6, 3)), nn.Parameter(torch.randn(4))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = TableAdam(ours, lr=0.02, weight_decay=weight_decay)
    ref_opt = torch.optim.Adam(ref, lr=0.02, weight_decay=weight_decay, fused=True)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        for a, b in zip(ours, ref, strict=True):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        if step == 3:  # a parameter without a gradient is skipped, its step count too
            ours[1].grad = ref[1].grad = None
        opt.step()
        ref_opt.step()
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a, b)
    mine, theirs = opt.state_dict(), ref_opt.state_dict()
    for k in theirs["state"]:
        for name, value in theirs["state"][k].items():
            assert torch.equal(mine["state"][k][name], value), name


def test_dense_adam_is_table_adam_and_fused_adamw_for_decoupled_decay():
    p = [nn.Parameter(torch.zeros(3))]
    assert type(dense_adam(p, lr=0.1)) is TableAdam
    w = dense_adam(p, lr=0.1, weight_decay=0.01, decoupled=True)
    assert type(w) is torch.optim.AdamW and w.defaults["fused"]
