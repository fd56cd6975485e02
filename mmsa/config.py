"""Dataclass configs with per-dataset presets (docs/design.md §2).

Every model has one ``@dataclass`` config.  ``make_config(Cls, dataset, **overrides)`` starts
from the class defaults, applies ``Cls.PRESETS[dataset]`` (if any) and then the overrides.
An unknown key is an error that lists the valid ones, because papermill and argparse
would otherwise accept a typo silently.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Type, TypeVar

C = TypeVar("C")


def valid_keys(cls: Type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(cls: Type, keys, what: str = "config key") -> None:
    valid = valid_keys(cls)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown {what}(s) {unknown} for {cls.__name__}; valid keys are: {', '.join(valid)}"
        )


def make_config(cls: Type[C], dataset: str | None = None, **overrides: Any) -> C:
    """Defaults < preset for ``dataset`` < overrides.  Unknown keys raise ``TypeError``."""
    values: dict[str, Any] = {}
    presets = getattr(cls, "PRESETS", {})
    if dataset is not None:
        key = dataset.lower()
        if key not in presets and key.startswith("synth"):
            key = key.replace("synth_", "").replace("synth", "mosi") or "mosi"
        values.update(presets.get(key, {}))
    check_keys(cls, overrides)
    values.update(overrides)
    if "dataset" in valid_keys(cls) and dataset is not None and "dataset" not in overrides:
        values["dataset"] = dataset
    return cls(**values)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
