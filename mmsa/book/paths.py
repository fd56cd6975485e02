"""Where the book lives and writes: the repository root, the output folders, ``BookError``.

The one module every part of ``mmsa.book`` builds on (the notebook API in ``__init__``, the
parameters, runner, cleaner, presets and website); it imports none of them.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_OUT = "MMSA_BOOK_OUT"  # set by `run`/`test`: the folder that receives figures/ and metrics/
ENV_ONLY = "MMSA_BOOK_ONLY"  # set by `test --only`: the notebooks whose claims are checked


class BookError(Exception):
    """A user mistake: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- inside a notebook


def repo_root() -> Path:
    """The repository root (holds notebooks/ and mmsa/); falls back to the current directory."""
    here = Path(__file__).resolve().parents[2]   # mmsa/book/paths.py -> the repository
    if (here / "notebooks").is_dir():
        return here
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "notebooks").is_dir() and (p / "mmsa").is_dir():
            return p
    return Path.cwd()


def out_dir() -> Path | None:
    """``$MMSA_BOOK_OUT`` when a runner set it, else ``None`` (a notebook run by hand)."""
    out = os.environ.get(ENV_OUT)
    return Path(out) if out else None


def figures_dir() -> Path:
    """``$MMSA_BOOK_OUT/figures`` under ``run``/``test``; ``build/figures`` by hand.

    Only ``run --inplace`` writes the committed ``figures/`` (it copies them from ``build/``).
    """
    out = out_dir()
    path = out / "figures" if out else repo_root() / "build" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def metrics_dir() -> Path:
    """``$MMSA_BOOK_OUT/metrics`` under ``run``/``test``; ``build/metrics`` by hand."""
    out = out_dir()
    path = out / "metrics" if out else repo_root() / "build" / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when inside it (for printing in notebooks)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)
