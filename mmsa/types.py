"""The two objects every model, loader and notebook shares (SPEC §2).

``Batch`` is what a loader yields and what ``model(batch)`` consumes; ``ModelOutput``
is what every model returns.  Both are plain dataclasses of tensors.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

MODALITIES = ("text", "audio", "vision")


@dataclass
class Batch:
    """One mini-batch.  Shapes: B batch, L text length, Ta/Tv audio/vision steps.

    text:        (B, L, Dt) pre-extracted token features (e.g. frozen BERT), or None
    text_ids:    (B, L) BERT token ids ([CLS] ... [SEP] pad), or None
    text_mask:   (B, L) 1 for real tokens, 0 for padding
    audio:       (B, Ta, Da) zero-padded frames;  vision: (B, Tv, Dv) (for the 3-class
                 image variant: (B, 49, Dv) = a 7x7 grid of image-patch features)
    *_lengths:   (B,) number of valid steps (long)
    label:       (B,) float sentiment in [-3,3] ([-1,1] for SIMS) or long class index
    label_t/a/v: (B,) optional unimodal labels (SIMS, SynthMSA)
    missing:     {"text"|"audio"|"vision": (B, T) float, 1 = observed}; empty = all observed
    truth:       ground truth of synthetic data, e.g. {"reliability": (B,3),
                 "cue_window": (B,3,2) [start,end) steps, "conflict": (B,)}; empty for real data
    full:        the complete (uncorrupted) view when this batch was made incomplete by
                 ``mmsa.missing.apply``; DLFR models read their second view from here
    ids:         sample ids (list of str)
    host_lengths: filled by ``to(device)``: the CPU originals of the moved ``*_lengths``, so
                 ``lengths(m, device="cpu")`` (what ``pack_padded_sequence`` needs) costs no
                 device-to-host copy; never moved, ignored once a length tensor is replaced
    """

    audio: Tensor
    vision: Tensor
    label: Tensor
    text: Optional[Tensor] = None
    text_ids: Optional[Tensor] = None
    text_mask: Optional[Tensor] = None
    text_lengths: Optional[Tensor] = None
    audio_lengths: Optional[Tensor] = None
    vision_lengths: Optional[Tensor] = None
    label_t: Optional[Tensor] = None
    label_a: Optional[Tensor] = None
    label_v: Optional[Tensor] = None
    missing: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    full: Optional["Batch"] = None
    ids: list = field(default_factory=list)
    host_lengths: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return self.label.shape[0]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """Return a copy with every tensor (also inside dicts and ``full``) on ``device``.

        Lengths moved off the CPU keep their CPU originals in ``host_lengths``.
        """

        def move(x: Any) -> Any:
            if isinstance(x, Tensor):
                return x.to(device, non_blocking=non_blocking)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, Batch):
                return x.to(device, non_blocking)
            return x

        moved = {f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "host_lengths"}
        host = {}
        for m in MODALITIES:
            old, new = getattr(self, f"{m}_lengths"), moved[f"{m}_lengths"]
            if old is not None and new is not old and old.device.type == "cpu":
                host[m] = (new, old)
        return dataclasses.replace(self, **moved, host_lengths=host)

    def replace(self, **changes) -> "Batch":
        return dataclasses.replace(self, **changes)

    def lengths(self, modality: str, device=None) -> Tensor:
        """Valid lengths of one modality (text from the mask when not stored).

        ``device="cpu"`` returns the CPU copy kept by ``to()`` when there is one (no sync).
        """
        value = getattr(self, f"{modality}_lengths")
        if device is not None:
            cached = self.host_lengths.get(modality)
            if cached is not None and cached[0] is value and cached[1].device == torch.device(device):
                return cached[1]
            return self.lengths(modality).to(device)
        if value is None and modality == "text" and self.text_mask is not None:
            value = self.text_mask.sum(1).long()
        if value is None:
            x = getattr(self, modality)
            value = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return value

    def observed(self, modality: str) -> Tensor:
        """(B, T) float mask: 1 where a position is valid (inside its length) and observed."""
        ref = self.text_ids if modality == "text" and self.text_ids is not None else getattr(self, modality)
        T = ref.shape[1]
        valid = (torch.arange(T, device=ref.device)[None] < self.lengths(modality)[:, None]).float()
        if modality in self.missing:
            valid = valid * self.missing[modality].float()
        return valid


@dataclass
class ModelOutput:
    """What ``model(batch)`` returns.

    pred:   (B,) regression scores or (B, C) class logits
    losses: named training terms, each already multiplied by its weight; the Trainer
            minimises ``sum(losses.values())``.  Terms are computed whenever the batch
            carries labels, so validation losses are comparable.
    extras: anything a notebook may want: attention maps, modality weights, features.
    """

    pred: Tensor
    losses: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        if not self.losses:
            raise ValueError("this ModelOutput carries no loss terms (was the batch unlabelled?)")
        return sum(self.losses.values())
