"""Measurements on trained models: what did a module really learn?

Attention maps and average weights *suggest*; these functions *measure*:

* ``occlusion_test``   remove the true cue window of SynthMSA (its ground truth) and, separately,
                       a random window of the same length in the same sample and modality; a
                       model that found the cue moves its prediction much more for the first.
* ``block_occlusion_test`` the same on SynthMSA-3's 7x7 image grid: the true cue block against a
                       block of the same shape elsewhere, scored on the class probabilities.
* ``uniform_attention`` a copy of a model whose chosen attention layers spread every query's
                       weight evenly over the valid keys: what is the *placement* of the weight worth?
* ``partial_spearman`` rank correlation of x and y after removing what a covariate z explains
                       (e.g. DAM weight vs true reliability, controlling for the label).
* ``feature_gap``      how far the incomplete view's features are from the complete view's,
                       relative to the spread of the complete features (scale-free).
* ``mmd2``             maximum mean discrepancy between two sets (RBF kernel, median bandwidth).
* ``sliding_occlusion`` |Δŷ| for a window slid over every clip (an occlusion map; ``mmsa.viz``
                       draws it), ``occlusion_peak_hits``/``occlusion_chance`` score it against the
                       true cue window; ``mass_in_window``/``peak_in_window`` score attention maps.
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


def block_from_window(start: int, end: int, grid: int = 7) -> tuple[int, int, int, int]:
    """SynthMSA-3's image cue block from its flattened window: (row0, col0, row1, col1), inclusive.

    The generator stores [first, last + 1) of the block's patches in the row-major grid, so the
    first patch is the block's top-left corner and the last its bottom-right one.
    """
    start, end = int(start), int(end)
    if not 0 <= start < end <= grid * grid:
        raise ValueError(f"window [{start}, {end}) does not lie in a {grid}x{grid} grid")
    r0, c0 = divmod(start, grid)
    r1, c1 = divmod(end - 1, grid)
    if r1 < r0 or c1 < c0:
        raise ValueError(f"window [{start}, {end}) is not a block of a {grid}x{grid} grid")
    return r0, c0, r1, c1


def block_mask(start: int, end: int, grid: int = 7) -> np.ndarray:
    """(grid*grid,) boolean mask of the patches inside the block of ``block_from_window``."""
    r0, c0, r1, c1 = block_from_window(start, end, grid)
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    return (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)


def random_blocks(window: np.ndarray, rng: np.random.Generator, grid: int = 7) -> np.ndarray:
    """For each true cue block (a flattened ``[first, last + 1)`` window of a ``grid`` x ``grid``
    image, as SynthMSA-3 stores it) a block of the same shape at a random place of the grid with
    the least overlap with it: none wherever the grid leaves room (a 3 x 3 block in the centre of
    a 7 x 7 grid leaves none; then the control shares one corner patch with it)."""

    out = np.zeros_like(window)
    for i, (s, e) in enumerate(window):
        r0, c0, r1, c1 = block_from_window(s, e, grid)
        h, w = r1 - r0 + 1, c1 - c0 + 1
        overlap = {(r, c): max(0, min(r + h - 1, r1) - max(r, r0) + 1) * max(0, min(c + w - 1, c1) - max(c, c0) + 1)
                   for r in range(grid - h + 1) for c in range(grid - w + 1)}
        least = min(overlap.values())
        places = [p for p, o in overlap.items() if o == least]
        r, c = places[rng.integers(len(places))]
        out[i] = (r * grid + c, (r + h - 1) * grid + c + w)
    return out


@torch.no_grad()
def block_occlusion_test(model: torch.nn.Module, split, seed: int = 0, batch_size: int = 64,
                         device: str | torch.device = "cpu", grid: int = 7) -> dict:
    """A 3-class model on SynthMSA-3: zero the image patches of the true cue block, and separately
    those of a block of the same shape elsewhere (``random_blocks``), and measure how far the class
    probabilities move (total variation, 0-1) and the accuracy under each.

    Returns {"true", "random": (N,) total variations, "ratio": mean true / mean random,
    "accuracy": {"complete", "true block zeroed", "random block zeroed"}}.  Ratio 1: the
    prediction does not care which patches go; a model that reads the cue block gives ratio >> 1.
    """

    if "cue_window" not in split.truth:
        raise ValueError("block_occlusion_test needs SynthMSA-3's ground-truth cue blocks "
                         "(split.truth['cue_window']); real data sets have none")
    model.eval().to(device)
    true_blocks = split.truth["cue_window"][:, MODALITIES.index("vision")]
    rand_blocks = random_blocks(true_blocks, np.random.default_rng(seed), grid)
    keep = {k: torch.as_tensor(~np.stack([block_mask(s, e, grid) for s, e in w]))
            for k, w in (("true", true_blocks), ("random", rand_blocks))}
    tv = {"true": [], "random": []}
    correct = {"complete": 0, "true block zeroed": 0, "random block zeroed": 0}
    seen = 0
    for batch in make_loader(split, batch_size):
        batch = batch.to(device)
        B = batch.size
        if batch.vision.shape[1] != grid * grid:
            raise ValueError(f"batch.vision has {batch.vision.shape[1]} steps; expected a {grid}x{grid} "
                             f"patch grid ({grid * grid} steps, SynthMSA-3)")
        label = batch.label.long()
        p0 = model(batch).pred.float().softmax(-1)
        correct["complete"] += int((p0.argmax(-1) == label).sum())
        for k in tv:
            m = keep[k][seen:seen + B].to(batch.vision)
            p = model(batch.replace(vision=batch.vision * m[..., None])).pred.float().softmax(-1)
            tv[k].append(0.5 * (p - p0).abs().sum(-1).cpu().numpy())
            correct[f"{k} block zeroed"] += int((p.argmax(-1) == label).sum())
        seen += B
    t, r = np.concatenate(tv["true"]), np.concatenate(tv["random"])
    return {"true": t, "random": r, "ratio": float(t.mean() / max(r.mean(), 1e-12)),
            "accuracy": {k: v / seen for k, v in correct.items()}}


def uniform_attention(model: torch.nn.Module, prefixes: Sequence[str]) -> torch.nn.Module:
    """A deep copy of ``model`` in which every ``nn.MultiheadAttention`` whose name starts with one
    of ``prefixes`` has a zero query projection: all scores are equal, so each query averages the
    values of the valid keys.  Everything else, the value path included, is unchanged; comparing
    the copy's accuracy with the model's prices where the attention puts its weight."""
    import copy

    out = copy.deepcopy(model)
    flattened = 0
    for name, mod in out.named_modules():
        if isinstance(mod, torch.nn.MultiheadAttention) and any(name.startswith(p) for p in prefixes):
            D = mod.embed_dim
            with torch.no_grad():
                if mod.in_proj_weight is not None:
                    mod.in_proj_weight[:D].zero_()
                else:
                    mod.q_proj_weight.zero_()
                if mod.in_proj_bias is not None:
                    mod.in_proj_bias[:D].zero_()
            flattened += 1
    if not flattened:
        raise ValueError(f"no nn.MultiheadAttention under {list(prefixes)} in {type(model).__name__}")
    return out


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


# --------------------------------------------------------------------------- texture
def roughness(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N,) texture of each clip's valid frames: mean squared step |x_t − x_{t−1}|² over the mean
    squared frame |x_t|² (≈ 2(1 − lag-1 autocorrelation); 0.6 for SynthMSA's smooth AR(1) noise,
    2 for white noise).  Loudness cancels: scaling a clip leaves its roughness unchanged."""
    out = np.zeros(len(x))
    for i, n in enumerate(np.asarray(lengths, int)):
        v = np.asarray(x[i, :max(int(n), 2)], np.float64)
        out[i] = ((v[1:] - v[:-1]) ** 2).sum(-1).mean() / max((v ** 2).sum(-1).mean(), 1e-12)
    return out


