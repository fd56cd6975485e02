"""Read the public MMSA feature pickles (CMU-MOSI, CMU-MOSEI, CH-SIMS) and SynthMSA files.

The MMSA toolkit (thuiar/MMSA) released pre-extracted, *unaligned* features for the three
benchmarks; EMT-DLFR, DAST-GAN and most recent MSA papers train on exactly these files.
A file is one pickled dict::

    {"train": split, "valid": split, "test": split}

and every split is a dict of arrays over its N samples:

=========================  ============  ===================================================
key                        shape         meaning
=========================  ============  ===================================================
``raw_text``               (N,)          the transcript (str)
``id``                     (N,)          "video$_$clip" sample id (str)
``text``                   (N, L, Dt)    BERT token features (768-d; SynthMSA: MiniLM 384-d)
``text_bert``              (N, 3, L)     BERT input: token ids, attention mask, segment ids
``audio``                  (N, Ta, Da)   acoustic frames (COVAREP / LibROSA), zero padded
``vision``                 (N, Tv, Dv)   visual frames (Facet / OpenFace), zero padded
``audio_lengths``          (N,)          number of valid audio frames
``vision_lengths``         (N,)          number of valid vision frames
``regression_labels``      (N,)          sentiment in [-3, 3] (SIMS: [-1, 1])
``regression_labels_T/A/V`` (N,)         unimodal labels (SIMS and SynthMSA only)
``classification_labels``  (N,)          class index (required only for 3-class ``synth3``)
``truth_reliability``      (N, 3)        SynthMSA ground truth: modality reliability r_m
``truth_cue_window``       (N, 3, 2)     SynthMSA ground truth: [start, end) of each cue
``truth_conflict``         (N,)          SynthMSA ground truth: one modality contradicts
=========================  ============  ===================================================

``load_features`` checks all of this (keys, shapes against the ``DATASETS`` table, label
range), repairs non-finite values (MOSEI's audio holds -inf) and reports what it repaired,
and returns one ``MSASplit`` (a ``torch.utils.data.Dataset``) per split.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
MODS = ("text", "audio", "vision")
REQUIRED_KEYS = (
    "raw_text", "id", "text", "text_bert", "audio", "vision",
    "audio_lengths", "vision_lengths", "regression_labels",
)
UNIMODAL_KEYS = {"T": "regression_labels_T", "A": "regression_labels_A", "V": "regression_labels_V"}
TRUTH_KEYS = {"reliability": "truth_reliability", "cue_window": "truth_cue_window",
              "conflict": "truth_conflict"}


@dataclass(frozen=True)
class DatasetSpec:
    """What a file for one dataset name must look like.

    ``dims``/``lengths`` are (text, audio, vision); ``None`` in an entry means "read it from
    the file" (SynthMSA), but it must then agree across the three splits.
    """

    name: str
    dims: tuple
    lengths: tuple
    label_range: tuple
    task: str = "regression"
    filename: str = "unaligned_50.pkl"
    folder: str = ""
    sizes: Optional[tuple] = None  # published train/valid/test sizes (informative only)
    num_classes: Optional[int] = None


DATASETS: dict[str, DatasetSpec] = {
    "mosi": DatasetSpec("mosi", (768, 5, 20), (50, 375, 500), (-3.0, 3.0),
                        folder="MOSI", sizes=(1284, 229, 686)),
    "mosei": DatasetSpec("mosei", (768, 74, 35), (50, 500, 500), (-3.0, 3.0),
                         folder="MOSEI", sizes=(16326, 1871, 4659)),
    "sims": DatasetSpec("sims", (768, 33, 709), (39, 400, 55), (-1.0, 1.0),
                        filename="unaligned_39.pkl", folder="SIMS", sizes=(1368, 456, 457)),
    "synth_mosi": DatasetSpec("synth_mosi", (None, None, None), (None, None, None), (-3.0, 3.0),
                              filename="synth_mosi.pkl", folder="synth"),
    "synth_sims": DatasetSpec("synth_sims", (None, None, None), (None, None, None), (-1.0, 1.0),
                              filename="synth_sims.pkl", folder="synth"),
    "synth3": DatasetSpec("synth3", (None, None, None), (None, None, 49), (-3.0, 3.0),
                          task="classification", filename="synth3.pkl", folder="synth",
                          num_classes=3),
}


def _spec(dataset: str) -> DatasetSpec:
    key = str(dataset).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def _missing_file_message(path: Path, spec: DatasetSpec) -> str:
    if spec.name.startswith("synth"):
        kind = {"synth_mosi": "mosi", "synth_sims": "sims", "synth3": "3class"}[spec.name]
        return (f"feature file not found: {path}. SynthMSA files are generated offline: "
                f"mmsa.data.make_synthetic({str(path)!r}, kind={kind!r}) writes one "
                f"(or use mmsa.data.synthetic_splits({kind!r}), which caches it).")
    return (
        f"feature file not found: {path}. The public {spec.name.upper()} features are the MMSA "
        f"toolkit's released unaligned features ({spec.filename}; MOSI/MOSEI: unaligned_50.pkl, "
        f"SIMS: unaligned_39.pkl), the files EMT-DLFR and DAST-GAN train on; download them from "
        f"the MMSA / EMT-DLFR feature release and put this one at data/{spec.folder}/"
        f"{spec.filename} (see data/README.md). Offline stand-in with the same format: "
        f"mmsa.data.make_synthetic(path, kind='mosi'|'sims'|'3class') or "
        f"mmsa.data.synthetic_splits('mosi')."
    )


class MSASplit(torch.utils.data.Dataset):
    """One split of a feature file, held as numpy arrays.

    Attributes: ``dataset`` (name in DATASETS), ``name`` (train/valid/test), ``dims``
    (text, audio, vision feature sizes), ``seq_lens`` (L, Ta, Tv), ``task``
    ("regression"/"classification"), ``repaired`` ({what: how many values were fixed}),
    ``label_range``; arrays ``text``, ``text_bert``, ``audio``, ``vision``,
    ``audio_lengths``, ``vision_lengths``, ``labels`` (what the model is trained on),
    ``regression_labels``, ``unimodal`` ({"T"|"A"|"V": (N,)}), ``truth`` ({name: array}),
    ``ids``, ``raw_text``.  ``__getitem__(i)`` returns a dict of per-sample arrays; use
    ``mmsa.data.make_loader`` to get ``Batch`` objects.
    """

    def __init__(self, arrays: dict, dataset: str, name: str, repaired: dict | None = None):
        spec = _spec(dataset)
        self.dataset = spec.name
        self.name = name
        self.task = spec.task
        self.label_range = spec.label_range
        self.num_classes = spec.num_classes
        self.repaired = dict(repaired or {})
        self.text = arrays["text"]
        self.text_bert = arrays["text_bert"]
        self.audio = arrays["audio"]
        self.vision = arrays["vision"]
        self.audio_lengths = arrays["audio_lengths"]
        self.vision_lengths = arrays["vision_lengths"]
        self.regression_labels = arrays["regression_labels"]
        self.classification_labels = arrays.get("classification_labels")
        self.labels = self.classification_labels if self.task == "classification" else self.regression_labels
        self.unimodal = {m: arrays[k] for m, k in UNIMODAL_KEYS.items() if k in arrays}
        self.truth = {t: arrays[k] for t, k in TRUTH_KEYS.items() if k in arrays}
        self.ids = [str(i) for i in arrays["id"]]
        self.raw_text = [str(t) for t in arrays["raw_text"]]

    @property
    def dims(self) -> tuple:
        return (self.text.shape[2], self.audio.shape[2], self.vision.shape[2])

    @property
    def seq_lens(self) -> tuple:
        return (self.text.shape[1], self.audio.shape[1], self.vision.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {
            "text": self.text[i], "text_bert": self.text_bert[i],
            "audio": self.audio[i], "vision": self.vision[i],
            "audio_lengths": self.audio_lengths[i], "vision_lengths": self.vision_lengths[i],
            "label": self.labels[i], "id": self.ids[i],
        }
        for m, arr in self.unimodal.items():
            item[f"label_{m.lower()}"] = arr[i]
        for t, arr in self.truth.items():
            item[f"truth_{t}"] = arr[i]
        return item

    def __repr__(self) -> str:
        return (f"MSASplit({self.dataset}/{self.name}: N={len(self)}, dims={self.dims}, "
                f"seq_lens={self.seq_lens}, task={self.task}, truth={sorted(self.truth)})")


# ----------------------------------------------------------------------------- validation
def _as_array(split: dict, key: str, where: str, dtype=None) -> np.ndarray:
    try:
        arr = np.asarray(split[key]) if dtype is None else np.asarray(split[key], dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: key {key!r} cannot be read as a numeric array ({err})") from err
    return arr


def _check_shape(arr: np.ndarray, expected: tuple, key: str, where: str) -> None:
    ok = arr.ndim == len(expected) and all(e is None or e == g for e, g in zip(expected, arr.shape))
    if not ok:
        exp = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{where}: {key!r} has shape {tuple(arr.shape)}, expected {exp} "
                         f"(N, ...) for this dataset")


def _repair(arr: np.ndarray, what: str, repaired: dict) -> np.ndarray:
    bad = ~np.isfinite(arr)
    n = int(bad.sum())
    if n:
        arr = np.where(bad, 0, arr).astype(arr.dtype, copy=False)
        repaired[what] = repaired.get(what, 0) + n
    return arr


def _validate_split(raw: dict, spec: DatasetSpec, name: str, path: Path) -> tuple[dict, dict]:
    where = f"{path} [{name}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a split must be a dict of arrays, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if spec.task == "classification" and "classification_labels" not in raw:
        missing.append("classification_labels")
    if missing:
        raise KeyError(f"{where}: missing key(s) {missing}; an MMSA feature split needs the keys "
                       f"{list(REQUIRED_KEYS)}" + (" and 'classification_labels'"
                                                   if spec.task == "classification" else "")
                       + f" (got {sorted(raw)})")
    out: dict = {}
    repaired: dict = {}
    labels = _as_array(raw, "regression_labels", where, np.float32).reshape(-1)
    N = labels.shape[0]
    if N == 0:
        raise ValueError(f"{where}: the split is empty (0 samples)")
    Dt, Da, Dv = spec.dims
    L, Ta, Tv = spec.lengths
    out["text"] = _as_array(raw, "text", where, np.float32)
    _check_shape(out["text"], (N, L, Dt), "text", where)
    L = out["text"].shape[1]
    out["text_bert"] = _as_array(raw, "text_bert", where)
    _check_shape(out["text_bert"], (N, 3, L), "text_bert", where)
    out["text_bert"] = np.nan_to_num(out["text_bert"].astype(np.float64)).astype(np.int64)
    out["audio"] = _as_array(raw, "audio", where, np.float32)
    _check_shape(out["audio"], (N, Ta, Da), "audio", where)
    out["vision"] = _as_array(raw, "vision", where, np.float32)
    _check_shape(out["vision"], (N, Tv, Dv), "vision", where)
    for m in ("text", "audio", "vision"):
        out[m] = _repair(out[m], m, repaired)
    for m in ("audio", "vision"):
        key = f"{m}_lengths"
        lengths = _as_array(raw, key, where, np.float64).reshape(-1)
        _check_shape(lengths, (N,), key, where)
        T = out[m].shape[1]
        lengths = np.nan_to_num(lengths, nan=T, posinf=T, neginf=1)
        clipped = np.clip(lengths, 1, T).astype(np.int64)
        n = int((clipped != lengths).sum())
        if n:  # lengths of 0 or beyond the padded size (a few in the public files)
            repaired[key] = n
        out[key] = clipped
    lo, hi = spec.label_range
    label_keys = {"regression_labels": labels}
    for k in UNIMODAL_KEYS.values():
        if k in raw:
            label_keys[k] = _as_array(raw, k, where, np.float32).reshape(-1)
            _check_shape(label_keys[k], (N,), k, where)
    for k, arr in label_keys.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: {k!r} contains NaN/inf labels")
        if arr.min() < lo - 1e-4 or arr.max() > hi + 1e-4:
            raise ValueError(f"{where}: {k!r} range [{arr.min():.3f}, {arr.max():.3f}] lies outside "
                             f"the {spec.name} label range [{lo}, {hi}] -- is this the right dataset?")
        out[k] = arr
    if "classification_labels" in raw:
        cls = _as_array(raw, "classification_labels", where).reshape(-1)
        _check_shape(cls, (N,), "classification_labels", where)
        if spec.task == "classification":
            if not np.all(np.isfinite(cls)) or not np.all(cls == np.round(cls)) or \
                    cls.min() < 0 or cls.max() >= spec.num_classes:
                raise ValueError(f"{where}: 'classification_labels' must be integers in "
                                 f"0..{spec.num_classes - 1}, got values {np.unique(cls)[:10]}")
        out["classification_labels"] = np.nan_to_num(cls.astype(np.float64)).astype(np.int64)
    truth_shapes = {"truth_reliability": (N, 3), "truth_cue_window": (N, 3, 2), "truth_conflict": (N,)}
    for k, shape in truth_shapes.items():
        if k in raw:
            arr = _as_array(raw, k, where)
            _check_shape(arr, shape, k, where)
            out[k] = arr
    if "truth_reliability" in out:
        out["truth_reliability"] = out["truth_reliability"].astype(np.float32)
    if "truth_cue_window" in out:
        out["truth_cue_window"] = out["truth_cue_window"].astype(np.int64)
    if "truth_conflict" in out:
        out["truth_conflict"] = out["truth_conflict"].astype(bool)
    for k in ("id", "raw_text"):
        seq = list(np.asarray(raw[k]).reshape(-1))
        if len(seq) != N:
            raise ValueError(f"{where}: {k!r} has {len(seq)} entries, expected N={N}")
        out[k] = seq
    return out, repaired


def zscore_(splits: dict, modalities=("audio", "vision"), eps: float = 1e-6) -> dict:
    """Standardise audio/vision in place with train-split mean/std of *valid* frames only.

    Padding frames (t >= length) are excluded from the statistics and stay exactly 0.
    Returns {modality: (mean, std)} (the SIMS recipe of MMSA's ``need_normalized``).
    """
    stats = {}
    train = splits["train"]
    for m in modalities:
        x, lengths = getattr(train, m), getattr(train, f"{m}_lengths")
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        frames = x[valid].astype(np.float64)  # (n_valid_frames, D)
        mean, std = frames.mean(0), frames.std(0)
        std = np.where(std < eps, 1.0, std)
        stats[m] = (mean.astype(np.float32), std.astype(np.float32))
        for split in splits.values():
            y, ls = getattr(split, m), getattr(split, f"{m}_lengths")
            mask = (np.arange(y.shape[1])[None, :] < ls[:, None])[..., None]
            setattr(split, m, np.where(mask, (y - stats[m][0]) / stats[m][1], 0).astype(np.float32))
    return stats


def load_features(path, dataset: str, zscore: bool = False, verbose: bool = True) -> dict:
    """Load an MMSA-format feature pickle and return ``{"train"|"valid"|"test": MSASplit}``.

    path:    the .pkl file, or a folder holding the dataset's default file name
    dataset: a key of ``DATASETS`` ("mosi", "mosei", "sims", "synth_mosi", "synth_sims", "synth3")
    zscore:  standardise audio/vision with train statistics of valid frames (SIMS option)
    verbose: print one line listing repaired non-finite values / lengths, if any
    """
    spec = _spec(dataset)
    path = Path(path)
    if path.is_dir():
        path = path / spec.filename
    if not path.exists():
        raise FileNotFoundError(_missing_file_message(path, spec))
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or any(s not in data for s in SPLITS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise KeyError(f"{path}: expected a dict with the splits {list(SPLITS)} at the top level, "
                       f"got {got}")
    splits, report = {}, {}
    for name in SPLITS:
        arrays, repaired = _validate_split(data[name], spec, name, path)
        splits[name] = MSASplit(arrays, spec.name, name, repaired)
        if repaired:
            report[name] = repaired
    # files whose dims are read from the file (SynthMSA) must agree across splits
    ref = splits["train"]
    for name in SPLITS[1:]:
        s = splits[name]
        if s.dims != ref.dims or s.seq_lens != ref.seq_lens:
            raise ValueError(f"{path}: split {name!r} has dims {s.dims} / lengths {s.seq_lens} but "
                             f"train has dims {ref.dims} / lengths {ref.seq_lens}")
    if report and verbose:
        text = "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in r.items()) for n, r in report.items())
        print(f"[mmsa.data] {path.name}: replaced non-finite values / clipped lengths -> {text}")
    if zscore:
        zscore_(splits)
    return splits
