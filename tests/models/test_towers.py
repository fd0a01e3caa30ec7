"""Two-tower model: shapes and unit norm, factorised score_all consistency, save/load round trip,
features read through the shared field-embedding layer, cold-start items get vectors from
features and text alone, and it beats popularity on a small real slice of MovieLens-100K."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

import recfunnel.train.retrieval_objectives  # noqa: F401  (registers in-batch-softmax)
from recfunnel.data.dataset import build_dataset
from recfunnel.data.fields import UNK
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.protocols import evaluate_full
from recfunnel.models.base import Factorised, build_model
from recfunnel.models.towers import TwoTower
from recfunnel.nn.embeddings import FieldEmbedding
from recfunnel.recommender import Recommender
from recfunnel.run import FitResult, RunConfig, fit
from recfunnel.run.towers import build_two_tower
from recfunnel.settings import has_dataset
from recfunnel.train.trainer import TrainConfig

N_USERS = 300
TEXT_DIM = 8


@pytest.fixture(scope="module")
def data():
    """Users 1..300 of ml-100k with the user and item feature tables (all 1682 catalogue items,
    so items nobody in the slice rated are cold), fake 8-d text vectors, a leave-one-out split."""
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root (set RECFUNNEL_DATA)")
    full = load_dataset("ml-100k")
    ints = full.interactions
    sub = ints.take(np.flatnonzero(ints.user < N_USERS))
    frame = pl.DataFrame(
        {
            "user": np.asarray(full.users.ids, dtype=np.int64)[sub.user],
            "item": np.asarray(full.items.ids, dtype=np.int64)[sub.item],
            "timestamp": sub.timestamp,
            "rating": sub.rating,
        }
    )
    users = full.user_features.filter(pl.col("id").cast(pl.Int64) <= N_USERS)
    ds = build_dataset("ml-100k-slice", frame, user_features=users, item_features=full.item_features)
    split = leave_one_out(ds)
    text = np.random.default_rng(0).normal(size=(ds.n_items, TEXT_DIM)).astype(np.float32)
    return ds, split, text


def _model(data, **params) -> TwoTower:
    ds, split, text = data
    torch.manual_seed(0)
    cfg = {"dim": 16, "emb_dim": 8, "hidden": (32,), "text_dim": TEXT_DIM, **params}
    return build_two_tower(ds, split, cfg, text_vectors=text if cfg.get("use_text") else None)


def test_needs_the_dataset_and_says_so():
    with pytest.raises(ValueError, match="build_two_tower"):
        build_model("two-tower", 3, 4)


def test_shapes_unit_norm_and_factorised_score_all(data):
    ds = data[0]
    m = _model(data, use_text=True).eval()
    assert isinstance(m, Factorised)
    users = torch.tensor([0, 5, 299])
    u, v = m.user_vectors(users), m.item_vectors()
    assert u.shape == (3, 16) and v.shape == (ds.n_items, 16)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(ds.n_items))
    all_scores = m.score_all(users)
    torch.testing.assert_close(all_scores, u @ v.T)
    items = torch.tensor([[0, 7, 100], [3, 3, 1681], [42, 1, 2]])
    torch.testing.assert_close(m.score(users, items), all_scores.gather(1, items))


def test_item_bias_scores_are_scaled_cosine_plus_a_content_bias_and_index_exactly(data):
    from recfunnel.index import build_index, model_item_vectors
    from recfunnel.train.registry import build_objective

    ds, split, _ = data
    m = _model(data, use_text=True, item_bias=True)
    with torch.no_grad():
        m.bias_head.weight.normal_()  # zero-initialised; give it something to say
    m.eval()
    users, items = torch.tensor([0, 5, 299]), torch.arange(ds.n_items)
    cos = m.user_embed(users) @ m.item_embed(items).T
    bias = m.candidate_bias(items)
    want = m.logit_scale() * cos + bias
    torch.testing.assert_close(m.score_all(users), want, rtol=1e-5, atol=1e-5)
    sel = torch.tensor([[0, 7, 100], [3, 3, 1681], [42, 1, 2]])
    torch.testing.assert_close(m.score(users, sel), want.gather(1, sel), rtol=1e-5, atol=1e-5)
    # the training logits use the same bias (no logQ here, so they are scale * cos + bias)
    obj = build_objective("in-batch-softmax", split.part(ds, "train"), ds.n_users, ds.n_items, logq=False)
    batch = {"users": users, "items": torch.tensor([7, 100, 3])}
    got = obj.logits(m, batch)
    u = m.user_embed(users, targets=batch["items"])
    torch.testing.assert_close(
        got, m.logit_scale() * u @ m.item_embed(batch["items"]).T + m.candidate_bias(batch["items"])
    )
    # an index over the model's vectors + bias column returns the model's own top-k
    vecs, b, normalize = model_item_vectors(m, "model")
    assert b is not None and not normalize
    found, _ = build_index("exact", vecs, bias=b, normalize=False).search(m.user_vectors(users), k=10)
    np.testing.assert_array_equal(found, want.topk(10).indices.numpy())


def test_features_go_through_the_shared_field_embedding_layer(data):
    m = _model(data)
    assert isinstance(m.embedding, FieldEmbedding)
    assert {f.name for f in m.user_fields} == {"user_id", "age", "gender", "occupation", "zip", "history"}
    assert {f.name for f in m.item_fields} == {"item_id", "genres", "year"}
    content = _model(data, item_ids=False, user_ids=False, use_history=False)
    assert {f.name for f in content.item_fields} == {"genres", "year"}
    assert "user_id" not in {f.name for f in content.user_fields}


def test_recent_items_exclude_the_target_during_training(data):
    m = _model(data).eval()
    ds, split, _ = data
    hist = m.codes_history[0]
    last = int(hist[-1])
    item = int(torch.nonzero(m.codes_item_id == last)[0])
    u = torch.tensor([0])
    with_target = m.user_embed(u)
    without = m.user_embed(u, targets=torch.tensor([item]))
    assert not torch.allclose(with_target, without)


def test_save_load_round_trip_gives_identical_answers(data, tmp_path):
    ds, split, _ = data
    m = _model(data, use_text=True)
    rec = Recommender("two-tower", m.config.model_dump())
    rec._adopt(FitResult(rec.run_config, m, None, ds, split))
    before_ids, before_scores = rec.recommend(["1", "2", "300"], k=10)
    loaded = Recommender.load(rec.save(tmp_path / "tt"))
    after_ids, after_scores = loaded.recommend(["1", "2", "300"], k=10)
    assert before_ids == after_ids
    np.testing.assert_allclose(before_scores, after_scores, rtol=1e-5, atol=1e-6)
    for name, buf in m.named_buffers():
        assert torch.equal(buf, dict(loaded.model_.named_buffers())[name])
    sims, _ = loaded.similar_items(["1"], k=5)
    assert len(sims[0]) == 5


def test_cold_start_item_gets_a_vector_from_features_and_text_alone(data):
    ds, split, text = data
    train_items = set(ds.interactions.take(split.train).item.tolist())
    cold = [i for i in range(ds.n_items) if i not in train_items][:2]
    assert len(cold) == 2
    m = _model(data, use_text=True).eval()
    assert (m.codes_item_id[cold] == UNK).all()  # id embedding dropped: UNK's row is zero
    assert m.embedding.tables["item_id"].weight[UNK].abs().sum() == 0
    v = m.item_embed(torch.tensor(cold))
    assert torch.isfinite(v).all()
    torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
    # the vector depends on the content: other text -> another vector
    m.item_text[cold[0]] = torch.from_numpy(text[cold[1]] * -3)
    assert not torch.allclose(m.item_embed(torch.tensor(cold[:1])), v[:1])
    content = _model(data, item_ids=False, use_text=True).eval()
    same_content = content.item_embed(torch.tensor(cold))
    assert torch.isfinite(same_content).all()


def test_cold_items_added_to_an_index_later_are_retrieved_as_exact_search_would(data):
    from recfunnel.index import build_index

    ds, split, _ = data
    m = _model(data, item_ids=False, use_text=True).eval()
    train_items = np.unique(ds.interactions.take(split.train).item)
    cold = np.setdiff1d(np.arange(ds.n_items), train_items)
    with torch.no_grad():
        vectors = m.item_vectors().numpy()
        users = m.user_vectors(torch.arange(50)).numpy()
    # the catalogue at training time, then the new items as they arrive (content only)
    index = build_index("hnsw", vectors[train_items], train_items, ef_search=400)
    index.add(vectors[cold], cold)
    found, _ = index.search(users, k=10)
    exact = np.argsort(-(users @ vectors.T), axis=1, kind="stable")[:, :10]
    assert (found == exact).mean() > 0.98
    assert np.isin(found, cold).any()  # new items do come back


def test_two_tower_beats_popularity_on_a_real_slice(data):
    ds, split, _ = data
    train = TrainConfig(epochs=3, batch_size=512, lr=3e-3, patience=0, progress=False)
    params = {"dim": 16, "emb_dim": 8, "hidden": (32,)}
    run = RunConfig(
        model={"name": "two-tower", "params": params},
        objective={"name": "in-batch-softmax"},
        train=train,
        eval={"valid_protocol": "full"},
    )
    model = fit(run, ds, split, evaluate=False).model
    pop = fit(RunConfig(model={"name": "popularity"}, train=train), ds, split, evaluate=False).model
    ours = evaluate_full(model, ds, split, "test", ks=(10, 50)).metrics
    base = evaluate_full(pop, ds, split, "test", ks=(10, 50)).metrics
    assert ours["ndcg@10"] > base["ndcg@10"]
    assert ours["recall@50"] > base["recall@50"]
