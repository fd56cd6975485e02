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


def grid_split(N=8):
    """SynthMSA-3-like: a 7x7 image grid (49 steps) whose cue block is rows 1-2, cols 3-4."""
    rng = np.random.default_rng(0)
    window = np.stack([np.full(N, 1 * 7 + 3), np.full(N, 2 * 7 + 4 + 1)], 1)
    arrays = {
        "text": np.zeros((N, 4, 3), np.float32), "text_bert": np.ones((N, 3, 4), np.int64),
        "audio": rng.normal(size=(N, 5, 2)).astype(np.float32),
        "vision": rng.normal(size=(N, 49, 2)).astype(np.float32),
        "audio_lengths": np.full(N, 5), "vision_lengths": np.full(N, 49),
        "regression_labels": np.zeros(N, np.float32), "classification_labels": np.arange(N) % 3,
        "id": np.array([f"s{i}" for i in range(N)]), "raw_text": np.array(["x"] * N),
        "truth_cue_window": np.stack([window] * 3, 1), "truth_reliability": np.ones((N, 3), np.float32),
    }
    return MSASplit(arrays, "synth3", "test")


BLOCK = [7 + 3, 7 + 4, 14 + 3, 14 + 4]


def test_random_blocks_keep_the_shape_and_overlap_the_true_block_as_little_as_the_grid_allows():
    from mmsa.probes import block_from_window, block_mask

    rng = np.random.default_rng(0)
    true = np.array([[10, 19], [0, 17], [32, 49], [16, 33]])  # 2x2 at (1,3); 3x3 at (0,0), (4,4), (2,2)
    for _ in range(5):
        out = probes.random_blocks(true, rng)
        shared = []
        for (s, e), (s2, e2) in zip(true, out):
            a, b = block_from_window(s, e), block_from_window(s2, e2)
            assert (a[2] - a[0], a[3] - a[1]) == (b[2] - b[0], b[3] - b[1])
            shared.append(int(np.sum(block_mask(s, e) & block_mask(s2, e2))))
        # the centre 3x3 block: every 3x3 block of a 7x7 grid shares rows and columns with it;
        # the least is one corner patch
        assert shared == [0, 0, 0, 1]


def test_block_occlusion_separates_a_model_that_reads_the_block_from_one_that_pools_the_grid():
    class ReadsBlock(torch.nn.Module):       # logits from the cue block's patches only
        def forward(self, batch):
            v = batch.vision[:, BLOCK, 0].sum(1)
            return ModelOutput(pred=torch.stack([v, -v, 0 * v], -1))

    class Pools(torch.nn.Module):            # logits from the mean of every patch
        def forward(self, batch):
            v = 10 * batch.vision[..., 0].mean(1)
            return ModelOutput(pred=torch.stack([v, -v, 0 * v], -1))

    split = grid_split()
    res = probes.block_occlusion_test(ReadsBlock(), split, seed=0)
    assert res["true"].shape == (8,) and np.all(res["random"] == 0) and res["ratio"] > 1e6
    v = split.vision[:, BLOCK, 0].sum(1)                     # by hand: softmax of (v, -v, 0) vs (0, 0, 0)
    p = np.exp(np.stack([v, -v, 0 * v], -1))
    p /= p.sum(-1, keepdims=True)
    assert np.allclose(res["true"], 0.5 * np.abs(p - 1 / 3).sum(-1), atol=1e-6)
    acc = res["accuracy"]
    assert acc["complete"] == acc["random block zeroed"] == np.mean(p.argmax(-1) == np.arange(8) % 3)
    pooled = probes.block_occlusion_test(Pools(), split, seed=0)
    assert 0.2 < pooled["ratio"] < 5


def test_block_occlusion_needs_the_grid_and_the_ground_truth():
    split = grid_split()
    split.truth = {}
    with pytest.raises(ValueError, match="cue blocks"):
        probes.block_occlusion_test(ReadsSteps(), split)
    with pytest.raises(ValueError, match="7x7 patch grid"):
        probes.block_occlusion_test(ReadsSteps(), tiny_split())


def test_uniform_attention_makes_every_query_average_the_valid_keys_and_leaves_the_model_alone():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cross = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.other = torch.nn.MultiheadAttention(8, 2, batch_first=True)

    net = Net()
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    flat = probes.uniform_attention(net, ["cross"])
    _, w = flat.cross(q, kv, kv, key_padding_mask=pad, average_attn_weights=False)
    valid = (~pad).float()
    expected = (valid / valid.sum(1, keepdim=True))[:, None, None, :].expand_as(w)
    torch.testing.assert_close(w, expected)
    _, w0 = net.cross(q, kv, kv, key_padding_mask=pad)
    assert not torch.allclose(w0, expected[:, 0])                 # the original still attends
    torch.testing.assert_close(flat.other.in_proj_weight, net.other.in_proj_weight)   # not chosen: unchanged
    torch.testing.assert_close(flat.cross.in_proj_weight[8:], net.cross.in_proj_weight[8:])  # keys, values kept
    with pytest.raises(ValueError, match="no nn.MultiheadAttention"):
        probes.uniform_attention(net, ["missing"])
