"""EMT-DLFR: Efficient Multimodal Transformer + Dual-Level Feature Restoration (docs/design.md §3.2).

Read top to bottom as the method:
 1. encoders   text BERT (local token states, global [CLS]); audio/vision LSTMs
 2. context    G⁰ = stack(P_l h_l, P_a h_a, P_v h_v) ∈ (B,3,D);  X_m = LN_m(P_m H_m) + PE
 3. EMT        L mutual-promotion layers (``mmsa.fusion.emt``) -> G^L, X_m^L
 4. head       ŷ = MLP(concat[h_l, h_a, h_v, vec(G^L)])
 5. DLFR       (training) the complete view goes through the same weights; SimSiam attraction
               between the views on vec(G^L), h_l, h_a, h_v; reconstruction of dropped positions
               of the incomplete view from X_m^L.
    L = L1(ŷ_miss) + w_att (Σ L_attra + L1(ŷ_full)) + w_rec Σ L_rec

In ``eval()`` only the incomplete view (the batch itself) runs: projectors, predictors and
reconstruction heads cost nothing at inference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from mmsa.config import make_config
from mmsa.encoders import SequenceEncoder, TextEncoder
from mmsa.fusion.emt import EMT, sinusoidal_positions
from mmsa.losses import make_predictor, make_projector, reconstruction_loss, simsiam_loss, task_loss
from mmsa.models import register
from mmsa.types import MODALITIES, Batch, ModelOutput


@dataclass
class EMTDLFRConfig:
    dataset: Optional[str] = None
    # input feature sizes (text_dim is replaced by the BERT hidden size when a BERT is built)
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    # text encoder: "minilm" (packaged MiniLM-L6-H384), a local BERT directory, or "tiny"
    text_model: str = "minilm"
    freeze_text: bool = False
    use_text_features: bool = False   # read batch.text (pre-extracted states), build no BERT
    # audio / vision LSTMs
    audio_hidden: int = 32
    vision_hidden: int = 64
    audio_out: int = 16
    vision_out: int = 32
    # EMT
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    attn_dropout: float = 0.3
    emb_dropout: float = 0.0
    ff_mult: int = 4
    # prediction head
    mlp_hidden: int = 256
    mlp_dropout: float = 0.3
    num_classes: int = 0              # 0 = regression (L1); C > 1 = classification (CE)
    # DLFR
    proj_dim: int = 128               # SimSiam projector output size
    pred_hidden: int = 64             # SimSiam predictor bottleneck
    w_att: float = 1.0
    w_rec: float = 1.0

    PRESETS: ClassVar[dict] = {
        "mosi": dict(text_dim=768, audio_dim=5, vision_dim=20, d_model=128, n_layers=3, n_heads=4,
                     attn_dropout=0.3, w_att=1.0, w_rec=1.0),
        # One reading of the DAST-GAN paper's hyper-parameter table for every row: its columns
        # labelled CH-SIMS and CMU-MOSEI are the EMT-DLFR code's MOSEI and SIMS configs (sizes,
        # batch, dropout *and* loss weights agree that way), so MOSEI takes the middle column and
        # SIMS the right one (docs/design.md §3.3, "The hyper-parameter table").
        "mosei": dict(text_dim=768, audio_dim=74, vision_dim=35, d_model=128, n_layers=2, n_heads=4,
                      attn_dropout=0.0, w_att=1.0, w_rec=1.0),
        "sims": dict(text_dim=768, audio_dim=33, vision_dim=709, d_model=32, n_layers=4, n_heads=4,
                     attn_dropout=0.0, proj_dim=32, pred_hidden=16, w_att=0.5, w_rec=0.5),
    }


def valid_mask(batch: Batch, modality: str) -> Tensor:
    """(B, T) bool: position inside the sequence's length (padding excluded, missing included)."""
    ref = batch.text_ids if modality == "text" and batch.text_ids is not None else getattr(batch, modality)
    if modality == "text" and ref is None:
        ref = batch.text
    T = ref.shape[1]
    return torch.arange(T, device=ref.device)[None] < batch.lengths(modality).to(ref.device)[:, None]


def dropped_mask(batch: Batch, modality: str) -> Tensor:
    """(B, T) float: valid AND dropped by the missing simulation (from ``batch.missing``)."""
    valid = valid_mask(batch, modality)
    if modality not in batch.missing:
        return torch.zeros_like(valid, dtype=torch.float32)
    return (valid & (batch.missing[modality].to(valid.device) < 0.5)).float()


