"""Which data sets exist and how each is loaded: the one place ``mmsa train`` and
``mmsa.experiment`` ask.

The names are the keys of ``DATASETS`` (``mmsa.data.mmsa_pickle``): the public feature pickles
("mosi", "mosei", "sims") are read from a file or its folder (default ``data/<MOSI|MOSEI|SIMS>``,
the layout of data/README.md); the SynthMSA names (``SYNTH_KINDS``) are generated once and cached
under a folder (default ``data/synth``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mmsa.data.mmsa_pickle import DATASETS, load_features
from mmsa.data.synthetic import synthetic_splits

SYNTH_KINDS: dict[str, str] = {name: spec.synth_kind for name, spec in DATASETS.items() if spec.synth_kind}
REAL: tuple = tuple(name for name in DATASETS if name not in SYNTH_KINDS)


def default_dir(dataset: str) -> str:
    """Where ``dataset`` lives by default: ``data/synth`` (SynthMSA) or ``data/<FOLDER>``."""
    return "data/synth" if dataset in SYNTH_KINDS else f"data/{DATASETS[dataset].folder}"


def load_splits(dataset: str, data_dir: Optional[str] = None, *, sizes: tuple = (300, 100, 100), seed: int = 0,
                lengths: Optional[tuple] = None, reliability: str = "polarity", zscore: bool = False,
                verbose: bool = True) -> dict:
    """``{"train"|"valid"|"test": MSASplit}`` of ``dataset`` (a key of ``DATASETS``).

    SynthMSA: generated with ``sizes``, ``seed`` (and ``lengths``, ``reliability`` when given) and
    cached under ``data_dir``.  Real data: the feature file ``data_dir`` (a file or its folder);
    ``zscore`` standardises audio and vision with training statistics.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    data_dir = data_dir or default_dir(dataset)
    if dataset in SYNTH_KINDS:
        kw = {} if lengths is None else {"lengths": tuple(lengths)}
        if reliability != "polarity":
            kw["reliability"] = reliability
        return synthetic_splits(SYNTH_KINDS[dataset], sizes=tuple(sizes), seed=seed, root=data_dir,
                                verbose=verbose, **kw)
    return load_features(Path(data_dir), dataset, zscore=zscore, verbose=verbose)


__all__ = ["SYNTH_KINDS", "REAL", "default_dir", "load_splits"]
