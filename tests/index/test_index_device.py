"""Index devices (issue 16, item 4), on the CPU: the exact index's `device` parameter (an absent GPU
refused, nothing changed), and the FAISS IVF GPU replica's plumbing with FAISS's GPU answers
replaced: which GPU a setting picks, searches through the replica (a real FAISS index, cloned), the
CPU fallbacks, persistence from the CPU structure, and CPU FAISS untouched by default."""

import warnings

import faiss
import numpy as np
import pytest
import torch

from recfunnel.index import build_index, faiss_gpu, faiss_ivf, load_index
from recfunnel.nn.device import DeviceError

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)


# ---- exact --------------------------------------------------------------------------------------


def test_exact_defaults_to_auto_and_searches_where_its_vectors_are(vectors):
    items, queries = vectors
    index = build_index("exact", items)
    assert index.params.device == "auto"
    want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert index.device.type == want.type
    cpu = build_index("exact", items, device="cpu")
    ids, scores = index.search(queries, 10)
    ids_cpu, scores_cpu = cpu.search(queries, 10)
    assert np.array_equal(ids, ids_cpu) and np.allclose(scores, scores_cpu, atol=1e-5)


@no_gpu
def test_exact_on_an_absent_gpu_is_refused_and_nothing_changes(vectors, tmp_path):
    items, queries = vectors
    with pytest.raises(DeviceError, match="valid here: auto, cpu"):
        build_index("exact", items, device="cuda")
    index = build_index("exact", items, device="cpu")
    with pytest.raises(DeviceError, match="not available"):
        index.set_params(device="cuda:0")
    assert index.params.device == "cpu" and index.search(queries, 3)[0].shape == (20, 3)
    with pytest.raises(ValueError, match="valid: auto"):
        index.set_params(device="gpu")


def test_a_saved_exact_index_loads_onto_the_device_asked_for(vectors, tmp_path):
    items, queries = vectors
    index = build_index("exact", items, device="cpu")
    index.save(tmp_path / "exact")
    assert load_index(tmp_path / "exact").params.device == "cpu"
    moved = load_index(tmp_path / "exact", device="auto")
    assert moved.params.device == "auto"
    assert np.array_equal(moved.search(queries, 5)[0], index.search(queries, 5)[0])


# ---- FAISS GPU selection -----------------------------------------------------------------------


def test_cpu_faiss_has_no_gpus_and_auto_stays_on_the_cpu():
    if hasattr(faiss, "StandardGpuResources"):
        pytest.skip("this FAISS is a GPU build")
    assert faiss_gpu.faiss_gpus() == 0
    assert faiss_gpu.faiss_gpu_device("auto") is None and faiss_gpu.faiss_gpu_device("cpu") is None
    with pytest.raises(DeviceError, match="CPU build.*faiss-gpu.*valid here: auto, cpu"):
        faiss_gpu.faiss_gpu_device("cuda")


def test_which_gpu_a_setting_picks(monkeypatch):
    monkeypatch.setattr(faiss_gpu, "faiss_gpus", lambda: 2)
    monkeypatch.setattr(faiss_gpu, "_faiss", lambda: type("F", (), {"StandardGpuResources": object}))
    assert faiss_gpu.faiss_gpu_device("auto") == 0
    assert faiss_gpu.faiss_gpu_device("cuda") == 0 and faiss_gpu.faiss_gpu_device("cuda:1") == 1
    assert faiss_gpu.faiss_gpu_device("cpu") is None
    with pytest.raises(DeviceError, match="sees 2 GPU.*valid here: auto, cpu, cuda, cuda:0, cuda:1"):
        faiss_gpu.faiss_gpu_device("cuda:2")
    monkeypatch.setattr(faiss_gpu, "faiss_gpus", lambda: 0)
    assert faiss_gpu.faiss_gpu_device("auto") is None


def test_ivf_on_cpu_faiss_makes_no_replica(vectors):
    items, queries = vectors
    index = build_index("ivf", items, nprobe=4)
    assert index.params.device == "auto" and not index.on_gpu  # (CPU FAISS, or GPU FAISS on a CPU box)
    if faiss_gpu.faiss_gpus() == 0:
        assert index._gpu is None


class Replica:
    """What index_cpu_to_gpu gives, stood in for by a real FAISS clone that counts its searches."""

    def __init__(self, index):
        self.index = faiss.clone_index(index)
        self.searches = 0

    def search(self, q, k, params=None):
        self.searches += 1
        return self.index.search(q, k, params=params)


