"""STA: spatio-temporal attention after the EMT layers (DAST-GAN, docs/design.md §3.3).

    A_m = Align(Q_m, X_m^L)                       T learnable queries per modality    (Eq. 8)
          step t is anchored at relative time (t+½)/T of each sequence by an additive
          Gaussian bias −(r_k − (t+½)/T)² / (2σ²) on key k at relative time r_k = (k+½)/len
          (σ = ``align_sigma``; None/0 = pure content alignment).  Keys: valid, observed steps.
    H_t  = A + TemporalSelfAttn(LN(A))            within each modality over the T steps (Eq. 9)
    H_s  = A + SpatialAttn(LN(A + e_m), [·; ḡ])   across the 3 modalities at each step,
                                                  + the pooled global token ḡ (always valid) (Eq. 10)
    g    = σ(W[H_t; H_s]);  S = g⊙H_t + (1−g)⊙H_s;  S ← S + FFN(LN(S))                  (Eq. 11)
    β_m  = softmax_t(w₂ᵀ tanh(W₁ LN(S_m,t)))      attention pooling over the T steps
    s    = Σ_m α_m Σ_t β_m,t S_m,t                combined by the DAM weights α          (Eq. 12)

Pooling by attention, not by a plain mean, is what lets STA *find* something in time: an
expression is a short burst, and a mean over 50 steps dilutes a 5-step burst ten times, while
β can put its mass on the burst.

Extras: ``temporal_pooling`` (B, 3, T) = β (rows sum to 1 over t; rows of a modality with no
observed step are 0) and ``temporal_attention`` (B, heads, 3, T) = the temporal self-attention
of Eq. 9 averaged over its T query steps.  Because step t is anchored at relative time
(t+½)/T, a cue in the modality's own steps [s, e) of a sequence of length n lies at aligned
steps ≈ [s·T/n, e·T/n).  Where a model *looks* is measured best by occlusion (remove the true
cue window vs a random window of the same length and compare how much ŷ moves).

The alignment maps of Eq. 8 ((B, heads, T, T_m) per modality, T_m up to 500) are built only on
request: set ``sta.return_alignment = True`` and the extras carry ``alignment_attention``
{modality: (B, T, T_m)} (averaged over heads).  Otherwise Eq. 8 runs in a fused kernel that never
materialises them.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from mmsa.attention import LengthGroups, mha
from mmsa.fusion.emt import GEGLU, sinusoidal_positions


def alignment_bias(lengths: Tensor, T: int, S: int, sigma: float, dtype) -> Tensor:
    """(B, T, S) additive bias anchoring aligned step t at relative time (t+½)/T."""
    n = lengths.clamp(min=1).to(torch.float32)[:, None, None]
    r = (torch.arange(S, device=lengths.device, dtype=torch.float32)[None, None] + 0.5) / n
    c = (torch.arange(T, device=lengths.device, dtype=torch.float32)[None, :, None] + 0.5) / T
    return (-(r - c) ** 2 / (2 * sigma ** 2)).to(dtype)


class STA(nn.Module):
    def __init__(self, dim: int, steps: int = 50, heads: int = 4, dropout: float = 0.0,
                 ff_mult: int = 4, align_sigma: Optional[float] = 0.1, n_modalities: int = 3):
        super().__init__()
        self.steps, self.sigma = steps, align_sigma
        self.queries = nn.Parameter(torch.randn(n_modalities, steps, dim) / math.sqrt(dim))
        self.norm_align = nn.LayerNorm(dim)
        self.align = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_t = nn.LayerNorm(dim)
        self.temporal = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.modality_emb = nn.Parameter(torch.randn(n_modalities, dim) / math.sqrt(dim))
        self.norm_s = nn.LayerNorm(dim)
        self.spatial = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.gate = nn.Linear(2 * dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, ff_mult, dropout)
        self.norm_pool = nn.LayerNorm(dim)
        self.pool_score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.return_alignment = False   # True: extras["alignment_attention"] (costly maps, for figures)

    def forward(self, xs: list[Tensor], keys: list[Tensor], lengths: list[Tensor], g_pool: Tensor,
                alpha: Tensor) -> tuple[Tensor, dict]:
        """xs[m] (B,T_m,D), keys[m] (B,T_m) bool, lengths[m] (B,), g_pool (B,D), alpha (B,3) -> s (B,D)."""
        B, D = g_pool.shape
        T, M = self.steps, len(xs)
        pe = sinusoidal_positions(T, D, g_pool.device, g_pool.dtype)
        aligned, align_w = [], []
        for m, (x, k, n) in enumerate(zip(xs, keys, lengths)):                      # Eq. 8
            q = (self.queries[m].to(x.dtype) + pe).expand(B, T, D)
            bias = alignment_bias(n.to(x.device), T, x.shape[1], self.sigma, x.dtype) if self.sigma else None
            a, w = self.align_one(q, x, k, bias)
            aligned.append(a)
            align_w.append(None if w is None else w.mean(1))
        A = torch.stack(aligned, 1)                                                 # (B,3,T,D)
        avail = torch.stack([k.any(1) for k in keys], 1)                            # (B,3) bool
        step_valid = avail[:, :, None].expand(B, M, T)

        a = A.reshape(B * M, T, D)                                                  # Eq. 9
        h = self.norm_t(a)
        ht, wt = mha(self.temporal, h, h, h, step_valid.reshape(B * M, T), need_weights=True)
        Ht = (a + ht).reshape(B, M, T, D)
        temporal_attention = wt.mean(2).reshape(B, M, -1, T).transpose(1, 2)      # (B,heads,3,T)

        sp = (A + self.modality_emb.to(A.dtype)[None, :, None]).transpose(1, 2).reshape(B * T, M, D)  # Eq. 10
        ctx = torch.cat([sp, g_pool[:, None].expand(B, T, D).reshape(B * T, 1, D)], 1)
        ctx_valid = torch.cat([avail[:, None].expand(B, T, M).reshape(B * T, M),
                               torch.ones(B * T, 1, dtype=torch.bool, device=A.device)], 1)
        c = self.norm_s(ctx)                                                        # c[:, :M] = LN(sp)
        hs, _ = mha(self.spatial, c[:, :M], c, c, ctx_valid)
        Hs = A + hs.reshape(B, T, M, D).transpose(1, 2)

        g = torch.sigmoid(self.gate(torch.cat([Ht, Hs], -1)))                        # Eq. 11
        S = g * Ht + (1 - g) * Hs
        S = S + self.ff(self.norm_ff(S))

        score = self.pool_score(self.norm_pool(S)).squeeze(-1).float()             # Eq. 12
        beta = score.masked_fill(~step_valid, float("-inf")).softmax(-1)
        beta = torch.nan_to_num(beta, nan=0.0)                                      # no observed step: 0
        pooled = torch.einsum("bmt,bmtd->bmd", beta.to(S.dtype), S)                 # (B,3,D)
        s = torch.einsum("bm,bmd->bd", alpha.to(pooled.dtype), pooled)
        extras = {"temporal_attention": temporal_attention, "temporal_pooling": beta, "aligned": A}
        if self.return_alignment:
            extras["alignment_attention"] = dict(zip(("text", "audio", "vision"), align_w))
        return s, extras


    def align_one(self, q: Tensor, x: Tensor, keys: Tensor, bias: Optional[Tensor]):
        """Eq. 8 for one modality: q (B,T,D), x (B,T_m,D), keys (B,T_m), bias (B,T,T_m) ->
        (aligned (B,T,D), maps (B,heads,T,T_m) or None).  On a CPU the clips run in groups of
        similar length, each cut after its last key (``mmsa.attention.LengthGroups``)."""
        groups = None if self.return_alignment else LengthGroups.of(keys)
        if groups is None:
            kv = self.norm_align(x)
            return mha(self.align, q, kv, kv, keys, bias, need_weights=self.return_alignment)
        parts = []
        biases = groups.split(bias) if bias is not None else [None] * len(groups.cuts)
        for q_, x_, k_, b_, t in zip(groups.split(q), groups.split(x), groups.split(keys), biases, groups.cuts):
            kv = self.norm_align(x_[:, :t])
            parts.append(mha(self.align, q_, kv, kv, k_[:, :t], None if b_ is None else b_[..., :t])[0])
        return groups.merge(parts), None


class PlainSelfAttention(nn.Module):
    """``use_sta=False``: one standard PreNorm self-attention + FFN layer per local stream,
    masked mean over observed steps, combined by α (the paper's "w/o STA")."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, ff_mult: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, ff_mult, dropout)

    def forward(self, xs: list[Tensor], keys: list[Tensor], lengths: list[Tensor], g_pool: Tensor,
                alpha: Tensor) -> tuple[Tensor, dict]:
        pooled = []
        for x, k in zip(xs, keys):
            h = self.norm(x)
            x = x + mha(self.attn, h, h, h, k)[0]
            x = x + self.ff(self.norm_ff(x))
            w = k.to(x.dtype)[..., None]
            pooled.append((x * w).sum(1) / w.sum(1).clamp(min=1.0))
        s = torch.einsum("bm,bmd->bd", alpha.to(x.dtype), torch.stack(pooled, 1))
        return s, {}
