"""From an ``MSASplit`` to mini-batches of ``mmsa.types.Batch``.

``make_loader`` wraps a plain ``torch.utils.data.DataLoader``; its ``collate`` stacks the
per-sample numpy arrays into tensors:

* ``text`` (B,L,Dt) float features, ``text_ids``/``text_mask`` (B,L) long from ``text_bert``
  (row 0 ids, row 1 attention mask), ``text_lengths`` = mask sum;
* ``audio``/``vision`` float, ``*_lengths`` long;
* ``label`` float (regression) or long (classification), ``label_t/a/v`` when the file has them;
* ``truth`` = {"reliability" (B,3) float, "cue_window" (B,3,2) long, "conflict" (B,) bool}
  for SynthMSA, {} for real data; ``ids`` the sample ids.

Shuffling uses its own seeded ``torch.Generator``, so the order of every epoch is
reproducible and independent of the global torch RNG.
"""
from __future__ import annotations

import numpy as np
import torch

from mmsa.types import Batch


def _stack(items: list, key: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(it[key]) for it in items])).to(dtype)


def collate(items: list[dict]) -> Batch:
    """Stack the dicts returned by ``MSASplit.__getitem__`` into one ``Batch``."""
    text_bert = _stack(items, "text_bert", torch.long)
    label = np.asarray([it["label"] for it in items])
    label = torch.from_numpy(label).long() if np.issubdtype(label.dtype, np.integer) \
        else torch.from_numpy(label).float()
    unimodal = {}
    for m in ("t", "a", "v"):
        key = f"label_{m}"
        if key in items[0]:
            unimodal[key] = _stack(items, key, torch.float32)
    truth = {}
    for name, dtype in (("reliability", torch.float32), ("cue_window", torch.long), ("conflict", torch.bool)):
        key = f"truth_{name}"
        if key in items[0]:
            truth[name] = _stack(items, key, dtype)
    return Batch(
        text=_stack(items, "text", torch.float32),
        text_ids=text_bert[:, 0],
        text_mask=text_bert[:, 1],
        text_lengths=text_bert[:, 1].sum(1),
        audio=_stack(items, "audio", torch.float32),
        vision=_stack(items, "vision", torch.float32),
        audio_lengths=_stack(items, "audio_lengths", torch.long),
        vision_lengths=_stack(items, "vision_lengths", torch.long),
        label=label,
        truth=truth,
        ids=[it["id"] for it in items],
        **unimodal,
    )


def make_loader(split, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``split`` (an ``MSASplit``) that yields ``Batch`` objects.

    With ``shuffle=True`` the order comes from ``torch.Generator().manual_seed(seed)``: the
    same seed gives the same sequence of epochs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return torch.utils.data.DataLoader(
        split, batch_size=batch_size, shuffle=shuffle, generator=generator,
        num_workers=num_workers, drop_last=drop_last, collate_fn=collate,
        persistent_workers=False,
    )
