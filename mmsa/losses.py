"""Training losses of DLFR (EMT-DLFR) and DAST-GAN's adversarial game (docs/design.md §3.2, §3.3).

* ``reconstruction_loss``  low-level reconstruction, only where a valid position was dropped
* ``make_projector`` / ``make_predictor`` / ``simsiam_loss``  high-level attraction (SimSiam)
* ``discriminator_loss`` / ``adversarial_loss``  the GAN terms (BCE with logits)
* ``task_loss``  L1 for regression scores, cross-entropy for class logits
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def task_loss(pred: Tensor, label: Tensor) -> Tensor:
    """L1(ŷ, y) for (B,) regression predictions; cross-entropy for (B, C) logits."""
    if pred.dim() == 2:
        return F.cross_entropy(pred.float(), label.long())
    return F.l1_loss(pred.float(), label.float().view_as(pred))


def reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L_rec = Σ_{b,t} M_bt · Σ_d SmoothL1(x̂_btd, x_btd) / (Σ_{b,t} M_bt · D).

    pred, target: (B, T, D); mask: (B, T) with 1 where the position is valid AND was dropped.
    Returns exactly 0 when nothing was dropped (no division by zero, no host sync).
    """
    if pred.shape != target.shape:
        raise ValueError(f"reconstruction pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"reconstruction mask has shape {tuple(mask.shape)}; expected {tuple(pred.shape[:2])}")
    m = mask.float()
    err = F.smooth_l1_loss(pred.float(), target.float(), reduction="none").sum(-1)   # (B, T)
    return (err * m).sum() / (m.sum() * pred.shape[-1]).clamp(min=1.0)


def make_projector(in_dim: int, out_dim: int) -> nn.Module:
    """SimSiam projector z = BN(W x), BatchNorm without affine parameters."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim, affine=False))


def make_predictor(dim: int, hidden: int) -> nn.Module:
    """SimSiam predictor p = W2 ReLU(BN(W1 z))."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))


def simsiam_loss(p_miss: Tensor, z_miss: Tensor, p_full: Tensor, z_full: Tensor) -> Tensor:
    """L_attra = −½ [cos(p_miss, sg(z_full)) + cos(p_full, sg(z_miss))], averaged over the batch.

    sg = stop-gradient: the target branch of each half receives no gradient.  Range [−1, 1].
    """
    a = F.cosine_similarity(p_miss.float(), z_full.detach().float(), dim=-1).mean()
    b = F.cosine_similarity(p_full.float(), z_miss.detach().float(), dim=-1).mean()
    return -0.5 * (a + b)


def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """L_D = BCE(D(f_full), 1) + BCE(D(f_miss), 0), on logits (inputs already detached)."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def adversarial_loss(d_fake: Tensor) -> Tensor:
    """Non-saturating generator loss L_adv = BCE(D(f_miss), 1) = −log σ(D(f_miss))."""
    d_fake = d_fake.float()
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
