"""The milvus index backend against a real Milvus 2.x standalone server (the ``milvus`` PyPI package's
binary, see conftest_milvus_server.py): the index contract (exact top-k when searching everything,
build and search parameters reaching the server, exclude with k results still returned, MIPS with
biases, add), save/load by reference with a fresh connection, and recall@100 >= 0.98 vs exact on
normalised clustered 64-d vectors with the server's HNSW index built and loaded. test_milvus.py runs
the same contract on milvus-lite.

Collections smaller than the server's ``minSegmentNumRowsToEnableIndex`` (1,024 rows) are searched
by brute force and never indexed, so these tests use 3,000 vectors and wait for the index
(:func:`~recfunnel.bench.milvus_server.wait_until_indexed`) before they search. A server collection
takes ~10 s to create, flush, index and load, mostly the server's own timers rather than work, so
the module builds its collections at once, in threads, and the tests share them."""

from __future__ import annotations

import json
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("pymilvus")

import conftest_milvus_server  # noqa: E402

from recfunnel.bench.ann import synthetic_clusters  # noqa: E402
from recfunnel.bench.milvus_server import wait_until_indexed  # noqa: E402
from recfunnel.index import IndexFileError, MilvusIndex, build_index, load_index, recall_at_k  # noqa: E402

pytestmark = pytest.mark.slow
milvus_server_uri = conftest_milvus_server.milvus_server_uri  # the session's server (a fixture)

N, DIM, NQ = 3000, 16, 40
# search parameters under which each index type searches everything it holds (nlist=64 below)
EXHAUSTIVE = {"FLAT": {}, "HNSW": {"ef_search": N}, "IVF_FLAT": {"nprobe": 64}}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((NQ, DIM)).astype(np.float32)
    ids = rng.permutation(10 * N)[:N].astype(np.int64)  # ids are not row positions
    return items, queries, ids


@pytest.fixture(scope="module")
def exact(data):
    items, _, ids = data
    return build_index("exact", items, ids)


@pytest.fixture(scope="module")
def clustered():
    """Two-tower-like vectors: normalised (the index's default), clustered, 64-d."""
    return synthetic_clusters(20_000, dim=64, clusters=200, n_queries=200, seed=1)


@pytest.fixture(scope="module")
def biased(data):
    items, queries, _ = data
    rng = np.random.default_rng(3)
    scaled = items * rng.uniform(0.2, 3.0, (N, 1)).astype(np.float32)  # uneven norms
    return scaled, rng.standard_normal(N).astype(np.float32)


def _drop(uri: str, names: set[str]) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=60)
    try:
        for name in names:
            if client.has_collection(name):
                client.drop_collection(name)
    finally:
        client.close()


@pytest.fixture(scope="module")
def built(milvus_server_uri, data, clustered, biased) -> dict[str, MilvusIndex]:
    """The module's collections, built at once (each waits until its index is built and loaded);
    dropped at the end."""
    items, _, ids = data
    specs: dict[str, tuple[np.ndarray, Any, dict[str, Any]]] = {
        "FLAT": (items, ids, {"index_type": "FLAT"}),
        "HNSW": (items, ids, {"index_type": "HNSW", "m": 16, "ef_construction": 64}),
        "IVF_FLAT": (items, ids, {"index_type": "IVF_FLAT", "nlist": 64}),
        "saved": (items, ids, {"index_type": "HNSW", "ef_search": 64}),
        "bias": (biased[0], ids, {"index_type": "FLAT", "bias": biased[1], "normalize": False}),
        "clustered": (clustered.items, None, {}),  # HNSW with the default parameters
    }
    names = {key: f"t_{key.lower()}_{secrets.token_hex(4)}" for key in specs}

    def build(key: str) -> MilvusIndex:
        x, i, params = specs[key]
        index = build_index(
            "milvus", x, i, uri=milvus_server_uri, collection=names[key], timeout=60, **params
        )
        if index.params.index_type != "FLAT":
            wait_until_indexed(index, timeout=300)
        return index

    try:
        with ThreadPoolExecutor(len(specs)) as pool:
            indexes = dict(zip(specs, pool.map(build, specs), strict=True))
        yield indexes
        for index in indexes.values():
            index.close()
    finally:
        _drop(milvus_server_uri, set(names.values()))


def test_it_is_a_milvus_2_server(milvus_server_uri):
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server_uri, timeout=60)
    assert client.get_server_version().lstrip("v").startswith("2.")
    client.close()


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW", "IVF_FLAT"])
def test_exact_top_k_when_searching_everything(data, exact, built, index_type):
    items, queries, ids = data
    want_ids, want_scores = exact.search(queries, 20)
    index = built[index_type].set_params(**EXHAUSTIVE[index_type])
    got_ids, got_scores = index.search(queries, 20)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32


