"""One Trainer for every model (docs/design.md §2); ``mmsa.training.make_trainer`` sets it up.

The loop is deliberately plain: for each epoch, for each batch, ``out = model(batch)``,
``loss = sum(out.losses.values())``, backward, step.  Around it sit the things a real
experiment needs and nothing more:

* Adam/AdamW with two parameter groups (BERT weights get ``bert_lr``), and an optional
  linear learning-rate warm-up over the first ``warmup_steps`` optimiser steps;
* gradient accumulation and optional gradient clipping;
* mixed precision on CUDA: bf16 autocast where supported, else fp16 with a checkpointed
  ``torch.amp.GradScaler``; fp32 on CPU, where autocast only slows down (``amp_dtype`` forces one);
* no host synchronisation inside the training step: the missing-modality transform runs on the
  CPU batch before it is moved, lengths keep CPU copies, losses are read once per epoch;
* ``deterministic=True``: deterministic cuBLAS/cuDNN kernels on CUDA;
* early stopping on a named validation metric, counting only after ``patience_start_epoch``
  (DAST-GAN's GAN warms up first) and choosing the best epoch only after ``select_after_epoch``;
* callbacks (``on_fit_start``/``on_epoch_start``/``on_batch_end``/``on_epoch_end``, state) -- the GAN's discriminator step is one;
* tqdm bars, a JSON history, ``best.pt`` + ``last.pt`` checkpoints that survive being killed
  (``mmsa.checkpoint``; resume falls back to ``last.prev.pt``), exact resume;
* seeds: every epoch re-seeds torch and the loader's shuffling from ``(seed, epoch)``, so
  a run resumed from ``last.pt`` follows the same path as one never interrupted;
* ``torch.distributed`` DDP when launched with ``torchrun`` (gloo on CPU, nccl on CUDA).

Seeds, devices, precision and the CPU allocator setting live in ``mmsa.runtime``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
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

from mmsa.checkpoint import atomic_save, atomic_write, checksum, find_checkpoint, plain, previous_checkpoint
from mmsa.runtime import (amp_dtype, keep_freed_memory, maybe_init_distributed, process_rank,
                          resolve_device, seed_everything, use_deterministic_algorithms)
from mmsa.types import Batch, ModelOutput


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


def param_groups(model: nn.Module, lr: float, bert_lr: float, weight_decay: float) -> list[dict]:
    """Two groups: names containing ``bert`` use ``bert_lr``; frozen parameters and the
    ``discriminator.`` (owned by a callback) are left out."""
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
                   disable=not c.progress or process_rank() != 0)
        for step, batch in enumerate(bar):
            if self.train_transform is not None:  # on the CPU batch: no device round trips
                batch = self.train_transform(batch, epoch, step)
            out, loss = self.step(batch, step, last=total is not None and step + 1 == total)
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

    def step(self, batch: Batch, index: int = 0, last: bool = True) -> tuple[ModelOutput, torch.Tensor]:
        """One training step on ``batch`` (the ``index``-th of its epoch): forward, backward, and --
        every ``grad_accum`` batches or at the ``last`` -- clip, optimiser and scheduler steps; then
        the callbacks' ``on_batch_end``.  Returns the output and the loss.  ``mmsa.efficiency``
        times exactly this."""
        c = self.config
        batch = batch.to(self.device, non_blocking=True)
        with self.autocast():
            out: ModelOutput = self.forward_model(batch)
            loss = out.loss
        self.scaler.scale(loss / c.grad_accum).backward()
        if (index + 1) % c.grad_accum == 0 or last:
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
        return out, loss

    def fit(self, train_loader, valid_loader, resume: bool = False) -> list[dict]:
        """Train up to ``config.epochs`` epochs with early stopping; returns the history."""
        c = self.config
        if self.distributed:
            train_loader = self._distributed_loader(train_loader)
        self._call("on_fit_start")  # before resume: callbacks may own optimisers to restore
        if resume:
            self.load_checkpoint()
        if self.out_dir is not None and process_rank() == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        start = self.epoch + 1
        epochs = range(start, c.epochs + 1)
        for epoch in tqdm(epochs, desc="epochs", disable=not c.progress or process_rank() != 0,
                          initial=start - 1, total=c.epochs):
            if self.bad_epochs >= c.patience:
                break
            self.epoch = epoch
            self._reseed_epoch(train_loader, epoch)
            self._call("on_epoch_start", epoch)
            t0 = time.perf_counter()
            logs = {"epoch": epoch, **self.train_epoch(train_loader, epoch)}
            logs["train_seconds"] = time.perf_counter() - t0
            if process_rank() == 0:
                valid = self.evaluate(valid_loader)
                logs.update({f"valid_{k}": v for k, v in valid.items()})
            self._call("on_epoch_end", epoch, logs)
            if process_rank() == 0:
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
            state = plain({"model": self._best_state, "epoch": self.epoch, "metrics": self.best_metrics,
                            "model_name": self.model_name, "model_config": self.model_config()})
            state["checksum"] = checksum(state)
            atomic_save(state, self.out_dir / "best.pt")

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
        state = plain(self.state_dict())
        state["checksum"] = checksum(state)
        last = self.out_dir / "last.pt"
        atomic_save(state, last, previous=previous_checkpoint(last))
        text = json.dumps(self.history, indent=1, default=float).encode()
        atomic_write(self.out_dir / "history.json", lambda f: f.write(text))

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Restore everything from ``path`` (default ``out_dir/last.pt``) to continue training.

        When that file is missing, partial or corrupt, ``last.prev.pt`` beside it is used and a
        message says so; if neither is usable the error lists what was wrong with each.
        """
        if path is None and self.out_dir is None:
            raise FileNotFoundError("no checkpoint to resume from: set TrainConfig.out_dir (CLI: --out)")
        path = Path(path) if path else self.out_dir / "last.pt"
        state, candidate, problems = find_checkpoint(path)
        if state is None:
            if all(p.endswith(": missing") for p in problems):
                raise FileNotFoundError(f"no checkpoint to resume from ({'; '.join(problems)})")
            raise RuntimeError("no usable checkpoint to resume from: " + "; ".join(problems))
        if process_rank() == 0:
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

