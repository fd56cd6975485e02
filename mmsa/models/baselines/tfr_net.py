"""TFR-Net: Transformer-based Feature Reconstruction Network (Yuan et al., ACM MM 2021).

The one idea: for incomplete inputs, make the sequence encoder *recover* what was dropped.  The
encoder aligns every modality with the other two by attention; a reconstruction generator must
restore the dropped positions' features from the encoded sequence (trained against the complete
view, which only the loss sees); a gated fusion reads the encoded sequences.  Read top to bottom:

 1. embedding     Z⁰_m = √d · Conv1D_{k_m}(X_m) + PE                 (text X_t: BERT token states)
 2. alignment     for each target m and the two other modalities n, n':
                    H_m      = SelfAttn^{(layers)}(Z⁰_m)                        intra-modal
                    H_{n→m}  = CrossAttn^{(layers)}(Z⁰_m ← Z⁰_n)                inter-modal
                    A_m      = [H_m; H_{n→m}; H_{n'→m}]        (T_m × 3d)
 3. generator     X̂_m = W_m · SelfAttn^{(gen_layers)}(A_m)    (T_m × D_m)   training only
                  L_rec = Σ_m λ_m · Σ_{t ∈ Ω_m} SmoothL1(X̂_m[t], X^full_m[t]) / (|Ω_m| · D_m)
                  Ω_m = valid positions the simulation dropped, D_m = feature size (the loss reads
                  ``batch.missing`` and ``batch.full``; the forward pass does not)
 4. gated fusion  per modality (C-Gate): G = BiGRU(A_m);  g_t = σ(Conv1D_3(G)_t)  (a gate per step)
                    r_t = tanh(W [A_m[t]; tanh(G_t) · g_t]);   r_m = max over valid t of r_t
                  ŷ = W_2 Drop(LeakyReLU(W_1 LN([r_t; r_a; r_v])))
    L = L_task + L_rec

Keys are masked by validity (lengths) only: a dropped step stays a query and a key, with zero
content (audio/vision) or an ``[UNK]`` token's state (text), exactly what a deployed model sees.
The text target of L_rec is the text encoder's states of the complete sentence (no gradient).

Simplifications (relative to the paper and the reference toolkit, PyPI ``mmsa`` 2.2.1):
 - the generator attends over *time steps* of A_m; the toolkit's attends over the 3d feature
   channels of A_m with each channel's whole time series as its embedding, which ties the model
   to fixed sequence lengths;
 - the paper's low-rank regularisation of the reconstruction (the toolkit: a CMD term, weight 5)
   is left out, L_rec is SmoothL1 only;
 - LayerNorm in the classifier where the toolkit has BatchNorm; validity masks in attention
   (the toolkit masks nothing); no learning-rate decay on plateaus.
``preset="mmsa"``: d = 30, 6 heads, 3 layers, kernels 1/5/3, attention dropout 0.2/0.1/0.0 by the
keys' modality (0.2 in the intra-modal stacks), other dropouts 0.2, C-Gate sizes 36/20/48 with 3 GRU
layers, classifier 128, λ = (5, 2, 20), BERT fine-tuned (its MOSI configuration).
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
                                          by_length, check_av, finish, lengths_of, masked_max, run_rnn,
                                          supervised_loss, text_encoder, valid_mask)
from mmsa.types import Batch, ModelOutput


@dataclass
class TFRNetConfig(BaselineConfig):
    d_model: int = 32                     # d                                    (toolkit, MOSI: 30)
    heads: int = 4                        # must divide d_model                  (6)
    layers: int = 1                       # per intra-/inter-modal stack         (3)
    conv_kernels: tuple = (1, 3, 3)       # temporal conv of t, a, v (odd)       (1, 5, 3)
    dropout: float = 0.1                  # residual/FFN/embedding dropout       (0.2)
    attn_dropout: Optional[tuple] = (0.0, 0.0, 0.0)  # on attention maps, per key modality (t, a, v);
    #                                       None = dropout.  Book: none (~20 % of a CPU step)  (0.2, 0.1, 0.0)
    text_dropout: float = 0.0             # on the text states                   (0.2)
    gen_layers: int = 1                   # self-attention layers of the generator
    fusion_hidden: tuple = (16, 16, 16)   # C-Gate sizes for t, a, v             (36, 20, 48)
    fusion_layers: int = 1                # Bi-GRU layers in each C-Gate         (3)
    fusion_dropout: Optional[float] = None  # on r_m; None = dropout             (0.2)
    cls_hidden: int = 32                  # classifier hidden size               (128)
    cls_dropout: float = 0.0              #                                      (0.0)
    rec_weights: tuple = (1.0, 1.0, 1.0)  # λ_t, λ_a, λ_v                        (5, 2, 20)

    MMSA: ClassVar[dict] = dict(d_model=30, heads=6, layers=3, conv_kernels=(1, 5, 3), dropout=0.2,
                                attn_dropout=(0.2, 0.1, 0.0),
                                text_dropout=0.2, gen_layers=1, fusion_hidden=(36, 20, 48), fusion_layers=3,
                                fusion_dropout=0.2, cls_hidden=128, cls_dropout=0.0, rec_weights=(5.0, 2.0, 20.0),
                                freeze_text=False)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.heads:
            raise ValueError(f"TFR-Net needs d_model % heads == 0; got d_model={self.d_model}, heads={self.heads}")
        for name in ("conv_kernels", "fusion_hidden", "rec_weights", "attn_dropout"):
            if getattr(self, name) is not None and len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must have one value per modality (text, audio, vision); "
                                 f"got {getattr(self, name)}")


class Generator(nn.Module):
    """Attention-based reconstruction: self-attention over the aligned steps, then a linear map
    back to the modality's feature space (one per modality; training only)."""

    def __init__(self, d_in: int, d_out: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.attn = CrossmodalStack(d_in, heads, layers, dropout)
        self.out = nn.Linear(d_in, d_out)

    def forward(self, a: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(a, None, pad))


class ContextGate(nn.Module):
    """C-Gate of TFR-Net's fusion: Bi-GRU context, a sigmoid gate per step from a width-3
    convolution, a tanh projection of [input; gated context], max-pooling over valid steps."""

    def __init__(self, d_in: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.gate = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.proj = nn.Linear(d_in + 2 * hidden, hidden)
        self.drop = Dropout(dropout)

    def forward(self, a: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor):
        ctx, _ = run_rnn(self.gru, a, lengths)                                 # G (B,T,2h)
        g = torch.sigmoid(self.gate(ctx.transpose(1, 2))).transpose(1, 2)     # g_t (B,T,1)
        r = torch.tanh(self.proj(torch.cat([a, torch.tanh(ctx) * g], dim=-1)))  # r_t
        return self.drop(masked_max(r, valid)), g.squeeze(-1)


class TFRNet(nn.Module):
    def __init__(self, cfg: TFRNetConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.text_encoder = text_encoder(cfg)
        self.text_drop = Dropout(cfg.text_dropout)
        self.raw_dims = {"text": self.text_encoder.dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        # 1. embedding
        self.proj = nn.ModuleDict({m: TemporalProjection(self.raw_dims[m], d, k, cfg.dropout)
                                   for m, k in zip(MODS, cfg.conv_kernels)})
        # 2. alignment: one intra-modal and two inter-modal stacks per target
        attn = dict(zip(MODS, cfg.attn_dropout or (cfg.dropout,) * 3))  # by the keys' modality; intra: text's
        stack = lambda src: CrossmodalStack(d, cfg.heads, cfg.layers, cfg.dropout, attn[src])
        self.intra = nn.ModuleDict({m: stack("text") for m in MODS})
        self.inter = nn.ModuleDict({f"{src}_to_{tgt}": stack(src) for tgt in MODS for src in MODS if src != tgt})
        # 3. generator (training only: the name starts with "recon.")
        self.recon = nn.ModuleDict({m: Generator(3 * d, self.raw_dims[m], cfg.heads, cfg.gen_layers, cfg.dropout)
                                    for m in MODS})
        # 4. gated fusion
        p = cfg.dropout if cfg.fusion_dropout is None else cfg.fusion_dropout
        self.gates = nn.ModuleDict({m: ContextGate(3 * d, h, cfg.fusion_layers, p)
                                    for m, h in zip(MODS, cfg.fusion_hidden)})
        width = sum(cfg.fusion_hidden)
        self.classifier = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.cls_hidden), nn.LeakyReLU(),
                                        Dropout(cfg.cls_dropout), nn.Linear(cfg.cls_hidden, cfg.n_out))

    def inputs(self, batch: Batch) -> dict:
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        return {"text": text, "audio": batch.audio, "vision": batch.vision}

    def align(self, x: dict, batch: Batch) -> tuple[dict, dict, dict]:
        z0, lengths, pad = {}, {}, {}
        for m in MODS:
            z0[m] = self.proj[m](self.text_drop(x[m]) if m == "text" else x[m])  # Z⁰_m
            lengths[m] = lengths_of(batch, m, z0[m].shape[1])
            pad[m] = ~valid_mask(lengths[m], z0[m].shape[1])
        # on a CPU on groups of clips of similar target length (``by_length``); A_m is 0 past a group's cut
        aligned = {tgt: by_length(lambda z, p, n, tgt=tgt: self.align_target(tgt, z, p), tgt, z0, pad, lengths)
                   for tgt in MODS}
        return aligned, lengths, pad

    def align_target(self, tgt: str, z0: dict, pad: dict) -> torch.Tensor:
        """A_m = [H_m; H_{n→m}; H_{n'→m}]  (B, T_m, 3d) for the target m = ``tgt``."""
        parts = [self.intra[tgt](z0[tgt], None, pad[tgt])]  # H_m
        parts += [self.inter[f"{src}_to_{tgt}"](z0[tgt], z0[src], pad[src]) for src in MODS if src != tgt]
        return torch.cat(parts, dim=-1)

    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.cfg
        x = self.inputs(batch)
        aligned, lengths, pad = self.align(x, batch)
        reps, gates = [], {}
        for m in MODS:
            r, gates[m] = self.gates[m](aligned[m], lengths[m], ~pad[m])
            reps.append(r)
        fused = torch.cat(reps, dim=-1)
        pred = finish(self.classifier(fused), cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes)}
        extras = {"fused": fused, **{f"gate_{m}": gates[m] for m in MODS}}
        if self.training and batch.full is not None:  # reconstruction: a training loss only
            losses["reconstruction"], rec = self.reconstruction(batch, aligned, pad, lengths)
            extras.update({f"recon_{m}": rec[m] for m in MODS})
        return ModelOutput(pred=pred, losses=losses, extras=extras)

    def reconstruction(self, batch: Batch, aligned: dict, pad: dict, lengths: dict) -> tuple[torch.Tensor, dict]:
        """L_rec on the valid positions the simulation dropped, against the complete view."""
        with torch.no_grad():
            target = self.inputs(batch.full)  # text: the complete sentence's states
        total, rec = aligned["text"].new_zeros((), dtype=torch.float32), {}
        for m, lam in zip(MODS, self.cfg.rec_weights):
            rec[m] = by_length(lambda z, p, n, m=m: self.recon[m](z[m], p[m]), m, {m: aligned[m]}, {m: pad[m]},
                               {m: lengths[m]})
            observed = batch.missing.get(m)
            if observed is None:
                continue
            dropped = (~pad[m] & (observed.to(rec[m].device) < 0.5)).float()  # Ω_m
            err = F.smooth_l1_loss(rec[m].float(), target[m].float(), reduction="none").mean(-1)
            total = total + lam * (err * dropped).sum() / dropped.sum().clamp(min=1.0)
        return total, rec


@register("tfr_net")
def build_tfr_net(**config) -> TFRNet:
    return TFRNet(build_config(TFRNetConfig, config))
