"""DAST-GAN's three modules, each tested in the regime it was designed for (docs/design.md §3.3.1).

An ablation on data where a module has nothing to do measures nothing.  Each regime below is
SynthMSA built so that one module *must* matter if it works as the paper describes, with the
effect we expect written down before the run (docs/design.md), the module compared with its own
ablation on the same seeds and test clips (paired), and the verdict of ``mmsa.verdict`` with the
minimum detectable effect:

=========  ===========================================  =======================================
regime     data                                          comparison (on the regime's test)
=========  ===========================================  =======================================
``dam``    ``reliability="texture"``: per-clip, per-      DAM vs fixed 1/3 weights, complete clips;
           modality reliability independent of the       Spearman(α, true reliability)
           label, visible as texture at constant
           loudness; a modality says the truth in
           proportion to its reliability
``sta``    ``reliability="synchrony"``, 150 audio / 200   STA vs one plain self-attention layer
           vision frames: one true burst shared by       ("w/o STA"); occlusion of the true burst,
           audio and vision at the same moment among     DAST-GAN over EMT-DLFR (no STA)
           decoy bursts each stream has alone
``gan``    the default story, tested with 80 % of the    GAN vs w/o GAN; the complete/incomplete
           positions dropped at random                   feature gap, per seed
=========  ===========================================  =======================================

``study(base_protocol, seeds)`` trains what is missing (``mmsa.experiment.fit_all``: cached, shared
with the chapters that train the same runs), measures, and returns a dict whose ``metrics`` hold
the ``mech_*`` keys the book saves.  Differences are "without the module minus with it" in MAE:
positive means the module helps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from mmsa import experiment, probes, robustness
from mmsa.data import make_loader
from mmsa.verdict import decide, mde


@dataclass(frozen=True)
class Regime:
    name: str
    module: str                      # "DAM" | "STA" | "GAN"
    reliability: str                 # SynthMSA story
    lengths: tuple                   # (text, audio, vision)
    runs: dict                       # label -> (model name, build flags)
    with_module: str                 # the label with the module ...
    without_module: str              # ... and its own ablation
    pattern: str = "random"          # the regime's test condition
    rate: float = 0.0
    expected: str = ""


REGIMES = {
    "dam": Regime(
        "dam", "DAM", "texture", (32, 50, 50),
        {"DAM": ("dast_gan", {"use_gan": False}),
         "fixed 1/3": ("dast_gan", {"use_gan": False, "use_dam": False})},
        "DAM", "fixed 1/3",
        expected="DAM's weights follow the true reliability (pooled Spearman >= 0.6) and DAM beats fixed "
                 "1/3 weights on complete test clips (fixed minus DAM MAE > 0)"),
    "sta": Regime(
        "sta", "STA", "synchrony", (32, 150, 200),
        {"STA": ("dast_gan", {"use_gan": False}),
         "w/o STA": ("dast_gan", {"use_gan": False, "use_sta": False}),
         "EMT-DLFR": ("emt_dlfr", {})},
        "STA", "w/o STA",
        expected="STA beats a plain self-attention layer (w/o STA minus STA MAE > 0), and removing the "
                 "true burst moves DAST-GAN's prediction >= 1.3x as much (relative to a random window) "
                 "as it moves EMT-DLFR's"),
    "gan": Regime(
        "gan", "GAN", "polarity", (32, 50, 50),
        {"GAN": ("dast_gan", {}), "w/o GAN": ("dast_gan", {"use_gan": False})},
        "GAN", "w/o GAN", pattern="random", rate=0.8,
        expected="with 80 % of the positions missing, the GAN lowers the MAE (w/o GAN minus GAN > 0) "
                 "and brings the incomplete view's features closer to the complete view's in every seed"),
}


def protocol(regime: Regime | str, base: experiment.Protocol, seeds: Sequence[int],
             lengths: Optional[Sequence[int]] = None) -> experiment.Protocol:
    """The base protocol with the regime's story, lengths (``lengths`` overrides them, e.g. for a
    quick CI run) and seeds; sizes, budget and device are kept.  The default-story regime keeps
    the base protocol's lengths: its runs are the chapters' runs."""
    regime = REGIMES[regime] if isinstance(regime, str) else regime
    changes = {"seeds": tuple(int(s) for s in seeds)}
    if regime.reliability != "polarity":
        changes.update(reliability=regime.reliability, lengths=tuple(lengths or regime.lengths))
    return dataclasses.replace(base, **changes)


def jobs(regime: Regime, seeds: Sequence[int], variants: Optional[dict] = None) -> list:
    """``fit_all`` jobs of the regime's runs (plus ``variants``: label -> (model, flags))."""
    runs = {**regime.runs, **(variants or {})}
    return [(label, name, s, dict(flags)) for label, (name, flags) in runs.items() for s in seeds]


