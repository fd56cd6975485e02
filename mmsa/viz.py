"""Plotting helpers shared by the notebooks: colour-blind palette, labelled heatmaps, window overlays.

Every figure of the book follows the same rules: axes labelled with units, a colour bar on every
heatmap, the colour-blind-safe palette ``COLORBLIND`` (seaborn's "colorblind") and
fonts of at least 8 pt (``mmsa.book.setup`` sets them).  The helpers below keep those rules in one
place, and add what SynthMSA makes possible: drawing the *true* cue window (``truth["cue_window"]``,
[start, end) in each modality's own steps) or the true image-patch block on top of what a model
attends to.

    im = heatmap(ax, weights, xlabel="aligned step", ylabel="test clip", cbar_label="β × T")
    overlay_windows(ax, starts, ends)            # one outlined box per row
    overlay_block(ax, start, end, grid=7)        # the true block on a 7x7 patch map
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mmsa.probes import block_from_window
from mmsa.types import MODALITIES

# seaborn's "colorblind" palette (Okabe-Ito-like), the default colour cycle of every figure
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
              "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]

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


def overlay_block(ax, start: int, end: int, grid: int = 7, color: str = "white", lw: float = 1.5,
                  label: Optional[str] = "true cue block"):
    """Outline the true block on an ``imshow`` of a (grid, grid) patch map."""
    from matplotlib.patches import Rectangle

    r0, c0, r1, c1 = block_from_window(start, end, grid)
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, edgecolor=color, lw=lw,
                           label=label))


# --------------------------------------------------------------------------- window coordinates
def to_grid(positions, lengths, n: int) -> np.ndarray:
    """Map step positions of sequences of the given lengths onto a grid of ``n`` equal bins of
    relative time (step t of a length-T sequence covers [t/T, (t+1)/T) of the clip)."""
    return np.asarray(positions, float) / np.maximum(np.asarray(lengths, float), 1) * n


__all__ = ["COLORBLIND", "MODALITY_COLORS", "VIEW_COLORS", "SEQUENTIAL", "DIVERGING", "palette", "heatmap", "overlay_windows",
           "overlay_block", "to_grid"]
