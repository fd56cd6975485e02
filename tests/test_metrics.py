"""mmsa.metrics on tiny hand-worked cases (docs/design.md §5)."""
import math

import numpy as np
import pytest
import torch

from mmsa import metrics
from mmsa.metrics import classification_metrics, format_summary, regression_metrics, summarize

MOSI_KEYS = {"mae", "corr", "acc7", "acc5", "acc3", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"}
SIMS_KEYS = {"mae", "corr", "acc5", "acc3", "acc2", "f1"}


def test_keys_per_dataset_and_synthetic_names():
    p, y = [0.5, -1.0, 2.0], [0.4, -1.2, 1.0]
    for name in ("mosi", "mosei", "synth_mosi", "synth", "MOSI"):
        assert set(regression_metrics(p, y, name)) == MOSI_KEYS
    for name in ("sims", "synth_sims"):
        assert set(regression_metrics(p, y, name)) == SIMS_KEYS
    assert metrics.dataset_rules("synth_sims") == "sims"
    assert metrics.dataset_rules("mosei") == "mosi"


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="valid names.*mosi.*sims"):
        metrics.dataset_rules("iemocap")
    with pytest.raises(ValueError, match="classification_metrics"):
        regression_metrics([0.0], [0.0], "synth3")


def test_round_half_to_even_in_acc7():
    # np.round: 2.5 -> 2, 1.5 -> 2, 0.5 -> 0, -0.5 -> -0 (== 0)
    assert regression_metrics([2.5], [2.0])["acc7"] == 1.0
    assert regression_metrics([2.5], [3.0])["acc7"] == 0.0  # half-up would say 3
    assert regression_metrics([1.5], [2.0])["acc7"] == 1.0
    assert regression_metrics([0.5, -0.5], [0.0, 0.0])["acc7"] == 1.0
    assert regression_metrics([0.5], [1.0])["acc7"] == 0.0


def test_clipping_for_acc7_acc5_acc3_but_not_mae():
    m = regression_metrics([5.0, -4.0], [3.0, -3.0])
    assert m["mae"] == pytest.approx(1.5)  # (2 + 1) / 2: MAE is unclipped
    assert m["acc7"] == 1.0  # both clipped onto +-3
    # 1.7 vs 0.6: acc7 round 2 vs 1 (miss); acc5 clip [-2,2] -> 2 vs 1 (miss); acc3 clip [-1,1] -> 1 vs 1 (hit)
    m = regression_metrics([1.7], [0.6])
    assert (m["acc7"], m["acc5"], m["acc3"]) == (0.0, 0.0, 1.0)
    # -3.6 vs -3.0: unclipped np.round(-3.6) = -4 would miss; clipped to -3 it hits
    assert regression_metrics([-3.6], [-3.0])["acc7"] == 1.0
    assert regression_metrics([2.6], [2.4])["acc5"] == 1.0  # 2 vs 2 after clipping
    assert regression_metrics([2.6], [2.4])["acc7"] == 0.0  # 3 vs 2 unclipped within [-3, 3]


def test_has0_versus_non0_and_weighted_f1_by_hand():
    label = [0.0, 0.0, 1.0, -1.0]
    pred = [0.0, -0.2, 0.5, -0.3]
    m = regression_metrics(pred, label)
    # has0: truth >= 0 -> T T T F, pred >= 0 -> T F T F: 3 of 4
    assert m["acc2_has0"] == pytest.approx(0.75)
    # weighted F1 by hand: class T: P=2/2, R=2/3, F1=0.8 (support 3);
    # class F: P=1/2, R=1/1, F1=2/3 (support 1) -> (3*0.8 + 2/3) / 4
    assert m["f1_has0"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)
    # non0: the two zero labels are dropped; T F vs T F
    assert m["acc2_non0"] == 1.0 and m["f1_non0"] == 1.0


