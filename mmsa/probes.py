"""Measurements on trained models: what did a module really learn?

Attention maps and average weights *suggest*; these functions *measure*:

* ``occlusion_test``   remove the true cue window of SynthMSA (its ground truth) and, separately,
                       a random window of the same length in the same sample and modality; a
                       model that found the cue moves its prediction much more for the first.
* ``partial_spearman`` rank correlation of x and y after removing what a covariate z explains
                       (e.g. DAM weight vs true reliability, controlling for the label).
* ``feature_gap``      how far the incomplete view's features are from the complete view's,
                       relative to the spread of the complete features (scale-free).
* ``mmd2``             maximum mean discrepancy between two sets (RBF kernel, median bandwidth).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from mmsa.data import make_loader
from mmsa.types import MODALITIES, Batch


# --------------------------------------------------------------------------- occlusion
def occlude(batch: Batch, modality: str, start: torch.Tensor, end: torch.Tensor) -> Batch:
    """A copy of ``batch`` whose ``modality`` frames in [start_b, end_b) are zero (as if dropped)."""
    x = getattr(batch, modality)
    t = torch.arange(x.shape[1], device=x.device)[None]
    inside = (t >= start.to(x.device)[:, None]) & (t < end.to(x.device)[:, None])
    return batch.replace(**{modality: x * (~inside)[..., None].to(x.dtype)})


def random_windows(window: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A window of the same length as each true window, placed at random inside the valid part of
    the sequence and, where the sequence is long enough, not overlapping the true window."""
    out = np.zeros_like(window)
    for i, ((s, e), n) in enumerate(zip(window, lengths)):
        w = e - s
        starts = np.arange(0, max(n - w, 0) + 1)
        apart = starts[(starts + w <= s) | (starts >= e)]
        start = rng.choice(apart if len(apart) else starts)
        out[i] = (start, start + w)
    return out


@torch.no_grad()
def occlusion_test(model: torch.nn.Module, split, modalities: Sequence[str] = ("audio", "vision"),
                   seed: int = 0, batch_size: int = 64, device: str | torch.device = "cpu") -> dict:
    """|Δŷ| when the true cue window vs a random equal-length window of each modality is zeroed.

    ``split`` must carry SynthMSA's ground truth (``truth["cue_window"]``).  Returns
    {"true": (N, M), "random": (N, M), "ratio": mean|Δ_true| / mean|Δ_random| pooled over the
    modalities, "ratio_by_modality": {m: ratio}}.  A ratio of 1 means the prediction does not
    care *where* frames are removed; a model that reads the expressive burst gives ratio ≫ 1.
    """
    if "cue_window" not in split.truth:
        raise ValueError("occlusion_test needs SynthMSA's ground-truth cue windows (split.truth['cue_window']); "
                         "real data sets have none")
    model.eval().to(device)
    rng = np.random.default_rng(seed)
    lengths = {"audio": split.audio_lengths, "vision": split.vision_lengths}
    idx = {m: MODALITIES.index(m) for m in modalities}
    windows = {m: split.truth["cue_window"][:, idx[m]] for m in modalities}
    rand = {m: random_windows(windows[m], lengths[m], rng) for m in modalities}
    true_d, rand_d, seen = [], [], 0
    for batch in make_loader(split, batch_size):
        batch = batch.to(device)
        B = batch.size
        base = model(batch).pred.float()
        t_row, r_row = [], []
        for m in modalities:
            w, r = torch.as_tensor(windows[m][seen:seen + B]), torch.as_tensor(rand[m][seen:seen + B])
            t_row.append((model(occlude(batch, m, w[:, 0], w[:, 1])).pred.float() - base).abs())
            r_row.append((model(occlude(batch, m, r[:, 0], r[:, 1])).pred.float() - base).abs())
        true_d.append(torch.stack(t_row, 1).cpu().numpy())
        rand_d.append(torch.stack(r_row, 1).cpu().numpy())
        seen += B
    t, r = np.concatenate(true_d), np.concatenate(rand_d)
    by = {m: float(t[:, j].mean() / max(r[:, j].mean(), 1e-12)) for j, m in enumerate(modalities)}
    return {"true": t, "random": r, "ratio": float(t.mean() / max(r.mean(), 1e-12)), "ratio_by_modality": by}


# --------------------------------------------------------------------------- correlations
def partial_spearman(x, y, z) -> float:
    """Spearman correlation of x and y controlling for z (one covariate (N,) or several (N, k)).

    The ranks of x and y are regressed (least squares, with an intercept) on the ranks of z, and
    the Pearson correlation of the two residuals is returned.  With z independent of x and y this
    equals the plain Spearman correlation.
    """
    x, y = rankdata(np.asarray(x, float).ravel()), rankdata(np.asarray(y, float).ravel())
    z = np.asarray(z, float)
    z = z.reshape(len(x), -1)
    Z = np.column_stack([np.ones(len(x))] + [rankdata(z[:, j]) for j in range(z.shape[1])])
    rx = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    ry = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


# --------------------------------------------------------------------------- feature distances
def feature_gap(f_full: np.ndarray, f_miss: np.ndarray) -> float:
    """E‖f_miss,i − f_full,i‖² / E‖f_full,i − mean(f_full)‖²: paired distance of the two views,
    in units of the complete features' own spread (0 = identical, 1 = as far as a random other
    sample).  Scale-free, so a model cannot lower it by shrinking all its features."""
    f_full, f_miss = np.asarray(f_full, float), np.asarray(f_miss, float)
    spread = ((f_full - f_full.mean(0)) ** 2).sum(1).mean()
    return float(((f_miss - f_full) ** 2).sum(1).mean() / max(spread, 1e-12))


def mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Squared MMD between the sets a and b, RBF kernel with the median pairwise squared distance
    of the pooled set as bandwidth (a distribution distance: ignores the pairing)."""
    x = np.concatenate([a, b]).astype(float)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    bw = np.median(d2[np.triu_indices(len(x), 1)])
    k = np.exp(-d2 / max(bw, 1e-12))
    n = len(a)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


__all__ = ["occlude", "random_windows", "occlusion_test", "partial_spearman", "feature_gap", "mmd2"]
