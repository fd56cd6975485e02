"""One registry for every model: ``build(name, **config)`` and ``available()`` (docs/design.md §2).

A model module registers itself with ``@register("name")`` on a builder
``fn(**config) -> nn.Module``.  Names are lowercase.  Modules are imported lazily here so
that ``import mmsa.models`` stays cheap and a broken optional model never breaks the rest.
"""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# model name -> module that registers it (imported on first use)
_MODULES = {
    "lf_dnn": "mmsa.models.baselines",
    "ef_lstm": "mmsa.models.baselines",
    "tfn": "mmsa.models.baselines",
    "lmf": "mmsa.models.baselines",
    "mult": "mmsa.models.baselines",
    "misa": "mmsa.models.baselines",
    "self_mm": "mmsa.models.baselines",
    "tfr_net": "mmsa.models.baselines",
    "emt_dlfr": "mmsa.models.emt_dlfr",
    "dast_gan": "mmsa.models.dast_gan",
    "ufen_mtfn": "mmsa.models.ufen_mtfn",
    "cmsta_cg": "mmsa.models.cmsta_cg",
}

# parameter-name prefixes of modules used only during training (GAN discriminator,
# SimSiam projectors/predictors, reconstruction heads); excluded from deployment counts.
TRAINING_ONLY_PREFIXES = ("discriminator.", "projector.", "predictor.", "recon.", "unimodal.")


def register(name: str):
    def deco(fn):
        _REGISTRY[name.lower()] = fn
        return fn

    return deco


def _load_all() -> None:
    for module in sorted(set(_MODULES.values())):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a model module not written yet
            if err.name != module:
                raise


def module_of(name: str) -> str:
    """The module that defines model ``name`` (e.g. "mmsa.models.dast_gan")."""
    key = name.lower()
    if key not in _MODULES:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return _MODULES[key]


def available() -> list[str]:
    """Names that ``build`` accepts."""
    _load_all()
    return sorted(_REGISTRY)


def build(name: str, **config) -> nn.Module:
    """Build a registered model; ``config`` overrides its dataclass config (``dataset=`` picks a preset)."""
    key = name.lower()
    if key not in _REGISTRY and key in _MODULES:
        try:
            importlib.import_module(_MODULES[key])
        except ModuleNotFoundError as err:
            if err.name != _MODULES[key]:
                raise
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return _REGISTRY[key](**config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def inference_parameters(model: nn.Module) -> int:
    """Parameters used at inference: all minus training-only modules (TRAINING_ONLY_PREFIXES)."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if not any(n.startswith(pre) or f".{pre}" in n for pre in TRAINING_ONLY_PREFIXES)
    )


def build_for_data(name: str, split, **config) -> nn.Module:
    """``build`` with feature dims (and the dataset preset) taken from a loaded split.

    ``split.dims`` = (text, audio, vision) feature sizes; explicit ``config`` wins.
    """
    dims = dict(zip(("text_dim", "audio_dim", "vision_dim"), split.dims))
    for k, v in dims.items():
        config.setdefault(k, v)
    config.setdefault("dataset", split.dataset)
    return build(name, **config)