def test_non0_undefined_when_all_labels_zero():
    m = regression_metrics([0.3, -0.2], [0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert m["acc2_has0"] == 0.5


def test_corr_by_hand_and_constant_prediction_is_nan():
    # centred p = [-1,0,1], y = [-4/3,-1/3,5/3]: sum p*y = 3, |p|^2 = 2, |y|^2 = 42/9
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["corr"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    const = regression_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert math.isnan(const["corr"])
    assert const["mae"] == pytest.approx((0.5 + 1.5 + 1.5) / 3)
    assert math.isnan(regression_metrics([0.1, 0.2], [0.3, 0.3], "sims")["corr"])


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(0)
    p, y = rng.uniform(-3, 3, 20), np.round(rng.uniform(-3, 3, 20), 1)
    a = regression_metrics(p, y)
    b = regression_metrics(torch.tensor(p), torch.tensor(y).view(-1, 1))
    for k in a:
        assert a[k] == pytest.approx(b[k])
    with pytest.raises(ValueError, match="same number of elements"):
        regression_metrics([1.0, 2.0], [1.0])


def test_sims_bin_edges_each_cut():
    x = np.array([-1.0, -0.7, -0.69, -0.1, -0.09, 0.1, 0.11, 0.7, 0.71, 1.0])
    assert metrics.sims_bin(x, metrics.SIMS_BINS["acc5"]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    x3 = np.array([-1.0, -0.1, -0.09, 0.1, 0.11, 1.0])
    assert metrics.sims_bin(x3, metrics.SIMS_BINS["acc3"]).tolist() == [0, 0, 1, 1, 2, 2]
    x2 = np.array([-1.0, 0.0, 0.01, 1.0])
    assert metrics.sims_bin(x2, metrics.SIMS_BINS["acc2"]).tolist() == [0, 0, 1, 1]
    # float32 0.1 lies on the cut, as in the public float32 code: (-0.1, 0.1] -> class 1
    assert metrics.sims_bin(np.array([0.1, -0.1, 0.7], np.float32), (-0.1, 0.1)).tolist() == [1, 0, 2]


def test_sims_accuracies_by_hand():
    pred = [0.0, 0.1, -0.1, 0.7]
    label = [0.01, 0.11, -0.09, 0.71]
    m = regression_metrics(pred, label, "sims")
    # acc2: 0 | 0.01 differ; the other three agree
    assert m["acc2"] == pytest.approx(0.75)
    # acc3: 0~0.01 agree (middle); 0.1|0.11 and -0.1|-0.09 straddle a cut; 0.7~0.71 agree
    assert m["acc3"] == pytest.approx(0.5)
    # acc5: only 0~0.01 agree
    assert m["acc5"] == pytest.approx(0.25)
    # 2-class: truth 1 1 0 1, pred 0 1 0 1 -> class 1: P=1, R=2/3, F1=0.8 (3); class 0: P=1/2, R=1, F1=2/3 (1)
    assert m["f1"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)


def test_sims_clips_both_before_everything():
    m = regression_metrics([1.5, -2.0], [1.0, -1.0], "sims")
    assert m["mae"] == 0.0 and m["acc5"] == 1.0


def test_classification_by_hand():
    # argmax predictions 0, 1, 2, 0 for labels 0, 1, 2, 1
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    m = classification_metrics(probs, [0, 1, 2, 1])
    assert m["acc"] == pytest.approx(0.75)
    # class 0: P 1/2 R 1 (support 1); class 1: P 1 R 1/2 (support 2); class 2: P 1 R 1 (support 1)
    assert m["precision"] == pytest.approx((0.5 + 2 * 1 + 1) / 4)
    assert m["recall"] == pytest.approx((1 + 2 * 0.5 + 1) / 4)
    assert m["f1"] == pytest.approx((2 / 3 + 2 * 2 / 3 + 1) / 4)
    assert set(m) == {"acc", "precision", "recall", "f1", "auroc"}


def test_auroc_tiny_cases():
    # binary: scores 0.1 0.4 | 0.35 0.8 -> pairs (pos>neg): 0.35>0.1, 0.8>0.1, 0.8>0.4 = 3/4
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(np.stack([1 - p1, p1], 1), [0, 0, 1, 1])
    assert m["auroc"] == pytest.approx(0.75)
    # three perfectly separated classes -> every one-vs-rest curve has area 1
    probs = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    assert classification_metrics(probs, [0, 1, 2, 2])["auroc"] == pytest.approx(1.0)
    # a class absent from the labels -> nan
    assert math.isnan(classification_metrics(probs[:2], [0, 1])["auroc"])


def test_logits_are_softmaxed():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0], [-2.0, 0.0, 4.0], [1.0, 0.9, -3.0]])
    labels = torch.tensor([0, 1, 2, 1])
    a = classification_metrics(logits, labels)
    b = classification_metrics(torch.softmax(logits, -1), labels)
    assert a == pytest.approx(b)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        classification_metrics(np.zeros(4), labels)


def test_summarize_mean_std_and_format():
    runs = [{"mae": 1.0, "acc2_has0": 0.5, "note": "x"}, {"mae": 3.0, "acc2_has0": 0.7, "note": "y"}]
    s = summarize(runs)
    assert set(s) == {"mae", "acc2_has0"}  # non-numeric keys skipped
    assert s["mae"] == pytest.approx((2.0, 1.0))  # population std (ddof=0)
    assert summarize(runs, ddof=1)["mae"][1] == pytest.approx(math.sqrt(2.0))
    assert summarize([{"mae": 0.7}])["mae"] == (0.7, 0.0)
    f = format_summary(s)
    assert f["mae"] == "2.000 ± 1.000"
    assert f["acc2_has0"] == "60.00 ± 10.00"
    assert format_summary(s, keys=["mae"], percent=True) == {"mae": "200.00 ± 100.00"}
    with pytest.raises(KeyError, match="available"):
        format_summary(s, keys=["acc7"])


def test_metric_direction():
    assert metrics.metric_direction("mae") == "min"
    assert metrics.metric_direction("valid_loss") == "min"
    for name in ("corr", "acc7", "f1_non0", "auroc", "acc"):
        assert metrics.metric_direction(name) == "max"
