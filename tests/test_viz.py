"""mmsa.viz draws (labelled heatmaps, overlays); the measurements it draws come from mmsa.probes
(block geometry, window statistics, the sliding-occlusion map)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmsa import probes, viz  # noqa: E402
from mmsa.types import Batch, ModelOutput  # noqa: E402


def test_block_from_window_matches_the_generator():
    # SynthMSA-3 stores [r0*7 + c0, (r0+bh-1)*7 + c0 + bw): block rows 2-4, columns 1-2
    r0, c0, bh, bw = 2, 1, 3, 2
    start, end = r0 * 7 + c0, (r0 + bh - 1) * 7 + c0 + bw
    assert probes.block_from_window(start, end) == (2, 1, 4, 2)
    mask = probes.block_mask(start, end).reshape(7, 7)
    expected = np.zeros((7, 7), bool)
    expected[2:5, 1:3] = True
    assert (mask == expected).all()


def test_block_from_window_rejects_bad_windows():
    with pytest.raises(ValueError, match="7x7"):
        probes.block_from_window(40, 60)
    with pytest.raises(ValueError, match="not a block"):
        probes.block_from_window(5, 8)   # starts at column 5, ends at column 0 of the next row


def test_mass_and_peak_in_window():
    w = np.array([[0, 1, 3, 0], [2, 0, 0, 2], [0, 0, 0, 0]], float)
    mass = probes.mass_in_window(w, [1, 0, 0], [3, 1, 4])
    assert mass[0] == pytest.approx(1.0) and mass[1] == pytest.approx(0.5) and np.isnan(mass[2])
    assert probes.peak_in_window(w[:2], [2, 1], [3, 4]).tolist() == [True, False]


def test_to_grid_is_relative_time():
    assert viz.to_grid([5, 10], [10, 40], 20).tolist() == [10.0, 5.0]


class OnlyWindow(nn.Module):
    """ŷ = sum of the audio frames 4 and 5 (first feature): depends on one place only."""

    def forward(self, batch):
        return ModelOutput(pred=batch.audio[:, 4:6, 0].sum(1))


def _batch(B=3, T=20):
    audio = torch.ones(B, T, 2)
    return Batch(audio=audio, vision=torch.zeros(B, T, 2), label=torch.zeros(B),
                 audio_lengths=torch.full((B,), T), vision_lengths=torch.full((B,), T))


def test_sliding_occlusion_finds_the_only_window_that_matters():
    res = probes.sliding_occlusion(OnlyWindow(), [_batch()], "audio", n_positions=10, width=0.1)
    assert res["delta"].shape == (3, 10) and res["start"].shape == (3, 10)
    # windows of 2 frames at centres 1, 3, 5, ...: window 2 covers [4, 6) exactly
    assert res["start"][0].tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert res["delta"][0].tolist() == [0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    hits = probes.occlusion_peak_hits(res, np.array([4, 4, 10]), np.array([6, 6, 12]))
    assert hits.tolist() == [True, True, False]
    assert probes.occlusion_chance(res, np.array([4, 4, 4]), np.array([6, 6, 6])).tolist() == [0.1, 0.1, 0.1]


def test_sliding_occlusion_respects_each_clips_length():
    b = _batch()
    b = b.replace(audio_lengths=torch.tensor([20, 10, 10]))
    res = probes.sliding_occlusion(OnlyWindow(), [b], "audio", n_positions=5, width=0.2)
    assert res["lengths"].tolist() == [20, 10, 10]
    assert (res["end"][1:] <= 10).all() and res["end"][0].max() == 20


def test_sliding_occlusion_bad_input():
    with pytest.raises(ValueError, match="audio"):
        probes.sliding_occlusion(OnlyWindow(), [_batch()], "text")
    with pytest.raises(ValueError, match="width"):
        probes.sliding_occlusion(OnlyWindow(), [_batch()], "audio", width=0)


def test_heatmap_labels_and_colour_bar():
    fig, ax = plt.subplots()
    im = viz.heatmap(ax, np.arange(12).reshape(3, 4), xlabel="step", ylabel="clip", cbar_label="weight")
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "clip"
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "weight"
    assert im.get_array().shape == (3, 4)
    viz.overlay_windows(ax, [0, 1, 2], [2, 3, 4])
    viz.overlay_block(ax, 0, 9, grid=7)
    assert len(ax.patches) == 4
    with pytest.raises(ValueError, match="2-D"):
        viz.heatmap(ax, np.arange(3), xlabel="", ylabel="", cbar_label="")
    plt.close(fig)


def test_palette_is_the_books_colour_blind_cycle():
    from mmsa.book import COLORBLIND

    assert viz.palette(12)[:10] == COLORBLIND and viz.palette(12)[10] == COLORBLIND[0]
    assert set(viz.MODALITY_COLORS) == {"text", "audio", "vision"}
