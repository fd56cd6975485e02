"""Pieces the baselines share: their config base, what they may read from a Batch, small modules.

**What a baseline sees.**  Exactly what a deployed model would: the input values and the valid
lengths.  A dropped word is an ``[UNK]`` token (re-encoded by the text encoder, so nothing of the
word survives), a dropped frame is a zero vector; lengths and padding are unchanged.  No forward
pass reads ``batch.missing``, ``batch.observed(...)``, ``batch.truth`` or ``batch.full`` (the
simulator's records); only a training *loss* may use the complete view (TFR-Net's
reconstruction).  ``tests/test_no_oracle.py`` checks this for every registered model.

**Text.**  Every baseline reads its text through ``mmsa.encoders.TextEncoder``
(``text_model``, ``freeze_text``, ``use_text_features``, as EMT-DLFR): by default the packaged
MiniLM, frozen and shared by the process.  ``use_text_features=True`` reads ``batch.text``
(the public feature files' way; those states were computed from the complete sentence, so they
leak dropped words: use it only on complete data).  ``text_dim`` is then the feature width;
otherwise the encoder's width wins.

**Presets.**  ``dataset=`` picks the feature sizes (``PRESETS``).  ``preset="book"`` (default) is
the book's small CPU size; ``preset="mmsa"`` applies the reference toolkit's MOSI model sizes
(PyPI ``mmsa`` 2.2.1, ``config/config_regression.json``) stored in each config's ``MMSA``;
explicit keyword arguments still win.  The toolkit's training settings for the same runs are in
``MMSA_TRAIN`` (TrainConfig keys plus ``batch_size``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmsa.config import make_config
from mmsa.attention import Dropout, LengthGroups, attend
from mmsa.encoders import TextEncoder, call_rnn
from mmsa.types import Batch

MODS = ("text", "audio", "vision")
PRESET_NAMES = ("book", "mmsa")

DATASET_DIMS: dict = {
    "mosi": dict(text_dim=768, audio_dim=5, vision_dim=20),
    "mosei": dict(text_dim=768, audio_dim=74, vision_dim=35),
    "sims": dict(text_dim=768, audio_dim=33, vision_dim=709),
}

# The reference toolkit's training settings on MOSI (config_regression.json of PyPI mmsa 2.2.1),
# in TrainConfig's names.  Differences: the toolkit clips gradients by *value* (MulT, MISA,
# TFR-Net), our Trainer by norm; Self-MM gives audio/vision subnets lr 5e-3 (here: lr for all
# non-BERT weights); TFR-Net also lowers the lr on plateaus.
MMSA_TRAIN: dict = {
    "lf_dnn": dict(lr=1e-3, weight_decay=0.01, batch_size=128),
    "ef_lstm": dict(lr=1e-3, weight_decay=0.005, batch_size=32),
    "tfn": dict(lr=1e-3, batch_size=32),
    "lmf": dict(lr=1e-3, weight_decay=0.005, batch_size=64),
    "mult": dict(lr=2e-3, weight_decay=0.005, clip_grad=0.6, grad_accum=8, batch_size=16),
    "misa": dict(lr=1e-4, bert_lr=1e-4, clip_grad=0.8, grad_accum=2, batch_size=16),
    "self_mm": dict(lr=1e-3, bert_lr=5e-5, weight_decay=1e-3, grad_accum=4, batch_size=16),
    "tfr_net": dict(lr=1e-3, bert_lr=2e-6, weight_decay=1e-3, clip_grad=0.8, grad_accum=4, batch_size=24),
}


@dataclass
class BaselineConfig:
    """Keys every baseline has (each model's config adds its own)."""

    dataset: str = "mosi"
    text_dim: int = 768               # feature width in feature mode; else the encoder's width is used
    audio_dim: int = 5
    vision_dim: int = 20
    text_model: str = "minilm"        # "minilm" (packaged MiniLM-L6-H384), a BERT directory, or "tiny"
    freeze_text: bool = True          # frozen (the book's default on CPU); False fine-tunes (Trainer's bert_lr)
    use_text_features: bool = False   # read batch.text (pre-extracted states) instead of running a BERT
    preset: str = "book"              # "book" (small, CPU) or "mmsa" (the reference toolkit's MOSI sizes)
    num_classes: int = 1              # 1 = regression (L1); C > 1 = classification (cross-entropy)

    PRESETS: ClassVar[dict] = DATASET_DIMS
    MMSA: ClassVar[dict] = {}

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {self.preset!r}; valid: {PRESET_NAMES}")

    @property
    def n_out(self) -> int:
        return self.num_classes if self.num_classes > 1 else 1


def build_config(cls, config: dict):
    """Defaults < dataset sizes < ``cls.MMSA`` (when ``preset="mmsa"``) < explicit keys."""
    config = dict(config)
    dataset = config.pop("dataset", None)
    if config.get("preset", "book") == "mmsa":
        config = {**cls.MMSA, **config}
    return make_config(cls, dataset, **config)


# ----------------------------------------------------------------------------- inputs


def text_encoder(cfg: BaselineConfig) -> TextEncoder:
    return TextEncoder(cfg.text_model, freeze=cfg.freeze_text, use_features=cfg.use_text_features,
                       feature_dim=cfg.text_dim)


def check_av(batch: Batch, cfg: BaselineConfig) -> None:
    for m in ("audio", "vision"):
        x, d = getattr(batch, m), getattr(cfg, f"{m}_dim")
        if x is None or x.dim() != 3 or x.shape[-1] != d:
            shape = None if x is None else tuple(x.shape)
            raise ValueError(f"batch.{m} has shape {shape}, expected (B, T, {m}_dim={d})")


def lengths_of(batch: Batch, modality: str, T: int) -> torch.Tensor:
    """Valid lengths (B,) clamped to [1, T]: a zero-length sequence reads one zero step."""
    return batch.lengths(modality).clamp(1, T)


def valid_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool, True inside each sequence (validity only; dropped steps are still valid)."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B,T,D) over positions where mask (B,T) is true/1; zeros if none."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def mean_valid(batch: Batch, modality: str) -> torch.Tensor:
    """Mean of an audio/vision sequence over its valid steps (B, D); dropped (zero) frames count."""
    x = getattr(batch, modality)
    return masked_mean(x, valid_mask(lengths_of(batch, modality, x.shape[1]), x.shape[1]))


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of x (B,T,D) over the positions where mask (B,T) is true (every row needs one)."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)


def supervised_loss(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes > 1:
        return F.cross_entropy(pred.float(), label.long())
    return F.l1_loss(pred.float(), label.float())


def finish(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    return pred.squeeze(-1) if num_classes <= 1 else pred


def sinusoid(T: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """(T, d) sinusoidal position table (Vaswani et al., 2017), on like's device and dtype."""
    pos = torch.arange(T, device=like.device, dtype=torch.float32)[:, None]
    ang = pos / 10000 ** (torch.arange(0, d, 2, device=like.device, dtype=torch.float32) / d)
    pe = torch.zeros(T, d, device=like.device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(ang), torch.cos(ang)[:, : d // 2]
    return pe.to(like.dtype)


# ----------------------------------------------------------------------------- modules


class SubNet(nn.Sequential):
    """Utterance-level MLP of TFN/LMF/LF-DNN: dropout -> 3 x (Linear-ReLU).
    The toolkit puts a BatchNorm first; we leave it out so that a sample's output never depends on
    the rest of its batch (and gradient accumulation equals a big batch).  A LayerNorm is no
    substitute: over 5 audio features it would remove each sample's feature magnitudes.  Feed
    standardised features (SynthMSA is; ``load_features(..., zscore=True)`` for real files)."""

    def __init__(self, d_in: int, d_hidden: int, dropout: float):
        super().__init__(Dropout(dropout), nn.Linear(d_in, d_hidden), nn.ReLU(),
                         nn.Linear(d_hidden, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.ReLU())


class LSTMEncoder(nn.Module):
    """LSTM over the valid steps (packed by length) -> final hidden state(s) -> dropout -> Linear.

    Used as TFN/LMF/LF-DNN's text subnet and Self-MM's audio/vision subnets.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0,
                 bidirectional: bool = False, layers: int = 1, norm: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d_in) if norm else nn.Identity()
        self.lstm = nn.LSTM(d_in, d_hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = Dropout(dropout)
        self.out = nn.Linear(d_hidden * (2 if bidirectional else 1), d_out)
        self.directions = 2 if bidirectional else 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.directions == 1:
            _, last = rnn_last(self.lstm, self.norm(x), lengths)
        else:
            packed = pack_padded_sequence(self.norm(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = call_rnn(self.lstm, packed)  # h: (layers * directions, B, H)
            last = torch.cat(list(h[-self.directions:]), dim=-1)
        return self.out(self.drop(last))


class CrossmodalLayer(nn.Module):
    """Pre-LN transformer block with queries from x and keys/values from src:
        x <- x + Drop(MHA(LN(x), LN(src), LN(src)));   x <- x + Drop(FFN(LN(x)))
    src = x gives self-attention.  ``src_pad`` (B, S) bool: True = padding key (ignored; a sample
    without any key gets a zero attention output).  Attention runs through
    ``mmsa.attention.attend`` (fused ``F.scaled_dot_product_attention`` kernels)."""

    def __init__(self, d: int, heads: int, dropout: float, attn_dropout: Optional[float] = None,
                 ff_mult: int = 4):
        super().__init__()
        if d % heads:
            raise ValueError(f"attention width {d} must be divisible by heads={heads}")
        self.heads = heads
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.ReLU(), Dropout(dropout), nn.Linear(ff_mult * d, d))
        self.drop = Dropout(dropout)

    def attend(self, x: torch.Tensor, src: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        """softmax(Q Kᵀ / √(d/h)) V per head, Q = W_q x, [K; V] = W_kv src; padding keys masked."""
        (B, T, d), S, h = x.shape, src.shape[1], self.heads
        q = self.q(x).view(B, T, h, d // h).transpose(1, 2)
        k, v = self.kv(src).view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out, _, _ = attend(q, k, v, ~src_pad, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, T, d))

    def forward(self, x: torch.Tensor, src: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(src)
        x = x + self.drop(self.attend(self.ln_q(x), kv, src_pad))
        return x + self.drop(self.ff(self.ln_ff(x)))


class CrossmodalStack(nn.Module):
    """``layers`` CrossmodalLayers (queries x, keys/values src) and a final LayerNorm."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float, attn_dropout: Optional[float] = None):
        super().__init__()
        self.layers = nn.ModuleList(CrossmodalLayer(d, heads, dropout, attn_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, src: Optional[torch.Tensor], src_pad: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, x if src is None else src, src_pad)  # src None: self-attention on the current x
        return self.norm(x)


class TemporalProjection(nn.Module):
    """MulT/TFR-Net input embedding: Z = √d · Conv1D_k(X) + PE, then dropout (same-length padding)."""

    def __init__(self, d_in: int, d: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"conv kernel sizes must be odd (same-length padding); got {kernel}")
        self.conv = nn.Conv1d(d_in, d, kernel, padding=kernel // 2, bias=False)
        self.scale = math.sqrt(d)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.drop(h * self.scale + sinusoid(h.shape[1], h.shape[2], h))


def by_length(fn, target: str, z: dict, pad: dict, lengths: dict):
    """``fn(z, pad, lengths)`` on the whole batch, or on a CPU on groups of clips of similar
    ``target`` length (``mmsa.attention.LengthGroups``), every modality's sequences cut after the
    group's longest valid one; the group outputs are merged back in batch order.

    z[m] (B, T_m, d), pad[m] (B, T_m) bool (True = padding), lengths[m] (B,).  Attention masks the
    padding keys and nothing reads the padding queries' outputs, so the valid steps come out as in
    one padded call (to float rounding) while the T × S maps shrink with the cuts.  An output with
    a time axis (B_i, cut, ...) is zero-padded back to the target's T before the merge."""
    groups = LengthGroups.of(~pad[target])
    if groups is None:
        return fn(z, pad, lengths)
    T = z[target].shape[1]
    zs, ps, ls = ({m: groups.split(d[m]) for m in z} for d in (z, pad, lengths))
    parts = []
    for i in range(len(groups.cuts)):
        cut = {m: int(ls[m][i].max()) for m in z}
        out = fn({m: zs[m][i][:, :cut[m]] for m in z}, {m: ps[m][i][:, :cut[m]] for m in z},
                 {m: ls[m][i] for m in z})
        if out.dim() > 2:  # a sequence over the target's steps
            out = F.pad(out, (0, 0) * (out.dim() - 2) + (0, T - out.shape[1]))
        parts.append(out)
    return groups.merge(parts)


def rnn_last(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A unidirectional RNN over the padded batch -> (outputs (B, T, H), zero after each length;
    the last layer's state at each sequence's last valid step (B, H)).

    The RNN is causal, so its valid steps never see the padding after them: the values are
    those of the packed sequence (``run_rnn``), from one fused oneDNN/cuDNN call rather than a
    loop of small ops over the packed steps (2-20x faster on a CPU)."""
    if rnn.bidirectional:
        raise ValueError("rnn_last needs a unidirectional RNN (a backward direction would read the padding)")
    out, _ = call_rnn(rnn, x)
    lengths = lengths.to(out.device)
    last = out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])).squeeze(1)
    valid = torch.arange(x.shape[1], device=out.device)[None] < lengths[:, None]
    return out * valid.unsqueeze(-1).to(out.dtype), last


def birnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-layer bidirectional RNN over the padded batch -> (outputs (B, T, 2H), zero after
    each length; final states (2, B, H): forward at the last valid step, backward at the first).

    The values of the packed sequence (``run_rnn``) from two fused calls instead of a loop over
    the packed steps, one per direction, each with that direction's own weights: the forward
    direction runs on x (it is causal, the padding comes after), the backward one on x reversed
    within each length (step t reads step length-1-t), so that it starts at the last valid step
    and meets the padding last.  Calling the bidirectional module itself would run both
    directions on both inputs: twice the work (at MISA's 375/500 steps 1.9x slower)."""
    if not rnn.bidirectional or rnn.num_layers != 1 or getattr(rnn, "proj_size", 0):
        raise ValueError("birnn needs a one-layer bidirectional RNN without projection")
    B, T, _ = x.shape
    H = rnn.hidden_size
    lengths = lengths.to(x.device)
    steps = torch.arange(T, device=x.device)[None]
    rev = ((lengths[:, None] - 1 - steps) % T)[..., None]          # reversed clip's step t -> x's step
    one = _one_direction(type(rnn), rnn.input_size, H, rnn.bias)
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if rnn.bias else [])
    run = lambda inp, sfx: call_rnn(one, inp, {n: getattr(rnn, n + sfx) for n in names})[0]
    fwd = run(x, "")
    bwd = run(x.gather(1, rev.expand(B, T, x.shape[2])), "_reverse").gather(1, rev.expand(B, T, H))
    valid = (steps < lengths[:, None]).unsqueeze(-1).to(fwd.dtype)
    last = fwd.gather(1, (lengths - 1).view(-1, 1, 1).expand(B, 1, H)).squeeze(1)
    return torch.cat([fwd, bwd], -1) * valid, torch.stack([last, bwd[:, 0]])


@functools.lru_cache(maxsize=None)
def _one_direction(kind: type, input_size: int, hidden: int, bias: bool) -> nn.RNNBase:
    """A weightless ("meta") one-directional RNN: ``birnn`` runs it with a direction's weights."""
    return kind(input_size, hidden, bias=bias, batch_first=True, device="meta")


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    """Packed RNN over the valid steps; returns (outputs padded back to T, final states).
    Needed for bidirectional RNNs; a unidirectional one is faster with ``rnn_last``."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = call_rnn(rnn, packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state
