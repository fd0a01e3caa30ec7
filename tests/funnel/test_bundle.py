"""Funnel config, build and bundle (issue 12): a bundle round trip answers identically; a
half-written, tampered, edited or mismatched bundle is refused with a reason; the CLI builds a
bundle from a TOML file and answers from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from recfunnel.cli import app
from recfunnel.funnel import Funnel
from recfunnel.funnel.build import build_funnel
from recfunnel.funnel.bundle import BUNDLE_MANIFEST, BundleError, bundle_id, load_bundle, save_bundle
from recfunnel.funnel.config import FunnelConfig
from recfunnel.index import index_from_model

QUIET = {"epochs": 2, "progress": False, "lr": 0.05}


def toy_config(**over) -> dict:
    cfg = {
        "models": {"mf": {"model": {"name": "mf", "params": {"factors": 8}}, "train": QUIET}},
        "retrievers": [
            {"kind": "ann", "model": "mf", "quota": 20, "backend": "hnsw"},
            {"kind": "item2item", "model": "mf", "quota": 10, "backend": "exact"},
            {"kind": "popular", "quota": 10, "window_days": 1},
        ],
        "ranker": {
            "family": "deepfm",
            "features": {"preset": "ids"},
            "train": {"epochs": 1, "progress": False},
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def built(toy):
    return build_funnel(FunnelConfig.model_validate(toy_config()), toy.dataset, toy.split)


@pytest.fixture()
def bundle(built, tmp_path) -> Path:
    return save_bundle(built, tmp_path / "bundle")


REQUESTS = dict(
    users=["u01", "u02", None, None, "nobody"],
    recent_items=[[], ["i05"], ["i03", "i07"], [], ["i01", "not-an-item"]],
    exclude=[["i10"], [], [], ["i00"], []],
    k=8,
)


def test_round_trip_answers_identically(built, bundle):
    loaded = load_bundle(bundle)
    a, b = built.funnel.recommend(**REQUESTS), loaded.funnel.recommend(**REQUESTS)
    assert a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.source_scores, b.source_scores)
    assert b.unknown_users == (None, None, None, None, "nobody")
    assert b.unknown_items[4] == ("not-an-item",)
    assert (b.counts == 8).all()  # a known user, recent items, nobody: k items each
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    assert loaded.funnel.bundle_id == loaded.id == manifest["bundle_id"]
    assert Funnel.load(bundle).recommend(**REQUESTS).item_ids == a.item_ids


def test_bundle_serves_train_and_valid_only(built, bundle, toy):
    served = load_bundle(bundle).dataset
    assert len(served.interactions) == len(toy.split.train) + len(toy.split.valid)
    res = load_bundle(bundle).funnel.recommend(users=["u03"], k=10)
    u03 = toy.dataset.users.index("u03")
    test_rows = toy.split.test[toy.dataset.interactions.user[toy.split.test] == u03]
    seen = set(served.interactions.item[served.interactions.user == u03])
    assert not seen & set(res.items[0].tolist())  # seen (train + valid) items filtered
    assert len(test_rows) == 1  # the held-out item may be recommended: it is not in the bundle


def test_same_content_same_id_and_rewrite_is_atomic(built, bundle, tmp_path):
    first = load_bundle(bundle).id
    save_bundle(built, bundle)  # replace in place
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]  # no temp litter
    assert load_bundle(bundle).id  # complete after the swap
    assert isinstance(first, str) and len(first) == 16


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_file_is_refused(bundle):
    target = next(p for p in (bundle / "indexes" / "ann").iterdir() if p.name.startswith("index."))
    _flip_byte(target)
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(bundle)


def test_added_file_is_refused(bundle):
    (bundle / "models" / "evil.json").write_text("{}")
    with pytest.raises(BundleError, match="not listed"):
        load_bundle(bundle)


def test_missing_file_and_half_written_are_refused(bundle):
    (bundle / "data" / "vocab_items.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle)
    (bundle / BUNDLE_MANIFEST).unlink()
    with pytest.raises(BundleError, match="half-written"):
        load_bundle(bundle)


def test_edited_manifest_and_other_format_are_refused(bundle):
    mpath = bundle / BUNDLE_MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["config"]["retrievers"][0]["quota"] = 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="edited"):
        load_bundle(bundle)
    manifest["format_version"] = 99
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format v99"):
        load_bundle(bundle)


def test_index_of_other_vectors_is_refused(bundle, toy):
    """A consistent manifest (digests and id recomputed) over an index built from another model:
    the index is checked against its retriever's item vectors before use."""
    mf = {"model": {"name": "mf", "params": {"factors": 8}}, "train": {**QUIET, "seed": 7}}
    cfg = FunnelConfig.model_validate(toy_config(models={"mf": mf}))
    other = build_funnel(cfg, toy.dataset, toy.split).models["mf"]
    ann = bundle / "indexes" / "ann"
    shutil.rmtree(ann)
    index_from_model(other, "hnsw").save(ann)
    mpath = bundle / BUNDLE_MANIFEST
    manifest = json.loads(mpath.read_text())
    from recfunnel.folder import sha256_file

    files = {p.relative_to(bundle).as_posix(): p for p in bundle.rglob("*") if p.is_file()}
    files.pop(BUNDLE_MANIFEST)
    manifest["files"] = {rel: sha256_file(p) for rel, p in files.items()}
    manifest["bundle_id"] = bundle_id(manifest["files"], manifest["config"])
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="other item vectors"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"retrievers": [{"kind": "ann", "model": "nope", "quota": 10}]}, "declared models: \\['mf'\\]"),
        ({"retrievers": [{"kind": "ann", "quota": 10}]}, "needs `model`"),
        ({"retrievers": [{"kind": "popular", "quota": 5}, {"kind": "popular", "quota": 5}]}, "distinct"),
        ({"retrievers": [{"kind": "popular", "quota": 3}]}, "fewer than k=10"),
        ({"models": {"ranker": {}}}, "reserved"),
        (
            {
                "retrievers": [{"kind": "popular", "quota": 20}],
                "ranker": {"negatives": {"hard_fraction": 0.5}},
            },
            "mine_from",
        ),
        ({"ranker": {"kind": "retrieval", "source": "nope"}}, "not a retriever"),
    ],
)
def test_config_errors_say_what_is_valid(over, match):
    with pytest.raises(ValidationError, match=match):
        FunnelConfig.model_validate(toy_config(**over))


