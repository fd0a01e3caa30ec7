"""recfunnel.index.milvus against exact search: milvus-lite in-process, and milvus-lite's gRPC server
standing in for a remote Milvus server. Skipped without the extra (``pip install 'recfunnel[milvus]'``)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from recfunnel.artifacts import sha256_file  # noqa: E402
from recfunnel.index import (  # noqa: E402
    INDEXES,
    Index,
    IndexFileError,
    MilvusIndex,
    build_index,
    index_from_model,
    load_index,
    recall_at_k,
)
from recfunnel.index.milvus import MilvusConnectionError  # noqa: E402
from recfunnel.models.base import build_model  # noqa: E402

N, DIM, NQ = 600, 16, 40
# parameters under which each index type searches everything it holds
EXHAUSTIVE = {"FLAT": {}, "HNSW": {"ef_search": N}, "IVF_FLAT": {"nlist": 8, "nprobe": 8}}


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


@pytest.fixture
def server(tmp_path):
    """A Milvus gRPC endpoint (milvus-lite's server on a free local port), stopped afterwards."""
    from milvus_lite.server_manager import server_manager_instance

    path = str(tmp_path / "server.db")
    uri = server_manager_instance.start_and_get_uri(path)
    assert uri and uri.startswith("http://127.0.0.1:")
    yield uri, lambda: server_manager_instance.release_server(path)
    server_manager_instance.release_server(path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registered_without_importing_pymilvus():
    assert INDEXES["milvus"] is MilvusIndex
    code = "import sys, recfunnel.index; assert 'pymilvus' not in sys.modules, 'pymilvus imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_missing_package_says_how_to_install_it(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"pip install 'recfunnel\[milvus\]'"):
        MilvusIndex().build(data[0])


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW", "IVF_FLAT"])
def test_exact_top_k_when_searching_everything(data, exact, index_type):
    items, queries, ids = data
    want_ids, want_scores = exact.search(queries, 20)
    index = build_index("milvus", items, ids, index_type=index_type, **EXHAUSTIVE[index_type])
    got_ids, got_scores = index.search(queries, 20)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32


def test_build_parameters_reach_milvus_and_search_parameters_matter(data, exact):
    items, queries, ids = data
    index = build_index("milvus", items, ids, index_type="IVF_FLAT", nlist=8, nprobe=1)
    described = index._conn.describe_index(index.params.collection, "vector")
    assert described["index_type"] == "IVF_FLAT" and described["metric_type"] == "IP"
    assert described["params"] == {"nlist": 8}
    want, _ = exact.search(queries, 10)
    assert recall_at_k(index.search(queries, 10)[0], want, 10) < 0.9  # 1 of 8 cells
    assert recall_at_k(index.set_params(nprobe=8).search(queries, 10)[0], want, 10) == 1.0
    hnsw = build_index("milvus", items, ids, m=8, ef_construction=40)
    described = hnsw._conn.describe_index(hnsw.params.collection, "vector")
    assert described["params"] == {"M": 8, "efConstruction": 40}
    assert recall_at_k(hnsw.search(queries, 10)[0], want, 10) >= 0.95  # default ef_search=128


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_exclude_is_honoured_and_k_results_still_come_back(data, exact, index_type):
    items, queries, ids = data
    k = 10
    truth, _ = exact.search(queries, N)
    rng = np.random.default_rng(1)
    exclude = [np.concatenate([truth[i, :60:2], truth[i, 1:3], rng.choice(ids, 5)]) for i in range(NQ)]
    index = build_index("milvus", items, ids, index_type=index_type, **EXHAUSTIVE[index_type])
    got, scores = index.search(queries, k, exclude)
    assert got.shape == (NQ, k) and (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        ex = set(exclude[i].tolist())
        assert got[i].tolist() == [x for x in truth[i] if x not in ex][:k]
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # still best first


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT"])
def test_exclusions_covering_the_whole_top_still_fill_k_with_default_params(data, exact, index_type):
    items, queries, ids = data
    truth, _ = exact.search(queries, 300)
    exclude = sp.csr_matrix(
        (np.ones(NQ * 300), truth.ravel(), np.arange(0, NQ * 300 + 1, 300)), shape=(NQ, 10 * N)
    )
    params = {"nlist": 8, "nprobe": 1} if index_type == "IVF_FLAT" else {}
    index = build_index("milvus", items, ids, index_type=index_type, **params)
    got, scores = index.search(queries, 10, exclude=exclude)
    assert (got >= 0).all() and np.isfinite(scores).all()
    for i in range(NQ):
        assert not set(got[i]) & set(truth[i].tolist())
    if index_type == "IVF_FLAT":  # one probed cell holds ~75 items: these rows were searched wider
        assert index.last_widened > 0


def test_add_makes_new_items_findable_and_survives_save_load(data, tmp_path):
    items, queries, ids = data
    index = build_index("milvus", items, ids, ef_search=N)
    rng = np.random.default_rng(7)
    new = rng.standard_normal((5, DIM)).astype(np.float32)
    index.add(new, [90001, 90002, 90003, 90004, 90005])
    got, _ = index.search(new, 1)
    assert got[:, 0].tolist() == [90001, 90002, 90003, 90004, 90005]
    index.add(new[:1] * -1)  # default id: after the largest so far
    assert index.ids[-1] == 90006 and len(index) == N + 6
    loaded = load_index(index.save(tmp_path / "i"))
    assert len(loaded) == N + 6
    np.testing.assert_array_equal(loaded.search(new, 1)[0], got)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(new[:1], [ids[0]])


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT"])
def test_save_load_round_trip_gives_identical_results(data, index_type, tmp_path):
    items, queries, ids = data
    params = {"nlist": 8, "nprobe": 2} if index_type == "IVF_FLAT" else {"ef_search": 16}
    index = build_index("milvus", items, ids, index_type=index_type, **params)
    path = index.save(tmp_path / "idx")
    before = index.search(queries, 15, exclude=[ids[:3]] * NQ)  # reopened after the save
    checksums = {p.name: sha256_file(p) for p in path.iterdir()}
    for loaded in (load_index(path), MilvusIndex.load(path)):
        assert type(loaded) is MilvusIndex and loaded.params == index.params and len(loaded) == N
        after = loaded.search(queries, 15, exclude=[ids[:3]] * NQ)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        loaded.add(items[:2] * 2)  # works on a private copy: the saved folder stays as it was
    assert {p.name: sha256_file(p) for p in path.iterdir()} == checksums
    meta = json.loads((path / "meta.json").read_text())
    assert meta["backend"] == "milvus" and meta["count"] == N and meta["dim"] == DIM
    assert set(meta["files"]) == {"milvus.tar", "ids.npy"}
    assert meta["params"]["uri"] is None and meta["params"]["collection"] == index.params.collection
    assert "milvus_lite" in meta["versions"] and "pymilvus" in meta["versions"]


def test_a_missing_or_corrupt_payload_is_refused_with_the_file_named(data, tmp_path):
    items, _, ids = data
    path = build_index("milvus", items, ids, index_type="FLAT").save(tmp_path / "idx")
    tar = path / "milvus.tar"
    blob = tar.read_bytes()
    tar.write_bytes(blob[:600] + bytes([blob[600] ^ 0xFF]) + blob[601:])
    with pytest.raises(IndexFileError, match=r"milvus\.tar is corrupt"):
        load_index(path)
    tar.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IndexFileError, match=r"milvus\.tar is corrupt"):
        load_index(path)
    tar.unlink()
    with pytest.raises(IndexFileError, match=r"milvus\.tar is missing"):
        load_index(path)

    # a payload whose checksum matches but which holds no database: refused, naming the file
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("collection.json")
        info.size = 2
        t.addfile(info, io.BytesIO(b"{}"))
    tar.write_bytes(buf.getvalue())
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["milvus.tar"] = sha256_file(tar)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r"milvus\.tar cannot be read: the archive holds no milvus\.db"):
        load_index(path)


def test_biases_give_the_exact_mips_ranking(data):
    items, queries, ids = data
    rng = np.random.default_rng(3)
    scaled = items * rng.uniform(0.2, 3.0, (N, 1)).astype(np.float32)  # uneven norms
    bias = rng.standard_normal(N).astype(np.float32)
    scores = queries @ scaled.T + bias
    order = np.argsort(-scores, axis=1)[:, :10]
    for index_type in ("FLAT", "HNSW"):
        index = build_index(
            "milvus", scaled, ids, bias=bias, normalize=False, index_type=index_type, **EXHAUSTIVE[index_type]
        )
        assert index.bias and (index.mips_norm is not None) and index.index_dim == DIM + 2
        got_ids, got_scores = index.search(queries, 10)
        np.testing.assert_array_equal(got_ids, ids[order])
        np.testing.assert_allclose(got_scores, np.take_along_axis(scores, order, 1), rtol=1e-5, atol=1e-4)


def test_index_from_model_reproduces_the_models_own_top_k():
    torch.manual_seed(0)
    model = build_model("mf", 30, 400, {"factors": 8})
    with torch.no_grad():
        model.user_emb.weight.normal_()
        model.item_emb.weight.normal_().mul_(torch.rand(400, 1) * 3)
        model.item_bias.weight.normal_()
    model.eval()
    users = torch.arange(30)
    with torch.no_grad():
        want = torch.topk(model.score_all(users), 10)
        queries = model.user_vectors(users)
    index = index_from_model(model, "milvus", ef_search=400)
    got_ids, got_scores = index.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want.indices.numpy())
    np.testing.assert_allclose(got_scores, want.values.numpy(), rtol=1e-5, atol=1e-4)


