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

``load_features`` checks all of this (keys, dtypes, shapes against the ``DATASETS`` table,
label range and finiteness, token ids inside the tokenizer's vocabulary, lengths), repairs what
can be repaired without guessing (non-finite feature values -- MOSEI's audio holds -inf --,
lengths of 0 or beyond the padded size, an empty attention mask) and reports every repair with a
count; anything else is a ``FeatureFileError`` (a ``ValueError``) naming the file, split, key
and what was expected.  It returns one ``MSASplit`` (a ``torch.utils.data.Dataset``) per split.

**Safe loading.**  Unpickling a file can run any code the file carries, and feature files
are downloaded from third parties.  Even a restricted ``pickle.Unpickler`` is not enough: numpy's
reconstruction routines trust the state they are given (a hostile file made only of numpy pieces
can crash the interpreter or read process memory).  ``safe_load`` therefore interprets the
pickle itself (``mmsa.data._unpickle``): it accepts only the globals a feature file needs
(``SAFE_GLOBALS``: numpy arrays, dtypes and scalars -- under numpy 1.x's ``numpy.core`` and 2.x's
``numpy._core`` names -- and plain Python containers, strings and numbers) and never calls them
with the file's state: arrays are built from a validated dtype, shape and raw bytes of exactly
the right length, object arrays from a list of already-built values, containers are plain, and
sizes and nesting are bounded by the file's size.  A refused global is an ``UnsafePickleError``
naming the file and ``module.name``; anything else is a ``FeatureFileError`` naming the file,
the key path and what was refused.
"""
from __future__ import annotations

import numbers
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mmsa.data import _unpickle

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
    # token ids in text_bert must lie in [0, vocab_size): bert-base-uncased (English) and
    # MiniLM share a 30522-token vocabulary, bert-base-chinese (SIMS) has 21128 tokens
    vocab_size: Optional[int] = 30522
    synth_kind: Optional[str] = None  # SynthMSA: the generator's kind (mmsa.data.synthetic)


DATASETS: dict[str, DatasetSpec] = {
    "mosi": DatasetSpec("mosi", (768, 5, 20), (50, 375, 500), (-3.0, 3.0),
                        folder="MOSI", sizes=(1284, 229, 686)),
    "mosei": DatasetSpec("mosei", (768, 74, 35), (50, 500, 500), (-3.0, 3.0),
                         folder="MOSEI", sizes=(16326, 1871, 4659)),
    "sims": DatasetSpec("sims", (768, 33, 709), (39, 400, 55), (-1.0, 1.0),
                        filename="unaligned_39.pkl", folder="SIMS", sizes=(1368, 456, 457),
                        vocab_size=21128),
    # SynthMSA: sizes read from the file; any tokenizer (``make_synthetic(text_model=...)``)
    "synth_mosi": DatasetSpec("synth_mosi", (None, None, None), (None, None, None), (-3.0, 3.0),
                              filename="synth_mosi.pkl", folder="synth", vocab_size=None, synth_kind="mosi"),
    "synth_sims": DatasetSpec("synth_sims", (None, None, None), (None, None, None), (-1.0, 1.0),
                              filename="synth_sims.pkl", folder="synth", vocab_size=None, synth_kind="sims"),
    "synth3": DatasetSpec("synth3", (None, None, None), (None, None, 49), (-3.0, 3.0),
                          task="classification", filename="synth3.pkl", folder="synth",
                          num_classes=3, vocab_size=None, synth_kind="3class"),  # any tokenizer (mmsa.data.extract)
}


class FeatureFileError(ValueError):
    """A feature file that cannot be used as it is; the message names file, split, key, expectation."""


class FeatureKeyError(FeatureFileError, KeyError):
    """A required split or key is missing (also a ``KeyError``)."""

    __str__ = ValueError.__str__  # KeyError would print the message with quotes around it


class UnsafePickleError(FeatureFileError, pickle.UnpicklingError):
    """The pickle asks for a global outside ``SAFE_GLOBALS`` (it could run code): refused."""


SAFE_GLOBALS = _unpickle.SAFE_GLOBALS
"""``(module, name)`` pairs a feature pickle may refer to.  ``_codecs.encode`` is how pickle
protocols 0-2 store ``bytes`` (numpy's array buffers); ``numpy.core.*`` is numpy 1.x's name of
the module numpy 2.x calls ``numpy._core`` (both are accepted).  None of them is ever called
with what the file says: ``mmsa.data._unpickle`` recognises the patterns numpy and pickle write
and builds the values itself."""


def safe_load(path) -> object:
    """Read the pickle at ``path`` without running code or trusting its numpy state.

    ``mmsa.data._unpickle`` interprets the opcodes itself: arrays are made from a validated
    (dtype, shape, raw bytes of exactly the right length) triple or, for object arrays, a list of
    already-built values; containers are plain; sizes are bounded by the file's size and nesting
    by ``MAX_DEPTH``.  A refused global -> ``UnsafePickleError``; anything else a feature file
    does not hold -> ``FeatureFileError`` naming the file, the key path and what was refused; a
    truncated, empty or non-pickle file -> a ``FeatureFileError`` saying so (re-download it).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            return _unpickle.load(f, size)
    except _unpickle.UnsafeGlobal as err:
        name, where = err.args
        allowed = sorted({f"{m}.{n}" for m, n in SAFE_GLOBALS if m not in ("__builtin__",)})
        raise UnsafePickleError(
            f"{path}{where and ' ' + where}: refused to unpickle {name!r}. A feature file may hold only "
            f"numpy arrays, dtypes and scalars and plain Python values (allowed globals: "
            f"{', '.join(allowed)}); anything else could run code when loaded. If you wrote this file "
            f"yourself, save its contents as plain numpy arrays and dicts."
        ) from None
    except _unpickle.Refused as err:
        what, where = err.args
        raise FeatureFileError(
            f"{path}{where and ' ' + where}: refused {what}. A feature file holds only numpy arrays "
            f"(numeric, string or object dtype) and plain dicts, lists, strings and numbers, as "
            f"pickle.dump writes them; this file is damaged, crafted, or not an MMSA feature pickle "
            f"(download it again, see data/README.md)."
        ) from None
    except _unpickle.Corrupt as err:
        what, where = err.args
        hint = "it is empty" if size == 0 else f"{size} bytes"
        raise FeatureFileError(
            f"{path}{where and ' ' + where} cannot be read as a feature pickle ({what}; {hint}). The file "
            f"is truncated (an interrupted download or copy?) or is not an MMSA feature pickle; "
            f"download it again (see data/README.md)."
        ) from None


def _spec(dataset: str) -> DatasetSpec:
    key = str(dataset).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def _missing_file_message(path: Path, spec: DatasetSpec) -> str:
    if spec.synth_kind:
        return (f"feature file not found: {path}. SynthMSA files are generated offline: "
                f"mmsa.data.make_synthetic({str(path)!r}, kind={spec.synth_kind!r}) writes one "
                f"(or use mmsa.data.synthetic_splits({spec.synth_kind!r}), which caches it).")
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
def _numeric(raw: dict, key: str, where: str, expected: str) -> np.ndarray:
    """``raw[key]`` as a numeric numpy array, or a ``FeatureFileError`` saying what is wrong."""
    try:
        arr = np.asarray(raw[key])
    except (ValueError, TypeError) as err:  # nested lists of different lengths
        raise FeatureFileError(f"{where}: {key!r} cannot be read as one array ({err}); "
                               f"expected {expected}") from None
    if arr.dtype == object:  # numbers stored as objects are fine; arrays inside (ragged rows) are not
        odd = sorted({type(x).__name__ for x in arr.reshape(-1) if not isinstance(x, numbers.Real)})
        if odd:
            raise FeatureFileError(f"{where}: {key!r} is an object array holding {odd} (ragged rows or "
                                   f"non-numbers); expected {expected}")
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "biuf":
        raise FeatureFileError(f"{where}: {key!r} has dtype {arr.dtype}; expected {expected}")
    return arr


def _check_shape(arr: np.ndarray, expected: tuple, key: str, where: str, dataset: str) -> None:
    ok = arr.ndim == len(expected) and all(e is None or e == g for e, g in zip(expected, arr.shape))
    if not ok:
        exp = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        if arr.ndim != len(expected):
            why = f"rank {arr.ndim} instead of {len(expected)}"
        elif arr.shape[0] != expected[0]:
            why = f"{arr.shape[0]} samples, but 'regression_labels' has N={expected[0]}"
        else:
            why = f"the sizes of {dataset} are fixed" if dataset in ("mosi", "mosei", "sims") \
                else "the sizes must agree across keys"
        raise FeatureFileError(f"{where}: {key!r} has shape {tuple(arr.shape)}, expected {exp} "
                               f"({why}; is this the right dataset?)")


def _vector(raw: dict, key: str, where: str, N: Optional[int]) -> np.ndarray:
    """A per-sample vector: shape (N,) or (N, 1) accepted, returned as (N,)."""
    arr = _numeric(raw, key, where, "one number per sample, shape (N,)")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or (N is not None and arr.shape[0] != N):
        raise FeatureFileError(f"{where}: {key!r} has shape {tuple(arr.shape)}, expected "
                               f"({'N' if N is None else N},) -- one value per sample")
    return arr


def _repair(arr: np.ndarray, what: str, repaired: dict) -> np.ndarray:
    bad = ~np.isfinite(arr)
    n = int(bad.sum())
    if n:
        arr = np.where(bad, 0, arr).astype(arr.dtype, copy=False)
        repaired[what] = repaired.get(what, 0) + n
    return arr


def _validate_split(raw: dict, spec: DatasetSpec, name: str, path: Path) -> tuple[dict, dict]:
    """Check one split; returns (arrays, {what: count repaired}) or raises ``FeatureFileError``.

    Errors: a non-dict split, missing keys, non-numeric or ragged arrays, wrong ranks or sizes,
    N that differs between keys, an empty split, zero-length sequence axes, non-integer token
    ids, ids outside the vocabulary, a mask that is not 0/1, NaN/inf or out-of-range labels,
    class indices outside 0..C-1, id/raw_text counts that differ from N.
    Repairs (counted): non-finite feature values -> 0; audio/vision lengths that are NaN,
    < 1, > T or fractional -> clipped into 1..T; an all-zero text mask -> first token valid.
    """
    where = f"{path} [{name}]"
    if not isinstance(raw, dict):
        raise FeatureFileError(f"{where}: a split must be a dict of arrays, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if spec.task == "classification" and "classification_labels" not in raw:
        missing.append("classification_labels")
    if missing:
        raise FeatureKeyError(f"{where}: missing key(s) {missing}; an MMSA feature split needs the keys "
                              f"{list(REQUIRED_KEYS)}" + (" and 'classification_labels'"
                                                          if spec.task == "classification" else "")
                              + f" (got {sorted(map(str, raw))})")
    out: dict = {}
    repaired: dict = {}
    labels = _vector(raw, "regression_labels", where, None)
    N = labels.shape[0]
    if N == 0:
        raise FeatureFileError(f"{where}: the split is empty (0 samples)")
    # features: (N, T, D) floats; non-finite values are repaired (MOSEI's audio holds -inf)
    for m, T, D in zip(MODS, spec.lengths, spec.dims):
        arr = _numeric(raw, m, where, "(N, T, D) float features")
        _check_shape(arr, (N, T, D), m, where, spec.name)
        if 0 in arr.shape[1:]:
            raise FeatureFileError(f"{where}: {m!r} has shape {tuple(arr.shape)}: zero-length sequences "
                                   f"or zero-size features; expected (N, T >= 1, D >= 1)")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: repaired
            out[m] = _repair(arr.astype(np.float32, copy=False), m, repaired)
    L = out["text"].shape[1]
    # text_bert: (N, 3, L) integer token ids, 0/1 attention mask, segment ids
    tb = _numeric(raw, "text_bert", where, "(N, 3, L) integer token ids, attention mask, segment ids")
    _check_shape(tb, (N, 3, L), "text_bert", where, spec.name)
    if tb.dtype.kind == "f" and not (np.isfinite(tb).all() and (tb == np.round(tb)).all()):
        raise FeatureFileError(f"{where}: 'text_bert' holds non-integer or non-finite values; expected "
                               f"integer token ids, a 0/1 attention mask and segment ids")
    tb = tb.astype(np.int64)
    ids, mask = tb[:, 0], tb[:, 1]
    if not np.isin(mask, (0, 1)).all():
        raise FeatureFileError(f"{where}: 'text_bert'[:, 1] is the attention mask and must be 0/1; "
                               f"found values {np.unique(mask)[:10].tolist()}")
    vocab = spec.vocab_size
    outside = (ids < 0) | (ids >= vocab) if vocab else ids < 0
    if outside.any():
        raise FeatureFileError(
            f"{where}: 'text_bert' token ids must lie in [0, {vocab or 'vocabulary size'}) for "
            f"{spec.name}; {int(outside.sum())} ids lie outside (min {ids.min()}, max {ids.max()}) -- "
            f"written with another tokenizer, or the wrong dataset name?")
    empty = mask.sum(1) == 0
    if empty.any():  # no valid token: models would divide by zero or pack a length-0 sequence
        tb = tb.copy()
        tb[empty, 1, 0] = 1
        repaired["text_lengths"] = int(empty.sum())
    out["text_bert"] = tb
    # lengths: clipped into 1..T (a few public files hold 0 or lengths beyond the padding)
    for m in ("audio", "vision"):
        key = f"{m}_lengths"
        lengths = _vector(raw, key, where, N).astype(np.float64)
        T = out[m].shape[1]
        clipped = np.clip(np.floor(np.nan_to_num(lengths, nan=T, posinf=T, neginf=1)), 1, T).astype(np.int64)
        n = int((clipped != lengths).sum())  # NaN != anything: counted
        if n:
            repaired[key] = n
        out[key] = clipped
    # labels: finite and inside the dataset's range, else an error (never guessed)
    lo, hi = spec.label_range
    label_keys = {"regression_labels": labels}
    for k in UNIMODAL_KEYS.values():
        if k in raw:
            label_keys[k] = _vector(raw, k, where, N)
    for k, arr in label_keys.items():
        arr = arr.astype(np.float32)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise FeatureFileError(f"{where}: {k!r} contains {int(bad.sum())} NaN/inf label(s) (first at "
                                   f"index {int(np.argmax(bad))}); labels must be finite, in [{lo}, {hi}]")
        if arr.min() < lo - 1e-4 or arr.max() > hi + 1e-4:
            raise FeatureFileError(f"{where}: {k!r} range [{arr.min():.3f}, {arr.max():.3f}] lies outside "
                                   f"the {spec.name} label range [{lo}, {hi}] -- is this the right dataset?")
        out[k] = arr
    if "classification_labels" in raw:
        cls = _vector(raw, "classification_labels", where, N)
        integral = np.isfinite(cls).all() and (cls == np.round(cls)).all()
        if spec.task == "classification" and (not integral or cls.min() < 0 or cls.max() >= spec.num_classes):
            raise FeatureFileError(f"{where}: 'classification_labels' must be integers in "
                                   f"0..{spec.num_classes - 1}, got values {np.unique(cls)[:10].tolist()}")
        out["classification_labels"] = cls.astype(np.int64) if integral else cls
    truth_shapes = {"truth_reliability": (N, 3), "truth_cue_window": (N, 3, 2), "truth_conflict": (N,)}
    for k, shape in truth_shapes.items():
        if k in raw:
            arr = _numeric(raw, k, where, f"shape {shape}")
            _check_shape(arr, shape, k, where, spec.name)
            out[k] = arr
    if "truth_reliability" in out:
        out["truth_reliability"] = out["truth_reliability"].astype(np.float32)
    if "truth_cue_window" in out:
        out["truth_cue_window"] = out["truth_cue_window"].astype(np.int64)
    if "truth_conflict" in out:
        out["truth_conflict"] = out["truth_conflict"].astype(bool)
    for k in ("id", "raw_text"):
        seq = list(np.asarray(raw[k], dtype=object).reshape(-1))
        if len(seq) != N:
            raise FeatureFileError(f"{where}: {k!r} has {len(seq)} entries, expected N={N} (one per sample)")
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
    verbose: print one line listing what was repaired, if anything (always in ``split.repaired``)

    Files are unpickled with ``safe_load`` (no code from the file runs); every problem with the
    file is a ``FeatureFileError`` (a ``ValueError``) naming the file, split and key.
    """
    spec = _spec(dataset)
    path = Path(path)
    if path.is_dir():
        path = path / spec.filename
    if not path.exists():
        raise FileNotFoundError(_missing_file_message(path, spec))
    data = safe_load(path)
    if not isinstance(data, dict):
        raise FeatureFileError(f"{path}: expected a dict with the splits {list(SPLITS)} at the top "
                               f"level, got a {type(data).__name__}")
    if any(s not in data for s in SPLITS):
        raise FeatureKeyError(f"{path}: expected a dict with the splits {list(SPLITS)} at the top level, "
                              f"got {sorted(map(str, data))}")
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
            raise FeatureFileError(f"{path}: split {name!r} has dims {s.dims} / lengths {s.seq_lens} but "
                             f"train has dims {ref.dims} / lengths {ref.seq_lens}")
    if report and verbose:
        text = "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in r.items()) for n, r in report.items())
        print(f"[mmsa.data] {path}: repaired -> {text} (counts; non-finite feature values set to 0, "
              f"lengths clipped into 1..T, empty text masks given one valid token)")
    if zscore:
        zscore_(splits)
    return splits