def test_build_parameters_reach_the_server_and_search_parameters_matter(data, exact, built):
    items, queries, ids = data
    index = built["IVF_FLAT"].set_params(nprobe=1)
    described = index._conn.describe_index(index.params.collection, "vector")
    assert described["index_type"] == "IVF_FLAT" and described["metric_type"] == "IP"
    assert int(described["nlist"]) == 64 and int(described["indexed_rows"]) == N
    want, _ = exact.search(queries, 10)
    assert recall_at_k(index.search(queries, 10)[0], want, 10) < 0.9  # 1 of 64 cells
    assert recall_at_k(index.set_params(nprobe=64).search(queries, 10)[0], want, 10) == 1.0
    hnsw = built["HNSW"].set_params(ef_search=128)
    described = hnsw._conn.describe_index(hnsw.params.collection, "vector")
    assert described["index_type"] == "HNSW"
    assert int(described["M"]) == 16 and int(described["efConstruction"]) == 64
    assert recall_at_k(hnsw.search(queries, 10)[0], want, 10) >= 0.95


def test_recall_at_100_vs_exact_on_two_tower_like_vectors(clustered, built):
    """HNSW with its default parameters (M=32, efConstruction=100, ef_search=128), the server's
    index built over all 20,000 vectors and loaded."""
    index = built["clustered"]
    assert index.params.ef_search == 128 and index.params.m == 32
    assert int(index._conn.describe_index(index.params.collection, "vector")["indexed_rows"]) == 20_000
    truth, _ = build_index("exact", clustered.items).search(clustered.queries, 100)
    found, scores = index.search(clustered.queries, 100)
    assert recall_at_k(found, truth, 100) >= 0.98
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_one_query_does_not_wait_for_the_servers_time_tick(data, built):
    """Searches ask for "Session" consistency: with the collection's "Strong" level every call
    waited for the server's next time tick (~200 ms on 2.3.5; ~3 ms without)."""
    _, queries, _ = data
    index = built["HNSW"].set_params(ef_search=128)
    index.search(queries[:1], 10)
    times = []
    for q in queries[:20]:
        t0 = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.1


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_exclude_is_honoured_and_k_results_still_come_back(data, exact, built, index_type):
    items, queries, ids = data
    k = 10
    truth, _ = exact.search(queries, N)
    rng = np.random.default_rng(1)
    exclude = [np.concatenate([truth[i, :60:2], truth[i, 1:3], rng.choice(ids, 5)]) for i in range(NQ)]
    index = built[index_type].set_params(**EXHAUSTIVE[index_type])
    got, scores = index.search(queries, k, exclude)
    assert got.shape == (NQ, k) and (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        ex = set(exclude[i].tolist())
        assert got[i].tolist() == [x for x in truth[i] if x not in ex][:k]
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # still best first


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT"])
def test_exclusions_covering_the_whole_top_still_fill_k(data, exact, built, index_type):
    items, queries, ids = data
    truth, _ = exact.search(queries, 300)
    exclude = sp.csr_matrix(
        (np.ones(NQ * 300), truth.ravel(), np.arange(0, NQ * 300 + 1, 300)), shape=(NQ, 10 * N)
    )
    params = {"nprobe": 1} if index_type == "IVF_FLAT" else {"ef_search": 128}
    index = built[index_type].set_params(**params)
    got, scores = index.search(queries, 10, exclude=exclude)
    assert (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        assert not set(got[i]) & set(truth[i].tolist())
    if index_type == "IVF_FLAT":  # one probed cell holds ~47 items: these rows were searched wider
        assert index.last_widened > 0


def test_biases_give_the_exact_mips_ranking(data, biased, built):
    _, queries, ids = data
    scaled, bias = biased
    scores = queries @ scaled.T + bias
    order = np.argsort(-scores, axis=1)[:, :10]
    index = built["bias"]
    assert index.bias and index.index_dim == DIM + 2
    got_ids, got_scores = index.search(queries, 10)
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_allclose(got_scores, np.take_along_axis(scores, order, 1), rtol=1e-5, atol=1e-4)


def test_save_load_reconnects_to_the_collection_and_checks_it(data, exact, built, tmp_path):
    items, queries, ids = data
    index = built["saved"]
    uri, collection = index.params.uri, index.params.collection
    before = index.search(queries, 15, exclude=[ids[:3]] * NQ)
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["params"]["uri"] == uri and meta["params"]["collection"] == collection
    assert "token" not in meta["params"] and "pymilvus" in meta["versions"]
    assert (path / "milvus.tar").stat().st_size < 20_000  # the vectors stay on the server
    index.close()

    loaded = load_index(path)  # a new connection to the same collection
    assert type(loaded) is MilvusIndex and loaded.params == index.params and len(loaded) == N
    after = loaded.search(queries, 15, exclude=[ids[:3]] * NQ)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], atol=1e-6)

    loaded.build(items[::-1], ids[::-1])  # rebuilding its own collection swaps in a new one
    want = exact.search(queries, 10)[0]
    np.testing.assert_array_equal(loaded.set_params(ef_search=N).search(queries, 10)[0], want)
    with pytest.raises(ValueError, match=f"'{collection}' already exists on the Milvus server"):
        MilvusIndex(uri=uri, collection=collection).build(items)

    new = np.random.default_rng(7).standard_normal((3, DIM)).astype(np.float32)
    loaded.add(new, [90001, 90002, 90003])  # the server now holds rows the saved folder does not know
    assert loaded.search(new, 1)[0][:, 0].tolist() == [90001, 90002, 90003]
    with pytest.raises(IndexFileError, match=f"holds {N + 3} vectors of dim {DIM}.*says {N} of dim {DIM}"):
        load_index(path)
    loaded._conn.drop_collection(collection)
    loaded.close()
    with pytest.raises(IndexFileError, match=f"collection '{collection}' is not on the Milvus server"):
        load_index(path)


