"""What a notebook imports from the book: ``setup``, ``save_figure``, ``save_metrics`` and friends.

    root = mmsa.book.setup(globals(), "NN")      # first code cell after the parameters cell
    book.save_figure(fig, "02_mae_vs_rate")      # -> figures_dir()/02_mae_vs_rate.png
    book.save_metrics("02", {"mae": 0.71})       # merged into metrics_dir()/02.json

``paths`` holds where the book lives and writes (``repo_root``, ``figures_dir``, ``BookError``).
The rest of the package runs the book and is imported by nobody else in ``mmsa``:
``params`` (choosing notebooks and checking their parameters), ``runner`` (papermill/nbval runs,
CI, the ``python -m mmsa.book`` command line), ``clean`` (the notebook cleaner), ``classroom``
(parameter presets inside a notebook) and ``site`` (the website).  The colour-blind palette
``COLORBLIND`` lives with plotting (``mmsa.viz``); ``book.COLORBLIND`` still reads it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mmsa.book import paths
from mmsa.book.paths import (ENV_ONLY, ENV_OUT, BookError, display_path, figures_dir, metrics_dir, out_dir,
                             repo_root)


def setup(threads=None, notebook: str | None = None, style: bool = True, quiet: bool = True) -> Path:
    """Notebook preamble: cd to the repo root (so data/ resolves), preset, threads, plot style.

    A chapter calls ``root = mmsa.book.setup(globals(), "NN")`` right after its parameters cell
    (``"solutions/NN"`` in a solutions notebook): with ``MMSA_PRESET=classroom`` in the
    environment it replaces the parameters still at their defaults by the chapter's small
    values, printing what changed (:mod:`mmsa.book.classroom`); ``threads`` is then read from those
    parameters.  ``setup(threads)`` (a number) also works, without presets.  Setup prints where
    the notebook's figures and key numbers go.

    ``style``: the book's matplotlib defaults (fonts >= 8 pt, colour-blind-safe colour cycle).
    ``quiet``: hide transformers' weight-loading bars and load reports and tqdm's "IProgress not
    found" warning, which a reader cannot act on (the packaged MiniLM has a pooler the encoders do
    not use; without ipywidgets the trainer prints plain-text bars).
    """
    root = paths.repo_root()
    os.chdir(root)
    if isinstance(threads, dict):  # setup(globals(), "NN"): the notebook's own namespace
        from mmsa.book import classroom

        classroom.apply(threads, notebook)
        threads = threads.get("threads")
    elif os.environ.get("MMSA_PRESET", "").strip().lower() not in ("", "full", "default", "none"):
        print(f"[mmsa.book] MMSA_PRESET={os.environ['MMSA_PRESET'].strip()} is ignored: this notebook's setup cell "
              "does not pass its parameters (setup(globals(), \"NN\") does)", flush=True)
    print(f"[mmsa.book] figures -> {display_path(figures_dir())}/, key numbers -> {display_path(metrics_dir())}/"
          + ("" if out_dir() else " (the committed figures/ only by `python -m mmsa.book run --inplace`)"), flush=True)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if style:
        import matplotlib
        from cycler import cycler

        from mmsa.viz import COLORBLIND

        matplotlib.rcParams.update({
            "figure.dpi": 100, "savefig.dpi": 110, "figure.figsize": (7, 3.6),
            "axes.spines.top": False, "axes.spines.right": False,
            "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.titlesize": 10,
            "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
            "axes.prop_cycle": cycler(color=COLORBLIND), "image.cmap": "viridis",
        })
    if quiet:
        import warnings

        # tqdm.auto without ipywidgets; the trainer falls back to plain-text bars by itself
        warnings.filterwarnings("ignore", message="IProgress not found")
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass
        else:
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    return root


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as ``<figures>/<name>.png`` (stable names: ``NN_what``)."""
    path = figures_dir() / (name if name.endswith((".png", ".svg")) else f"{name}.png")
    fig.savefig(path, bbox_inches="tight")
    return path


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if hasattr(x, "item") and callable(x.item):  # 0-d torch tensor
        return x.item()
    return x


def _nn(notebook: str | int) -> str:
    return f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)


def save_metrics(notebook: str | int, values: dict) -> Path:
    """Merge ``values`` into ``<metrics>/NN.json`` (read by the claims checks)."""
    path = metrics_dir() / f"{_nn(notebook)}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(_jsonable(values))
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path


def load_metrics(notebook: str | int) -> dict:
    nn = _nn(notebook)
    path = metrics_dir() / f"{nn}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m mmsa.book run --only {nn}` first")
    return json.loads(path.read_text())


def __getattr__(name: str):
    """``book.COLORBLIND``: the palette of ``mmsa.viz``, imported only when asked for (the runner
    does not need torch)."""
    if name == "COLORBLIND":
        from mmsa.viz import COLORBLIND

        return COLORBLIND
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["setup", "save_figure", "save_metrics", "load_metrics", "figures_dir", "metrics_dir", "display_path",
           "out_dir", "repo_root", "BookError", "ENV_OUT", "ENV_ONLY"]
