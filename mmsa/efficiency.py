"""What a model costs: parameters, peak memory, inference latency and training-step time.

Notebook 10 measures every registered model twice, at the book's CPU sizes and at the papers'
full sizes, on the same synthetic batches, in one process, so that *ratios* between models are
meaningful even on a loaded machine (absolute seconds are not: they depend on the machine and
on what else runs on it).

    batch = synthetic_batch(8, lengths=(50, 375, 500), dims=(768, 5, 20))   # MOSI-shaped
    model = build("dast_gan", **paper_config("dast_gan"))
    parameters(model)                      # total / trainable / inference-only / frozen text
    step = train_step_time(model, batch)   # seconds per optimiser step, peak memory (MiB)
    inference_latency(model, batch)        # seconds per forward pass (eval mode, no grad)

* **Parameters.** ``inference`` leaves out the modules used only in training (the GAN
  discriminator, DLFR projectors/predictors/reconstruction heads, unimodal heads:
  ``mmsa.models.TRAINING_ONLY_PREFIXES``).  The frozen pretrained text encoder (MiniLM) is one
  process-wide object shared by all models (``mmsa.encoders.FrozenBert``), not a parameter of
  any of them: :func:`frozen_text_parameters` counts it separately.
* **A training step** is ``Trainer.step`` of the Trainer ``mmsa.training.make_trainer`` sets up
  (``timing_trainer``): forward (both DLFR views where the model has them), the weighted loss,
  backward, one Adam step, and the callbacks' batch work (DAST-GAN's discriminator step, with the
  adversarial term switched on as after its ramp), under the Trainer's autocast (bf16 on CUDA).  The text of the batch goes through the frozen MiniLM once during the warm-up step and is
  then read from its sentence cache, as in a real epoch after the first.
* **Peak memory.** CUDA: ``torch.cuda.max_memory_allocated`` (tensors only).  CPU: the rise of
  the process's resident-set high-water mark (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``) over the resident set before the step: tensors plus allocator and
  library overhead.  Elsewhere the CPU peak is not measured (``None``).
"""
from __future__ import annotations

import contextlib
import random
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from mmsa.runtime import release_freed_memory
from mmsa.types import Batch

# CMU-MOSI as the DAST-GAN and UFEN+MTFN papers use it: unaligned features of the MMSA toolkit
MOSI = dict(lengths=(50, 375, 500), dims=(768, 5, 20), n_train=1284)
# the CM-STA paper's setting: RoBERTa text (768), wav2vec 2.0 audio (768), ResNeSt-50 7x7 grid (2048);
# text 50 tokens and 100 audio frames are our assumption (the paper states no lengths)
TESS_MVSA = dict(lengths=(50, 100, 49), dims=(768, 768, 2048))
CLASSIFIERS = ("cmsta_cg",)


# --------------------------------------------------------------------------- configurations
def _build(name: str, **config) -> nn.Module:
    from mmsa.models import build

    return build(name, **config)


def paper_config(name: str) -> dict:
    """The build kwargs of ``name`` at its paper's full size, with text as 768-d token features.

    DAST-GAN, EMT-DLFR, UFEN+MTFN and the baselines: the ``mosi`` preset (d_model 128 for
    EMT/DAST-GAN), the reference toolkit's MOSI sizes where a model offers ``preset="mmsa"``,
    and pre-extracted 768-d BERT-base token states (``use_text_features=True``) where the model
    can read them; CM-STA: its paper's ``tess_mvsa`` preset (D 128, 6 TCMFI layers).
    Keys a model's config does not know are left out (the first combination that builds wins).
    """
    if name in CLASSIFIERS:
        return {"dataset": "tess_mvsa"}
    base = {"dataset": "mosi", "text_dim": MOSI["dims"][0]}
    for extra in ({"preset": "mmsa", "use_text_features": True}, {"use_text_features": True},
                  {"preset": "mmsa"}, {}):
        try:
            _build(name, **base, **extra)
        except TypeError:
            continue
        return {**base, **extra}
    raise TypeError(f"{name}: no paper-size configuration builds (tried the mosi preset with and without "
                    "preset='mmsa' / use_text_features)")


# --------------------------------------------------------------------------- parameters
def parameters(model: nn.Module) -> dict:
    """{"total", "trainable", "inference", "training_only"} parameter counts of ``model``.

    ``inference`` = all parameters minus the training-only modules (``TRAINING_ONLY_PREFIXES``).
    The shared frozen text encoder is not among them (see :func:`frozen_text_parameters`).
    """
    from mmsa.models import inference_parameters

    total = sum(p.numel() for p in model.parameters())
    inference = inference_parameters(model)
    return {"total": total, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "inference": inference, "training_only": total - inference}