def test_a_server_collection_is_saved_by_reference_and_checked_on_load(data, exact, server, tmp_path):
    items, queries, ids = data
    uri, stop = server
    index = build_index("milvus", items, ids, uri=uri, collection="items_v1", index_type="FLAT")
    want = exact.search(queries, 10)
    np.testing.assert_array_equal(index.search(queries, 10)[0], want[0])
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["params"]["uri"] == uri and meta["params"]["collection"] == "items_v1"
    assert (path / "milvus.tar").stat().st_size < 20_000  # the vectors stay on the server
    loaded = load_index(path)
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], want[0])

    loaded.build(items[::-1], ids[::-1])  # rebuilding its own collection swaps in a new one
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], want[0])
    with pytest.raises(ValueError, match="'items_v1' already exists on the Milvus server"):
        MilvusIndex(uri=uri, collection="items_v1").build(items)

    loaded.add(items[:3])  # the server now holds rows the saved folder does not know about
    with pytest.raises(IndexFileError, match=f"holds {N + 3} vectors of dim {DIM}.*says {N} of dim {DIM}"):
        load_index(path)
    for i in (index, loaded):
        i.close()
    stop()
    start = time.monotonic()
    with pytest.raises(MilvusConnectionError, match="cannot reach the Milvus server at http://127.0.0.1"):
        load_index(path)
    assert time.monotonic() - start < 15


