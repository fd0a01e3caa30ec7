"""recfunnel.explain: AutoInt attention between fields and FM's largest pairwise terms, for rankers
fitted through recfunnel.run on the contract's synthetic MovieLens-like data (temporal split)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "models"))

from contract import synthetic_movielens  # noqa: E402

from recfunnel.data.fields import encode_events  # noqa: E402
from recfunnel.data.splits import temporal  # noqa: E402
from recfunnel.explain import explain_pair, format_explanation  # noqa: E402
from recfunnel.run import RunConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ds = synthetic_movielens()
    split = temporal(ds)
    models = []
    for family, params in (("autoint", {"embedding_dim": 8, "layers": 2}), ("fm", {"embedding_dim": 8})):
        cfg = RunConfig.model_validate(
            {
                "model": {"name": family, "params": params},
                "split": {"method": "temporal"},
                "train": {"epochs": 1, "batch_size": 512, "lr": 3e-3, "progress": False},
            }
        )
        models.append(fit(cfg, ds, split, evaluate=False))
    assert models[0].schema.to_json() == models[1].schema.to_json()  # the same fields for both
    yield ds, models[0].schema, models[0].model, models[1].model
    torch.set_num_threads(before)


def test_explanation_holds_attention_rows_summing_to_one_and_the_largest_fm_terms(trained):
    ds, schema, autoint, fm = trained
    user, item = ds.users.ids[0], ds.items.ids[49]
    e = explain_pair(ds, schema, user, item, autoint=autoint, fm=fm, top=5)
    f = len(schema)
    assert e.fields == schema.names and e.user == user and e.item == item
    assert e.attention.shape == (2, autoint.config.heads, f, f)
    np.testing.assert_allclose(e.attention.sum(-1), 1.0, rtol=1e-5)
    # the pairs listed per layer are off-diagonal and in decreasing order of the head mean
    for layer in range(2):
        pairs = [p for p in e.top_attention if p["layer"] == layer]
        assert len(pairs) == 5 and all(p["query"] != p["key"] for p in pairs)
        w = [p["weight"] for p in pairs]
        assert w == sorted(w, reverse=True)
        mean = e.attention[layer].mean(0)
        names = list(schema.names)
        assert pairs[0]["weight"] == pytest.approx(mean[~np.eye(f, dtype=bool)].max())
        assert mean[names.index(pairs[0]["query"]), names.index(pairs[0]["key"])] == pytest.approx(w[0])
    # FM terms: the 5 largest |<v_a, v_b>| of the same row, matching the model's own terms
    batch = encode_events(schema, ds, np.array([0]), np.array([49]), np.array([e.timestamp]))
    terms = fm.pairwise_terms(batch)[0].detach().numpy()
    a, b = np.triu_indices(f, k=1)
    want = np.sort(np.abs(terms[a, b]))[::-1][:5]
    np.testing.assert_allclose([abs(t["term"]) for t in e.fm_terms], want, rtol=1e-5)
    # the probabilities are the models' own
    with torch.no_grad():
        assert e.fm_probability == pytest.approx(float(torch.sigmoid(fm.score_fields(batch))[0]))
        assert e.autoint_probability == pytest.approx(float(torch.sigmoid(autoint.score_fields(batch))[0]))


def test_values_are_decoded_and_the_text_shows_both_parts(trained):
    ds, schema, autoint, fm = trained
    e = explain_pair(ds, schema, ds.users.ids[0], ds.items.ids[0], autoint=autoint, fm=fm, top=3)
    assert e.values["user_id"] == ds.users.ids[0]
    assert e.values["item_id"].startswith(ds.items.ids[0] + " (")  # with its title
    assert e.values["gender"] in ("F", "M")
    text = format_explanation(e)
    assert "AutoInt" in text and "pairwise terms" in text and "rows sum to 1" in text
    for name in schema.names:
        assert name in text
    assert e.to_dict()["attention"][0][0][0] == pytest.approx(e.attention[0, 0, 0].tolist())


def test_either_model_alone_and_unknown_ids(trained):
    ds, schema, autoint, fm = trained
    only_fm = explain_pair(ds, schema, ds.users.ids[1], ds.items.ids[1], fm=fm)
    assert only_fm.attention is None and only_fm.fm_terms
    assert "AutoInt" not in format_explanation(only_fm)
    with pytest.raises(KeyError, match="unknown user"):
        explain_pair(ds, schema, "no-such-user", ds.items.ids[0], fm=fm)


def test_trained_explainers_are_cached_and_reloaded_without_training(trained, tmp_path, monkeypatch):
    import recfunnel.run
    from recfunnel.explain import train_explainers

    ds = trained[0]
    split = temporal(ds)
    schema, autoint, fm = train_explainers(ds, split, epochs=1, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # one artifact folder per ranker

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache holds both rankers")

    monkeypatch.setattr(recfunnel.run, "fit", no_training)
    schema2, autoint2, fm2 = train_explainers(ds, split, epochs=1, cache_dir=tmp_path)
    assert schema2.to_json() == schema.to_json()
    a = explain_pair(ds, schema, ds.users.ids[0], ds.items.ids[0], autoint=autoint, fm=fm)
    b = explain_pair(ds, schema2, ds.users.ids[0], ds.items.ids[0], autoint=autoint2, fm=fm2)
    assert format_explanation(a) == format_explanation(b)
    with pytest.raises(AssertionError, match="trained again"):  # other settings: another key
        train_explainers(ds, split, epochs=2, cache_dir=tmp_path)
