"""DAM: dynamic attention with missing compensation (DAST-GAN; docs/design.md §3.3).

Replaces EMT's pooling of the per-modality candidates G^(m),k (the global context after it has
read modality m's local stream in layer k):

    ρ_m = (# observed valid positions of m) / (# valid positions of m)       availability  (Eq. 4)
          read from the input itself: an all-zero frame / feature row or an [UNK] token is
          "not observed".  The oracle ``batch.missing`` mask is never used.
    G⁰_m ← G⁰_m + (1 − ρ_m) c_m                                               compensation  (Eq. 5)
    z^k_m = MLP([LN(vec G^(m),k); ρ_m])        one scorer shared by the modalities            (Eq. 6)
    α^k  = softmax((z^k + log(ρ + ε)) / τ),  τ = 1.2                          weights       (Eq. 6)
    G^k  = Σ_m α^k_m G^(m),k                                                  fusion        (Eq. 7)

Two choices make α *dynamic* rather than a fixed preference:

* the score of modality m is computed from m's own candidate, by one scorer for all three, so
  a modality is weighted by what its stream looks like in this sample (noisy, weak, clear),
  not by which slot of a concatenation it sits in;
* the candidate is LayerNorm-ed before scoring, so the scorer cannot simply prefer the
  modality whose vectors happen to be largest (text states are several times larger than the
  audio/vision ones at initialisation, and an unnormalised scorer learned "always text").

log(ρ+ε) (ε = 1e-6) pushes the weight of a fully missing modality to ≈ 0 whatever the scorer
says; a modality that is half there loses log 2 of logit.
"""
from __future__ import annotations

from typing import Optional

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


def input_texture(batch: Batch) -> Tensor:
    """(B, 3) roughness of each modality's observed frames, read from the input like ρ:
    mean squared step |x_t − x_{t−1}|² over pairs of observed valid frames, divided by the mean
    squared observed frame (≈ 0.6 for a smooth stream, 2 for white noise; loudness cancels).
    Text (token ids) gets 0.  The ``dam_texture`` intervention hands it to DAM's scorer."""
    cols = []
    for m in MODALITIES:
        x = getattr(batch, m) if m != "text" else None
        if x is None:
            ref = batch.audio if batch.audio is not None else batch.vision
            cols.append(torch.zeros(ref.shape[0], device=ref.device))
            continue
        obs, _ = observed_from_input(batch, m)
        x = x.float() * obs[..., None]
        both = (obs[:, 1:] & obs[:, :-1]).float()
        step = ((x[:, 1:] - x[:, :-1]) ** 2).sum(-1)
        num = (step * both).sum(1) / both.sum(1).clamp(min=1)
        den = (x ** 2).sum(-1).sum(1) / obs.float().sum(1).clamp(min=1)
        cols.append(num / den.clamp(min=1e-6))
    return torch.stack(cols, 1)


class DAM(nn.Module):
    def __init__(self, dim: int, n_modalities: int = 3, hidden: int = 128, tau: float = 1.2,
                 eps: float = 1e-6, n_tokens: int = 3, n_signals: int = 1):
        """``n_signals``: per-modality numbers the scorer reads beside the candidate: 1 = ρ (the
        paper's DAM); 2 = ρ and the input's texture (the ``dam_texture`` intervention)."""
        super().__init__()
        self.tau, self.eps = tau, eps
        self.compensation = nn.Parameter(torch.zeros(n_modalities, dim))           # c_m
        self.norm = nn.LayerNorm(n_tokens * dim)
        self.mlp = nn.Sequential(nn.Linear(n_tokens * dim + n_signals, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def compensate(self, g: Tensor, rho: Tensor) -> Tensor:
        """Eq. 5: G_m + (1 − ρ_m) c_m;  g (B,3,D), rho (B,3)."""
        return g + (1.0 - rho).to(g.dtype)[..., None] * self.compensation.to(g.dtype)

    def scores(self, cands: Tensor, rho: Tensor, texture: Optional[Tensor] = None) -> Tensor:
        """Eq. 6, first half: z (B, M) from the candidates (B, M, 3, D) and ρ (B, M)
        (and, for the intervention, the input texture (B, M))."""
        signals = [rho.to(cands.dtype)[..., None]]
        if texture is not None:
            signals.append(texture.to(cands.dtype)[..., None])
        x = torch.cat([self.norm(cands.flatten(2)), *signals], -1)
        return self.mlp(x).squeeze(-1).float()

    def weights(self, cands: Tensor, rho: Tensor, texture: Optional[Tensor] = None) -> Tensor:
        """Eq. 6: α (B, M), rows sum to 1."""
        return ((self.scores(cands, rho, texture) + torch.log(rho.float() + self.eps)) / self.tau).softmax(-1)

    def forward(self, g_prev: Tensor, cands: Tensor, rho: Tensor,
                texture: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Eq. 7: cands (B,M,3,D) -> G (B,3,D), α (B,M).  (g_prev is unused: the candidates
        already read the previous context; the argument keeps EMT's pooling signature.)"""
        a = self.weights(cands, rho, texture)
        return torch.einsum("bm,bmtd->btd", a.to(cands.dtype), cands), a