def test_an_unreachable_server_fails_fast_with_a_clear_error(data):
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(MilvusConnectionError, match=f"cannot reach the Milvus server at {uri} within 2 s"):
        MilvusIndex(uri=uri, timeout=2).build(data[0])
    assert time.monotonic() - start < 10


def test_bad_parameters_are_refused_with_the_reason(data, monkeypatch, tmp_path):
    items, _, _ = data
    with pytest.raises(ValueError, match=r"(?s)bad parameters for the .milvus. index.*collection"):
        MilvusIndex(collection="my-items")
    with pytest.raises(ValueError, match=r"(?s)bad parameters for the .milvus. index.*index_type"):
        MilvusIndex(index_type="IVF_PQ")
    with pytest.raises(ValueError, match="uri must be None"):
        MilvusIndex(uri="./local.db")
    with pytest.raises(ValueError, match="credentials in token="):
        MilvusIndex(uri="http://root:Milvus@localhost:19530")
    with pytest.raises(ValueError, match="nlist=700 is larger than the 600 vectors"):
        MilvusIndex(index_type="IVF_FLAT", nlist=700).build(items)
    index = MilvusIndex(index_type="FLAT", token="secret-token").build(items)
    with pytest.raises(ValueError, match="cannot change after build"):
        index.set_params(m=8)
    monkeypatch.setattr("recfunnel.index.milvus.MAX_TOPK", 50)  # a server's limit is 16384
    with pytest.raises(ValueError, match="at most 50 results per query; k plus the longest exclusion"):
        index.search(items[:2], 10, exclude=[np.arange(45)] * 2)
    monkeypatch.undo()
    assert "secret" not in repr(index)
    path = index.save(tmp_path / "i")
    assert "secret" not in (path / "meta.json").read_text()
    assert isinstance(Index.load(path), MilvusIndex)
    index.close()
    with pytest.raises(RuntimeError, match="needs a built index"):
        index.search(items[:1], 1)
