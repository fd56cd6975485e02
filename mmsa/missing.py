"""Missing-modality simulation (SPEC §4.3): make a complete batch incomplete, reproducibly.

Three patterns, each applied per sample and per modality:

- ``random``:   every droppable position is dropped i.i.d. with probability ``rate``;
- ``burst``:    one contiguous span of ``round(rate * n)`` droppable positions (n = number of
                droppable positions of that sample; rounded half up) starting at a uniformly
                random position, so the span always fits;
- ``modality``: each whole modality is dropped with probability ``rate``; if that would drop
                all three modalities of a sample, one of them (chosen at random) is kept.
                Fixed patterns such as {t} or {a, v}: :func:`fixed_pattern`.

What "dropped" means:
- text: the token id becomes ``[UNK]`` (100) and the row of ``batch.text`` (pre-extracted
  features, if present) becomes zero.  Position 0 ([CLS]) and the last valid position ([SEP])
  are never dropped; the valid length comes from ``text_mask`` (or ``text_lengths``).
- audio / vision: the frame becomes a zero vector.
- lengths and masks of validity are unchanged (the model still sees a sequence of the same
  length, with holes), as in the DLFR / TFR-Net protocol.

The returned batch is new (the input is never modified); ``missing[m]`` is a (B, T) float mask,
1 = observed, 0 = dropped by the simulation.  Padding positions are 1 (the mask records only
what the simulation removed; ``Batch.observed(m)`` multiplies by validity).  If the input
already had ``missing`` masks the new ones are multiplied in.  ``full`` keeps the complete view:
the input's own ``full`` if it had one, else the input batch itself.

Randomness comes from a CPU ``torch.Generator`` seeded with ``seed``, and masks are drawn on
the CPU and then moved to the batch's device, so the same seed gives the same masks on any
device.  Draws go modality by modality in the fixed order text, audio, vision.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from mmsa.types import MODALITIES, Batch

UNK_ID = 100
PATTERNS = ("random", "burst", "modality")
_SHORT = {"t": "text", "a": "audio", "v": "vision", "l": "text"}

RateSpec = Union[float, tuple]


# ----------------------------------------------------------------------------- helpers
def _check_modalities(modalities: Iterable[str], what: str = "modalities") -> tuple:
    names = []
    for m in modalities:
        m = _SHORT.get(m, m)
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r} in {what}; valid: {MODALITIES} (or 't', 'a', 'v')")
        if m not in names:
            names.append(m)
    return tuple(x for x in MODALITIES if x in names)  # canonical order


def _check_rate(rate, name: str = "rate") -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0 or math.isnan(rate):
        raise ValueError(f"{name} must be in [0, 1], got {rate}")
    return rate


def _reference(batch: Batch, m: str) -> Tensor:
    """The tensor whose first two dims are (B, T) for modality ``m``."""
    if m == "text":
        ref = batch.text_ids if batch.text_ids is not None else batch.text
        if ref is None:
            raise ValueError("batch has neither text_ids nor text features; cannot simulate missing text")
        return ref
    return getattr(batch, m)


def _droppable(batch: Batch, m: str) -> tuple[Tensor, Tensor, Tensor]:
    """CPU tensors: (B, T) bool mask of droppable positions, (B,) first droppable index, (B,) count.

    Text keeps [CLS] (position 0) and [SEP] (position length-1); audio/vision: every valid step.
    """
    ref = _reference(batch, m)
    B, T = ref.shape[0], ref.shape[1]
    lengths = batch.lengths(m).detach().to("cpu").long().clamp(0, T)
    pos = torch.arange(T)[None, :]
    if m == "text":
        first = torch.ones(B, dtype=torch.long).clamp(max=lengths.clamp(min=0))
        count = (lengths - 2).clamp(min=0)
    else:
        first = torch.zeros(B, dtype=torch.long)
        count = lengths
    mask = (pos >= first[:, None]) & (pos < (first + count)[:, None])
    return mask, first, count


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5 + 1e-9).long()


def _drop_random(droppable: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    u = torch.rand(droppable.shape, generator=gen)
    return droppable & (u < rate)


def _drop_burst(droppable: Tensor, first: Tensor, count: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    B, T = droppable.shape
    span = _round_half_up(count.double() * rate).clamp(max=count)
    u = torch.rand(B, generator=gen, dtype=torch.float64)
    offset = torch.floor(u * (count - span + 1).double()).long().clamp(min=0)
    start = first + torch.minimum(offset, count - span)
    pos = torch.arange(T)[None, :]
    return (pos >= start[:, None]) & (pos < (start + span)[:, None])


def _drop_whole(present: Sequence[str], modalities: Sequence[str], rates: dict, B: int, gen) -> dict:
    """(B,) bool per modality in ``modalities``: drop the whole modality; keep >= 1 of ``present``."""
    drop = {m: torch.zeros(B, dtype=torch.bool) for m in present}
    for m in present:
        u = torch.rand(B, generator=gen)
        if m in modalities:
            drop[m] = u < rates[m]
    stacked = torch.stack([drop[m] for m in present], 1)  # (B, M)
    all_gone = stacked.all(1)
    # rescue one dropped modality at random for samples that lost everything
    # (all_gone implies every present modality is in `modalities`, so any index is allowed)
    choice = torch.randint(len(present), (B,), generator=gen)
    if all_gone.any():
        stacked[all_gone, choice[all_gone]] = False
    return {m: stacked[:, i] for i, m in enumerate(present)}


def _apply_masks(batch: Batch, dropped: dict) -> Batch:
    """New batch with the dropped positions (CPU (B,T) bool) removed and ``missing`` set."""
    changes: dict = {}
    missing = dict(batch.missing)
    for m, d in dropped.items():
        ref = _reference(batch, m)
        dev = ref.device
        d = d.to(dev)
        keep = (~d)
        if m == "text":
            if batch.text_ids is not None:
                changes["text_ids"] = torch.where(d, torch.full_like(batch.text_ids, UNK_ID), batch.text_ids)
            if batch.text is not None:
                if batch.text.shape[:2] != d.shape:
                    raise ValueError(
                        f"batch.text has shape {tuple(batch.text.shape)}; expected (B, L, Dt) with (B, L) = {tuple(d.shape)}"
                    )
                changes["text"] = batch.text * keep[..., None].to(batch.text.dtype)
        else:
            x = getattr(batch, m)
            changes[m] = x * keep[..., None].to(x.dtype)
        mask = keep.float()
        if m in missing and missing[m] is not None:
            mask = mask * missing[m].to(dev).float()
        missing[m] = mask
    changes["missing"] = missing
    changes["full"] = batch.full if batch.full is not None else batch
    return batch.replace(**changes)


def _present(batch: Batch) -> tuple:
    out = []
    for m in MODALITIES:
        if m == "text":
            if batch.text_ids is not None or batch.text is not None:
                out.append(m)
        elif getattr(batch, m) is not None:
            out.append(m)
    return tuple(out)


# ----------------------------------------------------------------------------- public API
def apply(
    batch: Batch,
    pattern: str = "random",
    rate: float = 0.3,
    seed: int = 0,
    modalities: Sequence[str] = MODALITIES,
    rates: Optional[dict] = None,
) -> Batch:
    """Return a new, incomplete copy of ``batch`` (see the module docstring).

    pattern:    "random" | "burst" | "modality"
    rate:       missing rate in [0, 1] for every modality in ``modalities``
    rates:      optional per-modality override, e.g. ``{"text": 0.5}`` (keys must be in
                ``modalities``; short names 't', 'a', 'v' allowed)
    seed:       the same seed gives the same masks (on every device)
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown missing pattern {pattern!r}; valid: {PATTERNS}")
    mods = _check_modalities(modalities)
    rate = _check_rate(rate)
    per = {m: rate for m in mods}
    for k, v in (rates or {}).items():
        k = _SHORT.get(k, k)
        if k not in mods:
            raise ValueError(f"rates has key {k!r} which is not among modalities {mods}")
        per[k] = _check_rate(v, f"rates[{k!r}]")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))

    present = _present(batch)
    for m in mods:
        if m not in present:
            raise ValueError(f"batch has no {m} data; drop it from modalities (present: {present})")
    dropped = {}
    if pattern == "modality":
        B = batch.size
        whole = _drop_whole(present, mods, per, B, gen)
        for m in mods:
            droppable, _, _ = _droppable(batch, m)
            dropped[m] = droppable & whole[m][:, None]
    else:
        for m in mods:
            droppable, first, count = _droppable(batch, m)
            if pattern == "random":
                dropped[m] = _drop_random(droppable, per[m], gen)
            else:
                dropped[m] = _drop_burst(droppable, first, count, per[m], gen)
    return _apply_masks(batch, dropped)