def uses_frozen_text(model: nn.Module) -> bool:
    """Does ``model`` read text through the shared frozen pretrained encoder (``FrozenBert``)?"""
    from mmsa.encoders import TextEncoder

    return any(isinstance(m, TextEncoder) and m.frozen is not None for m in model.modules())


def frozen_text_parameters(name: Optional[str] = "minilm") -> int:
    """Parameters of the shared frozen text encoder (MiniLM-L6-H384 by default: about 22.7 M)."""
    from mmsa.encoders import FrozenBert

    return sum(p.numel() for p in FrozenBert.get(name).model.parameters())


def frozen_text_seconds(batch_size: int = 32, length: int = 50, repeats: int = 3, name: Optional[str] = "minilm",
                        device: str | torch.device = "cpu") -> float:
    """Median seconds for the shared frozen text encoder to encode ``batch_size`` new sentences of
    ``length`` tokens (fresh random ids every call, so the sentence cache never answers)."""
    from mmsa.encoders import CLS_ID, SEP_ID, FrozenBert

    bert, device = FrozenBert.get(name), torch.device(device)
    g = torch.Generator().manual_seed(0)

    def call():
        ids = torch.randint(1000, 30000, (batch_size, length), generator=g)
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        bert(ids.to(device), torch.ones_like(ids).to(device), store=False)
    return statistics.median(_median_seconds(call, repeats, 1, device))


# --------------------------------------------------------------------------- batches
def synthetic_batch(batch_size: int, lengths: Sequence[int] = MOSI["lengths"], dims: Sequence[int] = MOSI["dims"],
                    classes: int = 0, missing_rate: float = 0.3, seed: int = 0) -> Batch:
    """A random batch of the given shapes, made incomplete with ``mmsa.missing`` (random pattern).

    Valid lengths are drawn in [T/2, T] per clip; text carries both token ids (for a model that
    runs the frozen MiniLM) and ``dims[0]``-d token features (for one that reads features);
    ``classes`` > 0 gives class labels (CM-STA), else sentiment scores in [-3, 3].  A vision
    length of 49 is a full 7x7 grid (every patch valid), as in the CM-STA data.
    """
    from mmsa.encoders import CLS_ID, SEP_ID
    from mmsa.missing import apply

    B, (L, Ta, Tv), (Dt, Da, Dv) = int(batch_size), (int(x) for x in lengths), (int(x) for x in dims)
    if B < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed)

    def lens(T: int) -> torch.Tensor:
        return torch.randint((T + 1) // 2, T + 1, (B,), generator=g)

    tl, al = lens(L).clamp(min=3), lens(Ta)
    vl = torch.full((B,), Tv) if Tv == 49 and classes else lens(Tv)
    steps = torch.arange(max(L, Ta, Tv))[None]
    tmask = (steps[:, :L] < tl[:, None]).long()
    ids = torch.randint(1000, 30000, (B, L), generator=g) * tmask
    ids[:, 0] = CLS_ID
    ids[torch.arange(B), tl - 1] = SEP_ID
    frames = lambda T, D, n: torch.randn(B, T, D, generator=g) * (steps[:, :T] < n[:, None])[..., None]
    label = (torch.randint(0, classes, (B,), generator=g) if classes
             else torch.randint(-15, 16, (B,), generator=g).float() / 5)
    batch = Batch(audio=frames(Ta, Da, al), vision=frames(Tv, Dv, vl), label=label,
                  text=frames(L, Dt, tl), text_ids=ids, text_mask=tmask,
                  audio_lengths=al, vision_lengths=vl)
    return apply(batch, "random", missing_rate, seed=seed) if missing_rate > 0 else batch


# --------------------------------------------------------------------------- memory
def _proc_status() -> Optional[dict]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    out = {}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(key + r":\s+(\d+)\s+kB", text)
        if m is None:
            return None
        out[key] = int(m.group(1)) / 1024
    return out


def _reset_rss_peak() -> bool:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)           # give freed heap pages back first (glibc)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory_mib(fn: Callable[[], object], device: str | torch.device = "cpu") -> Optional[float]:
    """Run ``fn()`` once; the peak memory it needed in MiB (see the module docstring), or None."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    release_freed_memory()   # the heap may hold freed pages (keep_freed_memory): count what fn() touches
    start = _proc_status()
    if start is None or not _reset_rss_peak():
        fn()
        return None
    start = _proc_status()
    fn()
    end = _proc_status()
    return max(end["VmHWM"] - start["VmRSS"], 0.0)


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


AFTER_WARMUP = 1_000   # the epoch a timed step pretends to be in: every warm-up and ramp is over


@contextlib.contextmanager
def _random_state_kept():
    """Python's, numpy's and torch's global random state as they were (the Trainer seeds them)."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(state[0]), np.random.set_state(state[1]), torch.set_rng_state(state[2])


