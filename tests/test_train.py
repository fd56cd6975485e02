"""Trainer: learning, determinism, exact resume, early stopping, callbacks, param groups, errors."""
import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmsa.models import build
from mmsa.train import Trainer, TrainConfig, param_groups, train_config
from mmsa.types import Batch


class ToySplit(Dataset):
    """A linear problem in MMSA shapes: the label is a noisy linear function of mean features."""

    def __init__(self, n, seed, dims=(8, 3, 4), lengths=(6, 7, 5)):
        g = torch.Generator().manual_seed(seed)
        self.t = torch.randn(n, lengths[0], dims[0], generator=g)
        self.a = torch.randn(n, lengths[1], dims[1], generator=g)
        self.v = torch.randn(n, lengths[2], dims[2], generator=g)
        w = torch.Generator().manual_seed(123)
        score = (self.t.mean(1) @ torch.randn(dims[0], generator=w) + self.a.mean(1) @ torch.randn(dims[1], generator=w))
        self.y = (2 * score / score.std()).clamp(-3, 3)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return i


def collate_factory(split):
    def collate(idx):
        idx = torch.tensor(idx)
        B = len(idx)
        return Batch(text=split.t[idx], audio=split.a[idx], vision=split.v[idx], label=split.y[idx],
                     text_mask=torch.ones(B, split.t.shape[1], dtype=torch.long))
    return collate


def loader(split, shuffle=False, seed=0, bs=16):
    return DataLoader(split, batch_size=bs, shuffle=shuffle, collate_fn=collate_factory(split),
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


@pytest.fixture(scope="module")
def data():
    return ToySplit(96, 0), ToySplit(48, 1), ToySplit(48, 2)


def model(dropout=0.1):
    torch.manual_seed(0)
    return build("lf_dnn", use_text_features=True, text_dim=8, audio_dim=3, vision_dim=4, hidden_text=16,
                 hidden_audio=8, hidden_vision=8, post_fusion_dim=16, dropout=dropout)


def cfg(**kw):
    base = dict(epochs=6, lr=3e-3, progress=False, patience=100, seed=3, metric_dataset="mosi")
    base.update(kw)
    return TrainConfig(**base)


def test_learns_and_is_deterministic(data):
    tr, va, te = data
    results = []
    for _ in range(2):
        t = Trainer(model(), cfg(epochs=40, lr=1e-2))
        hist = t.fit(loader(tr, True), loader(va))
        results.append(t.evaluate(loader(te)))
        assert len(hist) == 40 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert results[0] == results[1]  # same seed -> identical metrics on CPU
    mean_mae = (te.y - tr.y.mean()).abs().mean().item()
    assert results[0]["mae"] < 0.8 * mean_mae


def test_resume_equals_uninterrupted(data, tmp_path):
    tr, va, te = data
    full = Trainer(model(), cfg(out_dir=str(tmp_path / "full")))
    full.fit(loader(tr, True), loader(va))
    ref = full.evaluate(loader(te))
    # "crash" after 3 epochs, then resume from last.pt with a fresh model/trainer
    part = Trainer(model(), cfg(epochs=3, out_dir=str(tmp_path / "part")))
    part.fit(loader(tr, True), loader(va))
    resumed = Trainer(model(), cfg(out_dir=str(tmp_path / "part")))
    resumed.fit(loader(tr, True), loader(va), resume=True)
    assert resumed.evaluate(loader(te)) == ref
    hist = json.loads((tmp_path / "part" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "part" / "best.pt").exists()


def test_early_stopping_and_patience_start(data):
    tr, va, _ = data
    t = Trainer(model(), cfg(epochs=50, lr=0.0 + 1e-12, patience=2))
    hist = t.fit(loader(tr), loader(va))
    assert len(hist) == 3  # best at 1, then two bad epochs
    t = Trainer(model(), cfg(epochs=50, lr=1e-12, patience=2, patience_start_epoch=5))
    assert len(t.fit(loader(tr), loader(va))) == 7


def test_callbacks_called_in_order(data):
    tr, va, _ = data
    calls = []

    class Spy:
        def on_fit_start(self, trainer):
            calls.append("fit")

        def on_epoch_start(self, trainer, epoch):
            calls.append(f"start{epoch}")

        def on_batch_end(self, trainer, batch, out):
            calls.append("batch")

        def on_epoch_end(self, trainer, epoch, logs):
            logs["spy"] = epoch * 10
            calls.append(f"end{epoch}")

    t = Trainer(model(), cfg(epochs=2), callbacks=[Spy()])
    hist = t.fit(loader(tr, bs=48), loader(va))
    assert calls == ["fit", "start1", "batch", "batch", "end1", "start2", "batch", "batch", "end2"]
    assert hist[1]["spy"] == 20


def test_param_groups_bert_lr_and_discriminator_excluded():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = torch.nn.Linear(2, 2)
            self.head = torch.nn.Linear(2, 1)
            self.discriminator = torch.nn.Linear(2, 1)
            self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)

    groups = param_groups(M(), lr=1e-3, bert_lr=5e-5, weight_decay=0.01)
    by = {g["name"]: g for g in groups}
    assert by["bert"]["lr"] == 5e-5 and len(by["bert"]["params"]) == 2
    assert by["model"]["lr"] == 1e-3 and len(by["model"]["params"]) == 2


def test_grad_accumulation_matches_big_batch(data):
    tr, va, _ = data
    a = Trainer(model(0.0), cfg(epochs=1, grad_accum=2))
    a.train_epoch(loader(tr, bs=16), 1)
    b = Trainer(model(0.0), cfg(epochs=1))
    # 96 samples: accumulation over pairs of 16 = 3 steps; big batches of 32 = 3 steps
    b.train_epoch(loader(tr, bs=32), 1)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_bad_config_and_monitor(data):
    with pytest.raises(TypeError, match="valid keys"):
        train_config(epoch=3)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    tr, va, _ = data
    t = Trainer(model(), cfg(epochs=1, monitor="nope"))
    with pytest.raises(KeyError, match="monitor metric 'nope'"):
        t.fit(loader(tr), loader(va))


def test_batch_of_size_one(data):
    tr, va, _ = data
    t = Trainer(model(), cfg(epochs=1))
    t.fit(loader(tr, bs=1), loader(va, bs=1))
    assert "mae" in t.evaluate(loader(va, bs=1))
