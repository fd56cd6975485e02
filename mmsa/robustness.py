"""Robustness to missing modalities: metric curves over missing rates, AUILC tables, paired tests.

The chapters on missing modalities (07) and ablations (08) ask the same three questions of many
trained models:

1. how does a metric move as more of the input is missing (a *curve* over the missing rate r)?
2. how much area lies under that curve (AUILC, one number per model and pattern)?
3. is the difference between two models larger than the noise of training and of the test set?

Every model must see **the same masks**, so the masked test sets are drawn once
(:func:`masked_sets`, with exactly the masks of :func:`mmsa.experiment.evaluate`: same batch
size, same seed) and then every model is run on them (:func:`sweep`).  The frozen text encoder
caches sentence states by token ids, so a masked sentence is encoded once per process however
many models read it.

    sets = masked_sets(data["test"], ("random", "burst", "modality"), rates)
    result = sweep(runs, sets, metric_dataset="mosi")       # runs = {(label, seed): Trainer}
    result.curves                                            # one row per label, seed, pattern, rate
    auilc_table(result.curves, "mae")                        # mean and std over seeds
    paired_difference(errors_a, errors_b)                    # (seeds, samples) arrays, paired
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from mmsa import metrics, missing
from mmsa.types import MODALITIES
from mmsa.verdict import mde

COMPLETE = ("complete", 0.0)
PATTERN_TITLES = {"random": "random", "burst": "burst", "modality": "modality-wise"}


def rate_key(rate: float) -> str:
    """The string a rate is stored under in the metrics JSON: 0.5 -> "0.5", 0 -> "0.0"."""
    return f"{float(rate):.1f}" if round(float(rate), 1) == float(rate) else f"{float(rate):g}"


# ----------------------------------------------------------------------------- masked test sets
def masked_sets(split, patterns: Sequence[str], rates: Sequence[float], seed: int = 1000,
                batch_size: int = 64) -> dict:
    """``{(pattern, rate): [Batch, ...]}``: the test split with the evaluation masks applied.

    The masks are those of ``mmsa.experiment.evaluate(trainer, split, p, pattern, rate, seed)``
    (loader of ``batch_size`` 64 in order, ``eval_transform(pattern, rate, seed)`` per batch index),
    so a number computed here equals the one a chapter computes with ``evaluate``.  Rate 0 is
    the complete test set, stored once under ``COMPLETE`` and shared by every pattern.
    """
    from mmsa.data import make_loader
    from mmsa.experiment import eval_transform

    for pattern in patterns:
        if pattern not in missing.PATTERNS:
            raise ValueError(f"unknown missing pattern {pattern!r}; valid: {missing.PATTERNS}")
    rates = [float(r) for r in rates]
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise ValueError(f"missing rates must lie in [0, 1], got {bad}")
    complete = list(make_loader(split, batch_size))
    sets = {COMPLETE: complete}
    for pattern in patterns:
        for rate in rates:
            if rate == 0.0:
                sets[(pattern, 0.0)] = complete
                continue
            tf = eval_transform(pattern, rate, seed)
            sets[(pattern, rate)] = [tf(b, i) for i, b in enumerate(complete)]
    return sets


def dropped_fraction(sets: dict) -> pd.DataFrame:
    """Fraction of each modality's valid positions that the masks removed, per (pattern, rate).

    Rows: pattern, rate, modality, ``dropped`` (over all valid positions, text [CLS]/[SEP]
    included) and ``samples_all_gone`` (fraction of samples whose droppable positions are all gone;
    text keeps [CLS]/[SEP], so "all gone" means every word).
    """
    rows = []
    for (pattern, rate), batches in sets.items():
        if (pattern, rate) == COMPLETE:
            continue
        for m in MODALITIES:
            valid = dropped = 0.0
            gone, n = 0, 0
            for b in batches:
                ref = b.text_ids if m == "text" and b.text_ids is not None else getattr(b, m)
                if ref is None:
                    continue
                T = ref.shape[1]
                lengths = b.lengths(m).cpu()
                v = (np.arange(T)[None, :] < lengths.numpy()[:, None]).astype(float)
                obs = b.missing[m].cpu().numpy() if m in b.missing else np.ones_like(v)
                d = v * (1 - obs)
                valid += v.sum()
                dropped += d.sum()
                droppable = np.maximum(lengths.numpy() - (2 if m == "text" else 0), 0)
                gone += int(((d.sum(1) >= droppable) & (droppable > 0)).sum())
                n += len(lengths)
            if n:
                rows.append({"pattern": pattern, "rate": rate, "modality": m,
                             "dropped": dropped / max(valid, 1.0), "samples_all_gone": gone / n})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- evaluation
@dataclass
class SweepResult:
    """What :func:`sweep` measured.

    curves: one row per (label, seed, pattern, rate) with every metric of ``mmsa.metrics``
    preds:  ``{(label, seed, pattern, rate): (N,) predictions}`` on the shared masked sets
    labels: (N,) test labels (the same order for every key)
    """

    curves: pd.DataFrame
    preds: dict = field(default_factory=dict)
    labels: Optional[np.ndarray] = None

    def errors(self, label: str, seeds: Sequence[int], pattern: str, rate: float) -> np.ndarray:
        """(seeds, N) absolute errors of ``label`` at (pattern, rate), one row per seed."""
        key = COMPLETE if float(rate) == 0.0 else (pattern, float(rate))
        return np.stack([np.abs(self.preds[(label, s, *key)] - self.labels) for s in seeds])

    def auilc_errors(self, label: str, seeds: Sequence[int], pattern: str) -> np.ndarray:
        """(seeds, N) per-sample AUILC of the absolute error over the pattern's rates.

        The mean over samples is the AUILC of the MAE (the trapezoid rule is linear), so two
        models' per-sample areas can be compared pairwise with :func:`paired_difference`.
        """
        rates = np.sort(self.curves.loc[self.curves["pattern"] == pattern, "rate"].unique())
        err = np.stack([self.errors(label, seeds, pattern, r) for r in rates], -1)   # (S, N, R)
        return np.trapezoid(err, rates, axis=-1)


def _identity(batch, index):
    return batch


def sweep(runs: dict, sets: dict, metric_dataset: str = "mosi", progress: bool = True) -> SweepResult:
    """Evaluate every trained model on every masked set (the same batches for every model).

    runs: ``{(label, seed): Trainer}`` as returned by ``mmsa.experiment.fit_all``.
    The complete set is evaluated once per model and reported at rate 0 of every pattern whose
    rates include 0 (its predictions are always kept, under ``COMPLETE``).
    """
    from tqdm.auto import tqdm

    at_zero = [p for p in missing.PATTERNS if (p, 0.0) in sets]   # patterns whose curve starts at rate 0
    rows, preds, labels = [], {}, None
    todo = [(key, s) for key in runs for s in sets if s == COMPLETE or s[1] > 0]
    bar = tqdm(todo, desc="evaluations", disable=not progress, mininterval=2)
    for (label, seed), key in bar:
        out = runs[(label, seed)].predict(sets[key], transform=_identity)
        if labels is None:
            labels = out["label"].astype(np.float64)
        elif out["label"].shape != labels.shape or not np.array_equal(out["label"], labels):
            raise ValueError("the masked sets do not hold the same test samples in the same order")
        preds[(label, seed, *key)] = out["pred"].astype(np.float64).reshape(-1)
        m = metrics.regression_metrics(out["pred"], out["label"], metric_dataset)
        for pattern in (at_zero if key == COMPLETE else [key[0]]):
            rows.append({"model": label, "seed": seed, "pattern": pattern, "rate": key[1], **m})
    curves = pd.DataFrame(rows).sort_values(["model", "seed", "pattern", "rate"], kind="stable")
    return SweepResult(curves.reset_index(drop=True), preds, labels)


def in_cache(jobs: Sequence, p, data: dict, root: str = "build/runs") -> dict:
    """``{(label, seed): bool}``: is this ``fit_all`` job already trained (``done.json``) under ``root``?"""
    from mmsa.experiment import model_config, run_dir

    out = {}
    for label, name, seed, overrides in jobs:
        config, train = model_config(name, data, p, **dict(overrides))
        out[(label, seed)] = (run_dir(name, p, seed, config, train, root) / "done.json").exists()
    return out


def run_table(runs: dict, cached: Optional[dict] = None) -> pd.DataFrame:
    """One row per run of ``fit_all``: epochs run, best (restored) epoch, training seconds."""
    rows = []
    for (label, seed), tr in runs.items():
        h = tr.history
        rows.append({"model": label, "seed": seed,
                     "from cache": bool(cached.get((label, seed))) if cached is not None else bool(tr.cached),
                     "epochs run": len(h), "best epoch": tr.best_epoch,
                     "best valid MAE": min((x.get("valid_mae", np.inf) for x in h), default=np.nan),
                     "train s": float(sum(x.get("train_seconds", 0.0) for x in h)),
                     "s / epoch": float(np.mean([x.get("train_seconds", np.nan) for x in h])) if h else np.nan})
    return pd.DataFrame(rows)


def constant_metrics(train_labels, test_labels, metric_dataset: str = "mosi") -> dict:
    """Metrics of the constant predictor (the training-label mean) on the test labels."""
    y = np.asarray(test_labels, dtype=np.float64)
    pred = np.full_like(y, float(np.mean(train_labels)))
    return metrics.regression_metrics(pred, y, metric_dataset)


# ----------------------------------------------------------------------------- summaries
def auilc_per_seed(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """AUILC (``mmsa.missing.auilc``: trapezoid area over the rates) per model, seed and pattern."""
    rows = []
    for (model, seed, pattern), g in curves.groupby(["model", "seed", "pattern"], sort=False):
        rows.append({"model": model, "seed": seed, "pattern": pattern,
                     "auilc": missing.auilc(g["rate"].to_numpy(), g[metric].to_numpy())})
    return pd.DataFrame(rows)


def auilc_table(curves: pd.DataFrame, metric: str, ddof: int = 0) -> pd.DataFrame:
    """AUILC of ``metric``: rows model, columns ``(pattern, "mean" | "std")`` over seeds.

    The area is over the rates in ``curves`` (e.g. 0.0-0.9: a constant curve v has area 0.9 v).
    Direction: the area of an error (MAE) is better when lower; of Acc/F1 when higher.
    ``ddof=0`` is the book's convention for "mean ± std over seeds" (``mmsa.metrics.summarize``).
    """
    per = auilc_per_seed(curves, metric)
    g = per.groupby(["model", "pattern"], sort=False)["auilc"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=ddof).fillna(0.0)}).unstack("pattern")
    out = out.swaplevel(axis=1)
    order = [p for p in missing.PATTERNS if p in per["pattern"].unique()]
    models = list(dict.fromkeys(per["model"]))
    return out.reindex(index=models, columns=pd.MultiIndex.from_product([order, ["mean", "std"]]))


def format_mean_std(table: pd.DataFrame, digits: int = 3, scale: float = 1.0) -> pd.DataFrame:
    """``"mean ± std"`` strings from a table with columns ``(group, "mean" | "std")``."""
    groups = list(dict.fromkeys(table.columns.get_level_values(0)))
    out = pd.DataFrame(index=table.index)
    for g in groups:
        m, sd = table[(g, "mean")] * scale, table[(g, "std")] * scale
        out[g] = [("–" if pd.isna(a) else f"{a:.{digits}f} ± {b:.{digits}f}") for a, b in zip(m, sd)]
    return out


def first_rate_above(curves: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
    """Per model and pattern: the smallest rate at which the seed-mean ``metric`` exceeds
    ``threshold`` (e.g. the constant predictor's MAE); NaN if it never does."""
    mean = curves.groupby(["model", "pattern", "rate"], sort=False)[metric].mean().reset_index()
    above = mean[mean[metric] > threshold].groupby(["model", "pattern"], sort=False)["rate"].min()
    models = list(dict.fromkeys(curves["model"]))
    patterns = [p for p in missing.PATTERNS if p in set(curves["pattern"])]
    return above.unstack("pattern").reindex(index=models, columns=patterns)


def mean_over_rates(curves: pd.DataFrame, metric_names: Sequence[str], pattern: str = "random",
                    rates: Optional[Sequence[float]] = None) -> pd.DataFrame:
    """The incomplete-modality table: each metric averaged over ``rates`` (default: all), then over seeds.

    Rows model; columns the metrics (mean over seeds) and ``<metric>_std`` (std over seeds).
    """
    c = curves[curves["pattern"] == pattern]
    if rates is not None:
        c = c[c["rate"].round(6).isin([round(float(r), 6) for r in rates])]
    per_seed = c.groupby(["model", "seed"], sort=False)[list(metric_names)].mean()
    g = per_seed.groupby(level="model", sort=False)
    return g.mean().join(g.std(ddof=0).fillna(0.0).add_suffix("_std"))


def curve_dict(curves: pd.DataFrame, metric: str) -> dict:
    """``{model: {pattern: {rate_key: mean over seeds}}}`` (JSON-ready)."""
    out: dict = {}
    mean = curves.groupby(["model", "pattern", "rate"], sort=False)[metric].mean()
    for (model, pattern, rate), v in mean.items():
        out.setdefault(model, {}).setdefault(pattern, {})[rate_key(rate)] = float(v)
    return out


# ----------------------------------------------------------------------------- paired tests
def paired_difference(a, b, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> dict:
    """Is model A's error different from model B's?  Paired by seed and by test sample.

    a, b: (S, N) per-sample errors (e.g. absolute errors) of two models trained with the same S
    seeds and tested on the same N samples.  The statistic is the difference of MAEs,
    ``d = mean(a) - mean(b)`` (negative: A is better).  Returns

    - ``diff``: d; ``per_seed``: the S paired differences of the per-seed MAEs;
    - ``t_low``, ``t_high``: the t-interval over seeds, ``mean ± t_{S-1} · sd / sqrt(S)``
      (training noise only; with S = 3, t = 4.30 at 95 %); ``p_t``: the paired t-test's p-value;
    - ``boot_low``, ``boot_high``: a two-level bootstrap: resample the seeds, then the test
      samples (the same samples for A and B), ``n_boot`` times; percentile interval;
    - ``within_noise``: the bootstrap interval contains 0;
    - ``mde``: the minimum detectable effect of this design (``mmsa.verdict.mde`` of the
      bootstrap interval): a true difference this large is seen with 80 % power.
    """
    from scipy import stats

    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired errors need equal shapes (seeds, samples); got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    S, N = a.shape
    d = a - b                                         # (S, N) paired per-sample differences
    per_seed = d.mean(1)
    out = {"diff": float(per_seed.mean()), "per_seed": per_seed.tolist(), "n_seeds": S, "n_samples": N,
           "level": level}
    if S >= 2:
        sd = float(per_seed.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, S - 1)) * sd / np.sqrt(S)
        out.update(t_low=out["diff"] - half, t_high=out["diff"] + half)
        out["p_t"] = float(stats.ttest_rel(a.mean(1), b.mean(1)).pvalue) if sd > 0 else float("nan")
    else:
        out.update(t_low=float("nan"), t_high=float("nan"), p_t=float("nan"))
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, size=(n_boot, S))
    ni = rng.integers(0, N, size=(n_boot, N))
    boot = np.empty(n_boot)
    for k in range(n_boot):
        boot[k] = d[si[k]][:, ni[k]].mean()
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    out.update(boot_low=float(lo), boot_high=float(hi), within_noise=bool(lo <= 0 <= hi),
               mde=mde(float(lo), float(hi), level))
    return out