def timing_trainer(model: nn.Module, device: str | torch.device = "cpu", lr: float = 1e-3,
                   keep_freed: bool = True):
    """The Trainer whose ``step(batch)`` is timed: set up by ``mmsa.training.make_trainer`` (the
    model's own callbacks and optimiser groups), its callbacks started as in epoch
    ``AFTER_WARMUP`` (every loss term and the discriminator step are paid).  On a CPU it keeps
    freed memory as training does (``keep_freed``); the global random state is left as it was."""
    from mmsa.training import make_trainer

    with _random_state_kept():
        trainer = make_trainer(model, dict(lr=lr, device=str(device), progress=False, keep_freed_memory=keep_freed))
    trainer.model.train()
    trainer.epoch = AFTER_WARMUP
    for cb in trainer.callbacks:
        if hasattr(cb, "on_fit_start"):
            cb.on_fit_start(trainer)
        if hasattr(cb, "on_epoch_start"):
            cb.on_epoch_start(trainer, AFTER_WARMUP)
    return trainer


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(max(warmup, 0)):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def train_step_time(model: nn.Module, batch: Batch, steps: int = 3, warmup: int = 1,
                    device: str | torch.device = "cpu", memory: bool = True) -> dict:
    """Seconds per training step of ``model`` on ``batch`` (median of ``steps`` timed steps after
    ``warmup`` untimed ones) and the peak memory of one more step.

    Returns {"seconds": median, "times": [...], "peak_mib": float or None, "batch_size": B}.
    """
    step = train_step(model, batch, device)
    device = torch.device(device)
    times = _median_seconds(step, steps, warmup, device)
    peak = peak_memory_mib(step, device) if memory else None
    return {"seconds": statistics.median(times), "times": times, "peak_mib": peak, "batch_size": batch.size}


@torch.no_grad()
def inference_latency(model: nn.Module, batch: Batch, repeats: int = 10, warmup: int = 2,
                      device: str | torch.device = "cpu", memory: bool = False) -> dict:
    """Seconds per forward pass in eval mode (median of ``repeats``), the incomplete view only.

    Returns {"seconds": median, "per_sample": median / B, "p95": 95th percentile, "peak_mib": …}.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    batch = batch.to(device)
    times = _median_seconds(lambda: model(batch), repeats, warmup, device)
    peak = peak_memory_mib(lambda: model(batch), device) if memory else None
    med = statistics.median(times)
    return {"seconds": med, "per_sample": med / batch.size, "p95": p95(times), "times": times, "peak_mib": peak,
            "batch_size": batch.size}


def train_step(model: nn.Module, batch: Batch, device: str | torch.device = "cpu") -> Callable[[], None]:
    """A callable that takes one training step of ``model`` on ``batch`` (see the module docstring)."""
    trainer = timing_trainer(model, device)
    batch = batch.to(trainer.device)

    def step() -> None:
        trainer.step(batch)
    step.batch, step.model = batch, trainer.model    # what the timed step works on (read by notebook 10)
    return step


def inference_call(model: nn.Module, batch: Batch, device: str | torch.device = "cpu") -> Callable[[], None]:
    """A callable that runs ``model`` on ``batch`` in eval mode without gradients."""
    device = torch.device(device)
    model = model.to(device).eval()
    batch = batch.to(device)

    def call():
        with torch.no_grad():
            model(batch)
    return call


def time_interleaved(calls: dict, repeats: int = 3, warmup: int = 1, device: str | torch.device = "cpu") -> dict:
    """``{name: [seconds, ...]}``: every callable timed ``repeats`` times, in rounds that take each
    callable once in turn, after ``warmup`` untimed rounds.

    On a shared machine the load drifts; interleaving exposes every model to the same drift, so
    the *ratios* of the medians stay meaningful when the absolute times do not.
    """
    device = torch.device(device)
    for _ in range(max(warmup, 0)):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    for _ in range(max(repeats, 1)):
        for name, fn in calls.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def p95(times: Sequence[float]) -> float:
    """The 95th percentile (nearest rank) of a list of times."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def epoch_seconds(step_seconds: float, batch_size: int, n_train: int) -> float:
    """Extrapolate one step to an epoch of ``n_train`` clips: step time x n_train / batch size.

    Linear in the number of clips, which holds when a step's cost is proportional to its batch
    (true on a CPU for these models; on a GPU small batches underuse the device).
    """
    return float(step_seconds) * float(n_train) / float(batch_size)


__all__ = ["MOSI", "TESS_MVSA", "CLASSIFIERS", "paper_config", "parameters", "uses_frozen_text",
           "frozen_text_parameters", "frozen_text_seconds", "synthetic_batch", "peak_memory_mib", "train_step_time", "inference_latency",
           "train_step", "timing_trainer", "inference_call", "time_interleaved", "p95", "epoch_seconds"]