@pytest.fixture
def fake_gpu(monkeypatch):
    """FAISS answering as a GPU build with one GPU whose copies are `Replica`s."""
    made: list[tuple[Replica, int]] = []

    def to_gpu(index, gpu):
        made.append((Replica(index), gpu))
        return made[-1][0]

    monkeypatch.setattr(faiss_ivf, "faiss_gpu_device", lambda spec: None if spec == "cpu" else 0)
    monkeypatch.setattr(faiss_ivf, "to_gpu", to_gpu)
    return made


@pytest.mark.parametrize("backend", ["ivf", "ivfpq"])
def test_ivf_searches_through_the_gpu_replica_with_the_cpu_index_results(vectors, fake_gpu, backend):
    items, queries = vectors
    extra = {"nbits": 4} if backend == "ivfpq" else {}
    on_gpu = build_index(backend, items, nprobe=4, device="cuda", **extra)
    on_cpu = build_index(backend, items, nprobe=4, device="cpu", **extra)
    assert on_gpu.on_gpu and not on_cpu.on_gpu and len(fake_gpu) == 1
    replica = fake_gpu[0][0]
    for widen in (True, False):
        ids, scores = on_gpu.search(queries, 10, widen=widen)
        ids_cpu, scores_cpu = on_cpu.search(queries, 10, widen=widen)
        assert np.array_equal(ids, ids_cpu) and np.allclose(scores, scores_cpu)
    assert replica.searches >= 2
    before = replica.searches
    ids, _ = on_gpu.search(queries[:2], faiss_gpu.GPU_MAX_K + 1)  # beyond the GPU's k: the CPU structure
    assert replica.searches == before and (ids >= 0).sum() == 2 * (faiss_gpu.GPU_MAX_K + 1)
    assert on_gpu._to_bytes() == on_cpu._to_bytes()  # saved from the CPU structure: no trace of the GPU


def test_ivf_add_and_set_params_keep_the_replica_current(vectors, fake_gpu):
    items, queries = vectors
    index = build_index("ivf", items, nprobe=64, device="auto")
    index.add(queries[:1], [99_999])  # an item equal to the first query: its own best match
    assert len(fake_gpu) == 2 and fake_gpu[-1][0].index.ntotal == len(items) + 1
    assert index.search(queries[:1], 1)[0][0, 0] == 99_999 and fake_gpu[-1][0].searches == 1
    index.set_params(device="cpu")
    assert not index.on_gpu
    index.set_params(device="cuda")
    assert index.on_gpu and len(fake_gpu) == 3
    index.build(items)  # a new structure: a new replica, never the stale one
    assert len(fake_gpu) == 4 and fake_gpu[-1][0].index.ntotal == len(items)


def test_a_replica_faiss_cannot_make_warns_under_auto_and_fails_by_name(vectors, monkeypatch):
    items, queries = vectors

    def refuse(index, gpu):
        raise RuntimeError("no GPU kernel for this code size")

    monkeypatch.setattr(faiss_ivf, "faiss_gpu_device", lambda spec: None if spec == "cpu" else 0)
    monkeypatch.setattr(faiss_ivf, "to_gpu", refuse)
    with pytest.warns(RuntimeWarning, match="stays on the CPU.*code size"):
        index = build_index("ivf", items, device="auto")
    assert not index.on_gpu and index.search(queries, 3)[0].shape == (20, 3)
    with pytest.raises(DeviceError, match="cannot be placed on GPU 0.*valid: device='cpu'"):
        build_index("ivf", items, device="cuda")


def test_a_failing_gpu_search_falls_back_to_the_cpu_with_the_same_results(vectors, fake_gpu):
    items, queries = vectors
    index = build_index("ivf", items, nprobe=4, device="cuda")
    want = build_index("ivf", items, nprobe=4, device="cpu").search(queries, 10)

    def broken(q, k, params=None):
        raise RuntimeError("cudaMalloc failed")

    fake_gpu[0][0].search = broken
    with pytest.warns(RuntimeWarning, match="cudaMalloc failed.*on the CPU from now on"):
        got = index.search(queries, 10)
    assert np.array_equal(got[0], want[0]) and not index.on_gpu
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(queries, 10)  # no warning twice