@torch.no_grad()
def reliability_decodability(model: torch.nn.Module, split, folds: int = 5) -> dict:
    """How well can the true reliability r_m be read at each stage of a DAST-GAN with DAM?

    A ridge probe (``folds``-fold cross-validated) predicts r_m from DAM's input LN(vec G^(m),L)
    (the last layer's candidate, as the scorer sees it) and from the encoder's global vector h_m;
    the raw input is read with two one-number statistics, loudness (mean squared frame) and
    ``roughness``.  Returns {(stage, modality): |Spearman(prediction, r_m)|}: where a stage scores
    low, no weight computed from it can follow r_m."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    model.eval()
    captured, feats = [], {m: [] for m in MODALITIES}
    forward = model.dam.forward
    model.dam.forward = lambda g, cands, rho, texture=None: captured.append(cands.detach()) or forward(g, cands, rho, texture)
    try:
        for b in make_loader(split, 64):
            captured.clear()
            v = model.view(b)
            for i, m in enumerate(MODALITIES):
                feats[m].append((model.dam.norm(captured[-1][:, i].flatten(1)).float().numpy(),
                                 v["enc"]["global"][m].float().numpy()))
    finally:
        model.dam.forward = forward
    rel = np.asarray(split.truth["reliability"], np.float64)
    out = {}
    for i, m in enumerate(MODALITIES):
        for k, stage in enumerate(("DAM input", "encoder h_m")):
            X = np.concatenate([f[k] for f in feats[m]])
            pred = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 3, 12)), X, rel[:, i], cv=folds)
            out[(stage, m)] = abs(float(spearmanr(pred, rel[:, i]).statistic))
    for m in ("audio", "vision"):
        x, n = getattr(split, m), getattr(split, f"{m}_lengths")
        loud = (np.asarray(x, np.float64) ** 2).sum((1, 2)) / np.maximum(n, 1)
        j = MODALITIES.index(m)
        out[("raw loudness", m)] = abs(float(spearmanr(loud, rel[:, j]).statistic))
        out[("raw roughness", m)] = abs(float(spearmanr(roughness(x, n), rel[:, j]).statistic))
    return out


# --------------------------------------------------------------------------- cue windows
def mass_in_window(weights, starts, ends) -> np.ndarray:
    """Fraction of each row's (non-negative) weight that lies in [start, end) of that row."""
    w = np.clip(np.asarray(weights, float), 0, None)
    steps = np.arange(w.shape[1])[None]
    inside = (steps >= np.asarray(starts)[:, None]) & (steps < np.asarray(ends)[:, None])
    total = w.sum(1)
    return np.where(total > 0, (w * inside).sum(1) / np.where(total > 0, total, 1), np.nan)


