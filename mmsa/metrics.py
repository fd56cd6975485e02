"""Evaluation metrics, following the rules of the field (docs/design.md §5).

The conventions are those of the public MMSA / EMT-DLFR evaluation code, which every paper in
this book (and its baselines) reports with; they are re-derived here from their definitions.

MOSI / MOSEI (labels in [-3, 3])
    ``mae``, ``corr``   on the raw (unclipped) scores; Pearson correlation.
    ``acc7``            clip prediction and label to [-3, 3], round to the nearest integer
                        (``np.round``: ties go to the even integer, 2.5 -> 2, -0.5 -> -0), compare.
    ``acc5``/``acc3``   the same after clipping to [-2, 2] / [-1, 1].
    ``acc2_has0``       all samples; class = (y >= 0) vs (ŷ >= 0): neutral counts as positive.
    ``acc2_non0``       samples with y == 0 removed; class = (y > 0) vs (ŷ > 0).
    ``f1_*``            sklearn weighted F1 on the same two binary problems.
SIMS (labels in [-1, 1]); prediction and label are both clipped to [-1, 1] first (MAE and Corr
are computed on the clipped values, as the public code does)
    ``acc2``  classes [-1, 0] and (0, 1]
    ``acc3``  classes [-1, -0.1], (-0.1, 0.1], (0.1, 1]
    ``acc5``  classes [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]
    ``f1``    weighted F1 of the 2-class problem.
Every bin is left-open / right-closed, the lowest one also contains -1.

Conventions chosen here (documented because they are choices):
- accuracies and F1 are fractions in [0, 1] (``format_summary`` shows them as percentages);
- ``corr`` is ``nan`` when it is undefined (a constant prediction or constant label, or fewer
  than two samples); the same for ``acc2_non0``/``f1_non0`` when every label is 0;
- ``summarize`` reports the population standard deviation (``ddof=0``, numpy's default) unless
  ``ddof=1`` is passed; with one run the std is 0.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

# ----------------------------------------------------------------------------- datasets
_RULES = {
    "mosi": "mosi",
    "mosei": "mosi",
    "synth_mosi": "mosi",
    "synth": "mosi",
    "sims": "sims",
    "synth_sims": "sims",
}
_CLASSIFICATION = {"synth3", "synth_3class", "3class"}

SIMS_BINS = {
    "acc2": (0.0,),
    "acc3": (-0.1, 0.1),
    "acc5": (-0.7, -0.1, 0.1, 0.7),
}


def dataset_rules(dataset: str) -> str:
    """Which evaluation rules apply: ``"mosi"`` (MOSI, MOSEI, synthetic MOSI) or ``"sims"``."""
    key = str(dataset).lower()
    if key in _RULES:
        return _RULES[key]
    if key in _CLASSIFICATION:
        raise ValueError(
            f"dataset {dataset!r} is a classification task: use classification_metrics(probs, labels); "
            f"regression rules exist for {sorted(_RULES)}"
        )
    raise ValueError(f"unknown dataset {dataset!r} for regression metrics; valid names: {sorted(_RULES)}")


def _to_numpy(x, name: str) -> np.ndarray:
    """float array; float32 input stays float32 (SIMS bin edges are compared in that precision)."""
    if hasattr(x, "detach"):  # torch tensor (any device / dtype, bf16 included)
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    return arr


def _flat_pair(pred, label):
    p = _to_numpy(pred, "pred").reshape(-1)
    y = _to_numpy(label, "label").reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"pred and label must have the same number of elements, got {p.size} and {y.size}")
    if p.size == 0:
        raise ValueError("regression_metrics needs at least one sample")
    return p, y


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; ``nan`` when undefined (constant input or < 2 samples)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if den == 0.0:
        return float("nan")
    return float((a * b).sum() / den)


def _acc_rounded(p: np.ndarray, y: np.ndarray, bound: float) -> float:
    """Multi-class accuracy after clipping to [-bound, bound] and rounding half to even."""
    return float(np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound))))


def _binary(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    if truth.size == 0:
        return float("nan"), float("nan")
    return float(accuracy_score(truth, pred)), float(f1_score(truth, pred, average="weighted", zero_division=0))


def sims_bin(x: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Class index of SIMS scores (already in [-1, 1]) for the cut points ``cuts``.

    Bins are left-open/right-closed: with cuts (-0.1, 0.1): [-1,-0.1] -> 0, (-0.1,0.1] -> 1,
    (0.1,1] -> 2.  ``np.searchsorted(..., side="left")`` counts the cuts strictly below x.
    The cuts are cast to x's dtype, so a float32 score of 0.1 is on the cut (as in the public
    code, which compares float32 arrays with Python floats), not just above it.
    """
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return np.searchsorted(np.asarray(cuts, dtype=dtype), x.astype(dtype), side="left")


