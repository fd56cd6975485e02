"""EMT: Efficient Multimodal Transformer with mutual promotion (docs/design.md §3.2).

Notation: G ∈ (B, 3, D) is the global multimodal context (one token per modality),
X_m ∈ (B, T_m, D) the local stream of modality m.  One EMT layer does, for every m in parallel,

    X_m^k   = Block(query=X_m^{k-1}, context=G^{k-1})          local  <- global   (Eq. 1)
    G^(m),k = Block(query=G^{k-1},   context=X_m^{k-1})        global <- local    (Eq. 2)
    G^k     = Σ_m a_m G^(m),k,   a = softmax_m(w2ᵀ tanh(W1 vec(G^(m),k)))         (Eq. 3)

where Block = PreNorm cross-attention -> PreNorm (masked) self-attention -> PreNorm GEGLU FFN,
each with a residual.  One Block (and one pooling) is shared by both directions, all
modalities and all layers.  DAST-GAN swaps Eq. 3 for its dynamic attention (``mmsa.fusion.dam``).

Masks are boolean, True = valid.  A query whose keys are all masked (e.g. a modality with no
valid step) gets a zero attention output (and zero weights) instead of NaN.  Attention runs
through ``mmsa.attention.mha`` (fused ``F.scaled_dot_product_attention`` kernels, the parameters
of ``nn.MultiheadAttention``).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsa.attention import Dropout, LengthGroups, mha


def sinusoidal_positions(T: int, D: int, device=None, dtype=torch.float32) -> Tensor:
    """(T, D) fixed sinusoidal position codes (Vaswani et al.)."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, D, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / D))
    pe = torch.zeros(T, D, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: D // 2])
    return pe.to(dtype)


# the package's attention helper (``mmsa.attention.mha``) under its former name
masked_attention = mha


class GEGLU(nn.Module):
    """FFN(x) = W2 (x W_a ⊙ GELU(x W_g)), Shazeer 2020."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.inp(x).chunk(2, dim=-1)
        return self.out(self.dropout(a * F.gelu(gate)))


class PromotionBlock(nn.Module):
    """x <- x + CrossAttn(LN(x), LN(ctx)); x <- x + SelfAttn(LN(x)); x <- x + GEGLU(LN(x))."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, ff_mult: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model={dim} must be divisible by n_heads={heads}")
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, ff_mult, dropout)

    def forward(self, x: Tensor, ctx: Tensor, x_valid: Optional[Tensor] = None,
                ctx_valid: Optional[Tensor] = None) -> Tensor:
        c = self.norm_ctx(ctx)
        x = x + mha(self.cross, self.norm_q(x), c, c, ctx_valid)[0]
        h = self.norm_self(x)
        x = x + mha(self.self_attn, h, h, h, x_valid)[0]
        return x + self.ff(self.norm_ff(x))


class AttentionPooling(nn.Module):
    """EMT's pooling of the per-modality candidates (Eq. 3): scores Linear-tanh-Linear on vec(G^(m))."""

    def __init__(self, dim: int, n_tokens: int = 3):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(n_tokens * dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, g_prev: Tensor, cands: Tensor) -> tuple[Tensor, Tensor]:
        # cands: (B, M, 3, D) -> weights (B, M) -> G (B, 3, D)
        a = self.score(cands.flatten(2)).squeeze(-1).softmax(-1)
        return torch.einsum("bm,bmtd->btd", a, cands), a


PoolFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class EMT(nn.Module):
    """Stack of ``n_layers`` mutual-promotion layers with one shared ``PromotionBlock``."""

    def __init__(self, dim: int, n_layers: int = 3, heads: int = 4, dropout: float = 0.0,
                 ff_mult: int = 4, pooling: bool = True):
        super().__init__()
        self.n_layers = n_layers
        self.block = PromotionBlock(dim, heads, dropout, ff_mult)
        self.pool = AttentionPooling(dim) if pooling else None

    def forward(self, g: Tensor, xs: list[Tensor], valid: list[Tensor],
                pool: Optional[PoolFn] = None) -> tuple[Tensor, list[Tensor], Tensor]:
        """g (B,3,D), xs[m] (B,T_m,D), valid[m] (B,T_m) bool -> (G^L, [X_m^L], weights (B,L,M))."""
        pool = pool or self.pool
        if pool is None:
            raise ValueError("EMT built with pooling=False needs a pool function")
        weights = []
        groups = [LengthGroups.of(v) for v in valid]
        for _ in range(self.n_layers):
            new_xs = [self.local(x, g, v, grp) for x, v, grp in zip(xs, valid, groups)]             # Eq. 1
            cands = torch.stack([self.globl(g, x, v, grp) for x, v, grp in zip(xs, valid, groups)], 1)  # Eq. 2
            g, a = pool(g, cands)                                                             # Eq. 3
            xs = new_xs
            weights.append(a)
        return g, xs, torch.stack(weights, 1)

    # Eq. 1 and 2 for one modality.  On a CPU they run on groups of clips of similar length, each
    # cut after its longest member's last valid step (``mmsa.attention.LengthGroups``): the
    # same values at the valid steps as one padded call, at a fraction of the cost; the padding
    # steps past a group's cut keep their input (nothing reads them).
    def local(self, x: Tensor, g: Tensor, valid: Tensor, groups: Optional[LengthGroups]) -> Tensor:
        """X_m <- Block(X_m, G)  (Eq. 1)."""
        if groups is None:
            return self.block(x, g, x_valid=valid)
        return groups.merge([torch.cat([self.block(x_[:, :t], g_, x_valid=v_[:, :t]), x_[:, t:]], 1)
                             for x_, g_, v_, t in zip(groups.split(x), groups.split(g), groups.split(valid),
                                                      groups.cuts)])

    def globl(self, g: Tensor, x: Tensor, valid: Tensor, groups: Optional[LengthGroups]) -> Tensor:
        """G^(m) <- Block(G, X_m)  (Eq. 2)."""
        if groups is None:
            return self.block(g, x, ctx_valid=valid)
        return groups.merge([self.block(g_, x_[:, :t], ctx_valid=v_[:, :t])
                             for g_, x_, v_, t in zip(groups.split(g), groups.split(x), groups.split(valid),
                                                      groups.cuts)])