def test_cli_build_and_recommend(toy, tmp_path):
    """`recfunnel build-funnel` from a TOML over a CSV table, then `recfunnel recommend` on the bundle."""
    ds = toy.dataset
    ints = ds.interactions
    csv = tmp_path / "log.csv"
    lines = ["user,item,timestamp,rating"] + [
        f"{ds.users.ids[u]},{ds.items.ids[i]},{t},{r}"
        for u, i, t, r in zip(ints.user, ints.item, ints.timestamp, ints.rating, strict=True)
    ]
    csv.write_text("\n".join(lines) + "\n")
    toml = tmp_path / "funnel.toml"
    toml.write_text(
        f"""
[data]
dataset = ""
table = {{ path = "{csv}", user = "user", item = "item", timestamp = "timestamp", rating = "rating" }}
[models.mf]
model = {{ name = "mf", params = {{ factors = 8 }} }}
train = {{ epochs = 2, lr = 0.05 }}
eval = {{ protocols = ["full"], ks = [10], valid_protocol = "full" }}
[[retrievers]]
kind = "ann"
model = "mf"
quota = 20
backend = "exact"
[[retrievers]]
kind = "popular"
quota = 10
[ranker]
kind = "retrieval"
"""
    )
    runner = CliRunner()
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["build-funnel", str(toml), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "written to" in res.output
    res = runner.invoke(app, ["recommend", str(out), "--user", "u01", "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.stdout.strip().splitlines()[-1])
    items = answer["results"][0]["items"]
    assert len(items) == 5 and all(set(i["sources"]) <= {"ann", "popular"} and i["sources"] for i in items)
    assert {"resolve", "rank", "total"} <= set(answer["timings_ms"])
    res = runner.invoke(app, ["recommend", str(out), "--item", "i01", "--item", "i02", "-k", "3"])
    assert res.exit_code == 0, res.output
    (out / BUNDLE_MANIFEST).write_text("{")
    res = runner.invoke(app, ["recommend", str(out), "--user", "u01"])
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_build_evaluation_is_stored_in_the_bundle(built, tmp_path):
    from recfunnel.funnel import evaluate_built

    ev = evaluate_built(built)
    assert {"funnel", "retriever", "stage_ms", "users"} <= set(ev)
    assert 0 <= ev["funnel"]["ndcg@10"] <= 1 and ev["funnel"]["cand_recall@200"] >= ev["funnel"]["recall@10"]
    path = save_bundle(built, tmp_path / "evaluated")
    assert json.loads((path / BUNDLE_MANIFEST).read_text())["evaluation"]["funnel"] == ev["funnel"]
    built.evaluation = None
