"""MISA: Modality-Invariant and -Specific representations (Hazarika et al., ACM MM 2020).

The one idea: split every utterance vector u_m into a shared part h^c_m = E_c(u_m) (one encoder
for all modalities, pulled together across modalities) and a private part h^p_m = E_p^m(u_m)
(pushed orthogonal to the shared part and to each other), and fuse the six.
    L = L_task + α L_sim + β L_diff + γ L_recon
    L_sim   = 1/3 Σ_{(m1,m2)} CMD_K(h^c_m1, h^c_m2)                         (K = 5 moments)
    L_diff  = Σ_m ||h^cᵀ_m h^p_m||²_F + Σ_{m1≠m2} ||h^pᵀ_m1 h^p_m2||²_F
    L_recon = 1/3 Σ_m ||u_m - D_m(h^c_m + h^p_m)||² / d_h
Utterance vectors (as the reference toolkit): text = mean of the BERT token states over the
valid tokens; audio / vision = two stacked bidirectional LSTMs (LayerNorm between them) whose
four final states are concatenated; each -> Linear -> ReLU -> LayerNorm = u_m.
Fusion: one transformer encoder layer over the six vectors, concatenated -> MLP.
MISA fine-tunes BERT: ``freeze_text=False`` (the "mmsa" preset) does so with the Trainer's
``bert_lr``; the book's default keeps the text encoder frozen on CPU.  Left out: the toolkit's
shared/private discriminator term (weight ``sp_weight``), which its trainer does not add to the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmsa.attention import Dropout
from mmsa.models import register
from mmsa.models.baselines.common import (MODS, BaselineConfig, build_config, check_av, finish, lengths_of,
                                          masked_mean, birnn, supervised_loss, text_encoder, valid_mask)
from mmsa.types import Batch, ModelOutput


@dataclass
class MISAConfig(BaselineConfig):
    hidden: int = 32          # d_h, size of u_m and of every shared/private vector   (toolkit, MOSI: 128)
    rnn_hidden: int = 32      # audio/vision LSTM units; 0 = the modality's feature size (toolkit: 0)
    #                           (on SynthMSA 0, i.e. 5 audio units, starves the audio cue: validation
    #                           MAE 0.96 vs 0.74 with 32, feature-mode text, lr 3e-4)
    fusion_heads: int = 2     #                                                       (2)
    fusion_ff: int = 64       # feed-forward width of the fusion layer                (2048, torch's default)
    dropout: float = 0.1      #                                                       (0.2)
    sim_weight: float = 0.3   # α, similarity (CMD)                                   (0.3)
    diff_weight: float = 0.1  # β, difference (soft orthogonality)                    (0.1)
    recon_weight: float = 1.0  # γ, reconstruction                                    (1.0)
    cmd_moments: int = 5      # K in CMD                                              (5)

    MMSA: ClassVar[dict] = dict(hidden=128, rnn_hidden=0, fusion_heads=2, fusion_ff=2048, dropout=0.2,
                                sim_weight=0.3, diff_weight=0.1, recon_weight=1.0, freeze_text=False)


def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central Moment Discrepancy (Zellinger et al., 2017) between two (B, d) samples:
    ||E x - E y||_2 + Σ_{k=2}^{K} ||c_k(x) - c_k(y)||_2,  c_k(x) = E (x - E x)^k."""
    x, y = x.float(), y.float()  # in fp32: under fp16 autocast the 1e-12 below would round to 0
    mx, my = x.mean(0), y.mean(0)
    cx, cy = x - mx, y - my
    dist = lambda a, b: ((a - b).pow(2).sum() + 1e-12).sqrt()  # eps keeps the gradient finite at 0
    return dist(mx, my) + sum(dist(cx.pow(k).mean(0), cy.pow(k).mean(0)) for k in range(2, moments + 1))