def peak_in_window(weights, starts, ends) -> np.ndarray:
    """Does each row's largest weight fall inside its [start, end)? (boolean per row)"""
    peak = np.asarray(weights, float).argmax(1)
    return (peak >= np.asarray(starts)) & (peak < np.asarray(ends))


@torch.no_grad()
def sliding_occlusion(model, batches, modality: str, n_positions: int = 20, width: float = 0.15,
                      device: str | torch.device = "cpu") -> dict:
    """|Δŷ| when a window of ``modality`` is zeroed, for windows sliding over each clip.

    Window k of a clip with valid length T covers steps [round(c_k·T − w/2), … + w) with
    w = max(1, round(width·T)) and centres c_k = (k + ½)/n_positions of the valid part, so every
    clip gets the same ``n_positions`` windows in *relative* time whatever its length.  A
    classifier's change is the L1 change of its class probabilities.

    Returns {"delta": (N, n_positions) |Δŷ|, "start"/"end": (N, n_positions) the windows in the
    clip's own steps, "lengths": (N,)}.  Put the true cue window of the same clip beside it to
    see whether the prediction depends on *where* the cue was.
    """
    if modality not in MODALITIES[1:]:
        raise ValueError(f"sliding_occlusion zeroes frames of 'audio' or 'vision', got {modality!r}")
    if n_positions < 1 or not 0 < width <= 1:
        raise ValueError(f"need n_positions >= 1 and 0 < width <= 1, got {n_positions} and {width}")
    model.eval()

    def out(b):
        pred = model(b).pred.float()
        return pred.softmax(-1) if pred.dim() == 2 else pred

    deltas, starts, ends, lens = [], [], [], []
    for batch in batches:
        batch = batch.to(device)
        base = out(batch)
        T = batch.lengths(modality).cpu().clamp(min=1).double()
        w = torch.clamp((width * T).round(), min=1)
        rows_d, rows_s, rows_e = [], [], []
        for k in range(n_positions):
            centre = (k + 0.5) / n_positions * T
            s = torch.clamp((centre - w / 2).round(), min=0)
            s = torch.minimum(s, torch.clamp(T - w, min=0))
            e = torch.minimum(s + w, T)
            diff = (out(occlude(batch, modality, s.long(), e.long())) - base).abs()
            rows_d.append(diff.sum(-1) if diff.dim() == 2 else diff)
            rows_s.append(s.long())
            rows_e.append(e.long())
        deltas.append(torch.stack(rows_d, 1).cpu().numpy())
        starts.append(torch.stack(rows_s, 1).numpy())
        ends.append(torch.stack(rows_e, 1).numpy())
        lens.append(T.long().numpy())
    return {"delta": np.concatenate(deltas), "start": np.concatenate(starts), "end": np.concatenate(ends),
            "lengths": np.concatenate(lens)}


def occlusion_peak_hits(result: dict, true_start, true_end) -> np.ndarray:
    """Per clip: does the window that moved ŷ most overlap the true cue window [start, end)?"""
    k = result["delta"].argmax(1)
    idx = np.arange(len(k))
    s, e = result["start"][idx, k], result["end"][idx, k]
    return (s < np.asarray(true_end)) & (e > np.asarray(true_start))


def occlusion_chance(result: dict, true_start, true_end) -> np.ndarray:
    """Per clip: the fraction of the ``n_positions`` windows that overlap the true window — the
    hit rate of a prediction that does not care where frames are removed (ties broken at random)."""
    overlap = (result["start"] < np.asarray(true_end)[:, None]) & (result["end"] > np.asarray(true_start)[:, None])
    return overlap.mean(1)


__all__ = ["occlude", "random_windows", "occlusion_test", "partial_spearman", "feature_gap", "mmd2",
           "block_from_window", "block_mask", "mass_in_window", "peak_in_window", "sliding_occlusion",
           "occlusion_peak_hits", "occlusion_chance"]
