"""Data: the public MMSA feature pickles, the SynthMSA generator, and Batch loaders.

    splits = load_features("data/MOSI/unaligned_50.pkl", "mosi")      # real features
    splits = synthetic_splits("mosi", sizes=(300, 100, 100), seed=0)  # offline stand-in
    for batch in make_loader(splits["train"], batch_size=32, shuffle=True, seed=1): ...
"""
from mmsa.data.datasets import REAL, SYNTH_KINDS, default_dir, load_splits
from mmsa.data.loader import collate, make_loader
from mmsa.data.mmsa_pickle import (DATASETS, FeatureFileError, MSASplit, UnsafePickleError, load_features,
                                   safe_load, zscore_)
from mmsa.data.synthetic import make_synthetic, synthetic_path, synthetic_splits

__all__ = ["load_splits", "SYNTH_KINDS", "REAL", "default_dir", "load_features", "make_loader", "make_synthetic", "synthetic_splits", "synthetic_path",
           "MSASplit", "DATASETS", "collate", "zscore_", "safe_load", "FeatureFileError", "UnsafePickleError"]
