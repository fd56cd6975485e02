"""Checkpoint files that survive being killed (docs/design.md §2).

Every file is written to a temporary name, fsync'ed and renamed into place (``os.replace`` is
atomic); the previous ``last.pt`` is kept as ``last.prev.pt``; every checkpoint carries a SHA-256
checksum of its contents; reading uses ``torch.load(..., weights_only=True)`` (no code from the
file runs) and verifies the checksum; ``find_checkpoint`` falls back to ``last.prev.pt`` when
``last.pt`` is missing, partial or corrupt.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn


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


def atomic_write(path: Path, write: Callable[[Any], None], previous: Optional[Path] = None) -> None:
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


def atomic_save(obj: Any, path: Path, previous: Optional[Path] = None) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), previous)


def plain(x: Any) -> Any:
    """Numpy scalars/arrays and paths -> python numbers, tensors, str (what weights_only loads)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(plain(v) for v in x)
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


def find_checkpoint(path: str | os.PathLike) -> tuple[Optional[dict], Optional[Path], list[str]]:
    """The first usable checkpoint of ``path`` and ``previous_checkpoint(path)``.

    Returns ``(state, the file it came from, problems)``: ``problems`` holds one line per file
    passed over (missing, or why it could not be read); ``state`` is None when neither is usable.
    """
    path = Path(path)
    problems: list[str] = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            problems.append(f"{candidate}: missing")
            continue
        try:
            return read_checkpoint(candidate), candidate, problems
        except Exception as err:  # noqa: BLE001 - partial zip, bit rot, not a checkpoint, unsafe content
            problems.append(f"{candidate}: {checkpoint_problem(err)}")
    return None, None, problems


def load_trained(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint (``best.pt`` or ``last.pt``) that stores its name and
    config (``Trainer(..., model_name=...)``, as ``mmsa train`` does) and load its weights.

    Reads with ``weights_only=True`` and checks the checksum; the model is in eval mode.
    """
    from mmsa import models
    from mmsa.runtime import resolve_device

    state = read_checkpoint(path)
    name, cfg = state.get("model_name"), state.get("model_config")
    if not name or cfg is None:
        raise ValueError(f"{path} does not record the model name and config (train with "
                         f"Trainer(..., model_name=...) or `mmsa train`); build the model yourself and "
                         f"load_state_dict(read_checkpoint(path)['model'])")
    model = models.build(name, **cfg)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()