def abs_errors(trainers: Sequence, split, transform=None) -> np.ndarray:
    """(S, N) absolute test errors of the trainers (one per seed) on the same clips and masks."""
    loader = make_loader(split, 64)
    out = []
    for t in trainers:
        res = t.predict(loader, transform=transform)
        out.append(np.abs(np.asarray(res["pred"], np.float64).ravel() - np.asarray(res["label"], np.float64).ravel()))
    return np.stack(out)


def paired_gain(runs: dict, without: str, with_: str, seeds: Sequence[int], split, transform=None,
                n_boot: int = 4000) -> dict:
    """Paired difference MAE(without) − MAE(with) over seeds × clips (positive: the module helps),
    with its 95 % bootstrap interval, the MDE and the verdict for "the module helps"."""
    a = abs_errors([runs[(without, s)] for s in seeds], split, transform)
    b = abs_errors([runs[(with_, s)] for s in seeds], split, transform)
    d = robustness.paired_difference(a, b, n_boot=n_boot)
    d["verdict"] = decide(d["boot_low"], d["boot_high"], +1)
    d["mae_with"], d["mae_without"] = float(b.mean()), float(a.mean())
    return d


def dam_spearman(trainers: Sequence, split) -> dict:
    """Spearman of DAM's last-layer weights α (complete clips) against the true reliabilities,
    pooled over modalities and clips, per seed; and per modality (mean over seeds)."""
    from scipy.stats import spearmanr

    rel = np.asarray(split.truth["reliability"], np.float64)
    loader = make_loader(split, 64)
    pooled, per = [], []
    for t in trainers:
        a = np.asarray(t.predict(loader, keep_extras=("modality_weights",))["extras"]["modality_weights"], np.float64)
        pooled.append(spearmanr(a.ravel(), rel.ravel()).statistic)
        per.append([spearmanr(a[:, j], rel[:, j]).statistic for j in range(3)])
    return {"pooled_per_seed": [float(x) for x in pooled], "pooled": float(np.mean(pooled)),
            "by_modality": dict(zip(("text", "audio", "vision"), np.mean(per, 0).round(4).tolist()))}


def occlusion_ratios(trainers: Sequence, split, seeds: Sequence[int]) -> list:
    """Per seed: mean |Δŷ| when the true audio/vision burst is zeroed over the same for a random
    window of the same length (``probes.occlusion_test``)."""
    return [float(probes.occlusion_test(t.model, split, seed=int(s))["ratio"]) for t, s in zip(trainers, seeds)]


def feature_gaps(trainers: Sequence, split, transform) -> list:
    """Per seed: the relative distance between the complete and the incomplete view's fused
    features [vec(G^L); s] of the same test clips (``probes.feature_gap``)."""
    loader = make_loader(split, 64)
    out = []
    for t in trainers:
        f = []
        for tf in (None, transform):
            ex = t.predict(loader, transform=tf, keep_extras=("global_context", "s"))["extras"]
            f.append(np.concatenate([ex["global_context"].reshape(len(ex["s"]), -1), ex["s"]], 1))
        out.append(float(probes.feature_gap(f[0], f[1])))
    return out


