"""Plotting helpers shared by the notebooks: colour-blind palette, labelled heatmaps, window overlays.

Every figure of the book follows the same rules: axes labelled with units, a colour bar on every
heatmap, the colour-blind-safe palette of ``mmsa.book.COLORBLIND`` (seaborn's "colorblind") and
fonts of at least 8 pt (``mmsa.book.setup`` sets them).  The helpers below keep those rules in one
place, and add what SynthMSA makes possible: drawing the *true* cue window (``truth["cue_window"]``,
[start, end) in each modality's own steps) or the true image-patch block on top of what a model
attends to.

    im = heatmap(ax, weights, xlabel="aligned step", ylabel="test clip", cbar_label="β × T")
    overlay_windows(ax, starts, ends)            # one outlined box per row
    overlay_block(ax, start, end, grid=7)        # the true block on a 7x7 patch map
    maps = sliding_occlusion(model, batches, "audio", n_positions=20)   # |Δŷ| per window position
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from mmsa.book import COLORBLIND
from mmsa.types import MODALITIES

# one colour per modality (text, audio, vision), per view, and the sequential colour map of heatmaps
MODALITY_COLORS = dict(zip(MODALITIES, COLORBLIND[:3]))
VIEW_COLORS = {"complete": COLORBLIND[0], "incomplete": COLORBLIND[3]}
SEQUENTIAL = "viridis"
DIVERGING = "vlag"   # seaborn's blue-white-red, readable with red-green colour blindness


def palette(n: int) -> list:
    """``n`` colours of the colour-blind-safe cycle (repeats after 10)."""
    return [COLORBLIND[i % len(COLORBLIND)] for i in range(n)]


# --------------------------------------------------------------------------- heatmaps
def heatmap(ax, values, *, xlabel: str, ylabel: str, cbar_label: str, cmap: str = SEQUENTIAL,
            vmin: Optional[float] = None, vmax: Optional[float] = None, extent=None, title: Optional[str] = None,
            colorbar: bool = True, **imshow_kw):
    """``imshow`` of a 2-D array with labelled axes and a labelled colour bar; returns the image.

    ``extent`` as in matplotlib (left, right, bottom, top) to put the columns on a physical axis
    (e.g. relative time 0–1); by default column j is centred on x = j and row i on y = i.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array (rows, columns), got shape {values.shape}")
    im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                   extent=extent, origin="upper", **imshow_kw)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # rows are items (clips, patches): whole numbers
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.9)
    return im


def overlay_windows(ax, starts, ends, rows: Optional[Sequence[float]] = None, color: str = "white",
                    lw: float = 1.0, label: Optional[str] = "true cue window", height: float = 1.0,
                    offset: float = 0.5):
    """Outline [start, end) of row i as a box from x = start − offset to x = end − offset, centred on
    y = rows[i] (default: row i).

    With ``heatmap``'s default coordinates (column j centred on x = j) the default offset ½ makes
    the box cover exactly the cells start … end−1; for a heatmap drawn with an ``extent`` in
    continuous units (e.g. relative time), give starts/ends in those units and ``offset=0``.
    """
    from matplotlib.patches import Rectangle

    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError(f"starts and ends must be 1-D arrays of equal length, got {starts.shape} and {ends.shape}")
    rows = np.arange(len(starts)) if rows is None else np.asarray(rows, float)
    for k, (s, e, r) in enumerate(zip(starts, ends, rows)):
        ax.add_patch(Rectangle((s - offset, r - height / 2), e - s, height, fill=False, edgecolor=color, lw=lw,
                               label=label if k == 0 else None))


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


def overlay_block(ax, start: int, end: int, grid: int = 7, color: str = "white", lw: float = 1.5,
                  label: Optional[str] = "true cue block"):
    """Outline the true block on an ``imshow`` of a (grid, grid) patch map."""
    from matplotlib.patches import Rectangle

    r0, c0, r1, c1 = block_from_window(start, end, grid)
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, edgecolor=color, lw=lw,
                           label=label))


# --------------------------------------------------------------------------- window statistics
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


def to_grid(positions, lengths, n: int) -> np.ndarray:
    """Map step positions of sequences of the given lengths onto a grid of ``n`` equal bins of
    relative time (step t of a length-T sequence covers [t/T, (t+1)/T) of the clip)."""
    return np.asarray(positions, float) / np.maximum(np.asarray(lengths, float), 1) * n


# --------------------------------------------------------------------------- occlusion maps
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
    from mmsa.probes import occlude

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


__all__ = ["MODALITY_COLORS", "VIEW_COLORS", "SEQUENTIAL", "DIVERGING", "palette", "heatmap", "overlay_windows",
           "block_from_window", "block_mask", "overlay_block", "mass_in_window", "peak_in_window", "to_grid",
           "sliding_occlusion", "occlusion_peak_hits", "occlusion_chance"]