def stack_views(a: Batch, b: Batch) -> Batch:
    """One batch of 2B clips, a's then b's, holding what a forward pass reads (inputs, lengths).

    DLFR runs the incomplete and the complete view through the same weights; one pass over the
    stacked batch computes exactly what two passes would (every operation is per clip) with half
    as many (twice as large) operations, which is most of the cost on a CPU at these sizes.
    """
    def cat(x, y):
        return None if x is None or y is None else torch.cat([x, y.to(x.device)], 0)

    return Batch(audio=cat(a.audio, b.audio), vision=cat(a.vision, b.vision), label=cat(a.label, b.label),
                text=cat(a.text, b.text), text_ids=cat(a.text_ids, b.text_ids), text_mask=cat(a.text_mask, b.text_mask),
                text_lengths=cat(a.text_lengths, b.text_lengths), audio_lengths=cat(a.audio_lengths, b.audio_lengths),
                vision_lengths=cat(a.vision_lengths, b.vision_lengths))


def split_views(tree, B: int):
    """Inverse of ``stack_views`` for a view's outputs: every tensor (batch first) cut at B."""
    if isinstance(tree, Tensor):
        return tree[:B], tree[B:]
    if isinstance(tree, dict):
        pairs = {k: split_views(v, B) for k, v in tree.items()}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if isinstance(tree, (list, tuple)):
        pairs = [split_views(v, B) for v in tree]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return tree, tree


