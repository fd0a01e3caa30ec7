"""recfunnel.index: every backend against exact search, exclusions, add, save/load and its failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recfunnel.index import (
    INDEXES,
    ExactIndex,
    HNSWIndex,
    Index,
    IndexFileError,
    IVFIndex,
    build_index,
    check_index_matches,
    index_dir,
    index_from_model,
    load_index,
    recall_at_k,
)
from recfunnel.models.base import build_model

N, DIM, NQ = 600, 16, 40
# parameters under which each approximate backend searches everything it holds
EXHAUSTIVE = {"exact": {}, "hnsw": {"ef_search": N}, "ivf": {"nlist": 8, "nprobe": 8}}
FAISS = ("hnsw", "ivf", "ivfpq")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((NQ, DIM)).astype(np.float32)
    ids = rng.permutation(10 * N)[:N].astype(np.int64)  # ids are not row positions
    return items, queries, ids


def _cosine_topk(items, queries, ids, k):
    v = items / np.linalg.norm(items, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = q @ v.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(s, order, axis=1)


def test_registry_names_every_backend():
    assert set(INDEXES) == {"exact", "hnsw", "ivf", "ivfpq", "milvus"}
    with pytest.raises(ValueError, match="valid: exact, hnsw, ivf, ivfpq, milvus"):
        build_index("annoy", np.zeros((2, 2)))


def test_exact_index_matches_numpy_cosine_top_k(data):
    items, queries, ids = data
    got_ids, got_scores = build_index("exact", items, ids).search(queries, 10)
    want_ids, want_scores = _cosine_topk(items, queries, ids, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


def test_exact_index_in_small_blocks_gives_the_same_top_k(data):
    items, queries, ids = data
    whole = build_index("exact", items, ids).search(queries, 25)
    blocked = build_index("exact", items, ids, block_elements=97).search(queries, 25)
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_allclose(whole[1], blocked[1], atol=1e-6)


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_backend_returns_the_exact_top_k_when_searching_everything(data, backend):
    items, queries, ids = data
    want_ids, want_scores = _cosine_topk(items, queries, ids, 20)
    got_ids, got_scores = build_index(backend, items, ids, **EXHAUSTIVE[backend]).search(queries, 20)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


def test_ivfpq_is_lossy_but_close_to_exact_with_all_cells(data):
    items, queries, ids = data
    want_ids, _ = _cosine_topk(items, queries, ids, 10)
    with pytest.warns(RuntimeWarning, match="codes will be coarse"):
        index = build_index("ivfpq", items, ids, nlist=8, nprobe=8, m=8)
    got_ids, _ = index.search(queries, 10)
    assert recall_at_k(got_ids, want_ids, 10) >= 0.85


def test_approximate_search_with_defaults_has_high_recall(data):
    items, queries, ids = data
    want, _ = _cosine_topk(items, queries, ids, 10)
    assert recall_at_k(build_index("hnsw", items, ids).search(queries, 10)[0], want, 10) >= 0.95


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_exclude_is_honoured_and_k_results_still_come_back(data, backend):
    items, queries, ids = data
    k = 10
    truth, _ = _cosine_topk(items, queries, ids, N)
    # most of each query's top 60 excluded (every other one) plus some random ids
    rng = np.random.default_rng(1)
    exclude = [np.concatenate([truth[i, :60:2], truth[i, 1:3], rng.choice(ids, 5)]) for i in range(NQ)]
    got, scores = build_index(backend, items, ids, **EXHAUSTIVE[backend]).search(queries, k, exclude)
    assert got.shape == (NQ, k) and (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        assert not set(got[i]) & set(exclude[i].tolist())
        want = [x for x in truth[i] if x not in set(exclude[i].tolist())][:k]
        assert got[i].tolist() == want
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # still best first


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf", "ivfpq"])
def test_exclusions_covering_the_whole_top_still_fill_k_with_default_params(data, backend):
    items, queries, ids = data
    truth, _ = _cosine_topk(items, queries, ids, N)
    exclude = sp.csr_matrix(  # ids are columns; the first 300 exact neighbours of each query
        (np.ones(NQ * 300), truth[:, :300].ravel(), np.arange(0, NQ * 300 + 1, 300)), shape=(NQ, 10 * N)
    )
    index = INDEXES[backend](nprobe=1) if backend.startswith("ivf") else INDEXES[backend]()
    with pytest.warns(RuntimeWarning) if backend == "ivfpq" else _no_warning():
        index.build(items, ids)
    got, scores = index.search(queries, 10, exclude=exclude)
    assert (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        assert not set(got[i]) & set(truth[i, :300].tolist())
    if backend.startswith("ivf"):  # one probed cell holds ~40 items: these rows were searched wider
        assert index.last_widened > 0


def test_results_run_out_only_when_the_catalogue_does(data):
    items, queries, ids = data
    index = build_index("hnsw", items[:12], ids[:12])
    got, scores = index.search(queries[:3], 10, exclude=[ids[:5], [], ids[:1]])
    assert (got[0, :7] >= 0).all() and (got[0, 7:] == -1).all() and np.isneginf(scores[0, 7:]).all()
    assert (got[1] >= 0).all() and (got[2] >= 0).all()
    got, _ = index.search(queries[:1], 20)  # k above the catalogue size
    assert got.shape == (1, 20) and (got[0, :12] >= 0).all() and (got[0, 12:] == -1).all()


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf", "ivfpq"])
def test_save_load_round_trip_gives_identical_results(data, backend, tmp_path):
    items, queries, ids = data
    params = {"nlist": 8, "nprobe": 2, "nbits": 4} if backend.startswith("ivf") else {}
    if backend == "ivf":
        params.pop("nbits")
    with pytest.warns(RuntimeWarning) if backend == "ivfpq" else _no_warning():
        index = build_index(backend, items, ids, **params)
    before = index.search(queries, 15, exclude=[ids[:3]] * NQ)
    path = index.save(index_dir(tmp_path / "artifact", backend))
    assert path == tmp_path / "artifact" / "index" / backend
    mapped = load_index(path, mmap=True)  # FAISS maps the stored vectors; exact search reads them
    for loaded in (load_index(path), type(index).load(path), mapped):
        assert type(loaded) is type(index) and loaded.params == index.params and len(loaded) == N
        after = loaded.search(queries, 15, exclude=[ids[:3]] * NQ)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
    assert mapped.mapped == (backend != "exact")
    if mapped.mapped:
        with pytest.raises(RuntimeError, match="memory-mapped read-only"):
            mapped.add(items[:1], [123456])
    meta = json.loads((path / "meta.json").read_text())
    assert meta["backend"] == backend and meta["count"] == N and meta["dim"] == DIM
    assert set(meta["files"]) == {index.payload_name, "ids.npy"}


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_add_makes_new_items_findable(data, backend, tmp_path):
    items, queries, ids = data
    index = build_index(backend, items, ids, **EXHAUSTIVE[backend])
    rng = np.random.default_rng(7)
    new = rng.standard_normal((5, DIM)).astype(np.float32)
    index.add(new, [90001, 90002, 90003, 90004, 90005])
    got, _ = index.search(new, 1)
    assert got[:, 0].tolist() == [90001, 90002, 90003, 90004, 90005]
    index.add(new[:1] * -1)  # default id: after the largest so far
    assert index.ids[-1] == 90006
    got2, _ = load_index(index.save(tmp_path / "i")).search(new, 1)
    np.testing.assert_array_equal(got, got2)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(new[:1], [ids[0]])


def test_loading_a_missing_or_corrupt_index_names_the_file(data, tmp_path):
    items, _, ids = data
    path = build_index("hnsw", items, ids).save(tmp_path / "idx")
    with pytest.raises(IndexFileError, match="does not exist"):
        load_index(tmp_path / "nowhere")

    blob = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:])
    with pytest.raises(IndexFileError, match=r"index\.faiss is corrupt"):
        load_index(path)
    (path / "index.faiss").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IndexFileError, match=r"index\.faiss is corrupt"):
        load_index(path)
    (path / "index.faiss").unlink()
    with pytest.raises(IndexFileError, match=r"index\.faiss is missing"):
        load_index(path)

    (path / "meta.json").write_text("{not json")
    with pytest.raises(IndexFileError, match=r"meta\.json is not valid JSON"):
        load_index(path)
    (path / "meta.json").unlink()
    with pytest.raises(IndexFileError, match=r"meta\.json is missing.*ids\.npy"):
        load_index(path)


def test_a_file_added_to_a_saved_index_is_refused(data, tmp_path):
    items, _, ids = data
    path = build_index("exact", items, ids).save(tmp_path / "idx")
    (path / "extra.npy").write_bytes(b"x")
    with pytest.raises(IndexFileError, match=r"holds extra\.npy, not listed in meta\.json"):
        load_index(path)


def test_an_index_saved_inside_an_artifact_leaves_the_artifact_loadable(data, tmp_path):
    from recfunnel.artifacts import load_artifact, save_artifact

    items, _, ids = data
    art = save_artifact(tmp_path / "art", family="mf", config={}, tensors={"w": torch.ones(2)}, vocabs={})
    path = build_index("exact", items, ids).save(index_dir(art, "exact"))
    assert load_artifact(art).family == "mf"
    assert len(load_index(path)) == N
    assert sorted(p.name for p in (art / "index").iterdir()) == ["exact"]


def test_the_split_modules_keep_their_old_import_paths():
    from recfunnel.index import base, faiss_base
    from recfunnel.index.base import FaissIndex, read_meta

    assert FaissIndex is faiss_base.FaissIndex and issubclass(HNSWIndex, base.FaissIndex)
    assert read_meta is base.read_meta
    with pytest.raises(AttributeError):
        base.NoSuchThing  # noqa: B018


def test_an_index_loaded_as_another_backend_is_refused(data, tmp_path):
    items, _, ids = data
    path = build_index("hnsw", items, ids).save(tmp_path / "idx")
    with pytest.raises(IndexFileError, match="holds a 'hnsw' index, not 'ivf'"):
        IVFIndex.load(path)
    assert isinstance(Index.load(path), HNSWIndex)


def test_a_payload_that_disagrees_with_meta_is_refused(data, tmp_path):
    items, _, ids = data
    path = build_index("exact", items, ids).save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    meta["count"] = N + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="ids.npy holds"):
        load_index(path)


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_mismatched_dims_are_rejected(data, backend):
    items, queries, ids = data
    index = build_index(backend, items, ids)
    with pytest.raises(ValueError, match=f"queries have dim {DIM + 1}; this index holds dim {DIM}"):
        index.search(np.zeros((2, DIM + 1), np.float32), 5)
    with pytest.raises(ValueError, match=f"vectors have dim 3; this index holds dim {DIM}"):
        index.add(np.zeros((2, 3), np.float32))


def test_bad_input_is_refused_with_the_reason(data):
    items, queries, ids = data
    with pytest.raises(ValueError, match="duplicates"):
        build_index("exact", items[:3], [1, 2, 1])
    with pytest.raises(ValueError, match=">= 0"):
        build_index("exact", items[:2], [-1, 2])
    bad = items[:4].copy()
    bad[2, 0] = np.nan
    index = build_index("exact", items, ids)
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        index.build(bad)
    assert len(index) == N and index.search(queries, 3)[0].shape == (NQ, 3)  # unchanged by the failure
    with pytest.raises(ValueError, match="normalize=False"):
        build_index("exact", items, bias=np.zeros(N))
    with pytest.raises(ValueError, match="k must be a positive int"):
        build_index("exact", items).search(queries, 0)
    with pytest.raises(ValueError, match="exclude has 2 entries for 40 queries"):
        build_index("exact", items).search(queries, 5, exclude=[[1], [2]])
    with pytest.raises(ValueError, match="cannot change after build"):
        build_index("hnsw", items).set_params(m=8)
    with pytest.raises(ValueError, match="bad parameters for the 'hnsw' index"):
        HNSWIndex(ef_search=0)


def test_threads_setting_applies_during_search_only(data):
    items, queries, _ = data
    before = torch.get_num_threads()
    ExactIndex(threads=1).build(items).search(queries, 5)
    HNSWIndex(threads=1).build(items).search(queries, 5)
    assert torch.get_num_threads() == before


def _mf(n_users=30, n_items=400, factors=8):
    torch.manual_seed(0)
    model = build_model("mf", n_users, n_items, {"factors": factors})
    with torch.no_grad():
        model.user_emb.weight.normal_()
        model.item_emb.weight.normal_().mul_(torch.rand(n_items, 1) * 3)  # uneven norms
        model.item_bias.weight.normal_()
    return model.eval()


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_index_from_model_reproduces_the_models_own_top_k(backend, tmp_path):
    model = _mf()
    users = torch.arange(30)
    with torch.no_grad():
        want = torch.topk(model.score_all(users), 10)
        queries = model.user_vectors(users)
    params = {"hnsw": {"ef_search": 400}, "ivf": {"nlist": 4, "nprobe": 4}}.get(backend, {})
    index = index_from_model(model, backend, **params)
    assert index.bias and not index.normalize
    got_ids, got_scores = index.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want.indices.numpy())
    np.testing.assert_allclose(got_scores, want.values.numpy(), rtol=1e-5, atol=1e-4)
    loaded = load_index(index.save(tmp_path / "i"))
    check_index_matches(loaded, model)
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], got_ids)


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_items_added_with_a_bias_keep_the_exact_model_score(backend):
    model = _mf()
    index = index_from_model(model, backend)
    rng = np.random.default_rng(5)
    new = (rng.standard_normal((3, 8)) * 5).astype(np.float32)  # norms above the built maximum
    new_bias = np.array([0.5, -1.0, 2.0], np.float32)
    index.add(new, [400, 401, 402], bias=new_bias)
    queries = model.user_vectors(torch.arange(30)).detach().numpy()
    got_ids, got_scores = index.search(queries, 5)
    all_v = np.concatenate([model.item_vectors().detach().numpy(), new])
    all_b = np.concatenate([model.item_bias_all().detach().numpy(), new_bias])
    scores = queries @ all_v.T + all_b
    np.testing.assert_array_equal(got_ids, np.argsort(-scores, axis=1)[:, :5])
    np.testing.assert_allclose(got_scores, -np.sort(-scores, axis=1)[:, :5], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="pass bias="):
        index.add(new[:1], [403])


def test_cosine_scoring_ignores_bias_and_norms():
    model = _mf()
    index = index_from_model(model, "exact", scoring="cosine")
    items = model.item_vectors().detach().numpy()
    queries = model.user_vectors(torch.arange(5)).detach().numpy()
    want, _ = _cosine_topk(items, queries, np.arange(400), 10)
    np.testing.assert_array_equal(index.search(queries, 10)[0], want)


def test_a_stale_index_is_detected_after_retraining():
    model = _mf()
    index = index_from_model(model, "exact")
    with torch.no_grad():
        model.item_bias.weight[3] += 1.0
    with pytest.raises(IndexFileError, match="other item vectors"):
        check_index_matches(index, model)
    with pytest.raises(TypeError, match="only Factorised models"):
        index_from_model(object(), "exact")


class _no_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
