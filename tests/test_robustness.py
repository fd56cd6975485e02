"""mmsa.robustness: shared masks (equal to experiment.evaluate's), dropped fractions, AUILC and
rate-averaged tables on hand-made curves, the paired difference's intervals by hand, plots."""
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mmsa import experiment, robustness
from mmsa.data import load_features
from mmsa.train import Trainer, TrainConfig
from mmsa.types import ModelOutput

from test_data import mosi_like


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """90 test samples: two MOSI-like halves (mosi_like makes at most 45), so two batches of 64."""
    path = tmp_path_factory.mktemp("rob") / "unaligned_50.pkl"
    a, b = (mosi_like(seed=s, sizes={"train": 4, "valid": 4, "test": 45}) for s in (5, 6))
    test = {k: (np.concatenate([v, b["test"][k]]) if isinstance(v, np.ndarray) else list(v) + list(b["test"][k]))
            for k, v in a["test"].items()}
    test["id"] = np.array([f"vid{i}$_${i}" for i in range(90)])
    with open(path, "wb") as f:
        pickle.dump({**a, "test": test}, f)
    return load_features(path, "mosi", verbose=False)["test"]


class Probe(nn.Module):
    """Predicts from what survives the masks: mean audio/vision features and the share of [UNK]."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([scale, -scale, 2.0 * scale]))

    def forward(self, batch):
        unk = (batch.text_ids == 100).float().sum(1) / batch.text_mask.float().sum(1)
        x = torch.stack([batch.audio.mean((1, 2)), batch.vision.mean((1, 2)), unk], 1)
        pred = x @ self.w
        return ModelOutput(pred=pred, losses={"task": (pred - batch.label).abs().mean()})


def trainer(scale):
    return Trainer(Probe(scale), TrainConfig(progress=False, device="cpu"))


def test_rate_key():
    assert [robustness.rate_key(r) for r in (0, 0.0, 0.5, 0.9, 1)] == ["0.0", "0.0", "0.5", "0.9", "1.0"]
    assert robustness.rate_key(0.25) == "0.25"


def test_masks_equal_experiment_evaluate_and_shared_by_models(split):
    rates = [0.0, 0.5, 0.9]
    sets = robustness.masked_sets(split, ["random", "burst", "modality"], rates)
    runs = {("a", 1): trainer(1.0), ("b", 1): trainer(-0.5)}
    res = robustness.sweep(runs, sets, "mosi", progress=False)
    p = experiment.Protocol()
    for label in ("a", "b"):
        for pattern in ("random", "burst", "modality"):
            for rate in rates:
                ours = res.curves.query("model == @label and pattern == @pattern and rate == @rate")["mae"]
                ref = experiment.evaluate(runs[(label, 1)], split, p, pattern, rate)["mae"]
                assert len(ours) == 1 and ours.iloc[0] == pytest.approx(ref, abs=1e-12)
    # rate 0 is the complete set, evaluated once and reported for every pattern
    zero = res.curves[(res.curves["rate"] == 0) & (res.curves["model"] == "a")]["mae"].to_numpy()
    assert len(zero) == 3 and np.ptp(zero) == 0
    assert sets[("random", 0.0)] is sets[robustness.COMPLETE]
    # both models read the very same masked batches
    assert len({id(b) for b in sets[("burst", 0.5)]}) == len(sets[("burst", 0.5)])
    err = res.errors("a", [1], "burst", 0.5)
    assert err.shape == (1, len(split))
    assert err.mean() == pytest.approx(res.curves.query("model == 'a' and pattern == 'burst' and rate == 0.5")["mae"].iloc[0])


def test_dropped_fraction(split):
    sets = robustness.masked_sets(split, ["random", "modality"], [0.0, 0.5, 1.0])
    d = robustness.dropped_fraction(sets).set_index(["pattern", "rate", "modality"])
    assert (d.xs(0.0, level="rate")["dropped"] == 0).all()
    assert d.loc[("random", 0.5, "audio"), "dropped"] == pytest.approx(0.5, abs=0.03)
    assert d.loc[("random", 1.0, "vision"), "dropped"] == 1.0
    # text keeps [CLS] and [SEP]: at rate 1 every word is gone, but not every valid position
    assert d.loc[("random", 1.0, "text"), "samples_all_gone"] == 1.0
    assert d.loc[("random", 1.0, "text"), "dropped"] < 1.0
    # modality-wise at rate 1: every sample keeps exactly one of its three modalities
    gone = d.xs(("modality", 1.0), level=("pattern", "rate"))["samples_all_gone"]
    assert gone.sum() == pytest.approx(2.0)


def test_bad_input(split):
    with pytest.raises(ValueError, match="unknown missing pattern 'holes'"):
        robustness.masked_sets(split, ["holes"], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        robustness.masked_sets(split, ["random"], [1.5])
    with pytest.raises(ValueError, match="equal shapes"):
        robustness.paired_difference(np.zeros((3, 4)), np.zeros((2, 4)))


def _curves():
    rows = []
    # model A: seed 1 falls linearly 1 -> 0 (area 0.5), seed 2 is flat at 1 (area 1); B flat 2 / 4
    for seed, vals in ((1, [1.0, 0.5, 0.0]), (2, [1.0, 1.0, 1.0])):
        for r, v in zip([0.0, 0.5, 1.0], vals):
            rows.append({"model": "A", "seed": seed, "pattern": "random", "rate": r, "mae": v, "corr": 2 * v})
    for seed, v in ((1, 2.0), (2, 4.0)):
        for r in (0.0, 0.5, 1.0):
            rows.append({"model": "B", "seed": seed, "pattern": "random", "rate": r, "mae": v, "corr": 0.0})
            rows.append({"model": "B", "seed": seed, "pattern": "burst", "rate": r, "mae": v + r, "corr": 0.0})
    return pd.DataFrame(rows)


def test_auilc_table_by_hand():
    t = robustness.auilc_table(_curves(), "mae")
    assert list(t.columns.get_level_values(0).unique()) == ["random", "burst"]
    assert t.loc["A", ("random", "mean")] == pytest.approx(0.75)
    assert t.loc["A", ("random", "std")] == pytest.approx(0.25)        # population std of (0.5, 1.0)
    assert t.loc["B", ("random", "mean")] == pytest.approx(3.0)
    assert t.loc["B", ("burst", "mean")] == pytest.approx(3.5)         # area of v + r over [0, 1] = v + 0.5
    assert math.isnan(t.loc["A", ("burst", "mean")])                   # A has no burst curve


def test_mean_over_rates_and_curve_dict():
    c = _curves()
    t = robustness.mean_over_rates(c, ["mae", "corr"], "random")
    assert t.loc["A", "mae"] == pytest.approx((0.5 + 1.0) / 2)
    assert t.loc["A", "corr_std"] == pytest.approx(0.5)
    assert robustness.mean_over_rates(c, ["mae"], "random", rates=[0.5, 1.0]).loc["A", "mae"] == pytest.approx(
        (0.25 + 1.0) / 2)
    d = robustness.curve_dict(c, "mae")
    assert d["A"]["random"] == {"0.0": 1.0, "0.5": 0.75, "1.0": 0.5}
    assert set(d["B"]) == {"random", "burst"}


def test_paired_difference_by_hand():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 2, size=(3, 200))
    shift = np.array([[0.1], [0.2], [0.3]])
    out = robustness.paired_difference(b + shift, b, n_boot=500)
    assert out["diff"] == pytest.approx(0.2)
    assert out["per_seed"] == pytest.approx([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)                      # t_{0.975, 2} * sd / sqrt(3)
    assert (out["t_low"], out["t_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert 0.1 <= out["boot_low"] <= out["boot_high"] <= 0.3
    assert out["within_noise"] is False
    same = robustness.paired_difference(b, b, n_boot=200)
    assert same["diff"] == 0 and same["within_noise"] is True
    noisy = robustness.paired_difference(b, b + rng.normal(0, 0.5, size=b.shape), n_boot=500)
    assert noisy["boot_low"] < 0 < noisy["boot_high"] and noisy["within_noise"] is True
    one = robustness.paired_difference(b[:1] + 0.1, b[:1], n_boot=200)
    assert math.isnan(one["t_low"]) and one["boot_low"] == pytest.approx(0.1)


def test_constant_metrics_and_plot():
    m = robustness.constant_metrics([1.0, 1.0, 1.0], [0.0, 2.0, 3.0], "mosi")
    assert m["mae"] == pytest.approx((1 + 1 + 2) / 3)
    import matplotlib

    matplotlib.use("Agg")
    fig = robustness.plot_curves(_curves(), "mae", "MAE", reference=1.5)
    assert len(fig.axes) == 2
    names = fig.legends[0].get_texts()
    assert [t.get_text() for t in names] == ["A", "B", "constant predictor"]
    styles = robustness.model_styles([f"m{i}" for i in range(11)])
    assert len({(s["color"], s["marker"], s["ls"]) for s in styles.values()}) == 11
    fig = robustness.plot_curves(_curves(), "mae", "MAE", reference=1.5, highlight=["B"], names={"B": "Bee"})
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:2] == ["Bee", "constant predictor"] and texts[2].startswith("1 other models (grey)")


def test_auilc_errors_average_to_the_auilc_of_the_mae(split):
    sets = robustness.masked_sets(split, ["burst"], [0.0, 0.3, 0.9])
    res = robustness.sweep({("a", 1): trainer(1.0), ("a", 2): trainer(0.7)}, sets, "mosi", progress=False)
    per_sample = res.auilc_errors("a", [1, 2], "burst")
    assert per_sample.shape == (2, len(split))
    areas = robustness.auilc_per_seed(res.curves, "mae").set_index("seed")["auilc"]
    assert per_sample.mean(1) == pytest.approx([areas[1], areas[2]], abs=1e-12)


def test_format_and_first_rate_above():
    c = _curves()
    shown = robustness.format_mean_std(robustness.auilc_table(c, "mae"), 2)
    assert shown.loc["A", "random"] == "0.75 ± 0.25" and shown.loc["A", "burst"] == "–"
    first = robustness.first_rate_above(c, "mae", 2.9)
    assert first.loc["B", "random"] == 0.0          # mean of seeds 2 and 4 = 3 > 2.9 from rate 0
    assert first.loc["B", "burst"] == 0.0
    assert math.isnan(first.loc["A", "random"])     # A never exceeds 2.9
    first = robustness.first_rate_above(c, "mae", 3.2)
    assert first.loc["B", "burst"] == 0.5 and math.isnan(first.loc["B", "random"])


def test_in_cache_and_run_table(tmp_path, split):
    p = experiment.Protocol()
    data = {"train": split, "valid": split, "test": split}
    jobs = [("plain", "lf_dnn", 1, {}), ("wide", "lf_dnn", 1, {"hidden_text": 8})]
    assert robustness.in_cache(jobs, p, data, root=str(tmp_path)) == {("plain", 1): False, ("wide", 1): False}
    config, train = experiment.model_config("lf_dnn", data, hidden_text=8)
    done = experiment.run_dir("lf_dnn", p, 1, config, train, str(tmp_path)) / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    assert robustness.in_cache(jobs, p, data, root=str(tmp_path)) == {("plain", 1): False, ("wide", 1): True}
    tr = trainer(1.0)
    tr.history = [{"epoch": 1, "train_seconds": 2.0, "valid_mae": 1.5}, {"epoch": 2, "train_seconds": 4.0, "valid_mae": 1.2}]
    tr.best_epoch = 2
    row = robustness.run_table({("a", 1): tr}, {("a", 1): True}).iloc[0]
    assert (row["epochs run"], row["best epoch"], row["best valid MAE"], row["train s"], row["s / epoch"]) == (
        2, 2, 1.2, 6.0, 3.0)
    assert bool(row["from cache"]) is True