def fixed_pattern(batch: Batch, keep: Sequence[str] = ("text",)) -> Batch:
    """Keep only the modalities in ``keep`` (e.g. ``("text",)`` = {t}, ``"av"`` = {a, v}).

    The other modalities are dropped completely (text: every token but [CLS]/[SEP]).
    """
    if isinstance(keep, str) and keep not in MODALITIES:
        keep = tuple(keep)  # "av" -> ("a", "v")
    elif isinstance(keep, str):
        keep = (keep,)
    keep = _check_modalities(keep, "keep")
    if not keep:
        raise ValueError("keep must name at least one modality")
    present = _present(batch)
    dropped = {}
    for m in present:
        if m not in keep:
            droppable, _, _ = _droppable(batch, m)
            dropped[m] = droppable
    return _apply_masks(batch, dropped)


def auilc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area under the incomplete-modality curve: trapezoid area of ``values`` over ``rates``.

    Points are sorted by rate first.  Over rates 0..1 a constant curve v has area v; divide
    by ``max(rates) - min(rates)`` yourself if you want a mean over another range.
    """
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if r.shape != v.shape or r.size < 2:
        raise ValueError(f"auilc needs two equally long sequences of >= 2 points, got {r.size} rates and {v.size} values")
    order = np.argsort(r, kind="stable")
    return float(np.trapezoid(v[order], r[order]))


# ----------------------------------------------------------------------------- transforms
_TRAIN_TAG, _EVAL_TAG, _BANK_TAG = 0x7A11, 0xE7A1, 0xBA4C


def _seed_from(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


def _sample_rate(rate: RateSpec, seed: int) -> float:
    if isinstance(rate, (tuple, list)):
        if len(rate) != 2:
            raise ValueError(f"rate range must be (low, high), got {rate}")
        low, high = _check_rate(rate[0], "rate low"), _check_rate(rate[1], "rate high")
        if low > high:
            raise ValueError(f"rate range must have low <= high, got {rate}")
        u = torch.rand((), generator=torch.Generator().manual_seed(seed ^ 0x5EED)).item()
        return low + (high - low) * u
    return _check_rate(rate)


def text_bank_masks(batch: Batch, pattern: str, rate: RateSpec, base_seed: int, bank: int, seed: int) -> Tensor:
    """(B, L) bool: the text positions to drop, each clip's mask picked among ``bank`` masks of
    its own that are fixed in advance (keyed by the sample id; each with its own rate drawn from
    ``rate``).  ``seed`` picks which of the ``bank`` masks every clip gets in this batch."""
    import zlib

    droppable, first, count = _droppable(batch, "text")
    pick = torch.randint(bank, (batch.size,), generator=torch.Generator().manual_seed(seed))
    rows = []
    for b, sample_id in enumerate(batch.ids):
        key = _seed_from(_BANK_TAG, base_seed, zlib.crc32(str(sample_id).encode()), int(pick[b]))
        gen = torch.Generator().manual_seed(key)
        r = _sample_rate(rate, key)
        if pattern == "random":
            rows.append(_drop_random(droppable[b:b + 1], r, gen)[0])
        else:
            rows.append(_drop_burst(droppable[b:b + 1], first[b:b + 1], count[b:b + 1], r, gen)[0])
    return torch.stack(rows)


def make_train_transform(pattern: str, rate: RateSpec, base_seed: int = 0, text_bank: int = 0,
                         **kwargs) -> Callable:
    """``fn(batch, epoch, step) -> Batch`` with a fresh seed for every (epoch, step).

    ``rate`` may be a float or a ``(low, high)`` range sampled uniformly per batch.
    Extra keyword arguments (``modalities``, ``rates``) are passed to :func:`apply`.

    ``text_bank=K`` (patterns "random" and "burst", batches that carry sample ids): the text
    of every clip is dropped with one of K masks fixed in advance for that clip, while audio and
    vision get fresh masks every time.  Why: a sentence with dropped words must be re-read by
    BERT (``mmsa.encoders.FrozenBert``), the most expensive step of training on a CPU; with K
    masks per clip each incomplete sentence is encoded once and then served from the cache.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown missing pattern {pattern!r}; valid: {PATTERNS}")
    _sample_rate(rate, 0)  # validate early
    if text_bank < 0:
        raise ValueError(f"text_bank must be >= 0, got {text_bank}")
    mods = _check_modalities(kwargs.pop("modalities", MODALITIES))
    banked = text_bank > 0 and pattern != "modality" and "text" in mods and not kwargs.get("rates")

    def transform(batch: Batch, epoch: int, step: int) -> Batch:
        seed = _seed_from(_TRAIN_TAG, base_seed, epoch, step)
        if not (banked and batch.ids):
            return apply(batch, pattern, _sample_rate(rate, seed), seed, modalities=mods, **kwargs)
        others = tuple(m for m in mods if m != "text")
        out = apply(batch, pattern, _sample_rate(rate, seed), seed, modalities=others, **kwargs) if others else batch
        return _apply_masks(out, {"text": text_bank_masks(batch, pattern, rate, base_seed, text_bank, seed)})

    return transform


def make_eval_transform(pattern: str, rate: RateSpec, base_seed: int = 0, **kwargs) -> Callable:
    """``fn(batch, index) -> Batch``: the same masks every time for the same batch index."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown missing pattern {pattern!r}; valid: {PATTERNS}")
    _sample_rate(rate, 0)

    def transform(batch: Batch, index: int) -> Batch:
        seed = _seed_from(_EVAL_TAG, base_seed, index)
        return apply(batch, pattern, _sample_rate(rate, seed), seed, **kwargs)

    return transform


__all__ = ["apply", "fixed_pattern", "auilc", "make_train_transform", "make_eval_transform", "PATTERNS", "UNK_ID"]