# ----------------------------------------------------------------------------- plots
def model_styles(names: Sequence[str]) -> dict:
    """``{name: dict(color, marker, ls)}``: seaborn's colour-blind-safe palette, markers set apart
    models that share a colour (the palette has 10 colours)."""
    import seaborn as sns

    colours = sns.color_palette("colorblind", 10)
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
    return {n: dict(color=colours[i % 10], marker=markers[(i + i // 10) % len(markers)],
                    ls="-" if i < 10 else "--") for i, n in enumerate(names)}


def plot_curves(curves: pd.DataFrame, metric: str, ylabel: str, reference: Optional[float] = None,
                reference_label: str = "constant predictor", models: Optional[Sequence[str]] = None,
                percent: bool = False, highlight: Optional[Sequence[str]] = None,
                names: Optional[dict] = None):
    """One facet per pattern: ``metric`` (mean over seeds, band = min..max over seeds) vs missing rate.

    ``highlight``: the models drawn in colour, with markers and seed bands; every other model is a
    thin grey line without a band, and the legend names them in one entry ("other models (grey)"),
    so that a reader can follow the few curves the text is about.  ``None``: every model in colour.
    ``names``: display names for the legend (default: the model keys).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    patterns = [p for p in missing.PATTERNS if p in set(curves["pattern"])]
    models = list(models) if models is not None else list(dict.fromkeys(curves["model"]))
    names = dict(names or {})
    shown = [m for m in models if highlight is None or m in set(highlight)]
    others = [m for m in models if m not in shown]
    styles = model_styles(shown)
    scale = 100.0 if percent else 1.0
    fig, axes = plt.subplots(1, len(patterns), figsize=(4.2 * len(patterns), 3.8), sharey=True, squeeze=False)
    for ax, pattern in zip(axes[0], patterns):
        c = curves[curves["pattern"] == pattern]
        for m in others + shown:            # grey first, so that the highlighted curves lie on top
            g = c[c["model"] == m].groupby("rate")[metric]
            if g.ngroups == 0:
                continue
            mean, lo, hi = g.mean() * scale, g.min() * scale, g.max() * scale
            if m in others:
                ax.plot(mean.index, mean.values, color="0.65", lw=0.9, alpha=0.8, zorder=1)
                continue
            ax.plot(mean.index, mean.values, label=names.get(m, m), ms=4, lw=1.8 if others else 1.3, zorder=3,
                    **styles[m])
            if (hi - lo).max() > 0:
                ax.fill_between(mean.index, lo.values, hi.values, color=styles[m]["color"], alpha=0.15, lw=0,
                                zorder=2)
        if reference is not None:
            ax.axhline(reference * scale, color="0.3", ls=":", lw=1.2, label=reference_label)
        ax.set(title=f"{PATTERN_TITLES.get(pattern, pattern)} missing", xlabel="missing rate r")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if others:
        handles.append(Line2D([], [], color="0.65", lw=0.9))
        labels.append(f"{len(others)} other models (grey):\n" + "\n".join(names.get(m, m) for m in others))
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["COMPLETE", "rate_key", "masked_sets", "dropped_fraction", "SweepResult", "sweep", "in_cache", "run_table",
           "constant_metrics", "auilc_per_seed", "auilc_table", "format_mean_std", "first_rate_above",
           "mean_over_rates", "curve_dict", "paired_difference",
           "model_styles", "plot_curves"]
