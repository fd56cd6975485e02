"""MulT: the Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

The one idea: a crossmodal transformer lets a target modality α repeatedly attend to a source
modality β, so no word-level alignment is needed.  Per layer i (pre-LN):
    Z^[i]_{β→α} = CM^[i]_{β→α}(LN(Z^[i-1]_{β→α}), LN(Z^[0]_β)) + Z^[i-1]_{β→α},  then a FFN,
with crossmodal attention softmax(Q_α K_βᵀ / √d) V_β (queries from α, keys/values from β).
    Z^[0]_m  = √d · Conv1D_k(X_m) + PE                       temporal convolution + positions
    Z_α      = [Z_{β→α}; Z_{γ→α}]  (T_α × 2d)                 six directions, two per target
    Z_α      ← SelfAttention^{(self_layers)}(Z_α)              the target's "memory"
    h        = [Z_t[last]; Z_a[last]; Z_v[last]]  (6d)         last valid step of each target
    ŷ        = W_out (h + W_2 Drop(ReLU(W_1 h)))               residual output block
Keys are masked by validity only; a dropped step stays a key with zero content.

``preset="mmsa"``: the toolkit's MOSI sizes, d = 50, 10 heads, 4 crossmodal layers per direction,
4 memory layers (its code uses max(nlevels, 3)), kernels 5/5/5, attention dropout 0.3/0.2/0.0 by
source modality, embedding dropout 0.2, output dropout 0.5, text dropout 0.5.  Differences: the
toolkit's convolutions shrink the sequences (no padding) and its attention uses no key masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmsa.attention import Dropout
from mmsa.models import register
from mmsa.models.baselines.common import (MODS, BaselineConfig, CrossmodalStack, TemporalProjection, build_config,
                                          by_length, check_av, finish, lengths_of, supervised_loss, text_encoder,
                                          valid_mask)
from mmsa.types import Batch, ModelOutput


@dataclass
class MulTConfig(BaselineConfig):
    d_model: int = 32                     # d after the temporal convolutions   (toolkit, MOSI: 50)
    heads: int = 4                        # must divide d_model                 (10)
    cross_layers: int = 2                 # crossmodal layers per direction     (4)
    self_layers: int = 1                  # memory layers per target            (4)
    conv_kernels: tuple = (1, 3, 3)       # temporal conv kernel of t, a, v (odd)  (5, 5, 5)
    dropout: float = 0.1                  # residual + FFN dropout              (0.0)
    attn_dropout: Optional[tuple] = (0.0, 0.0, 0.0)  # on attention maps, per source modality (t, a, v);
    #                                     None = dropout.  Book: none (it is ~20 % of a CPU step)  (0.3, 0.2, 0.0)
    embed_dropout: float = 0.1            #                                     (0.2)
    out_dropout: Optional[float] = None   # output block; None = dropout        (0.5)
    text_dropout: float = 0.0             # on the text states, before the conv (0.5)

    MMSA: ClassVar[dict] = dict(d_model=50, heads=10, cross_layers=4, self_layers=4, conv_kernels=(5, 5, 5),
                                dropout=0.0, attn_dropout=(0.3, 0.2, 0.0), embed_dropout=0.2, out_dropout=0.5,
                                text_dropout=0.5)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.heads:
            raise ValueError(f"MulT needs d_model % heads == 0; got d_model={self.d_model}, heads={self.heads}")
        for name in ("conv_kernels", "attn_dropout"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ValueError(f"{name} must have one value per modality (text, audio, vision); got {value}")


class MulT(nn.Module):
    def __init__(self, cfg: MulTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.text_encoder = text_encoder(cfg)
        self.text_drop = Dropout(cfg.text_dropout)
        dims = {"text": self.text_encoder.dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        self.proj = nn.ModuleDict({m: TemporalProjection(dims[m], d, k, cfg.embed_dropout)
                                   for m, k in zip(MODS, cfg.conv_kernels)})
        attn = dict(zip(MODS, cfg.attn_dropout or (cfg.dropout,) * 3))
        self.cross = nn.ModuleDict({f"{src}_to_{tgt}": CrossmodalStack(d, cfg.heads, cfg.cross_layers, cfg.dropout,
                                                                       attn[src])
                                    for tgt in MODS for src in MODS if src != tgt})
        self.memory = nn.ModuleDict({m: CrossmodalStack(2 * d, cfg.heads, cfg.self_layers, cfg.dropout, attn["text"])
                                     for m in MODS})
        self.out_dropout = cfg.dropout if cfg.out_dropout is None else cfg.out_dropout
        self.proj1, self.proj2 = nn.Linear(6 * d, 6 * d), nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, cfg.n_out)

    def forward(self, batch: Batch) -> ModelOutput:
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        inputs = {"text": self.text_drop(text), "audio": batch.audio, "vision": batch.vision}
        z0, lengths, pad = {}, {}, {}
        for m in MODS:
            z0[m] = self.proj[m](inputs[m])  # Z^[0]_m
            lengths[m] = lengths_of(batch, m, z0[m].shape[1])
            pad[m] = ~valid_mask(lengths[m], z0[m].shape[1])
        # one branch per target; on a CPU on groups of clips of similar target length (``by_length``)
        pooled = [by_length(lambda z, p, n, tgt=tgt: self.target(tgt, z, p, n[tgt]), tgt, z0, pad, lengths)
                  for tgt in MODS]
        h = torch.cat(pooled, dim=-1)  # (B, 6d)
        h = h + self.proj2(F.dropout(F.relu(self.proj1(h)), self.out_dropout, self.training))  # residual block
        pred = finish(self.out(h), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h})

    def target(self, tgt: str, z0: dict, pad: dict, length: torch.Tensor) -> torch.Tensor:
        """The branch of one target α: Z_α = [Z_{β→α}; Z_{γ→α}] -> memory -> state at the last valid step (B, 2d).

        On a CPU ``forward`` runs it on groups of clips of similar target length (``by_length``),
        every sequence cut after the group's longest valid one: the same values as one padded
        call, with smaller attention maps."""
        zs = [self.cross[f"{src}_to_{tgt}"](z0[tgt], z0[src], pad[src]) for src in MODS if src != tgt]
        z = self.memory[tgt](torch.cat(zs, dim=-1), None, pad[tgt])
        return z[torch.arange(z.shape[0], device=z.device), length - 1]


@register("mult")
def build_mult(**config) -> MulT:
    return MulT(build_config(MulTConfig, config))
