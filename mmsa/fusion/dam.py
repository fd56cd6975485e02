"""DAM: dynamic attention with missing compensation (DAST-GAN, SPEC §3.3).

Replaces EMT's pooling of the per-modality candidates G^(m),k:

    ρ_m = (# observed valid positions of m) / (# valid positions of m)       availability  (Eq. 4)
          read from the input itself: an all-zero frame / feature row or an [UNK] token is
          "not observed".  The oracle ``batch.missing`` mask is never used.
    G⁰_m ← G⁰_m + (1 − ρ_m) c_m                                               compensation  (Eq. 5)
    α^k  = softmax((MLP([vec(G^{k-1}); ρ]) + log(ρ + ε)) / τ),  τ = 1.2       weights       (Eq. 6)
    G^k  = Σ_m α^k_m G^(m),k                                                  fusion        (Eq. 7)

log(ρ+ε) (ε = 1e-6) pushes the weight of a fully missing modality to ≈ 0 whatever the MLP says
at initialisation; the MLP learns context-dependent preferences on top of it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mmsa.encoders import CLS_ID, PAD_ID, SEP_ID, UNK_ID
from mmsa.types import MODALITIES, Batch


def observed_from_input(batch: Batch, modality: str) -> tuple[Tensor, Tensor]:
    """(observed, content), both (B, T) bool, detected from the input values.

    content:  positions that could carry information (valid; for text: not [CLS]/[SEP]/[PAD];
              text given only as features: valid positions except the first and the last)
    observed: content positions that are present (text: not [UNK]; features: not an all-zero row)
    """
    if modality == "text" and batch.text_ids is not None:
        ids = batch.text_ids
        T = ids.shape[1]
        valid = torch.arange(T, device=ids.device)[None] < batch.lengths("text").to(ids.device)[:, None]
        content = valid & (ids != CLS_ID) & (ids != SEP_ID) & (ids != PAD_ID)
        return content & (ids != UNK_ID), content
    x = batch.text if modality == "text" else getattr(batch, modality)
    if x is None:
        raise ValueError(f"batch has no {modality} input")
    T = x.shape[1]
    pos = torch.arange(T, device=x.device)[None]
    n = batch.lengths(modality).to(x.device)[:, None]
    content = pos < n
    if modality == "text":  # feature rows without ids: position 0 and n-1 are [CLS]/[SEP] (as mmsa.missing)
        content = content & (pos > 0) & (pos < n - 1)
    return content & (x != 0).any(-1), content


def availability(batch: Batch) -> tuple[Tensor, dict]:
    """ρ (B, 3) in modality order text, audio, vision, and per-modality key masks (B, T) bool.

    The key masks (for STA's alignment) are the valid positions that are observed; for text the
    [CLS]/[SEP] tokens stay valid keys so a sentence with every word dropped still has keys.
    """
    rhos, keys = [], {}
    for m in MODALITIES:
        obs, content = observed_from_input(batch, m)
        rhos.append(obs.sum(1).float() / content.sum(1).clamp(min=1).float())
        if m == "text" and batch.text_ids is not None:
            ids = batch.text_ids
            valid = torch.arange(ids.shape[1], device=ids.device)[None] < batch.lengths("text").to(ids.device)[:, None]
            keys[m] = valid & (ids != UNK_ID)
        else:
            keys[m] = obs
    return torch.stack(rhos, 1), keys


class DAM(nn.Module):
    def __init__(self, dim: int, n_modalities: int = 3, hidden: int = 128, tau: float = 1.2, eps: float = 1e-6):
        super().__init__()
        self.tau, self.eps = tau, eps
        self.compensation = nn.Parameter(torch.zeros(n_modalities, dim))           # c_m
        self.mlp = nn.Sequential(nn.Linear(n_modalities * dim + n_modalities, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n_modalities))

    def compensate(self, g: Tensor, rho: Tensor) -> Tensor:
        """Eq. 5: G_m + (1 − ρ_m) c_m;  g (B,3,D), rho (B,3)."""
        return g + (1.0 - rho).to(g.dtype)[..., None] * self.compensation.to(g.dtype)

    def weights(self, g: Tensor, rho: Tensor) -> Tensor:
        """Eq. 6: α (B,3), rows sum to 1."""
        logits = self.mlp(torch.cat([g.flatten(1), rho.to(g.dtype)], -1)).float()
        return ((logits + torch.log(rho.float() + self.eps)) / self.tau).softmax(-1)

    def forward(self, g_prev: Tensor, cands: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 7: g_prev (B,3,D), cands (B,M,3,D) -> G (B,3,D), α (B,M)."""
        a = self.weights(g_prev, rho)
        return torch.einsum("bm,bmtd->btd", a.to(cands.dtype), cands), a