def regression_metrics(pred, label, dataset: str = "mosi") -> dict:
    """Sentiment-regression metrics of the field for ``dataset`` (numpy arrays or tensors)."""
    rules = dataset_rules(dataset)
    p, y = _flat_pair(pred, label)
    if rules == "mosi":
        acc2_has0, f1_has0 = _binary(y >= 0, p >= 0)
        keep = y != 0
        acc2_non0, f1_non0 = _binary(y[keep] > 0, p[keep] > 0)
        p64, y64 = p.astype(np.float64), y.astype(np.float64)
        return {
            "mae": float(np.mean(np.abs(p64 - y64))),
            "corr": pearson(p64, y64),
            "acc7": _acc_rounded(p, y, 3.0),
            "acc5": _acc_rounded(p, y, 2.0),
            "acc3": _acc_rounded(p, y, 1.0),
            "acc2_has0": acc2_has0,
            "f1_has0": f1_has0,
            "acc2_non0": acc2_non0,
            "f1_non0": f1_non0,
        }
    p = np.clip(p, -1.0, 1.0)
    y = np.clip(y, -1.0, 1.0)
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    out = {"mae": float(np.mean(np.abs(p64 - y64))), "corr": pearson(p64, y64)}
    for name in ("acc5", "acc3", "acc2"):
        cuts = SIMS_BINS[name]
        out[name] = float(np.mean(sims_bin(p, cuts) == sims_bin(y, cuts)))
    cuts = SIMS_BINS["acc2"]
    out["f1"] = float(f1_score(sims_bin(y, cuts), sims_bin(p, cuts), average="weighted", zero_division=0))
    return out


# ----------------------------------------------------------------------------- classification
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(probs_or_logits, labels) -> dict:
    """Acc, weighted precision/recall/F1 and one-vs-rest macro AUROC of a (N, C) score matrix.

    Rows that are not probability vectors (negative entries or sums away from 1) are treated as
    logits and passed through a softmax.  ``auroc`` is ``nan`` when some class has no sample
    in ``labels`` (its one-vs-rest curve is undefined).
    """
    s = _to_numpy(probs_or_logits, "probs")
    y = _to_numpy(labels, "labels").reshape(-1)
    if s.ndim != 2:
        raise ValueError(f"probs_or_logits must be (N, C), got shape {tuple(s.shape)}")
    if s.shape[0] != y.size:
        raise ValueError(f"probs_or_logits has {s.shape[0]} rows but labels has {y.size} entries")
    if s.shape[0] == 0:
        raise ValueError("classification_metrics needs at least one sample")
    n_classes = s.shape[1]
    if np.any(y != np.round(y)) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be integer class indices in [0, {n_classes}), got {np.unique(y)[:10]}")
    y = y.astype(np.int64)
    is_prob = np.all(s >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-4)
    probs = s / s.sum(axis=1, keepdims=True) if is_prob else _softmax(s)
    pred = probs.argmax(axis=1)
    classes = list(range(n_classes))
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=classes, average="weighted", zero_division=0)
    if len(np.unique(y)) < n_classes:
        auroc = float("nan")
    elif n_classes == 2:
        auroc = float(roc_auc_score(y, probs[:, 1]))
    else:
        auroc = float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes))
    return {
        "acc": float(np.mean(pred == y)),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "auroc": auroc,
    }


# ----------------------------------------------------------------------------- over seeds
_MIN_NAMES = ("mae", "mse", "rmse", "loss", "error", "time", "latency", "memory", "params")


def metric_direction(name: str) -> str:
    """``"min"`` for error-like metrics (MAE, losses, time), ``"max"`` for the rest."""
    key = str(name).lower()
    if key.startswith(("valid_", "test_", "train_")):
        key = key.split("_", 1)[1]
    return "min" if any(tag in key for tag in _MIN_NAMES) else "max"


def summarize(runs: Iterable[dict], ddof: int = 0) -> dict:
    """Mean and std over runs (seeds) of every numeric key: ``{key: (mean, std)}``.

    ``ddof=0`` (population std, numpy's default) unless asked otherwise; with one run std is 0.
    Keys missing from some run are summarised over the runs that have them.  ``nan`` values
    propagate (a nan in any run gives a nan mean), so an undefined metric is never hidden.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("summarize needs at least one run")
    keys: list = []
    for r in runs:
        for k, v in r.items():
            if k not in keys and isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                keys.append(k)
    out = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in runs if k in r], dtype=np.float64)
        std = float(np.std(vals, ddof=ddof)) if vals.size > ddof else 0.0
        out[k] = (float(np.mean(vals)), std)
    return out


def _is_percent_metric(name: str) -> bool:
    key = str(name).lower()
    return key.startswith(("acc", "f1", "precision", "recall", "auroc")) or "_acc" in key or "_f1" in key


def format_summary(summary: dict, keys: Optional[Sequence[str]] = None, percent=None, digits: Optional[int] = None) -> dict:
    """``{key: "mean ± std"}`` strings.

    percent: ``None`` (default) shows accuracies/F1/precision/recall/AUROC ×100 with 2 decimals
    and everything else (MAE, Corr) with 3 decimals, as the papers print them; ``True``/``False``
    forces it for all keys; a collection of names chooses those keys.
    """
    keys = list(summary) if keys is None else list(keys)
    out = {}
    for k in keys:
        if k not in summary:
            raise KeyError(f"{k!r} not in summary; available: {sorted(summary)}")
        mean, std = summary[k]
        if percent is None:
            pct = _is_percent_metric(k)
        elif isinstance(percent, bool):
            pct = percent
        else:
            pct = k in percent
        scale = 100.0 if pct else 1.0
        d = digits if digits is not None else (2 if pct else 3)
        out[k] = f"{mean * scale:.{d}f} ± {std * scale:.{d}f}"
    return out


__all__ = [
    "dataset_rules",
    "regression_metrics",
    "classification_metrics",
    "summarize",
    "format_summary",
    "metric_direction",
    "pearson",
    "sims_bin",
]
