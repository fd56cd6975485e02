"""CM-STA + CG + TCMFI: 3-class sentiment from text, image and audio.

Li, Li, Liu, Qin, "跨模态时空注意力与上下文门控的情感分析" (Sentiment analysis with cross-modal
spatio-temporal attention and contextual gating), J. Zhengzhou Univ. (Eng. Sci.) 2026,
doi:10.13705/j.issn.1671-6833.2026.04.002.
This file reads top to bottom as the paper's method section; equation numbers in comments.

    features --(1.1 projection to D)--> F_t (B,L,D), F_i (B,49,D), F_a (B,Ta,D)
    CM-STA (eqs. 1-5): three stacked cross-attentions text->image, text->audio, audio->image,
        mean-pooled to F'_ti, F'_ta, F'_ai (B,D)
    CG (eqs. 6-11): a_m = sum of the two pair features that involve modality m,
        g_m = Sigmoid(MLP(a_m)) in (0,1)^D, F_m^gated = g_m * mean(F_m)
    TCMFI (eqs. 12-19): 6 tokens [gated t,i,a; pooled t,i,a] + trainable position P ->
        6 post-norm Transformer encoder layers -> bilinear interactions B_TI, B_TA, B_IA (local)
        and the pooled encoder output (global), fused with learnable softmax weights -> MLP -> 3 logits

Choices where the paper is silent (each is a config field; the notebook discusses them):
- eq. (2) writes Attention(F_t^(i), F_i, F_a); the text before it says Q from text and K = V from
  image, so we use key = value = the key modality (F_a in eq. 2 reads as a typo).
- positions: image tokens get learned row + column embeddings of the 7x7 grid (spatial attention);
  text and audio tokens get fixed sinusoidal time positions (temporal attention).  They are added to
  the projected features before CM-STA only.
- alpha_i starts at ``alpha_init`` = 1.0; padded/missing key positions are masked out of attention
  and padded query positions out of the mean pools (eq. 5 and the CG pools).
- one gate MLP per modality (eqs. 7-10 written for text and "likewise" for image and audio), hidden
  width D; eq. (11) gates the mean-pooled projected features (no positions) of that modality.
- P in eq. (12) is one trainable D-vector per token slot (it marks both modality and gated/original).
- eq. (19): T, I, A are the encoder outputs of each modality, averaged over its gated and original
  slots; one shared W_b as in the paper, implemented with ``nn.Bilinear(D, D, bilinear_dim)``, i.e.
  bilinear_dim matrices W_b^k, so B_XY[k] = X W_b^k Y^T ("reduced to a specific dimension").  The
  three (B, bilinear_dim) terms are concatenated and projected to D = the local vector.
- training: the paper names "a learning-rate scheduler" only; we warm the lr up linearly over
  ``TRAIN_PRESET["warmup_steps"]`` optimiser steps (``TrainConfig.warmup_steps``), which keeps the
  post-norm encoder stable, and never select an epoch inside the warm-up as the best one.
- initialisation (the paper is silent; both were measured in notebook 06): the three ReLU layers of
  each gate MLP use He (Kaiming) initialisation.  PyTorch's default Linear initialisation shrinks
  the signal by about 0.4 per ReLU layer, so behind 4 layers the gates were a constant 0.5 and the
  gradient reaching CM-STA (which feeds only the gates) was ~1e-3 of the projections'.  The slot
  positions P of eq. (12) start at unit scale (``position_std``): at BERT's 0.02 they are ~1/50 of
  a LayerNorm-ed token, so P could not mark the slots and the post-norm encoder removed the overall
  scale of a gated token -- the one thing a modality-level gate changes.
- masks: which steps are valid comes from the lengths only (``batch.lengths``), never from the
  missing-modality simulator's record: a dropped step is a zero step, as a real model would see it.
- global = mean over the encoder's tokens; fused = w_g * global + w_l * local with (w_g, w_l) =
  softmax of two learnable logits; classifier = Linear-ReLU-Dropout-Linear to 3 logits.

Ablations (Table 3), what replaces a removed module:
- ``use_cmsta=False``: no cross-attention; the CG context of modality m is its own mean-pooled
  projected features (a_m = mean(F_m), a squeeze-and-excitation-like self-gate).
- ``use_cg=False``: no gates; the first three TCMFI slots carry the CM-STA contexts a_m ungated
  (so CM-STA still reaches the fusion).  With ``use_cmsta=False`` too, those slots are dropped and
  TCMFI sees only the three pooled original features (3 tokens).
- ``use_tcmfi=False``: no encoder, bilinear pooling or global/local fusion; the token vectors are
  concatenated and classified by the same MLP head (a late-fusion MLP).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsa.attention import mha
from mmsa.config import make_config
from mmsa.models import register
from mmsa.types import Batch, ModelOutput

# extras["gates"] columns follow the repository-wide modality order (mmsa.types.MODALITIES)
GATE_ORDER = ("text", "audio", "vision")


@dataclass
class CMSTACGConfig:
    dataset: str = "synth3"
    text_dim: int = 768  # RoBERTa-wwm-ext last hidden state
    audio_dim: int = 768  # wav2vec 2.0 base last hidden state
    vision_dim: int = 2048  # ResNeSt-50 last feature map (7x7 grid)
    grid: int = 7  # image tokens form a grid x grid map
    d_model: int = 128  # shared D
    num_heads: int = 4
    num_layers: int = 2  # stacked cross-attentions per pair in CM-STA (paper: 2)
    alpha_init: float = 1.0  # initial learnable residual weight alpha_i (eq. 2)
    position_std: float = 1.0  # initial scale of the slot positions P (eq. 12); see the docstring
    gate_hidden: int = 128  # width of the 3 Linear-ReLU layers of CG (eqs. 7-9)
    fusion_layers: int = 6  # Transformer encoder layers in TCMFI (paper: 6)
    fusion_heads: int = 4
    ff_dim: int = 512
    bilinear_dim: int = 16  # output size of the shared bilinear form (eq. 19)
    classifier_hidden: int = 128
    dropout: float = 0.2  # on projected features, in the TCMFI encoder and in the classifier
    attn_dropout: float = 0.0  # on CM-STA attention weights (0: on CPU it costs more than the attention)
    num_classes: int = 3
    max_len: int = 4096  # longest text/audio sequence for the sinusoidal positions
    use_cmsta: bool = True
    use_cg: bool = True
    use_tcmfi: bool = True

    # the paper's training setup (section 2.2); notebooks pass these to TrainConfig
    TRAIN_PRESET = {
        "optimizer": "adamw",
        "lr": 2e-3,
        "weight_decay": 3e-3,
        "batch_size": 16,
        "patience": 5,  # early stop: validation loss not lower for 5 epochs
        "monitor": "loss",
        "mode": "min",
        "task": "classification",
        "n_seeds": 5,
        "warmup_steps": 60,  # our choice for the unnamed "learning-rate scheduler": a linear warm-up
    }
    # text 384-d = MiniLM features of the synthetic 3-class data; real = RoBERTa/wav2vec/ResNeSt
    PRESETS = {
        "synth3": {"text_dim": 384},
        "tess_mvsa": {"text_dim": 768, "audio_dim": 768, "vision_dim": 2048},
        "mosi": {},
        "mosei": {},
        "sims": {},
    }


# --------------------------------------------------------------------------------------------
# 1.1 Feature projection and positions
# --------------------------------------------------------------------------------------------


def sinusoidal_positions(length: int, dim: int, device, dtype) -> Tensor:
    """(length, dim) fixed sine/cosine time positions (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe.to(dtype)


class Projection(nn.Module):
    """Linear map of one modality's features to the shared D, then LayerNorm and dropout."""

    def __init__(self, in_dim: int, d: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.norm(self.linear(x)))


class GridPositions(nn.Module):
    """Learned 2-D positions of a grid x grid image map: row embedding + column embedding."""

    def __init__(self, grid: int, d: int):
        super().__init__()
        self.grid = grid
        self.row = nn.Parameter(torch.randn(grid, d) * 0.02)
        self.col = nn.Parameter(torch.randn(grid, d) * 0.02)

    def forward(self) -> Tensor:  # (grid*grid, D), row-major like the flattened feature map
        return (self.row[:, None, :] + self.col[None, :, :]).reshape(self.grid * self.grid, -1)


def valid_steps(batch: Batch, modality: str) -> Tensor:
    """(B, T) float mask from the lengths only: 1 inside the sequence, 0 on padding."""
    x = getattr(batch, modality)
    lengths = batch.lengths(modality).to(x.device)
    return (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of (B,T,D) using a (B,T) 0/1 mask; rows with no valid step average all steps."""
    mask = mask.to(x.dtype)
    empty = mask.sum(1, keepdim=True) == 0
    mask = torch.where(empty, torch.ones_like(mask), mask)
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


# --------------------------------------------------------------------------------------------
# 1.2 CM-STA: cross-modal spatio-temporal attention (eqs. 1-5)
# --------------------------------------------------------------------------------------------


class CrossModalAttention(nn.Module):
    """``num_layers`` stacked cross-attentions of a query modality over a key modality."""

    def __init__(self, d: int, heads: int, num_layers: int, dropout: float, alpha_init: float):
        super().__init__()
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True) for _ in range(num_layers)
        )
        self.alpha = nn.Parameter(torch.full((num_layers,), float(alpha_init)))  # alpha_i, eq. (2)
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(num_layers))

    def forward(self, query: Tensor, kv: Tensor, kv_pad: Tensor) -> tuple[Tensor, Tensor]:
        """query (B,Lq,D), kv (B,Lk,D), kv_pad (B,Lk) True = ignore.

        Returns (B,Lq,D) and the last layer's map (B,Lq,Lk) in eval mode (None in training)."""
        h, weights = query, None
        kv_pad = kv_pad & ~kv_pad.all(1, keepdim=True)  # an empty key sequence: attend to its zeros
        for k, (attn, alpha, norm) in enumerate(zip(self.attn, self.alpha, self.norm)):
            # eq. (1): softmax(Q K^T / sqrt(d_k)) V with Q = h W_Q, K = F_kv W_K, V = F_kv W_V (multi-head);
            # the map is returned (for the notebook) only by the last layer in eval mode: training uses
            # the fused kernel, which never materialises it
            want = not self.training and k == len(self.attn) - 1
            z, w = mha(attn, h, kv, kv, ~kv_pad, need_weights=want)
            weights = w.mean(1) if want else weights             # the heads' mean map (B, Lq, Lk)
            h = norm(h + alpha * z)  # eq. (2) residual with learnable alpha_i, eq. (3) LayerNorm
        return h, weights  # eq. (4): F_qk = F_q^(num_layers)


class CMSTA(nn.Module):
    """The three pairs text->image, text->audio, audio->image, mean-pooled (eq. 5)."""

    PAIRS = (("ti", "text", "vision"), ("ta", "text", "audio"), ("ai", "audio", "vision"))

    def __init__(self, cfg: CMSTACGConfig):
        super().__init__()
        self.pairs = nn.ModuleDict(
            {
                name: CrossModalAttention(cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.attn_dropout, cfg.alpha_init)
                for name, _, _ in self.PAIRS
            }
        )

    def forward(self, seq: dict, valid: dict) -> tuple[dict, dict]:
        pooled, maps = {}, {}
        for name, q, k in self.PAIRS:
            h, maps[name] = self.pairs[name](seq[q], seq[k], valid[k] == 0)
            pooled[name] = masked_mean(h, valid[q])  # eq. (5): F'_qk = Mean(F_qk, dim=1)
        return pooled, maps


# --------------------------------------------------------------------------------------------
# 1.3 CG: contextual gating (eqs. 6-11)
# --------------------------------------------------------------------------------------------


class ContextGate(nn.Module):
    """g = Sigmoid(W4 ReLU(W3 ReLU(W2 ReLU(W1 a + b1) + b2) + b3) + b4)  (eqs. 7-10)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.ReLU(),  # eq. (7)
            nn.Linear(hidden, hidden), nn.ReLU(),  # eq. (8)
            nn.Linear(hidden, hidden), nn.ReLU(),  # eq. (9)
            nn.Linear(hidden, d), nn.Sigmoid(),  # eq. (10)
        )
        # He initialisation keeps the signal's scale through the ReLU layers (PyTorch's default
        # shrinks it ~0.4x per layer: a constant gate of 0.5 whose gradient never reaches CM-STA);
        # the last layer is Glorot-initialised, so the pre-sigmoid values start near 0 +- 1
        for layer in self.mlp[:-2:2]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.xavier_normal_(self.mlp[-2].weight)
        nn.init.zeros_(self.mlp[-2].bias)

    def forward(self, context: Tensor) -> Tensor:
        return self.mlp(context)


def gate_contexts(pair: dict) -> dict:
    """Eq. (6) for every modality: the sum of the two pair features that involve it."""
    return {
        "text": pair["ti"] + pair["ta"],  # a_text = F'_ti + F'_ta
        "vision": pair["ti"] + pair["ai"],  # a_image = F'_ti + F'_ai
        "audio": pair["ta"] + pair["ai"],  # a_audio = F'_ta + F'_ai
    }


# --------------------------------------------------------------------------------------------
# 1.4 TCMFI: Transformer cross-modal fusion interaction (eqs. 12-19)
# --------------------------------------------------------------------------------------------


def bilinear_interactions(t: Tensor, i: Tensor, a: Tensor, bilinear: nn.Bilinear) -> Tensor:
    """Eq. (19) with one shared W_b: [B_TI, B_TA, B_IA], each (B, bilinear_dim), concatenated."""
    return torch.cat([bilinear(t, i), bilinear(t, a), bilinear(i, a)], dim=-1)


class TCMFI(nn.Module):
    def __init__(self, cfg: CMSTACGConfig, n_tokens: int):
        super().__init__()
        d = cfg.d_model
        self.n_tokens = n_tokens
        self.position = nn.Parameter(torch.randn(n_tokens, d) * cfg.position_std)  # P of eq. (12)
        layer = nn.TransformerEncoderLayer(  # eqs. (13)-(18): MHSA, Add&Norm, FFN(ReLU), Add&Norm
            d, cfg.fusion_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout,
            activation="relu", batch_first=True, norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.fusion_layers, enable_nested_tensor=False)
        self.bilinear = nn.Bilinear(d, d, cfg.bilinear_dim)  # shared W_b of eq. (19)
        self.local = nn.Linear(3 * cfg.bilinear_dim, d)  # "reduced to a specific dimension"
        self.mix = nn.Parameter(torch.zeros(2))  # learnable global/local weights (softmax)

    def forward(self, tokens: Tensor) -> tuple[Tensor, dict]:
        x = tokens + self.position  # eq. (12): X' = X + P
        o2 = self.encoder(x)  # (B, n_tokens, D) after 6 x eqs. (13)-(18)
        # slots are [text, vision, audio] (x1 or x2: gated/context then original): average per modality
        per_mod = o2.reshape(o2.shape[0], -1, 3, o2.shape[-1]).mean(1)
        t, i, a = per_mod.unbind(1)
        local = self.local(bilinear_interactions(t, i, a, self.bilinear))  # eq. (19) -> local vector
        glob = o2.mean(1)  # global feature of the Transformer
        w = torch.softmax(self.mix, 0)
        fused = w[0] * glob + w[1] * local
        return fused, {"fusion_weights": w.detach().expand(tokens.shape[0], 2)}


# --------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------


class CMSTACG(nn.Module):
    def __init__(self, cfg: CMSTACGConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if d % cfg.num_heads or d % cfg.fusion_heads:
            raise ValueError(f"d_model={d} must be divisible by num_heads={cfg.num_heads} and fusion_heads={cfg.fusion_heads}")
        self.proj = nn.ModuleDict(
            {
                "text": Projection(cfg.text_dim, d, cfg.dropout),
                "audio": Projection(cfg.audio_dim, d, cfg.dropout),
                "vision": Projection(cfg.vision_dim, d, cfg.dropout),
            }
        )
        # positions only feed the cross-attentions, so they exist only with CM-STA
        self.grid_pos = GridPositions(cfg.grid, d) if cfg.use_cmsta else None
        self.cmsta = CMSTA(cfg) if cfg.use_cmsta else None
        self.gates = nn.ModuleDict({m: ContextGate(d, cfg.gate_hidden) for m in GATE_ORDER}) if cfg.use_cg else None
        n_tokens = 3 if not (cfg.use_cmsta or cfg.use_cg) else 6
        self.tcmfi = TCMFI(cfg, n_tokens) if cfg.use_tcmfi else None
        head_in = d if cfg.use_tcmfi else n_tokens * d
        self.classifier = nn.Sequential(
            nn.Linear(head_in, cfg.classifier_hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.classifier_hidden, cfg.num_classes),
        )

    # ---- input checks -----------------------------------------------------------------------
    def _check(self, batch: Batch) -> None:
        cfg = self.cfg
        if batch.text is None:
            raise ValueError("cmsta_cg reads pre-extracted text features: batch.text must be (B, L, text_dim)")
        for m, dim in (("text", cfg.text_dim), ("audio", cfg.audio_dim), ("vision", cfg.vision_dim)):
            x = getattr(batch, m)
            if x.dim() != 3 or x.shape[-1] != dim:
                raise ValueError(f"batch.{m} must have shape (B, T, {dim}); got {tuple(x.shape)}")
        if batch.vision.shape[1] != cfg.grid * cfg.grid:
            raise ValueError(
                f"batch.vision must be a {cfg.grid}x{cfg.grid} grid of image patches, i.e. shape "
                f"(B, {cfg.grid * cfg.grid}, {cfg.vision_dim}); got {tuple(batch.vision.shape)}"
            )

    def forward(self, batch: Batch) -> ModelOutput:
        self._check(batch)
        cfg = self.cfg
        valid = {m: valid_steps(batch, m) for m in GATE_ORDER}  # (B,T) 1 = inside the length

        # 1.1 projection to D; mean-pooled projected features are the F'_t, F'_i, F'_a of eq. (11)
        feats = {m: self.proj[m](getattr(batch, m)) for m in GATE_ORDER}
        pooled = {m: masked_mean(feats[m], valid[m]) for m in GATE_ORDER}

        extras: dict = {}
        # 1.2 CM-STA (eqs. 1-5) -> 1.3 CG context (eq. 6)
        if self.cmsta is not None:
            seq = self.add_positions(feats)
            pair, maps = self.cmsta(seq, valid)
            context = gate_contexts(pair)
            if not self.training:  # {"ti": (B,L,49), "ta": (B,L,Ta), "ai": (B,Ta,49)}, last layer
                extras["cross_attention"] = maps
            extras["pair_features"] = pair
        else:  # ablation: each modality gates itself from its own summary
            context = dict(pooled)

        # 1.3 CG (eqs. 7-11)
        if self.gates is not None:
            g = {m: self.gates[m](context[m]) for m in GATE_ORDER}
            first = {m: g[m] * pooled[m] for m in GATE_ORDER}  # eq. (11)
            extras["gates"] = torch.stack([g[m].mean(-1) for m in GATE_ORDER], 1)  # (B,3) t,a,v
            extras["gate_vectors"] = torch.stack([g[m] for m in GATE_ORDER], 1)  # (B,3,D)
        elif self.cmsta is not None:  # ablation: CM-STA contexts enter the fusion ungated
            first = context
        else:
            first = None

        # 1.4 TCMFI (eqs. 12-19); slot order text, image, audio as in the paper
        order = ("text", "vision", "audio")
        slots = ([first[m] for m in order] if first is not None else []) + [pooled[m] for m in order]
        tokens = torch.stack(slots, 1)  # (B, 6 or 3, D)
        if self.tcmfi is not None:
            fused, more = self.tcmfi(tokens)
            extras.update(more)
        else:  # ablation: late-fusion MLP on the concatenated slot vectors
            fused = tokens.flatten(1)
        logits = self.classifier(fused)
        extras["fused"] = fused

        losses = {}
        if batch.label is not None:
            if batch.label.dtype.is_floating_point:
                raise ValueError("cmsta_cg is a classifier: batch.label must be a long class index (B,)")
            losses["task"] = F.cross_entropy(logits.float(), batch.label)
        return ModelOutput(pred=logits, losses=losses, extras=extras)

    def add_positions(self, feats: dict) -> dict:
        """Temporal (sinusoidal) positions for text and audio, spatial (row + column) ones for the image."""
        seq = {}
        for m in ("text", "audio"):
            T = feats[m].shape[1]
            if T > self.cfg.max_len:
                raise ValueError(f"{m} has {T} steps, more than max_len={self.cfg.max_len}")
            seq[m] = feats[m] + sinusoidal_positions(T, self.cfg.d_model, feats[m].device, feats[m].dtype)
        seq["vision"] = feats["vision"] + self.grid_pos().to(feats["vision"].dtype)
        return seq


@register("cmsta_cg")
def build_cmsta_cg(**config) -> CMSTACG:
    return CMSTACG(make_config(CMSTACGConfig, **config))
