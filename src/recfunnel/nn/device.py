"""Where tensors live: the one place a device setting ("auto" | "cpu" | "cuda" | "cuda:N") is
resolved, plus the small helpers the trainer, evaluation and indexes share.

Conventions (the GPU path of issue 16):

* a run's device is a string in its config (``TrainConfig.device``, an index's ``device``
  parameter), resolved here once: ``auto`` is the current CUDA device when torch sees one, else
  the CPU; ``cuda`` / ``cuda:N`` must exist or :class:`DeviceError` says which devices are valid;
* a caller hands a model its inputs on the model's device (:func:`module_device`, :func:`to_device`);
  a model creates its own tensors on the device of its inputs or parameters;
* what goes to numpy comes back to the CPU first (``.cpu()``), where evaluation and indexes use it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from recfunnel.errors import ConfigError

__all__ = [
    "DEVICE_HELP",
    "DEVICE_PATTERN",
    "PRECISIONS",
    "DeviceError",
    "autocast",
    "available_devices",
    "check_device_spec",
    "device_name",
    "module_device",
    "on_device",
    "resolve_device",
    "to_device",
]

#: the forms a device setting may take
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_HELP = "auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N"
#: numeric precisions of the training forward pass: fp32, or bf16 autocast (weights stay fp32)
PRECISIONS = ("fp32", "bf16")


class DeviceError(ConfigError):
    """A device was asked for that this machine does not have, or a setting of no valid form."""


def check_device_spec(spec: str) -> str:
    """`spec` if it has a valid form (not whether the device exists here), else DeviceError."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise DeviceError(f"device {spec!r} is not a device setting; valid: {DEVICE_HELP}")
    return spec


def _cuda_count() -> int:
    """CUDA devices torch can use here (0 on a CPU-only build or machine)."""
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except (RuntimeError, AssertionError):  # a broken driver answers like no GPU
        return 0


def available_devices() -> list[str]:
    """The device settings that resolve on this machine: cpu, auto, and each cuda:N."""
    n = _cuda_count()
    return ["auto", "cpu", *(["cuda"] if n else []), *(f"cuda:{i}" for i in range(n))]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device a setting names on this machine. ``auto`` (or None): ``cuda`` (the current
    CUDA device, which a launched process of several sets to its local rank) when torch sees a
    GPU, else ``cpu``. ``cuda`` / ``cuda:N`` without such a device: DeviceError naming the
    devices valid here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = check_device_spec("auto" if spec is None else spec)
    n = _cuda_count()
    if spec == "auto":
        return torch.device("cuda" if n else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= n:
        have = "no CUDA device is visible to torch" if n == 0 else f"torch sees {n} CUDA device(s)"
        build = "" if torch.version.cuda else f" (this torch {torch.__version__} is a CPU-only build)"
        raise DeviceError(
            f"device {spec!r} is not available: {have}{build}; valid here: {', '.join(available_devices())}"
        )
    return torch.device(spec)


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter (else buffer); CPU for anything without tensors
    (closed-form scorers, LightGBM, plain objects)."""
    if isinstance(module, torch.nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device("cpu")


def to_device(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """`value` with every tensor in it on `device`: a tensor, an object with ``.to`` (FieldBatch),
    or a dict / list / tuple of those (recursively); anything else unchanged. A no-op on the
    device the value is already on."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [to_device(v, device, non_blocking) for v in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return type(value)(*moved)
        return tuple(moved) if isinstance(value, tuple) else moved
    to = getattr(value, "to", None)
    if callable(to) and not isinstance(value, (str, bytes, type)):
        return to(device)
    return value


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The autocast context of a training forward pass: none for fp32, bf16 autocast on the
    device's type for bf16 (CPU too); an unknown precision: ConfigError naming the valid ones."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ConfigError(f"precision {precision!r} is not one; valid: {', '.join(PRECISIONS)}")


def device_name(device: torch.device | str) -> str:
    """A human name for a device: the GPU's model (``torch.cuda.get_device_name``), or the CPU's
    processor string with the core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine() or "cpu"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return f"{cpu} ({os.cpu_count()} cores, CPU)"


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """`module` moved to `device` inside the block and back to where it was afterwards."""
    before = module_device(module)
    module.to(device)
    try:
        yield module
    finally:
        module.to(before)