def _toy_dataset():
    """30 users x 10 distinct items each out of 50 (raw ids "u<n>", "i<n>"), increasing timestamps;
    users prefer the items of their own half of the catalogue."""
    import polars as pl

    from recfunnel.data.dataset import build_dataset

    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(30):
        p = np.where(np.arange(50) // 25 == u % 2, 4.0, 1.0)
        items.append(rng.choice(50, 10, replace=False, p=p / p.sum()))
        users.append(np.full(10, u))
    u, i = np.concatenate(users), np.concatenate(items)
    frame = pl.DataFrame(
        {
            "user": [f"u{x:02d}" for x in u],
            "item": [f"i{x:02d}" for x in i],
            "timestamp": 1_000_000 + np.arange(len(u), dtype=np.int64) * 60,
        }
    )
    return build_dataset("toy", frame)


def test_a_funnel_retrieves_through_the_server_and_its_bundle_reconnects(milvus_server_uri, tmp_path):
    """The documented set-up (docs/milvus.md): ANN and item-to-item retrievers with
    ``backend = "milvus"`` and ``index = {uri, collection}``; the bundle keeps where the vectors are,
    and a loaded bundle answers as the built funnel did."""
    from recfunnel.data.splits import leave_one_out
    from recfunnel.funnel.build import build_funnel
    from recfunnel.funnel.bundle import load_bundle, save_bundle
    from recfunnel.funnel.config import FunnelConfig

    uri, tag = milvus_server_uri, secrets.token_hex(4)
    names = {"ann": f"t_items_{tag}", "item2item": f"t_items_i2i_{tag}"}
    quiet = {"epochs": 2, "progress": False, "lr": 0.05}
    cfg = {
        "models": {"mf": {"model": {"name": "mf", "params": {"factors": 8}}, "train": quiet}},
        "retrievers": [
            {
                "kind": kind,
                "model": "mf",
                "quota": q,
                "backend": "milvus",
                "index": {"uri": uri, "collection": c},
            }
            for (kind, c), q in zip(names.items(), (20, 10), strict=True)
        ]
        + [{"kind": "popular", "quota": 10}],
        "ranker": {
            "family": "deepfm",
            "features": {"preset": "ids"},
            "train": {"epochs": 1, "progress": False},
        },
    }
    ds = _toy_dataset()
    requests = {"users": ["u01", "u02", None], "recent_items": [[], ["i05"], ["i03", "i07"]], "k": 8}
    try:
        built = build_funnel(FunnelConfig.model_validate(cfg), ds, leave_one_out(ds), evaluate=False)
        want = built.funnel.recommend(**requests)
        for r in built.funnel.retrievers[:2]:
            r.index.close()
        bundle = save_bundle(built, tmp_path / "bundle")
        for kind, collection in names.items():
            meta = json.loads((bundle / "indexes" / kind / "meta.json").read_text())
            assert meta["backend"] == "milvus" and meta["params"]["uri"] == uri
            assert meta["params"]["collection"] == collection
            assert (bundle / "indexes" / kind / "milvus.tar").stat().st_size < 20_000  # no vectors
        loaded = load_bundle(bundle)
        got = loaded.funnel.recommend(**requests)
        assert got.item_ids == want.item_ids and (got.counts == 8).all()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
        for r in loaded.funnel.retrievers[:2]:
            assert isinstance(r.index, MilvusIndex) and r.index.params.uri == uri
            r.index.close()
    finally:
        _drop(uri, set(names.values()))
