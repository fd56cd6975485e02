"""mmsa.efficiency: parameter counts, synthetic batches, a timed training step that really trains,
interleaved timing, epoch extrapolation."""
import pytest
import torch
from torch import nn

from mmsa import efficiency as ef
from mmsa.types import ModelOutput


class Tiny(nn.Module):
    """A regression model with one training-only module (prefix "projector.")."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 1)
        self.projector = nn.Linear(2, 3)

    def forward(self, batch):
        x = batch.audio.mean(1)
        pred = self.head(x).squeeze(-1)
        loss = (pred - batch.label).abs().mean() + 0 * self.projector(x).sum()
        return ModelOutput(pred=pred, losses={"task": loss})


def test_parameters_split_training_only_modules():
    counts = ef.parameters(Tiny())
    assert counts == {"total": 3 + 9, "trainable": 12, "inference": 3, "training_only": 9}


def test_synthetic_batch_shapes_lengths_and_missing_view():
    b = ef.synthetic_batch(4, lengths=(20, 30, 40), dims=(16, 5, 7), seed=1)
    assert b.text.shape == (4, 20, 16) and b.audio.shape == (4, 30, 5) and b.vision.shape == (4, 40, 7)
    assert b.text_ids.shape == (4, 20) and (b.text_ids[:, 0] == 101).all()
    assert ((b.audio_lengths >= 15) & (b.audio_lengths <= 30)).all()
    assert b.full is not None and b.label.dtype == torch.float32
    again = ef.synthetic_batch(4, lengths=(20, 30, 40), dims=(16, 5, 7), seed=1)
    assert torch.equal(b.audio, again.audio)
    c = ef.synthetic_batch(3, lengths=(20, 30, 49), dims=(16, 5, 7), classes=3, missing_rate=0)
    assert c.label.dtype == torch.long and (c.vision_lengths == 49).all() and c.full is None
    with pytest.raises(ValueError, match="batch_size"):
        ef.synthetic_batch(0)


def test_train_step_updates_the_weights_and_is_timed():
    torch.manual_seed(0)
    model = Tiny()
    before = model.head.weight.detach().clone()
    batch = ef.synthetic_batch(4, lengths=(20, 10, 10), dims=(8, 2, 2), missing_rate=0)
    res = ef.train_step_time(model, batch, steps=2, warmup=1, memory=False)
    assert len(res["times"]) == 2 and res["seconds"] > 0 and res["batch_size"] == 4
    assert not torch.equal(before, model.head.weight)          # Adam stepped
    trained = [p for g in ef.timing_trainer(model).optimizer.param_groups for p in g["params"]]
    assert any(p is model.projector.weight for p in trained)   # training-only modules are trained too
    step = ef.train_step(model, batch)
    assert step.batch.size == 4 and step.model is model        # notebook 10 reads the step's batch size


def test_inference_latency_and_interleaving():
    model = Tiny()
    batch = ef.synthetic_batch(2, lengths=(20, 10, 10), dims=(8, 2, 2), missing_rate=0)
    res = ef.inference_latency(model, batch, repeats=5, warmup=1)
    assert res["per_sample"] == pytest.approx(res["seconds"] / 2) and res["p95"] >= min(res["times"])
    calls = {"a": ef.inference_call(model, batch), "b": ef.train_step(Tiny(), batch)}
    times = ef.time_interleaved(calls, repeats=3, warmup=0)
    assert set(times) == {"a", "b"} and all(len(t) == 3 for t in times.values())


def test_p95_and_epoch_extrapolation():
    assert ef.p95([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 10
    assert ef.p95([3.0]) == 3.0
    assert ef.epoch_seconds(2.0, 8, 1284) == pytest.approx(321.0)


def test_peak_memory_sees_a_large_allocation():
    peak = ef.peak_memory_mib(lambda: torch.ones(64, 1024, 1024).sum())   # 256 MiB
    if peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert peak > 150


def test_paper_config_of_the_dast_gan_is_the_mosi_preset():
    from mmsa.models import build

    cfg = ef.paper_config("dast_gan")
    model = build("dast_gan", **cfg)
    assert model.cfg.d_model == 128 and model.cfg.text_dim == 768
    assert ef.paper_config("cmsta_cg") == {"dataset": "tess_mvsa"}
    counts = ef.parameters(model)
    assert 0 < counts["inference"] < counts["total"]             # the discriminator & DLFR heads are left out
