"""Tests for the shared layers in recfunnel.nn."""

from __future__ import annotations

import itertools

import pytest
import torch

from recfunnel.data.fields import PAD, UNK, FieldBatch, FittedField
from recfunnel.nn import (
    MLP,
    CrossLayer,
    CrossNetwork,
    DotInteraction,
    FieldEmbedding,
    FieldLinear,
    FieldSelfAttention,
    FMInteraction,
    numeric_values,
    pairwise_terms,
)


@pytest.mark.parametrize("b,f,d", [(1, 2, 1), (5, 7, 4), (3, 13, 16)])
def test_fm_term_equals_naive_pairwise_sum(b, f, d):
    torch.manual_seed(f * d)
    v = torch.randn(b, f, d, dtype=torch.float64)
    naive = torch.zeros(b, dtype=torch.float64)
    for i, j in itertools.combinations(range(f), 2):
        naive += (v[:, i] * v[:, j]).sum(-1)
    torch.testing.assert_close(FMInteraction()(v), naive)
    # the bi-interaction vector sums to the same thing, and the explicit pair matrix agrees
    torch.testing.assert_close(FMInteraction(reduce=False)(v).sum(-1), naive)
    torch.testing.assert_close(pairwise_terms(v).sum((1, 2)) / 2, naive)
    assert torch.all(torch.diagonal(pairwise_terms(v), dim1=1, dim2=2) == 0)


def test_cross_layer_is_x0_times_affine_plus_residual():
    torch.manual_seed(0)
    layer = CrossLayer(6)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    want = x0 * (x @ layer.w.weight.T + layer.w.bias) + x
    torch.testing.assert_close(layer(x0, x), want)
    assert CrossLayer(6, low_rank=2)(x0, x).shape == (4, 6)
    net = CrossNetwork(6, n_layers=3, low_rank=3)
    assert net(x0).shape == (4, 6) and len(net.layers) == 3


def test_dot_interaction_keeps_the_first_vector_and_every_pair_once():
    torch.manual_seed(0)
    v = torch.randn(3, 4, 5)
    out = DotInteraction()(v)
    assert out.shape == (3, DotInteraction.out_dim(4, 5)) == (3, 5 + 6)
    torch.testing.assert_close(out[:, :5], v[:, 0])
    pairs = [(v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(4), 2)]
    torch.testing.assert_close(out[:, 5:], torch.stack(pairs, 1))


@pytest.mark.parametrize("heads,residual", [(1, True), (2, True), (3, False)])
def test_attention_weights_sum_to_one_per_head_and_query_field(heads, residual):
    torch.manual_seed(heads)
    layer = FieldSelfAttention(8, attention_dim=4, heads=heads, residual=residual)
    e = torch.randn(5, 7, 8)
    out, w = layer(e)
    assert out.shape == (5, 7, heads * 4) and w.shape == (5, heads, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, heads, 7))
    assert (w >= 0).all() and (out >= 0).all()  # softmax weights, ReLU output


def test_attention_output_is_the_weighted_values_plus_residual():
    torch.manual_seed(0)
    layer = FieldSelfAttention(4, attention_dim=3, heads=1)
    e = torch.randn(2, 5, 4)
    out, w = layer(e)
    q, k, v = e @ layer.q.weight.T, e @ layer.k.weight.T, e @ layer.v.weight.T
    alpha = torch.softmax(q @ k.transpose(1, 2), -1)  # AutoInt eq. 5: no scaling
    torch.testing.assert_close(w[:, 0], alpha)
    torch.testing.assert_close(out, torch.relu(alpha @ v + e @ layer.res.weight.T))


def _fields():
    return [
        FittedField("user", "categorical", "user", "id", cardinality=6),
        FittedField("item", "categorical", "item", "id", cardinality=9),
        FittedField("tags", "multi_hot", "item", "tags", cardinality=5, pooling="sum", max_len=3),
        FittedField("hist", "sequence", "event", "history", cardinality=9, max_len=4, shares="item"),
        FittedField("age", "numeric", "user", "age"),
    ]


def _batch():
    return FieldBatch(
        {
            "user": torch.tensor([2, UNK]),
            "item": torch.tensor([3, 8]),
            "tags": torch.tensor([[2, 3, PAD], [PAD, PAD, PAD]]),
            "hist": torch.tensor([[PAD, PAD, 3, 5], [PAD, PAD, PAD, 4]]),
            "age": torch.tensor([0.5, -1.0]),
        }
    )


def test_field_embedding_pools_lists_shares_tables_and_scales_numerics():
    torch.manual_seed(0)
    emb = FieldEmbedding(_fields(), 4, init_std=1.0)
    assert set(emb.tables) == {"user", "item", "tags"}  # "hist" reuses the item table
    b = _batch()
    e = emb(b)
    assert e.shape == (2, 5, 4)
    item_w, tag_w = emb.tables["item"].weight, emb.tables["tags"].weight
    torch.testing.assert_close(e[0, 2], tag_w[2] + tag_w[3])  # sum pooling
    torch.testing.assert_close(e[1, 2], torch.zeros(4))  # all PAD -> zeros
    torch.testing.assert_close(e[0, 3], (item_w[3] + item_w[5]) / 2)  # mean over non-PAD only
    torch.testing.assert_close(e[1, 3], item_w[4])
    torch.testing.assert_close(e[:, 4], b["age"].unsqueeze(1) * emb.vectors["age"])
    torch.testing.assert_close(e[1, 0], torch.zeros(4))  # UNK starts at zero
    assert emb.flat(b).shape == (2, emb.out_dim) == (2, 20)


def test_field_embedding_with_a_dim_per_field_concatenates():
    dims = {"user": 2, "item": 3, "tags": 1, "hist": 3, "age": 5}
    emb = FieldEmbedding(_fields(), dims)
    assert emb.flat(_batch()).shape == (2, 14) and emb.out_dim == 14
    with pytest.raises(ValueError, match="dims differ"):
        FieldEmbedding(_fields(), dict(dims, hist=2))


def test_sparse_embedding_gives_sparse_gradients_and_pad_gets_none():
    emb = FieldEmbedding(_fields(), 4, sparse=True)
    emb(_batch()).sum().backward()
    g = emb.tables["item"].weight.grad
    assert g.is_sparse
    dense = g.to_dense()
    assert dense[PAD].abs().sum() == 0 and dense[3].abs().sum() > 0


def test_field_linear_is_bias_plus_one_weight_per_value():
    lin = FieldLinear(_fields())
    with torch.no_grad():
        lin.bias.fill_(0.5)
        lin.weights.tables["user"].weight[2] = 1.0
        lin.weights.vectors["age"].fill_(2.0)
    out = lin(_batch())
    torch.testing.assert_close(out, torch.tensor([0.5 + 1.0 + 2 * 0.5, 0.5 + 2 * -1.0]))
    assert lin.terms(_batch()).shape == (2, 5)


def test_numeric_values_and_mlp_shapes():
    assert numeric_values(_batch(), _fields()).shape == (2, 1)
    assert numeric_values(_batch(), _fields()[:2]).shape == (2, 0)
    mlp = MLP(10, (8, 6), 1, dropout=0.2, batch_norm=True)
    assert mlp(torch.randn(4, 10)).shape == (4, 1)
    assert MLP(10, (8,)).out_dim == 8 and MLP(10).out_dim == 10
