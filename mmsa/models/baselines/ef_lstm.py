"""EF-LSTM: early fusion, one LSTM over the frame-wise concatenation of the three modalities.

    x_i = LN([X_t[i]; Ā[i]; V̄[i]]),   h = LSTM(x_1 … x_n),   ŷ = MLP(h_n)
Real (unaligned) data has different lengths per modality, so the valid part of each audio/vision
sequence is first averaged into as many equal segments as the sentence has tokens (Ā, V̄); the
reference toolkit trains EF-LSTM on word-aligned features instead.  Its MOSI sizes: 4 layers of
128 units, dropout 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmsa.attention import Dropout
from mmsa.models import register
from mmsa.models.baselines.common import (BaselineConfig, build_config, check_av, finish, lengths_of, rnn_last,
                                          supervised_loss, text_encoder)
from mmsa.types import Batch, ModelOutput


@dataclass
class EFLSTMConfig(BaselineConfig):
    hidden: int = 64         # LSTM units       (toolkit, MOSI: 128)
    layers: int = 1          # stacked LSTMs    (4)
    dropout: float = 0.3     #                  (0.5)

    MMSA: ClassVar[dict] = dict(hidden=128, layers=4, dropout=0.5)


def segment_average(x: torch.Tensor, lengths: torch.Tensor, n: torch.Tensor, width: int) -> torch.Tensor:
    """Average the valid part x[b, :lengths_b] into n_b equal segments -> (B, width, D), zeros after n_b."""
    B, T, _ = x.shape
    pos = torch.arange(T, device=x.device)[None].float()  # (1,T)
    seg = torch.floor(pos * n[:, None].float() / lengths[:, None].float()).long()  # segment of each step
    seg = torch.minimum(seg, n[:, None] - 1)
    seg = torch.where(pos < lengths[:, None], seg, torch.full_like(seg, width))  # padding -> extra bin
    onehot = F.one_hot(seg, width + 1)[..., :width].to(x.dtype)  # (B,T,width)
    summed = torch.einsum("btn,btd->bnd", onehot, x)
    return summed / onehot.sum(1).clamp(min=1.0).unsqueeze(-1)


class EFLSTM(nn.Module):
    def __init__(self, cfg: EFLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder(cfg)
        d_in = self.text_encoder.dim + cfg.audio_dim + cfg.vision_dim
        self.norm = nn.LayerNorm(d_in)
        # the stacked LSTM, one module per layer with dropout between layers (nn.LSTM(num_layers=…,
        # dropout=…) computes the same, but draws its masks with the slower bernoulli_)
        self.lstm = nn.ModuleList(nn.LSTM(d_in if i == 0 else cfg.hidden, cfg.hidden, batch_first=True)
                                  for i in range(cfg.layers))
        self.between = Dropout(cfg.dropout)
        self.head = nn.Sequential(Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                  Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.n_out))

    def forward(self, batch: Batch) -> ModelOutput:
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        L = text.shape[1]
        n = lengths_of(batch, "text", L)
        audio = segment_average(batch.audio, lengths_of(batch, "audio", batch.audio.shape[1]), n, L)
        vision = segment_average(batch.vision, lengths_of(batch, "vision", batch.vision.shape[1]), n, L)
        x = self.norm(torch.cat([text, audio, vision], dim=-1))
        for i, lstm in enumerate(self.lstm):   # h: the last layer's state at each sentence's last token
            x, h = rnn_last(lstm, self.between(x) if i else x, n)
        pred = finish(self.head(h), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h})


@register("ef_lstm")
def build_ef_lstm(**config) -> EFLSTM:
    return EFLSTM(build_config(EFLSTMConfig, config))
