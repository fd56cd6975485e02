"""Classic baselines on the shared Batch/ModelOutput interface (SPEC §3.6).

* LF-DNN (late fusion): each modality is mean-pooled over its valid (and observed) steps,
  passed through its own small MLP, and the three unimodal vectors are concatenated and
  mapped to the prediction.  Williams et al. (2018) use it as the simplest late-fusion
  reference; it is our "does the pipeline learn at all?" model.
* EF-LSTM (early fusion): the three sequences are resampled to the text length, concatenated
  frame by frame and read by one LSTM (Poria et al., 2017 style early fusion).  Real
  unaligned data has different lengths per modality, so each audio/vision sequence is
  averaged into L equal segments of its valid part first.

Both read pre-extracted text features (``batch.text``), as the MMSA toolkit's versions do.
Regression: L1 loss (the field's default for MOSI/MOSEI/SIMS); classification: cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmsa.config import make_config
from mmsa.models import register
from mmsa.types import Batch, ModelOutput


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B,T,D) over positions where mask (B,T) is 1; zeros if none."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def text_features(batch: Batch, text_dim: int) -> torch.Tensor:
    if batch.text is None:
        raise ValueError("this baseline reads pre-extracted text features: batch.text (B, L, Dt) is None")
    if batch.text.shape[-1] != text_dim:
        raise ValueError(f"batch.text has feature dim {batch.text.shape[-1]}, expected text_dim={text_dim} "
                         f"(pass text_dim= to build)")
    return batch.text


def supervised_loss(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes > 1:
        return F.cross_entropy(pred.float(), label.long())
    return F.l1_loss(pred.float(), label.float())


# ----------------------------------------------------------------------------- LF-DNN


@dataclass
class LFDNNConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden_text: int = 128
    hidden_audio: int = 16
    hidden_vision: int = 32
    post_fusion_dim: int = 128
    dropout: float = 0.2
    num_classes: int = 1  # 1 = regression

    PRESETS: ClassVar[dict] = {
        "mosi": dict(text_dim=768, audio_dim=5, vision_dim=20),
        "mosei": dict(text_dim=768, audio_dim=74, vision_dim=35),
        "sims": dict(text_dim=768, audio_dim=33, vision_dim=709),
    }


class SubNet(nn.Sequential):
    """BatchNorm-free unimodal MLP: Linear-ReLU-Dropout-Linear-ReLU."""

    def __init__(self, d_in: int, d_hidden: int, dropout: float):
        super().__init__(nn.LayerNorm(d_in), nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_hidden), nn.ReLU())


class LFDNN(nn.Module):
    def __init__(self, cfg: LFDNNConfig):
        super().__init__()
        self.cfg = cfg
        self.text_net = SubNet(cfg.text_dim, cfg.hidden_text, cfg.dropout)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)
        d = cfg.hidden_text + cfg.hidden_audio + cfg.hidden_vision
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        t = masked_mean(text_features(batch, self.cfg.text_dim), batch.observed("text"))
        a = masked_mean(batch.audio, batch.observed("audio"))
        v = masked_mean(batch.vision, batch.observed("vision"))
        h = torch.cat([self.text_net(t), self.audio_net(a), self.vision_net(v)], dim=-1)
        pred = self.head(h)
        pred = pred.squeeze(-1) if self.cfg.num_classes == 1 else pred
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h})


@register("lf_dnn")
def build_lf_dnn(**config) -> LFDNN:
    return LFDNN(make_config(LFDNNConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- EF-LSTM


@dataclass
class EFLSTMConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden: int = 64
    dropout: float = 0.3
    num_classes: int = 1

    PRESETS: ClassVar[dict] = LFDNNConfig.PRESETS


def segment_average(x: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Average each sequence's valid part x[b, :len_b] into n equal segments -> (B, n, D)."""
    B, T, _ = x.shape
    pos = torch.arange(T, device=x.device)[None].float()  # (1,T)
    seg = torch.floor(pos * n / lengths.clamp(min=1)[:, None].float()).long()  # segment id per step
    valid = pos < lengths[:, None]
    seg = torch.where(valid, seg.clamp(max=n - 1), torch.full_like(seg, n))  # invalid -> bin n
    onehot = F.one_hot(seg, n + 1)[..., :n].to(x.dtype)  # (B,T,n)
    summed = torch.einsum("btn,btd->bnd", onehot, x)
    return summed / onehot.sum(1).clamp(min=1.0).unsqueeze(-1)


class EFLSTM(nn.Module):
    def __init__(self, cfg: EFLSTMConfig):
        super().__init__()
        self.cfg = cfg
        d_in = cfg.text_dim + cfg.audio_dim + cfg.vision_dim
        self.norm = nn.LayerNorm(d_in)
        self.lstm = nn.LSTM(d_in, cfg.hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        text = text_features(batch, self.cfg.text_dim) * batch.observed("text").unsqueeze(-1)
        L = text.shape[1]
        audio = segment_average(batch.audio, batch.lengths("audio"), L)
        vision = segment_average(batch.vision, batch.lengths("vision"), L)
        x = self.norm(torch.cat([text, audio, vision], dim=-1))
        lengths = batch.lengths("text").clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        pred = self.head(h[-1])
        pred = pred.squeeze(-1) if self.cfg.num_classes == 1 else pred
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h[-1]})


@register("ef_lstm")
def build_ef_lstm(**config) -> EFLSTM:
    return EFLSTM(make_config(EFLSTMConfig, config.pop("dataset", None), **config))
