"""One Trainer for every model (docs/design.md §2).

The loop is deliberately plain: for each epoch, for each batch, ``out = model(batch)``,
``loss = sum(out.losses.values())``, backward, step.  Around it sit the things a real
experiment needs and nothing more:

* Adam/AdamW with two parameter groups (BERT weights get ``bert_lr``), and an optional
  linear learning-rate warm-up over the first ``warmup_steps`` optimiser steps;
* gradient accumulation and optional gradient clipping;
* mixed precision on CUDA: bf16 autocast where the GPU supports bf16, else fp16 autocast with
  a ``torch.amp.GradScaler`` (its state is checkpointed), else fp32; off on CPU, where it only
  slows things down (``amp_dtype`` forces a choice);
* no host synchronisation inside the training step: the missing-modality transform runs on
  the CPU batch before it is moved, the moved batch keeps CPU copies of its lengths (for
  ``pack_padded_sequence``: ``batch.lengths(m, device="cpu")`` costs no copy), losses are
  summed on the device and read once per epoch;
* ``deterministic=True``: deterministic cuBLAS/cuDNN kernels on CUDA;
* early stopping on a named validation metric, optionally counting only after an epoch
  (``patience_start_epoch``: the GAN schedule of DAST-GAN warms up first) and optionally
  choosing the best epoch only after an epoch (``select_after_epoch``);
* callbacks (``on_fit_start``, ``on_epoch_start``, ``on_batch_end``, ``on_epoch_end``,
  ``state_dict``/``load_state_dict``) -- the GAN's discriminator step is one;
* tqdm bars, a JSON history, ``best.pt`` + ``last.pt`` checkpoints, exact resume;
* checkpoints that survive being killed: every file is written to a temporary name, fsync'ed
  and renamed into place (``os.replace`` is atomic), the previous ``last.pt`` is kept as
  ``last.prev.pt``, every checkpoint carries a SHA-256 checksum of its contents, and resuming
  falls back to ``last.prev.pt`` (with a message) when ``last.pt`` is missing, partial or
  corrupt -- a run killed at any moment loses at most one epoch;
* checkpoints hold only tensors, numbers, strings and containers, so they load with
  ``torch.load(..., weights_only=True)`` (no code from the file runs);
* seeds: every epoch re-seeds torch and the loader's shuffling from ``(seed, epoch)``, so
  a run resumed from ``last.pt`` follows the same path as one never interrupted;
* ``torch.distributed`` DDP when launched with ``torchrun`` (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

try:  # the notebook bar needs ipywidgets; without it tqdm.auto prints an "IProgress not found" warning
    import ipywidgets  # noqa: F401
    from tqdm.auto import tqdm
except ImportError:
    from tqdm.std import tqdm

from mmsa.types import Batch, ModelOutput


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


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 1e-3
    bert_lr: float = 5e-5
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam" | "adamw"
    grad_accum: int = 1
    clip_grad: Optional[float] = None
    amp: bool = True  # mixed precision on CUDA: bf16 where supported, else fp16 + GradScaler
    amp_dtype: Optional[str] = None  # force "bf16" | "fp16" | "fp32" (any device); None = automatic
    deterministic: bool = False  # CUDA: deterministic algorithms + CUBLAS_WORKSPACE_CONFIG
    monitor: str = "mae"  # validation metric for early stopping and model selection
    mode: str = "min"  # "min" | "max"
    patience: int = 8
    patience_start_epoch: int = 0  # epochs <= this never count towards patience
    # Epochs <= select_after_epoch are never chosen as the best epoch: model selection and
    # early stopping ignore them.  During a warm-up (of the learning rate, or of a GAN's
    # adversarial weight) the validation score of an early epoch can look good for the wrong
    # reason -- e.g. the adversarial term is still off -- and restoring those weights would
    # discard the part of training the experiment is about.
    select_after_epoch: int = 0
    # Linear learning-rate warm-up over the first ``warmup_steps`` *optimiser* steps (with
    # gradient accumulation one step = ``grad_accum`` batches): the lr of every parameter
    # group rises from lr/(warmup_steps+1) to lr (torch.optim.lr_scheduler.LinearLR).
    warmup_steps: int = 0
    seed: int = 1
    device: str = "auto"
    out_dir: Optional[str] = None  # checkpoints + history.json when set
    task: str = "regression"  # "regression" | "classification"
    metric_dataset: str = "mosi"  # which metric rules (mmsa.metrics) apply
    progress: bool = True
    restore_best: bool = True  # load the best weights into the model after fit
    keep_freed_memory: bool = True  # CPU: reuse freed memory, no page faults per step (keep_freed_memory())

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        if self.grad_accum < 1:
            raise ValueError("grad_accum must be >= 1")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.select_after_epoch < 0:
            raise ValueError(f"select_after_epoch must be >= 0, got {self.select_after_epoch}")
        if self.amp_dtype not in (None, "bf16", "fp16", "fp32"):
            raise ValueError(f"amp_dtype must be None, 'bf16', 'fp16' or 'fp32', got {self.amp_dtype!r}")


def train_config(**overrides) -> TrainConfig:
    """``TrainConfig(**overrides)`` with an error listing the valid keys on a typo."""
    from mmsa.config import check_keys

    check_keys(TrainConfig, overrides, "TrainConfig key")
    return TrainConfig(**overrides)


# --------------------------------------------------------------------------- helpers


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _is_dist() else 0


def maybe_init_distributed(device: torch.device) -> bool:
    """Initialise the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _is_dist():
        return _is_dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def param_groups(model: nn.Module, lr: float, bert_lr: float, weight_decay: float) -> list[dict]:
    """Two groups: parameters whose name contains ``bert`` use ``bert_lr``.

    Frozen parameters and the ``discriminator.`` (owned by a callback) are left out.
    """
    bert, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith("discriminator."):
            continue
        (bert if "bert" in name else rest).append(p)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "model"}]
    if bert:
        groups.append({"params": bert, "lr": bert_lr, "weight_decay": weight_decay, "name": "bert"})
    return groups


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None], previous: Optional[Path] = None) -> None:
    """``write(f)`` into ``path.tmp``, fsync, then rename over ``path`` (atomic).

    With ``previous``, the old ``path`` is first renamed to ``previous``: at every moment either
    ``path`` or ``previous`` is a complete file (a kill between the two renames leaves only
    ``previous``, which ``load_checkpoint`` falls back to).
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    if previous is not None and path.exists():
        os.replace(path, previous)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_save(obj: Any, path: Path, previous: Optional[Path] = None) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f), previous)


def _plain(x: Any) -> Any:
    """Numpy scalars/arrays and paths -> python numbers, tensors, str (what weights_only loads)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.copy())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def checksum(obj: Any) -> str:
    """SHA-256 over a checkpoint's contents (tensor bytes, dtypes, shapes, keys and values)."""
    h = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(b"{")
            for k, v in x.items():
                h.update(repr(k).encode())
                visit(v)
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                visit(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    visit(obj)
    return h.hexdigest()


def previous_checkpoint(path: Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``: the checkpoint kept from the epoch before."""
    return path.with_name(path.stem + ".prev" + path.suffix)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a Trainer checkpoint with ``weights_only=True`` and verify its checksum.

    Raises on a missing, partial or corrupt file (the message says which).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not an mmsa checkpoint (no 'model' entry)")
    expected = state.pop("checksum", None)
    if expected is None:
        print(f"[mmsa.train] note: {path} carries no checksum (written by another program or an older "
              f"mmsa): it loaded safely (weights_only=True), but partial or corrupt contents cannot be "
              f"detected", file=sys.stderr)
    elif checksum(state) != expected:
        raise ValueError(f"{path} is corrupt: its contents do not match the checksum written with it")
    return state


def checkpoint_problem(err: BaseException) -> str:
    """Why a checkpoint could not be read, in one line that keeps the reason.

    ``torch.load(weights_only=True)`` refuses a file holding anything but tensors and plain values
    with a long text whose first line is generic advice; the line naming what was refused (e.g.
    "unsupported GLOBAL posix.system") is what the user needs, so it is the one kept.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Weights only load failed"):
        reasons = [line.split("WeightsUnpickler error:")[-1].strip() for line in lines[1:]
                   if "weights_only" not in line or "WeightsUnpickler error:" in line]
        reasons = [r for r in reasons if r and not r.startswith("Check the documentation")]
        reason = next((r for r in reasons if "GLOBAL" in r), None)
        if reason:
            return (f"refused by torch.load(weights_only=True): the file holds more than tensors and plain "
                    f"values and could run code when loaded ({reason})")
        return (f"not a readable checkpoint (partial, corrupt or not written by torch.save): "
                f"{reasons[0] if reasons else lines[0]}")
    return f"{type(err).__name__}: {lines[0]}"


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train any ``mmsa`` model (``forward(batch) -> ModelOutput``)."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        callbacks: Sequence[Any] = (),
        train_transform: Optional[Callable[[Batch, int, int], Batch]] = None,
        eval_transform: Optional[Callable[[Batch, int], Batch]] = None,
        model_name: Optional[str] = None,
    ):
        """``model_name`` (the registry name) is stored in checkpoints with the model's resolved
        config (``model.cfg``), so ``load_trained(path)`` can rebuild the model."""
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.model_name = model_name
        self.distributed = maybe_init_distributed(self.device)
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        if self.config.deterministic:
            use_deterministic_algorithms(self.device)
        seed_everything(self.config.seed)
        if self.device.type == "cpu" and self.config.keep_freed_memory:
            keep_freed_memory()
        self.model = model.to(self.device)
        self.amp_dtype = amp_dtype(self.device, self.config.amp, self.config.amp_dtype)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (scaler disabled)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.callbacks = list(callbacks)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score: Optional[float] = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_metrics: dict = {}
        self.out_dir = Path(self.config.out_dir) if self.config.out_dir else None
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DDP(self.model, device_ids=ids, find_unused_parameters=True)
        else:
            self.forward_model = self.model

    # ------------------------------------------------------------------ plumbing
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        groups = param_groups(self.model, c.lr, c.bert_lr, c.weight_decay)
        if not any(g["params"] for g in groups):
            raise ValueError("the model has no trainable parameters")
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        params = [p for g in groups for p in g["params"]]
        # one fused kernel for all parameters on CUDA; the multi-tensor (foreach) path elsewhere
        if self.device.type == "cuda" and all(p.is_cuda and p.is_floating_point() for p in params):
            return cls(groups, lr=c.lr, fused=True)
        return cls(groups, lr=c.lr, foreach=True)

    def _make_scheduler(self):
        """Linear warm-up, stepped once per optimiser step (None when ``warmup_steps == 0``)."""
        w = self.config.warmup_steps
        if w == 0:
            return None
        return torch.optim.lr_scheduler.LinearLR(
            self.optimizer, start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)

    def autocast(self):
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _call(self, name: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self, *args)

    def _better(self, score: float) -> bool:
        if self.best_score is None or math.isnan(self.best_score):
            return not math.isnan(score)
        return score < self.best_score if self.config.mode == "min" else score > self.best_score

    def _distributed_loader(self, loader):
        """Re-wrap a DataLoader with a DistributedSampler (each rank sees its shard)."""
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
        sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=self.config.seed)
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            drop_last=loader.drop_last,
        )

    def _reseed_epoch(self, loader, epoch: int) -> None:
        """Every epoch's randomness is a function of (seed, epoch) only: exact resume."""
        seed = self.config.seed * 100_003 + epoch
        seed_everything(seed)
        gen = getattr(loader, "generator", None)
        if gen is not None:
            gen.manual_seed(seed)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    # ------------------------------------------------------------------ training
    def train_epoch(self, loader: Iterable[Batch], epoch: int) -> dict:
        self.model.train()
        c = self.config
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        self.optimizer.zero_grad(set_to_none=True)
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = tqdm(loader, total=total, desc=f"epoch {epoch}", leave=False,
                   disable=not c.progress or _rank() != 0)
        for step, batch in enumerate(bar):
            if self.train_transform is not None:  # on the CPU batch: no device round trips
                batch = self.train_transform(batch, epoch, step)
            batch = batch.to(self.device, non_blocking=True)
            with self.autocast():
                out: ModelOutput = self.forward_model(batch)
                loss = out.loss
            self.scaler.scale(loss / c.grad_accum).backward()
            last = total is not None and step + 1 == total
            if (step + 1) % c.grad_accum == 0 or last:
                if c.clip_grad:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]], c.clip_grad
                    )
                self.scaler.step(self.optimizer)  # = optimizer.step() unless fp16 found inf/NaN
                self.scaler.update()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            self._call("on_batch_end", batch, out)
            # accumulate on device: no host sync inside the loop
            sums["loss"] = sums.get("loss", 0) + loss.detach().float()
            for k, v in out.losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            n_batches += 1
            if c.progress and self.device.type == "cpu" and step % 25 == 0:  # no GPU sync for the bar
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")  # detached: no requires_grad warning
        if n_batches == 0:
            raise ValueError("the training loader yielded no batches (empty split or batch_size > size with drop_last)")
        return {f"train_{k}": float(v) / n_batches for k, v in sums.items()}

    def fit(self, train_loader, valid_loader, resume: bool = False) -> list[dict]:
        """Train up to ``config.epochs`` epochs with early stopping; returns the history."""
        c = self.config
        if self.distributed:
            train_loader = self._distributed_loader(train_loader)
        self._call("on_fit_start")  # before resume: callbacks may own optimisers to restore
        if resume:
            self.load_checkpoint()
        if self.out_dir is not None and _rank() == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        start = self.epoch + 1
        epochs = range(start, c.epochs + 1)
        for epoch in tqdm(epochs, desc="epochs", disable=not c.progress or _rank() != 0,
                          initial=start - 1, total=c.epochs):
            if self.bad_epochs >= c.patience:
                break
            self.epoch = epoch
            self._reseed_epoch(train_loader, epoch)
            self._call("on_epoch_start", epoch)
            t0 = time.perf_counter()
            logs = {"epoch": epoch, **self.train_epoch(train_loader, epoch)}
            logs["train_seconds"] = time.perf_counter() - t0
            if _rank() == 0:
                valid = self.evaluate(valid_loader)
                logs.update({f"valid_{k}": v for k, v in valid.items()})
            self._call("on_epoch_end", epoch, logs)
            if _rank() == 0:
                score = logs.get(f"valid_{c.monitor}")
                if score is None:
                    raise KeyError(
                        f"monitor metric {c.monitor!r} not among validation metrics "
                        f"{sorted(k[6:] for k in logs if k.startswith('valid_'))}"
                    )
                if epoch <= c.select_after_epoch:
                    pass  # a warm-up epoch: neither a candidate for "best" nor a bad epoch
                elif self._better(score):
                    self.best_score, self.best_epoch = score, epoch
                    self.best_metrics = {k[6:]: v for k, v in logs.items() if k.startswith("valid_")}
                    self.bad_epochs = 0
                    self._save_best()
                elif epoch > c.patience_start_epoch:
                    self.bad_epochs += 1
                logs["best_epoch"] = self.best_epoch
                self.history.append(logs)
                self.save_checkpoint()
            if self.distributed:  # every rank must agree on stopping
                flag = torch.tensor([self.bad_epochs], device=self.device)
                dist.broadcast(flag, 0)
                self.bad_epochs = int(flag.item())
        if c.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        if self.distributed:  # rank 0 chose the best weights: give them to every rank
            for t in self.model.state_dict().values():
                dist.broadcast(t, 0)
        return self.history

    # ------------------------------------------------------------------ checkpoints
    _best_state: Optional[dict] = None

    def _save_best(self) -> None:
        self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.out_dir is not None:
            state = _plain({"model": self._best_state, "epoch": self.epoch, "metrics": self.best_metrics,
                            "model_name": self.model_name, "model_config": self.model_config()})
            state["checksum"] = checksum(state)
            _atomic_save(state, self.out_dir / "best.pt")

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "model_name": self.model_name,
            "model_config": self.model_config(),
            "epoch": self.epoch,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "best_state": self._best_state,
            "bad_epochs": self.bad_epochs,
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
            "config": dataclasses.asdict(self.config),
        }

    def model_config(self) -> Optional[dict]:
        """The model's resolved dataclass config as a dict (None if it has none)."""
        cfg = getattr(self.model, "cfg", None)
        return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None

    def save_checkpoint(self) -> None:
        """Write ``last.pt`` (everything needed to resume; the old one becomes ``last.prev.pt``)
        and ``history.json``, each atomically."""
        if self.out_dir is None:
            return
        state = _plain(self.state_dict())
        state["checksum"] = checksum(state)
        last = self.out_dir / "last.pt"
        _atomic_save(state, last, previous=previous_checkpoint(last))
        text = json.dumps(self.history, indent=1, default=float).encode()
        _atomic_write(self.out_dir / "history.json", lambda f: f.write(text))

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Restore everything from ``path`` (default ``out_dir/last.pt``) to continue training.

        When that file is missing, partial or corrupt, ``last.prev.pt`` beside it is used and a
        message says so; if neither is usable the error lists what was wrong with each.
        """
        if path is None and self.out_dir is None:
            raise FileNotFoundError("no checkpoint to resume from: set TrainConfig.out_dir (CLI: --out)")
        path = Path(path) if path else self.out_dir / "last.pt"
        problems, state = [], None
        for candidate in (path, previous_checkpoint(path)):
            if not candidate.exists():
                problems.append(f"{candidate}: missing")
                continue
            try:
                state = read_checkpoint(candidate)
            except Exception as err:  # partial zip, bit rot, not a checkpoint, unsafe content
                problems.append(f"{candidate}: {checkpoint_problem(err)}")
                continue
            break
        if state is None:
            if all(p.endswith(": missing") for p in problems):
                raise FileNotFoundError(f"no checkpoint to resume from ({'; '.join(problems)})")
            raise RuntimeError("no usable checkpoint to resume from: " + "; ".join(problems))
        if _rank() == 0:
            if problems:
                print(f"[mmsa.train] {problems[0]} -- using the previous checkpoint {candidate} instead",
                      file=sys.stderr)
            print(f"[mmsa.train] resuming from {candidate} (epoch {state['epoch']} done)", file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.best_metrics = state["best_metrics"]
        self._best_state = state["best_state"]
        self.bad_epochs = state["bad_epochs"]
        for cb, s in zip(self.callbacks, state.get("callbacks", [])):
            if s is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(s)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, loader, transform=None, keep_extras: Sequence[str] = (), keep_batches: bool = False) -> dict:
        """Run the model in eval mode; returns numpy ``pred``, ``label``, chosen ``extras``."""
        transform = transform if transform is not None else self.eval_transform
        self.model.eval()
        preds, labels, losses = [], [], {}
        extras: dict[str, list] = {k: [] for k in keep_extras}
        batches = []
        n = 0
        for i, batch in enumerate(loader):
            if transform is not None:  # on the CPU batch, before the move (as in training)
                batch = transform(batch, i)
            batch = batch.to(self.device, non_blocking=True)
            with self.autocast():
                out = self.model(batch)
            preds.append(_to_numpy(out.pred))
            labels.append(batch.label.detach().cpu().numpy())
            for k, v in out.losses.items():
                losses[k] = losses.get(k, 0.0) + float(v) * batch.size
            losses["loss"] = losses.get("loss", 0.0) + (float(out.loss) * batch.size if out.losses else 0.0)
            n += batch.size
            for k in keep_extras:
                if k not in out.extras:
                    raise KeyError(f"extras has no {k!r}; available: {sorted(out.extras)}")
                v = out.extras[k]
                extras[k].append(_to_numpy(v) if isinstance(v, torch.Tensor) else v)
            if keep_batches:
                batches.append(batch.to("cpu"))
        if n == 0:
            raise ValueError("the evaluation loader yielded no batches (empty split?)")
        result = {
            "pred": np.concatenate(preds),
            "label": np.concatenate(labels),
            "losses": {k: v / n for k, v in losses.items()},
            "extras": {k: (np.concatenate(v) if v and isinstance(v[0], np.ndarray) else v) for k, v in extras.items()},
        }
        if keep_batches:
            result["batches"] = batches
        return result

    def evaluate(self, loader, transform=None) -> dict:
        """Metrics of ``mmsa.metrics`` for the task, plus the mean loss terms."""
        from mmsa import metrics

        res = self.predict(loader, transform)
        if self.config.task == "classification":
            logits = torch.as_tensor(res["pred"])
            m = metrics.classification_metrics(torch.softmax(logits, -1).numpy(), res["label"])
        else:
            m = metrics.regression_metrics(res["pred"], res["label"], self.config.metric_dataset)
        m.update(res["losses"])
        return {k: float(v) for k, v in m.items()}


def load_trained(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint (``best.pt`` or ``last.pt``) that stores its name and
    config (``Trainer(..., model_name=...)``, as ``mmsa train`` does) and load its weights.

    Reads with ``weights_only=True`` and checks the checksum; the model is in eval mode.
    """
    from mmsa import models

    state = read_checkpoint(path)
    name, cfg = state.get("model_name"), state.get("model_config")
    if not name or cfg is None:
        raise ValueError(f"{path} does not record the model name and config (train with "
                         f"Trainer(..., model_name=...) or `mmsa train`); build the model yourself and "
                         f"load_state_dict(read_checkpoint(path)['model'])")
    model = models.build(name, **cfg)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


def fit_and_test(model, train_loader, valid_loader, test_loader, config: TrainConfig, **kw) -> tuple[Trainer, dict]:
    """Convenience for notebooks: train with early stopping, then test metrics of the best model."""
    trainer = Trainer(model, config, **kw)
    trainer.fit(train_loader, valid_loader)
    return trainer, trainer.evaluate(test_loader)