@dataclass
class Study:
    """What ``study`` returns: per regime its protocol, data, runs and measurements."""
    seeds: tuple
    protocols: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def study(base: experiment.Protocol, seeds: Sequence[int] = (1, 2, 3, 4, 5), regimes: Sequence[str] = ("dam", "sta", "gan"),
          workers: int = 2, variants: Optional[dict] = None, lengths: Optional[dict] = None,
          progress: bool = True) -> Study:
    """Train (or load) every regime's runs and measure them on each regime's test split.

    variants: {regime: {label: (model, flags)}} extra runs (e.g. an intervention) trained beside
    the regime's own; their paired gain over the ablation is reported too.
    lengths:  {regime: (text, audio, vision)} to override a regime's clip lengths (CI runs)."""
    variants, lengths = variants or {}, lengths or {}
    st = Study(tuple(int(s) for s in seeds))
    st.metrics["mech_seeds"] = len(st.seeds)
    for name in regimes:
        rg = REGIMES[name]
        p = st.protocols[name] = protocol(rg, base, st.seeds, lengths.get(name))
        data = st.data[name] = experiment.load(p)
        runs = st.runs[name] = experiment.fit_all(jobs(rg, st.seeds, variants.get(name)), p, workers=workers,
                                                  progress=progress)
        test = data["test"]
        tf = experiment.eval_transform(rg.pattern, rg.rate)
        res = st.results[name] = {"gain": paired_gain(runs, rg.without_module, rg.with_module, st.seeds, test, tf)}
        for label in variants.get(name, {}):
            res[f"gain {label}"] = paired_gain(runs, rg.without_module, label, st.seeds, test, tf)
        key = f"mech_{name}"
        st.metrics[f"{key}_gain"] = res["gain"]["diff"]
        st.metrics[f"{key}_gain_ci_low"] = res["gain"]["boot_low"]
        st.metrics[f"{key}_gain_ci_high"] = res["gain"]["boot_high"]
        st.metrics[f"{key}_gain_mde"] = res["gain"]["mde"]
        st.metrics[f"{key}_gain_verdict"] = res["gain"]["verdict"]
        st.metrics[f"{key}_variant"] = "faithful"
        with_runs = [runs[(rg.with_module, s)] for s in st.seeds]
        if name == "dam":
            res["spearman"] = dam_spearman(with_runs, test)
            st.metrics["mech_dam_spearman"] = res["spearman"]["pooled"]
        elif name == "sta":
            st.metrics["mech_sta_audio_frames"] = int(p.lengths[1])      # clip length (valid: 50-100 %)
            st.metrics["mech_sta_vision_frames"] = int(p.lengths[2])
            st.metrics["mech_sta_audio_frames_mean"] = float(np.mean(test.audio_lengths))
            st.metrics["mech_sta_vision_frames_mean"] = float(np.mean(test.vision_lengths))
            occ = {label: occlusion_ratios([runs[(label, s)] for s in st.seeds], test, st.seeds)
                   for label in (rg.with_module, "EMT-DLFR")}
            res["occlusion"] = occ
            ratio = float(np.mean(occ[rg.with_module]) / max(np.mean(occ["EMT-DLFR"]), 1e-12))
            st.metrics["mech_sta_occlusion_vs_backbone"] = ratio
        elif name == "gan":
            gw = feature_gaps(with_runs, test, tf)
            go = feature_gaps([runs[(rg.without_module, s)] for s in st.seeds], test, tf)
            res["gap"] = {"with": gw, "without": go}
            st.metrics["mech_gan_gap_closed_seeds"] = int(sum(a < b for a, b in zip(gw, go)))
            st.metrics["mech_gan_rate"] = rg.rate
    return st


__all__ = ["Regime", "REGIMES", "Study", "study", "protocol", "jobs", "paired_gain", "abs_errors",
           "dam_spearman", "occlusion_ratios", "feature_gaps", "mde"]