class EMTDLFR(nn.Module):
    def __init__(self, cfg: EMTDLFRConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        # 1. encoders
        self.text_encoder = TextEncoder(cfg.text_model, freeze=cfg.freeze_text,
                                        use_features=cfg.use_text_features, feature_dim=cfg.text_dim)
        self.text_dim = self.text_encoder.dim
        self.audio_encoder = SequenceEncoder(cfg.audio_dim, cfg.audio_hidden, cfg.audio_out)
        self.vision_encoder = SequenceEncoder(cfg.vision_dim, cfg.vision_hidden, cfg.vision_out)
        self.enc_dims = {"text": self.text_dim, "audio": cfg.audio_out, "vision": cfg.vision_out}
        # 2. bias-free projections shared by the global and the local path
        self.proj = nn.ModuleDict({m: nn.Linear(self.enc_dims[m], D, bias=False) for m in MODALITIES})
        # the local streams are normalised before the position codes are added: a projected
        # LSTM output has norm ~0.4 at D=32, a sinusoidal code ~4, and without the norm the
        # attention would see mostly positions
        self.local_norm = nn.ModuleDict({m: nn.LayerNorm(D) for m in MODALITIES})
        self.emb_dropout = nn.Dropout(cfg.emb_dropout)
        # 3. EMT
        self.emt = EMT(D, cfg.n_layers, cfg.n_heads, cfg.attn_dropout, cfg.ff_mult, pooling=self._emt_pooling())
        # 4. head
        out = cfg.num_classes if cfg.num_classes > 1 else 1
        self.head = nn.Sequential(nn.Linear(self.head_dim(), cfg.mlp_hidden), nn.ReLU(),
                                  nn.Dropout(cfg.mlp_dropout), nn.Linear(cfg.mlp_hidden, out))
        # 5. DLFR (training only; names start with projector./predictor./recon.)
        feat = self.attraction_dims()
        self.projector = nn.ModuleDict({k: make_projector(d, cfg.proj_dim) for k, d in feat.items()})
        self.predictor = nn.ModuleDict({k: make_predictor(cfg.proj_dim, cfg.pred_hidden) for k in feat})
        raw = {"text": self.text_dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        self.recon = nn.ModuleDict({m: nn.Linear(D, raw[m]) for m in MODALITIES})

    # -- hooks DAST-GAN overrides ------------------------------------------------------------
    def _emt_pooling(self) -> bool:
        return True

    def head_dim(self) -> int:
        return self.text_dim + self.cfg.audio_out + self.cfg.vision_out + 3 * self.cfg.d_model

    def attraction_dims(self) -> dict:
        return {"g": 3 * self.cfg.d_model, "text": self.text_dim, "audio": self.cfg.audio_out,
                "vision": self.cfg.vision_out}

    def fuse(self, batch: Batch, g: Tensor, xs: list, valid: list) -> dict:
        """EMT fusion -> {"g": G^L, "xs": [X_m^L], "weights": (B,3), "head_extra": [], "extras": {}}."""
        g, xs, w = self.emt(g, xs, valid)
        return {"g": g, "xs": xs, "weights": w[:, -1], "head_extra": [], "extras": {"layer_weights": w}}

    # -- one view ----------------------------------------------------------------------------
    def encode(self, batch: Batch) -> dict:
        """Run the three encoders -> locals {m: (B,T_m,d_m)}, globals {m: (B,d_m)}, valid masks."""
        t_loc, t_glob = self.text_encoder(batch)
        a_loc, a_glob = self.audio_encoder(batch.audio, batch.lengths("audio"))
        v_loc, v_glob = self.vision_encoder(batch.vision, batch.lengths("vision"))
        return {"local": {"text": t_loc, "audio": a_loc, "vision": v_loc},
                "global": {"text": t_glob, "audio": a_glob, "vision": v_glob},
                "valid": {m: valid_mask(batch, m) for m in MODALITIES}}

    def view(self, batch: Batch) -> dict:
        enc = self.encode(batch)
        # Eq. (context): G⁰ = stack(P_m h_m);  X_m = LN_m(P_m H_m) + PE
        g = torch.stack([self.proj[m](enc["global"][m]) for m in MODALITIES], 1)
        xs = []
        for m in MODALITIES:
            x = self.local_norm[m](self.proj[m](enc["local"][m]))
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
            xs.append(self.emb_dropout(x))
        valid = [enc["valid"][m] for m in MODALITIES]
        fused = self.fuse(batch, g, xs, valid)
        feats = {"g": fused["g"].flatten(1), **{m: enc["global"][m] for m in MODALITIES}, **fused.get("feats", {})}
        h = torch.cat([feats["text"], feats["audio"], feats["vision"], feats["g"], *fused["head_extra"]], -1)
        pred = self.head(h).float()   # fp32 predictions also under bf16 autocast
        pred = pred.squeeze(-1) if pred.shape[-1] == 1 else pred
        return {"pred": pred, "h": h, "feats": feats, "fused": fused, "enc": enc}

    # -- DLFR terms --------------------------------------------------------------------------
    def attraction(self, miss: dict, full: dict) -> Tensor:
        total = 0.0
        for k, proj in self.projector.items():
            z_m, z_f = proj(miss["feats"][k]), proj(full["feats"][k])
            total = total + simsiam_loss(self.predictor[k](z_m), z_m, self.predictor[k](z_f), z_f)
        return total

    def reconstruction(self, batch: Batch, miss: dict, full: dict, full_batch: Batch) -> Tensor:
        if batch.full is None:  # no complete view to reconstruct from: the term is 0
            return miss["pred"].new_zeros((), dtype=torch.float32)
        targets = {"text": full["enc"]["local"]["text"].detach(), "audio": full_batch.audio,
                   "vision": full_batch.vision}
        total = 0.0
        for i, m in enumerate(MODALITIES):
            pred = self.recon[m](miss["fused"]["xs"][i])
            total = total + reconstruction_loss(pred, targets[m].to(pred.device), dropped_mask(batch, m))
        return total

    def forward(self, batch: Batch) -> ModelOutput:
        if self.training:   # both views in one pass (see stack_views); only training reads the complete view
            full_batch = batch.full if batch.full is not None else batch
            miss, full = split_views(self.view(stack_views(batch, full_batch)), batch.size)
        else:               # inference: the incomplete view only
            miss = self.view(batch)
        losses = {}
        if batch.label is not None:
            losses["task"] = task_loss(miss["pred"], batch.label)
        extras = {"global_context": miss["fused"]["g"], "h": miss["h"],
                  "modality_weights": miss["fused"]["weights"], **miss["fused"]["extras"]}
        if self.training:
            if batch.label is not None:
                losses["task_full"] = self.cfg.w_att * task_loss(full["pred"], batch.label)
            losses["attraction"] = self.cfg.w_att * self.attraction(miss, full)
            losses["reconstruction"] = self.cfg.w_rec * self.reconstruction(batch, miss, full, full_batch)
            extras.update(self.training_extras(batch, miss, full, losses))
        return ModelOutput(pred=miss["pred"], losses=losses, extras=extras)

    def training_extras(self, batch: Batch, miss: dict, full: dict, losses: dict) -> dict:
        return {}


@register("emt_dlfr")
def build_emt_dlfr(**config) -> EMTDLFR:
    return EMTDLFR(make_config(EMTDLFRConfig, **config))
