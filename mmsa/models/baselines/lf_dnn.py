"""LF-DNN: late fusion with deep networks (the simplest multimodal reference).

Each modality is summarised on its own, then the three summaries are concatenated:
    z_t = Linear(LSTM(X_t)),   z_a = SubNet(mean_t X_a),   z_v = SubNet(mean_t X_v)
    ŷ   = MLP(Dropout([z_t; z_a; z_v]))
The means run over the valid steps (lengths); a dropped frame is a zero vector and counts, as it
would for any deployed model.  Structure and MOSI sizes follow the reference toolkit's LF-DNN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from mmsa.attention import Dropout
from mmsa.models import register
from mmsa.models.baselines.common import (BaselineConfig, LSTMEncoder, SubNet, build_config, check_av, finish,
                                          lengths_of, mean_valid, supervised_loss, text_encoder)
from mmsa.types import Batch, ModelOutput


@dataclass
class LFDNNConfig(BaselineConfig):
    hidden_text: int = 64                # text LSTM hidden size            (toolkit, MOSI: 128)
    text_out: int = 64                   # z_t size                         (256)
    hidden_audio: int = 16               # z_a size                         (16)
    hidden_vision: int = 32              # z_v size                         (128)
    post_fusion_dim: int = 64            #                                  (128)
    dropout: float = 0.2                 # subnets                          (0.2)
    post_fusion_dropout: Optional[float] = None  # None = dropout           (0.2)

    MMSA: ClassVar[dict] = dict(hidden_text=128, text_out=256, hidden_audio=16, hidden_vision=128,
                                post_fusion_dim=128, dropout=0.2, post_fusion_dropout=0.2)


class LFDNN(nn.Module):
    def __init__(self, cfg: LFDNNConfig):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder(cfg)
        self.text_net = LSTMEncoder(self.text_encoder.dim, cfg.hidden_text, cfg.text_out, cfg.dropout)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)
        d = cfg.text_out + cfg.hidden_audio + cfg.hidden_vision
        p = cfg.dropout if cfg.post_fusion_dropout is None else cfg.post_fusion_dropout
        self.head = nn.Sequential(Dropout(p), nn.Linear(d, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.n_out))

    def forward(self, batch: Batch) -> ModelOutput:
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        zt = self.text_net(text, lengths_of(batch, "text", text.shape[1]))
        za, zv = self.audio_net(mean_valid(batch, "audio")), self.vision_net(mean_valid(batch, "vision"))
        h = torch.cat([zt, za, zv], dim=-1)
        pred = finish(self.head(h), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h, "z_t": zt, "z_a": za, "z_v": zv})


@register("lf_dnn")
def build_lf_dnn(**config) -> LFDNN:
    return LFDNN(build_config(LFDNNConfig, config))
