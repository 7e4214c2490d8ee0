"""What depends on the machine a job runs on: the device a config names, its free memory,
random draws that are the same on every device, and the switch for deterministic kernels.

Every random stream the project owns is a CPU generator whose draws are moved to the device:
a seed then means the same batches, probes and proposal draws on a CPU and on a GPU (runs
differ only by the order in which kernels sum), and a checkpoint's streams resume anywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch
from torch import Tensor

from icnn_bench.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's documented setting for reproducible results


def check_device_name(name: object) -> str:
    """The device setting, checked without looking at this machine (a sweep's launcher may
    run on a login node without a GPU): auto, cpu, cuda or cuda:N."""
    if isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        return name
    raise ConfigError(f"device={name!r}; choose one of: {DEVICE_CHOICES}")


def resolve_device(name: object) -> torch.device:
    """The device this job trains on; a CUDA device this machine or torch build lacks is one
    line that says which of the two is missing."""
    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ConfigError(
                f"device={name} but this torch build ({torch.__version__}) has no CUDA support; "
                "install a CUDA build of torch on this machine, or use device=cpu"
            )
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name} but this machine has no CUDA device (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device=cpu"
            )
        count = torch.cuda.device_count()
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise ConfigError(
                f"device={name} but this machine has {count} CUDA device(s): "
                + ", ".join(f"cuda:{i}" for i in range(count))
            )
    return torch.device(name)


def free_memory(device: torch.device) -> float | None:
    """Bytes free where the run's arrays live: the GPU's memory for a CUDA device, else the
    host's (None where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def host_generator(seed: int) -> torch.Generator:
    """A seeded stream on the CPU; draw on it, then `to_device` the result."""
    return torch.Generator().manual_seed(seed)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Move a host draw to `device` without making the host wait for the GPU's queue."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@contextlib.contextmanager
def isolated_global_rng() -> Iterator[None]:
    """Run code that reseeds or draws from torch's global streams (zuko's flows, torch
    distributions) and put every stream back afterwards: the CPU's and, where CUDA is in
    use, each CUDA device's (torch.manual_seed reseeds those too)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """The `deterministic` setting for the code inside: kernels that give the same bits on
    every run (where a kernel has none, the run fails naming it rather than drifting);
    torch's previous setting is put back afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(on))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
