"""mmsa.probes: occlusion, partial Spearman, feature gap and MMD on hand-checkable cases."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mmsa import probes
from mmsa.data.mmsa_pickle import MSASplit
from mmsa.types import ModelOutput


def tiny_split(N=6, T=10):
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(N, T, 2)).astype(np.float32)
    window = np.stack([np.full(N, 2), np.full(N, 4)], 1)
    arrays = {
        "text": np.zeros((N, 4, 3), np.float32), "text_bert": np.ones((N, 3, 4), np.int64),
        "audio": audio, "vision": rng.normal(size=(N, T, 2)).astype(np.float32),
        "audio_lengths": np.full(N, T), "vision_lengths": np.full(N, T),
        "regression_labels": np.zeros(N, np.float32), "id": np.array([f"s{i}" for i in range(N)]),
        "raw_text": np.array(["x"] * N),
        "truth_cue_window": np.stack([window] * 3, 1), "truth_reliability": np.ones((N, 3), np.float32),
    }
    return MSASplit(arrays, "synth_mosi", "test")


class ReadsSteps(torch.nn.Module):
    """ŷ = sum of the first audio feature over steps [2, 4): it 'found' the cue window."""

    def forward(self, batch):
        return ModelOutput(pred=batch.audio[:, 2:4, 0].sum(1) + 0 * batch.vision.sum((1, 2)))


def test_occlusion_ratio_is_large_for_a_model_that_reads_the_window_and_one_for_a_blind_one():
    split = tiny_split()
    res = probes.occlusion_test(ReadsSteps(), split, modalities=("audio",), seed=0)
    assert res["true"].shape == (6, 1)
    assert np.allclose(res["true"][:, 0], np.abs(split.audio[:, 2:4, 0].sum(1)), atol=1e-6)
    assert np.all(res["random"] == 0)          # random windows never overlap [2, 4) here
    assert res["ratio"] > 1e6

    class Blind(torch.nn.Module):
        def forward(self, batch):
            return ModelOutput(pred=batch.audio.sum((1, 2)))   # any frame counts the same

    blind = probes.occlusion_test(Blind(), split, modalities=("audio",), seed=0)
    assert 0.2 < blind["ratio"] < 5


def test_random_windows_keep_the_length_and_avoid_the_true_window():
    rng = np.random.default_rng(1)
    true = np.array([[2, 5], [0, 8], [3, 4]])
    lengths = np.array([10, 8, 4])
    out = probes.random_windows(true, lengths, rng)
    assert np.all(out[:, 1] - out[:, 0] == true[:, 1] - true[:, 0])
    assert np.all(out[:, 1] <= lengths) and np.all(out[:, 0] >= 0)
    assert out[0, 1] <= 2 or out[0, 0] >= 5                    # room to avoid the true window
    assert tuple(out[1]) == (0, 8)                              # no room: the only window


def test_occlusion_needs_ground_truth():
    split = tiny_split()
    split.truth = {}
    with pytest.raises(ValueError, match="cue windows"):
        probes.occlusion_test(ReadsSteps(), split)


def test_partial_spearman_removes_what_the_covariate_explains():
    rng = np.random.default_rng(0)
    z = rng.normal(size=500)
    x, y = z + 0.3 * rng.normal(size=500), z + 0.3 * rng.normal(size=500)
    assert spearmanr(x, y).statistic > 0.8
    assert abs(probes.partial_spearman(x, y, z)) < 0.15
    assert probes.partial_spearman(x, x, z) == pytest.approx(1.0)
    w = rng.normal(size=500)                                      # independent covariate: no change
    assert probes.partial_spearman(x, y, w) == pytest.approx(spearmanr(x, y).statistic, abs=0.02)


def test_feature_gap_and_mmd_by_hand():
    f_full = np.array([[0.0], [2.0]])
    assert probes.feature_gap(f_full, f_full) == 0.0
    # spread = mean(1, 1) = 1; paired squared distances (1, 0) -> 0.5
    assert probes.feature_gap(f_full, np.array([[1.0], [2.0]])) == pytest.approx(0.5)
    # scale-free
    assert probes.feature_gap(10 * f_full, np.array([[10.0], [20.0]])) == pytest.approx(0.5)
    a = np.random.default_rng(0).normal(size=(40, 3))
    assert probes.mmd2(a, a) == pytest.approx(0.0, abs=1e-12)
    assert probes.mmd2(a, a + 3.0) > 0.3
