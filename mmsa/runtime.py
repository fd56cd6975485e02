"""Where a run runs: seeds, devices, mixed precision, ``torch.distributed`` and the CPU allocator.

Small process-level settings the Trainer (``mmsa.train``) applies before its loop, and that
benchmarks and ``mmsa.efficiency`` apply the same way (``keep_freed_memory``).
"""
from __future__ import annotations

import os
import random
import sys
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist


# --------------------------------------------------------------------------- seeds


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices); ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def available_devices() -> list[str]:
    """Device names valid on this machine (for error messages)."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; a device this machine lacks -> ``ValueError``.

    Called by the Trainer before anything is trained, so ``device="cuda"`` on a machine
    without CUDA fails at once with a message instead of deep inside the first batch.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = ", ".join(available_devices())
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; valid devices on this machine: {valid}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here (this torch "
                         f"{torch.__version__} build: CUDA {torch.version.cuda or 'none'}); valid devices "
                         f"on this machine: {valid}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"valid devices: {valid}")
    if dev.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device {name!r} requested but MPS is not available; valid devices: {valid}")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; valid devices on this machine: {valid}")
    return dev


def use_deterministic_algorithms(device: torch.device) -> None:
    """CUDA: deterministic kernels (warn where none exists) and the fixed cuBLAS workspace they
    need (``CUBLAS_WORKSPACE_CONFIG``, set if unset; it must be set before cuBLAS first runs).
    CPU kernels are deterministic already: nothing to do."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def amp_dtype(device: torch.device, amp: bool = True, force: Optional[str] = None) -> Optional[torch.dtype]:
    """The autocast dtype the Trainer uses: None = fp32 (no autocast).

    CUDA: bf16 where ``torch.cuda.is_bf16_supported()``, else fp16 (with a GradScaler); CPU and
    MPS: fp32.  ``force`` ("bf16"/"fp16"/"fp32") overrides the choice on any device.
    """
    if force is not None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[force]
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the OS (Linux/glibc).

    A CPU training step at the papers' sizes allocates and frees attention maps of 10-200 MB.
    glibc's malloc serves every block above 32 MB with a fresh ``mmap`` and unmaps it when it is
    freed, so the next step pays one page fault per 4 KiB of every map again: 1.5 M faults per
    MulT step at MOSI size, about half of the step's time (README, Performance).  This serves all
    blocks from the heap and never trims it (``mallopt(M_MMAP_MAX, 0)``,
    ``mallopt(M_TRIM_THRESHOLD, -1)``): later steps reuse the pages, values are unchanged, and the
    process keeps its peak memory until it exits (``release_freed_memory`` returns the free part).
    The Trainer calls it when it trains on a CPU (``TrainConfig.keep_freed_memory``).  Returns
    whether the setting took effect (False off Linux/glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, -1))  # M_MMAP_MAX, M_TRIM_THRESHOLD


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim(0)``); False off glibc."""
    libc = _glibc()
    return libc is not None and (libc.malloc_trim(0), True)[1]


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


# --------------------------------------------------------------------------- distributed


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def process_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def maybe_init_distributed(device: torch.device) -> bool:
    """Initialise the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True
