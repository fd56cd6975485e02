"""Multi-head attention through ``F.scaled_dot_product_attention`` (docs/design.md §3.2).

Every attention layer written out in the package (EMT, STA, MulT, TFR-Net, UFEN+MTFN, CM-STA) goes
through the two functions here (the library's ``nn.TransformerEncoderLayer``/``DecoderLayer``,
used as they are by MTFN, TCMFI and MISA, keep their own):

* ``attend(q, k, v, valid, bias, dropout_p, need_weights)`` on head-split tensors
  (B, H, T, d) / (B, H, S, d): softmax(q kᵀ / √d + bias, over the valid keys) v;
* ``mha(module, query, key, value, valid, bias, need_weights)`` with the parameters of an
  ``nn.MultiheadAttention`` (``in_proj_weight``/``in_proj_bias``, ``out_proj``, ``dropout``),
  so checkpoints of models built on that module load unchanged.

Masks are boolean, True = the key may be attended.  ``valid`` is a key mask (B, S) shared by
every query and head; ``bias`` an optional additive float bias (B, T, S) shared by the heads.
A sample with no valid key at all (e.g. a modality with no observed step) gets an output of
0 and weights of 0 instead of NaN: its keys are all let through for the softmax and its output
is zeroed afterwards (also after ``out_proj`` in ``mha``, whose bias would otherwise leak in).

The attention weights (B, H, T, S) are materialised only when ``need_weights=True`` (the maps a
notebook draws).  Otherwise PyTorch picks a fused kernel: on a CPU without attention dropout a
flash kernel that never builds the T × S map; on CUDA flash/memory-efficient kernels, also with
dropout.  A CPU with attention dropout in training has no fused kernel: there the map is built
explicitly (see ``_explicit``), with a cheaper random mask than ``F.dropout``'s (``keep_mask``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def keep_mask(shape, p: float, like: Tensor) -> Tensor:
    """Float tensor of ``shape`` (dtype and device of ``like``): 0 (dropped) with probability p,
    else 1, independently -- the mask of ``F.dropout`` before its 1/(1 - p) scaling.

    Drawn from the default generator (``torch.manual_seed`` fixes it), but cheaper on a CPU than
    ``bernoulli_``, which spends two 32-bit draws on every entry: one 64-bit draw gives four
    uniform 16-bit integers, each compared with p·2¹⁶ (p is rounded to a multiple of 2⁻¹⁶, e.g.
    0.1 -> 0.100006).  The mask is a float tensor, not a bool one, because ``x * mask`` and its
    backward are several times cheaper than ``torch.where`` on a CPU (measured in
    the README's Performance section).
    """
    if like.device.type != "cpu":
        return (torch.rand(shape, device=like.device) >= p).to(like.dtype)
    n, threshold = math.prod(shape), round(p * 2 ** 16) - 2 ** 15
    if threshold > 2 ** 15 - 1:                                   # p rounds to 1: drop everything
        return torch.zeros(shape, dtype=like.dtype)
    # random_(-2**63, None): all 64 bits random (a plain random_() leaves the sign bit 0)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None).view(torch.int16)[:n]
    return torch.ge(bits.view(shape), threshold, out=torch.empty(shape, dtype=like.dtype))  # no bool copy


def _explicit(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ/√d + mask) v with the weights built; returns (out, weights before dropout).

    Written to touch the (B, H, T, S) maps as few times as possible: a key mask enters the
    product q kᵀ itself, as one more column [q, 1] · [k, bias] = q·k + bias (no pass over the map
    to add it: ``baddbmm`` would first copy the broadcast bias into the whole T × S output), and the
    dropout's 1/(1 − p) scales v (S × d) instead of the map (T × S).  The bias column's −inf never
    reaches a gradient that is used: its products land in the gradient of the constant 1s."""
    B, H, T, d = q.shape
    S = k.shape[2]
    q = q * (1.0 / math.sqrt(d))
    if mask is not None and mask.shape[-2] == 1:                  # a key mask (B, 1, 1, S)
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        q1 = torch.cat([q, q.new_ones(B, H, T, 1)], -1)
        k1 = torch.cat([k, mask.to(k.dtype).reshape(B, 1, S, 1).expand(B, H, S, 1)], -1)
        scores = torch.bmm(q1.reshape(B * H, T, d + 1), k1.reshape(B * H, S, d + 1).transpose(1, 2)).view(B, H, T, S)
    else:
        scores = torch.matmul(q, k.transpose(-2, -1))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(-1)
    if dropout_p <= 0:
        return torch.matmul(weights, v), weights
    dropped = weights * keep_mask(weights.shape, dropout_p, weights)
    return torch.matmul(dropped, v * (1.0 / (1.0 - dropout_p))), weights


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the mask of ``keep_mask`` (cheaper on a CPU, same distribution)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return x * keep_mask(x.shape, self.p, x).mul_(1.0 / (1.0 - self.p))


def attend(q: Tensor, k: Tensor, v: Tensor, valid: Optional[Tensor] = None, bias: Optional[Tensor] = None,
           dropout_p: float = 0.0, need_weights: bool = False) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Scaled dot-product attention of head-split tensors.

    q (B,H,T,d), k/v (B,H,S,d); valid (B,S) bool key mask or None; bias (B,T,S) float or None.
    Returns (out (B,H,T,d), weights (B,H,T,S) or None, alive (B,) float or None), where alive is
    0 for the samples without any valid key (their out and weights are already zeroed).
    """
    B, _, T, _ = q.shape
    S = k.shape[2]
    mask = alive = None
    if valid is not None:
        if valid.shape != (B, S):
            raise ValueError(f"key mask has shape {tuple(valid.shape)}; expected (B, S) = ({B}, {S})")
        valid = valid.to(device=q.device, dtype=torch.bool)
        empty = ~valid.any(1)                                     # (B,)
        mask = (valid | empty[:, None])[:, None, None, :]         # empty samples: any key, zeroed below
        alive = (~empty).to(q.dtype)
    if bias is not None:
        if bias.shape[-2:] != (T, S):
            raise ValueError(f"attention bias has shape {tuple(bias.shape)}; expected (B, T, S) = ({B}, {T}, {S})")
        bias = bias.to(q.dtype)[:, None] if bias.dim() == 3 else bias.to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    weights = None
    if need_weights or (dropout_p > 0 and q.device.type == "cpu"):
        out, weights = _explicit(q, k, v, mask, dropout_p)
        weights = weights if need_weights else None
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if alive is not None:
        out = out * alive[:, None, None, None]
        if weights is not None:
            weights = weights * alive[:, None, None, None]
    return out, weights, alive


class LengthGroups:
    """Clips grouped by length, to run a padded batch in pieces on a CPU.

    ``LengthGroups.of(valid)`` sorts the clips by their last valid step and cuts them into groups
    of about ``size``; ``cuts[i]`` is group i's longest last valid step + 1 (at least 1).
    Attention over a clip's padding is masked and nothing reads the padding's outputs, so group i
    can run on ``x[:, :cuts[i]]`` alone: the T × S attention maps shrink with the square of the
    cut, the per-step layers with the cut, and the valid steps come out as in one padded call
    (to float rounding).  ``split`` cuts a batch-first tensor into the groups (sorted order),
    ``merge`` puts per-group outputs back in batch order.

    ``of`` returns None (run the batch as one) for batches under 2·size, for clips shorter than
    ``min_length`` steps and off the CPU.  Short clips: their maps are small, and each group
    repeats every layer's per-call overhead (at the book's lengths 32/50/50 a DAST-GAN epoch is
    about 20 % *faster* in one call; at MOSI's 375/500 steps the groups make a step 3.7× faster;
    the README's Performance section).  Off the CPU reading the lengths on the host would stall the device,
    and fused kernels make padding cheap.

    Group size: smaller groups follow the lengths more closely (lengths uniform on [0, T], batch
    32, maps quadratic in the length: their total area is 0.47 of the padded batch's in groups
    of 8, 0.40 in groups of 4) at the price of one more round of per-call overhead per group,
    small beside MOSI-size maps.  Measured at MOSI size, 2 threads, one process alternating the
    two: MulT 10.4 -> 8.4 s per step with groups of 4 instead of 8, TFR-Net 11.4 -> 10.4 s,
    EMT-DLFR and DAST-GAN unchanged (±1 %).
    """

    def __init__(self, order: Tensor, cuts: list[int]):
        self.order, self.cuts = order, cuts
        self.sizes = [len(c) for c in torch.arange(len(order)).tensor_split(len(cuts))]
        self.inverse = order.argsort()

    @classmethod
    def of(cls, valid: Tensor, size: int = 4, min_length: int = 128) -> Optional["LengthGroups"]:
        B, T = valid.shape
        if valid.device.type != "cpu" or B < 2 * size or T < min_length:
            return None
        ends = (valid * torch.arange(1, T + 1)).amax(1)               # last valid step + 1 (0: none)
        order = ends.argsort()
        cuts = [max(int(ends[idx[-1]]), 1) for idx in order.tensor_split(B // size)]
        return cls(order, cuts)

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        return x.index_select(0, self.order).split(self.sizes)

    def merge(self, parts: list[Tensor]) -> Tensor:
        return torch.cat(parts).index_select(0, self.inverse)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H·d)."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


def mha(module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
        valid: Optional[Tensor] = None, bias: Optional[Tensor] = None,
        need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """What ``module(query, key, value, key_padding_mask=~valid, attn_mask=bias)`` computes
    (batch_first), with a NaN-free key mask and fused kernels.

    query (B,T,D), key/value (B,S,D); returns (out (B,T,D), weights (B,H,T,S) or None).
    Attention dropout is ``module.dropout`` in training and 0 in eval.  The weights returned
    are the softmax before dropout.
    """
    if not module._qkv_same_embed_dim or not module.batch_first or module.bias_k is not None or module.add_zero_attn:
        raise ValueError("mha() needs nn.MultiheadAttention(embed_dim, heads, batch_first=True) "
                         "without kdim/vdim, add_bias_kv or add_zero_attn")
    if query.dim() != 3 or key.dim() != 3 or query.shape[-1] != module.embed_dim:
        raise ValueError(f"query {tuple(query.shape)} / key {tuple(key.shape)}: expected (B, T, {module.embed_dim})")
    D, H = module.embed_dim, module.num_heads
    w, b = module.in_proj_weight, module.in_proj_bias
    if query is key and key is value:                     # self-attention: one projection
        q, k, v = F.linear(query, w, b).chunk(3, -1)
    elif key is value:                                    # cross-attention: one for keys and values
        q = F.linear(query, w[:D], None if b is None else b[:D])
        k, v = F.linear(key, w[D:], None if b is None else b[D:]).chunk(2, -1)
    else:
        bq, bk, bv = (None,) * 3 if b is None else b.split(D)
        q, k, v = F.linear(query, w[:D], bq), F.linear(key, w[D:2 * D], bk), F.linear(value, w[2 * D:], bv)
    p = module.dropout if module.training else 0.0
    out, weights, alive = attend(split_heads(q, H), split_heads(k, H), split_heads(v, H), valid, bias, p,
                                 need_weights)
    out = module.out_proj(merge_heads(out))
    if alive is not None:
        out = out * alive[:, None, None]
    return out, weights
