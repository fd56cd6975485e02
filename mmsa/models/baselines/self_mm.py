"""Self-MM: self-supervised multi-task learning (Yu et al., AAAI 2021).

The one idea: train three unimodal heads next to the multimodal one, with unimodal labels
generated without annotation from how far each unimodal representation lies from the
positive/negative class centres, relative to the fused representation (see ULGM).  Each
unimodal loss is weighted by how much its label differs from the multimodal one:
    L = |ŷ_m - y_m| + Σ_s w_s |ŷ_s - y_s|,   w_s = tanh(|y_s - y_m|)
Backbone (as the reference toolkit): text = BERT's [CLS] state; audio / vision = one LSTM each
(final state -> Linear); F^m = ReLU(W [h_t; h_a; h_v]), F^s = ReLU(W_s h_s) after dropout, and
each head is Linear-ReLU-Linear on its F.  The paper fine-tunes BERT: ``freeze_text=False``
(the "mmsa" preset) does, with the Trainer's ``bert_lr``.
Classification (num_classes > 1): the main head uses cross-entropy and the unimodal heads
regress generated labels around the score y_m = class - (C-1)/2 (our extension).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from mmsa.attention import Dropout
from mmsa.models import register
from mmsa.models.baselines.common import (DATASET_DIMS, BaselineConfig, LSTMEncoder, build_config, check_av, finish,
                                          lengths_of, supervised_loss, text_encoder)
from mmsa.types import Batch, ModelOutput

KEYS = ("t", "a", "v")


@dataclass
class SelfMMConfig(BaselineConfig):
    audio_hidden: int = 32       # audio LSTM units                  (toolkit, MOSI: 16; on SynthMSA
    #                              16 gave validation MAE 0.76 vs 0.69 with 32 (feature-mode text, lr 1e-3))
    vision_hidden: int = 32      # vision LSTM units                 (32)
    audio_out: int = 32          # h_a                               (16)
    vision_out: int = 32         # h_v                               (32)
    post_fusion_dim: int = 64    # F^m                               (128)
    post_text_dim: int = 32      # F^t                               (32)
    post_audio_dim: int = 16     # F^a                               (16)
    post_vision_dim: int = 32    # F^v                               (32)
    dropout: float = 0.1         # before every post layer
    post_dropouts: Optional[tuple] = None  # (fusion, text, audio, vision); None = dropout  (0.0, 0.1, 0.1, 0.0)
    label_bound: float = 3.0     # H: generated labels are clipped to [-H, H] (1 for SIMS)
    center_momentum: float = 0.1  # EMA rate of the class-centre buffers (our simplification)

    PRESETS: ClassVar[dict] = {k: dict(v) for k, v in DATASET_DIMS.items()}
    PRESETS["sims"]["label_bound"] = 1.0
    MMSA: ClassVar[dict] = dict(audio_hidden=16, vision_hidden=32, audio_out=16, vision_out=32, post_fusion_dim=128,
                                post_text_dim=32, post_audio_dim=16, post_vision_dim=32,
                                post_dropouts=(0.0, 0.1, 0.1, 0.0), freeze_text=False)


class UnimodalLabelGenerator(nn.Module):
    """ULGM of Self-MM.  For each representation s ∈ {m, t, a, v} (m = fusion) keep a positive
    and a negative class centre C_p^s, C_n^s of the post-fusion features F^s, then
        D_p^s = ||F^s - C_p^s||_2,  D_n^s = ||F^s - C_n^s||_2,  α_s = (D_n^s - D_p^s) / (D_p^s + ε)
        ŷ_s = ½ · y_m · α_s/α_m + ½ · (y_m + α_s - α_m)       (mean of the ratio and difference forms)
    and smooth each sample's label over its visits n (epochs) with the paper's momentum:
        y_s^(n) = (n-1)/(n+1) · y_s^(n-1) + 2/(n+1) · ŷ_s^(n),   y_s^(1) = y_m.
    Simplifications: the centres are exponential moving averages over training batches, kept
    as buffers (the paper recomputes them from a memory of every training sample's features);
    the per-sample label memory is keyed by ``batch.ids`` and lives outside the state_dict
    (not checkpointed); batches without ids use the freshly generated ŷ_s directly.
    """

    KEYS = ("m", "t", "a", "v")

    def __init__(self, dims: dict, momentum: float, bound: float):
        super().__init__()
        self.momentum, self.bound = momentum, bound
        for k in self.KEYS:
            self.register_buffer(f"center_{k}", torch.zeros(2, dims[k]))  # [positive, negative]
        self.register_buffer("seen", torch.zeros(2))  # 1 once a positive / negative centre exists
        self.memory: dict = {}  # sample id -> (tensor (3,) labels t,a,v, visits n)

    @property
    def ready(self) -> bool:
        return bool((self.seen > 0).all())

    @torch.no_grad()
    def update_centers(self, feats: dict, labels: dict) -> None:
        for j in (0, 1):
            for k in self.KEYS:
                sel = labels[k] > 0 if j == 0 else labels[k] < 0
                if sel.any():
                    c, buf = feats[k][sel].float().mean(0), getattr(self, f"center_{k}")
                    buf[j] = c if not self.seen[j] else (1 - self.momentum) * buf[j] + self.momentum * c
            if (labels["m"] > 0).any() if j == 0 else (labels["m"] < 0).any():
                self.seen[j] = 1.0

    @torch.no_grad()
    def generate(self, feats: dict, y_m: torch.Tensor) -> dict:
        def alpha(k):
            c = getattr(self, f"center_{k}")
            d_p, d_n = (feats[k].float() - c[0]).norm(dim=-1), (feats[k].float() - c[1]).norm(dim=-1)
            return (d_n - d_p) / (d_p + 1e-8)

        a_m = alpha("m")
        return {k: (0.5 * y_m * alpha(k) / (a_m + 1e-8) + 0.5 * (y_m + alpha(k) - a_m)).clamp(-self.bound, self.bound)
                for k in KEYS}

    @torch.no_grad()
    def remember(self, ids: list, y_m: torch.Tensor, new: dict) -> dict:
        """Momentum update of each sample's stored labels; returns the labels stored before it."""
        new_cpu = torch.stack([new[k] for k in KEYS], dim=1).float().cpu()
        y_cpu, rows = y_m.float().cpu(), []
        for i, sid in enumerate(ids):
            old, n = self.memory.get(sid, (y_cpu[i].repeat(3), 0))
            n += 1
            lab = old if n == 1 else (n - 1) / (n + 1) * old + 2 / (n + 1) * new_cpu[i]
            self.memory[sid] = (lab, n)
            rows.append(old)  # the loss uses the labels of the previous visit, as in the paper
        out = torch.stack(rows).to(y_m.device)
        return {k: out[:, i] for i, k in enumerate(KEYS)}


class SelfMM(nn.Module):
    def __init__(self, cfg: SelfMMConfig):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder(cfg)
        self.audio_net = LSTMEncoder(cfg.audio_dim, cfg.audio_hidden, cfg.audio_out)
        self.vision_net = LSTMEncoder(cfg.vision_dim, cfg.vision_hidden, cfg.vision_out)
        d_in = {"m": self.text_encoder.dim + cfg.audio_out + cfg.vision_out, "t": self.text_encoder.dim,
                "a": cfg.audio_out, "v": cfg.vision_out}
        d_post = {"m": cfg.post_fusion_dim, "t": cfg.post_text_dim, "a": cfg.post_audio_dim, "v": cfg.post_vision_dim}
        drops = dict(zip(("m", *KEYS), cfg.post_dropouts or (cfg.dropout,) * 4))
        self.post = nn.ModuleDict({k: nn.Sequential(Dropout(drops[k]), nn.Linear(d_in[k], d_post[k]), nn.ReLU())
                                   for k in d_in})  # F^s
        self.heads = nn.ModuleDict({k: nn.Sequential(nn.Linear(d_post[k], d_post[k]), nn.ReLU(),
                                                     nn.Linear(d_post[k], cfg.n_out if k == "m" else 1))
                                    for k in d_in})
        self.ulgm = UnimodalLabelGenerator(d_post, cfg.center_momentum, cfg.label_bound)

    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.cfg
        check_av(batch, cfg)
        _, cls = self.text_encoder(batch)  # [CLS]
        h = {"t": cls,
             "a": self.audio_net(batch.audio, lengths_of(batch, "audio", batch.audio.shape[1])),
             "v": self.vision_net(batch.vision, lengths_of(batch, "vision", batch.vision.shape[1]))}
        h["m"] = torch.cat([h["t"], h["a"], h["v"]], dim=-1)
        feats = {k: self.post[k](h[k]) for k in ("m", *KEYS)}
        pred = finish(self.heads["m"](feats["m"]), cfg.num_classes)
        y_hat = {k: self.heads[k](feats[k]).squeeze(-1) for k in KEYS}
        y_m = batch.label.float() if cfg.num_classes <= 1 else batch.label.float() - (cfg.num_classes - 1) / 2
        detached = {k: f.detach() for k, f in feats.items()}
        # unimodal labels: y_m until both class centres exist, else generated by the ULGM
        labels = self.ulgm.generate(detached, y_m) if self.ulgm.ready else {k: y_m for k in KEYS}
        if self.training and batch.ids:
            labels = self.ulgm.remember(batch.ids, y_m, labels)  # momentum update over visits
        if self.training:
            self.ulgm.update_centers(detached, {"m": y_m, **labels})
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes)}
        for k in KEYS:
            w = torch.tanh((labels[k] - y_m).abs())  # w_s
            losses[f"unimodal_{k}"] = (w * (y_hat[k].float() - labels[k]).abs()).mean()
        extras = {"fused": feats["m"], **{f"y_{k}": y_hat[k] for k in y_hat},
                  **{f"label_{k}": labels[k] for k in labels}}
        return ModelOutput(pred=pred, losses=losses, extras=extras)


@register("self_mm")
def build_self_mm(**config) -> SelfMM:
    return SelfMM(build_config(SelfMMConfig, config))
