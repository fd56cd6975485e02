"""TFN and LMF: fusion by (low-rank) outer products of the three utterance vectors.

Both share the unimodal subnets of the reference toolkit: text = LSTM over the token states ->
Linear (z_t); audio / vision = mean over the valid steps -> SubNet (z_a, z_v).
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


def with_one(z: torch.Tensor) -> torch.Tensor:
    """[z; 1]"""
    return torch.cat([z, torch.ones_like(z[:, :1])], dim=-1)


class UnimodalSubnets(nn.Module):
    """z_t = Linear(LSTM(X_t)),  z_a = SubNet(mean X_a),  z_v = SubNet(mean X_v)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder(cfg)
        self.text_net = LSTMEncoder(self.text_encoder.dim, cfg.hidden_text, cfg.text_out, cfg.dropout)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)

    def forward(self, batch: Batch):
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        zt = self.text_net(text, lengths_of(batch, "text", text.shape[1]))
        return zt, self.audio_net(mean_valid(batch, "audio")), self.vision_net(mean_valid(batch, "vision"))


# ----------------------------------------------------------------------------- TFN


@dataclass
class TFNConfig(BaselineConfig):
    hidden_text: int = 64        # text LSTM hidden size      (toolkit, MOSI: 128)
    text_out: int = 32           # d_t                        (32)
    hidden_audio: int = 16       # d_a                        (32)
    hidden_vision: int = 16      # d_v                        (128)
    post_fusion_dim: int = 64    #                            (64)
    dropout: float = 0.2         # subnets                    (0.3)
    post_fusion_dropout: Optional[float] = None  # None = dropout (0.5)

    MMSA: ClassVar[dict] = dict(hidden_text=128, text_out=32, hidden_audio=32, hidden_vision=128,
                                post_fusion_dim=64, dropout=0.3, post_fusion_dropout=0.5)


class TFN(nn.Module):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017).

    The one idea: model unimodal, bimodal and trimodal interactions at once with the outer
    product of the three unimodal vectors, each extended by a constant 1 (tensor fusion):
        z^m = [z_t; 1] ⊗ [z_a; 1] ⊗ [z_v; 1]   in R^{(d_t+1)(d_a+1)(d_v+1)}
    The 1s keep copies of every unimodal vector and every bimodal product inside z^m, which a
    3-layer MLP maps to the prediction.  (The toolkit squashes the regression output into
    [-3, 3] with a scaled sigmoid; we keep it linear, like every other model of the book.)
    """

    def __init__(self, cfg: TFNConfig):
        super().__init__()
        self.cfg = cfg
        self.subnets = UnimodalSubnets(cfg)
        d = (cfg.text_out + 1) * (cfg.hidden_audio + 1) * (cfg.hidden_vision + 1)
        p = cfg.dropout if cfg.post_fusion_dropout is None else cfg.post_fusion_dropout
        self.head = nn.Sequential(Dropout(p), nn.Linear(d, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.n_out))

    @staticmethod
    def fuse(zt: torch.Tensor, za: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
        zm = torch.einsum("bi,bj,bk->bijk", with_one(zt), with_one(za), with_one(zv))  # the 3-fold outer product
        return zm.flatten(1)

    def forward(self, batch: Batch) -> ModelOutput:
        zt, za, zv = self.subnets(batch)
        zm = self.fuse(zt, za, zv)
        pred = finish(self.head(zm), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": zm, "z_t": zt, "z_a": za, "z_v": zv})


@register("tfn")
def build_tfn(**config) -> TFN:
    return TFN(build_config(TFNConfig, config))


# ----------------------------------------------------------------------------- LMF


@dataclass
class LMFConfig(BaselineConfig):
    hidden_text: int = 64        # text LSTM hidden size      (toolkit, MOSI: 128)
    text_out: int = 32           # d_t                        (64 = hidden_text / 2)
    hidden_audio: int = 16       # d_a                        (16)
    hidden_vision: int = 16      # d_v                        (128)
    rank: int = 4                # r                          (3)
    fusion_dim: int = 32         # d_h, size of h; 0 = h is the prediction itself (the toolkit)
    dropout: float = 0.2         #                            (0.3)

    MMSA: ClassVar[dict] = dict(hidden_text=128, text_out=64, hidden_audio=16, hidden_vision=128, rank=3,
                                fusion_dim=0, dropout=0.3)


class LMF(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018).

    The one idea: TFN's h = W · Z with Z = ⊗_m [z_m; 1] never needs the tensor Z.  Write the
    weight tensor W as a rank-r sum of modality-specific factors, W = Σ_i ⊗_m w_m^(i); then
        h = Σ_{i=1}^{r} λ_i · ( ⊙_m  W_m^(i) [z_m; 1] ) + b
    i.e. one linear map per modality and rank, an elementwise product across modalities and a
    weighted sum over the rank.  Cost is linear, not multiplicative, in the unimodal sizes.
    ``fusion_dim > 0``: h -> ReLU -> Dropout -> Linear gives the prediction; ``fusion_dim = 0``:
    h has the output size and is the prediction (the toolkit's choice).
    """

    def __init__(self, cfg: LMFConfig):
        super().__init__()
        self.cfg = cfg
        self.subnets = UnimodalSubnets(cfg)
        d_h = cfg.fusion_dim or cfg.n_out
        factor = lambda d: nn.Parameter(torch.randn(cfg.rank, d + 1, d_h) * (d + 1) ** -0.5)
        self.factor_t, self.factor_a, self.factor_v = (factor(cfg.text_out), factor(cfg.hidden_audio),
                                                       factor(cfg.hidden_vision))
        self.rank_weights = nn.Parameter(torch.full((cfg.rank,), 1.0 / cfg.rank))  # λ_i
        self.fusion_bias = nn.Parameter(torch.zeros(d_h))
        self.head = (nn.Sequential(nn.ReLU(), Dropout(cfg.dropout), nn.Linear(d_h, cfg.n_out))
                     if cfg.fusion_dim else nn.Identity())

    def fuse(self, zt: torch.Tensor, za: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
        ft = torch.einsum("bd,rdh->brh", with_one(zt), self.factor_t.to(zt.dtype))  # W_t^(i) [z_t; 1]
        fa = torch.einsum("bd,rdh->brh", with_one(za), self.factor_a.to(za.dtype))
        fv = torch.einsum("bd,rdh->brh", with_one(zv), self.factor_v.to(zv.dtype))
        return torch.einsum("r,brh->bh", self.rank_weights.to(ft.dtype), ft * fa * fv) + self.fusion_bias  # h

    forward = TFN.forward  # same unimodal subnets; only ``fuse`` and ``head`` differ


@register("lmf")
def build_lmf(**config) -> LMF:
    return LMF(build_config(LMFConfig, config))