def soft_orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||Aᵀ B||_F^2 on batch-centred, row-normalised (B, d) matrices (Bousmalis et al., 2016), averaged."""
    a = F.normalize(a - a.mean(0), dim=1, eps=1e-6)
    b = F.normalize(b - b.mean(0), dim=1, eps=1e-6)
    return (a.t() @ b).pow(2).mean()


class StackedBiLSTM(nn.Module):
    """sLSTM of MISA: BiLSTM -> LayerNorm -> BiLSTM; returns the 4 final states concatenated (4h)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.rnn1 = nn.LSTM(d_in, hidden, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * hidden)
        self.rnn2 = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out1, h1 = birnn(self.rnn1, x, lengths)
        _, h2 = birnn(self.rnn2, self.norm(out1), lengths)
        return torch.cat([h1[0], h1[1], h2[0], h2[1]], dim=-1)


class MISA(nn.Module):
    def __init__(self, cfg: MISAConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.text_encoder = text_encoder(cfg)
        self.rnn = nn.ModuleDict({m: StackedBiLSTM(getattr(cfg, f"{m}_dim"), cfg.rnn_hidden or getattr(cfg, f"{m}_dim"))
                                  for m in ("audio", "vision")})
        d_utt = {"text": self.text_encoder.dim,
                 **{m: 4 * (cfg.rnn_hidden or getattr(cfg, f"{m}_dim")) for m in ("audio", "vision")}}
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(d_utt[m], d), nn.ReLU(), nn.LayerNorm(d))
                                      for m in MODS})  # -> u_m
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())  # E_c
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in MODS})  # E_p^m
        self.recon = nn.ModuleDict({m: nn.Linear(d, d) for m in MODS})  # D_m (training only)
        layer = nn.TransformerEncoderLayer(d, cfg.fusion_heads, dim_feedforward=cfg.fusion_ff, dropout=cfg.dropout,
                                           batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(6 * d, 3 * d), Dropout(cfg.dropout), nn.ReLU(),
                                  nn.Linear(3 * d, cfg.n_out))

    def utterances(self, batch: Batch) -> dict:
        check_av(batch, self.cfg)
        text, _ = self.text_encoder(batch)
        L = text.shape[1]
        utt = {"text": masked_mean(text, valid_mask(lengths_of(batch, "text", L), L))}
        for m in ("audio", "vision"):
            x = getattr(batch, m)
            utt[m] = self.rnn[m](x, lengths_of(batch, m, x.shape[1]))
        return {m: self.project[m](utt[m]) for m in MODS}

    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.cfg
        u = self.utterances(batch)
        hc = {m: self.shared(u[m]) for m in MODS}
        hp = {m: self.private[m](u[m]) for m in MODS}
        six = torch.stack([hp[m] for m in MODS] + [hc[m] for m in MODS], dim=1)  # (B, 6, d)
        fused = self.fusion(six).flatten(1)
        pred = finish(self.head(fused), cfg.num_classes)
        pairs = [("text", "audio"), ("text", "vision"), ("audio", "vision")]
        sim = sum(cmd(hc[a], hc[b], cfg.cmd_moments) for a, b in pairs) / 3  # L_sim
        diff = (sum(soft_orthogonality(hc[m], hp[m]) for m in MODS)
                + sum(soft_orthogonality(hp[a], hp[b]) for a, b in pairs))  # L_diff
        recon = sum(F.mse_loss(self.recon[m](hc[m] + hp[m]), u[m]) for m in MODS) / 3  # L_recon
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes),
                  "similarity": cfg.sim_weight * sim, "difference": cfg.diff_weight * diff,
                  "reconstruction": cfg.recon_weight * recon}
        extras = {"fused": fused, **{f"shared_{m}": hc[m] for m in MODS}, **{f"private_{m}": hp[m] for m in MODS}}
        return ModelOutput(pred=pred, losses=losses, extras=extras)


@register("misa")
def build_misa(**config) -> MISA:
    return MISA(build_config(MISAConfig, config))
