"""FAISS on a GPU, where ``faiss-gpu`` is installed: which GPU a ``device`` setting puts an index on,
and the copies to and from it.

Every call into FAISS's GPU API goes through here and is guarded: with the CPU build of FAISS
(no ``StandardGpuResources``) or no visible GPU, :func:`faiss_gpus` is 0, ``auto`` resolves to the
CPU and nothing else is called, so CPU FAISS runs exactly as before. An index keeps its CPU
structure as the one it saves, adds to and maps from disk; the GPU copy is a search replica.
"""

from __future__ import annotations

from typing import Any

from recfunnel.index.faiss_base import _faiss
from recfunnel.nn.device import DEVICE_HELP, DeviceError, check_device_spec

__all__ = ["GPU_MAX_K", "faiss_gpu_device", "faiss_gpus", "to_cpu", "to_gpu"]

#: FAISS's GPU k-selection limit: k and nprobe above it are searched on the CPU structure
GPU_MAX_K = 2048

_resources: dict[int, Any] = {}  # one StandardGpuResources per GPU, shared by the process's indexes


def faiss_gpus() -> int:
    """GPUs FAISS can use here: 0 with the CPU build of FAISS (or when asking fails)."""
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a GPU build without a usable driver answers like none
        return 0


def faiss_gpu_device(spec: str) -> int | None:
    """The GPU number a device setting puts a FAISS index on, or None for the CPU: ``cpu`` ->
    None; ``auto`` -> GPU 0 when FAISS has one, else None; ``cuda`` / ``cuda:N`` -> that GPU, or a
    DeviceError naming what is valid here."""
    check_device_spec(spec)
    if spec == "cpu":
        return None
    n = faiss_gpus()
    if spec == "auto":
        return 0 if n else None
    gpu = int(spec.split(":")[1]) if ":" in spec else 0
    if gpu >= n:
        why = (
            "this FAISS is a CPU build (pip install faiss-gpu for GPU indexes)"
            if not hasattr(_faiss(), "StandardGpuResources")
            else f"FAISS sees {n} GPU(s)"
        )
        valid = ["auto", "cpu", *(["cuda"] if n else []), *(f"cuda:{i}" for i in range(n))]
        raise DeviceError(f"index device {spec!r} is not available: {why}; valid here: {', '.join(valid)}")
    return gpu


def to_gpu(index: Any, gpu: int) -> Any:
    """A copy of the CPU FAISS `index` on GPU `gpu` (FAISS's ``index_cpu_to_gpu``)."""
    faiss = _faiss()
    res = _resources.get(gpu)
    if res is None:
        res = _resources[gpu] = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, gpu, index)


def to_cpu(index: Any) -> Any:
    """A CPU copy of a GPU FAISS index (``index_gpu_to_cpu``); a CPU index as it is."""
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and type(index).__name__.startswith("Gpu"):
        return faiss.index_gpu_to_cpu(index)
    return index


DEVICE_FIELD_HELP = (
    f"where searches run: {DEVICE_HELP}. FAISS backends use a GPU through faiss-gpu only "
    "(the CPU build keeps every index on the CPU)"
)
