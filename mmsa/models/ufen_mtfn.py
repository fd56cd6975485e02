"""UFEN + MTFN: multi-layer feature fusion and multi-task learning.

Cai, Li, Zhang et al., "Multimodal sentiment analysis based on multi-layer feature fusion and
multi-task learning", Sci. Rep. 15, 2126 (2025), doi:10.1038/s41598-025-85859-6.  This file reads top to bottom as the paper's
Methods section; "Eq. n" comments follow the order of the equations there.

    X_i (B,T_i,D_i) --UFEN_i--> X_i^fusion (B,T_i,d_m), Y_i          i in {t, a, v}
    {X_i^fusion} --MTFN--> CA_{i->j} (six), Input (B, 6*d_m), Y_m, Y_m' (the prediction)
    L_total = sum_i MSE(Y_i, Y) + MSE(Y_m, Y) + MSE(Y_m', Y)

Choices where the published text is silent (its Table 2 of hyper-parameters and the equation
images did not survive): ``d_m`` = 64; Bi-GRU with d_m/2 units per direction (so the spliced
forward/backward state h_t is d_m wide); the l Conv1D layers are *stacked* (layer k reads
layer k-1, so the receptive field grows as 1 + k(K-1)) with K = 3 and F_k = 32 filters, and
each layer's output X_i^k is tapped, self-attended, up-sampled to d_m and summed; padding
steps are zeroed before every convolution and masked in every attention; "pooled" means the
masked mean over valid steps; every attention (UFEN self-attention and MTFN cross-modal) has a
residual connection before a LayerNorm (the usual Transformer sub-layer); attention weights get
no dropout by default (``attn_dropout``: on CPU it costs ~5x the attention itself); the encoder/decoder read ``Input`` as a sequence
of six d_m-wide tokens (one per direction i->j) -- the paper's (d_b x 6 d_m) matrix, reshaped
so that attention runs over directions, not over the batch -- and the decoder's target is
``Input`` itself, attending to the encoder output (memory).

Text input (as in EMT-DLFR): ``text_model`` names the BERT ("minilm", the packaged MiniLM-L6-H384,
or a local BERT directory); ``freeze_text=True`` (the default) runs it frozen, shared per process
and cached per sentence (``mmsa.encoders.FrozenBert``), so a word dropped by ``mmsa.missing``
([UNK]) is really gone from every token state; ``freeze_text=False`` fine-tunes it;
``use_text_features=True`` reads pre-extracted states from ``batch.text`` instead (the public
feature files' way, but those states were computed from the complete sentence, so dropped words
leak through the other tokens).  A batch without token ids is always read from ``batch.text``.

Ablation flags (paper Tables 7-9): ``ufen_layers`` 1-4, ``subtasks`` (which Y_i enter the
loss), ``use_self_attention`` / ``use_conv`` / ``use_gru`` (UFEN), ``use_cross_attention`` /
``use_encoder_decoder`` / ``use_multitask`` (MTFN).  Our meaning of each "w/o":
  w/o conv          -> each layer is a position-wise (kernel 1) projection: no temporal context
  w/o self-attention-> the convolved features go straight to the up-sampling Linear
  w/o Bi-GRU        -> a position-wise Linear D_i -> d_m replaces the Bi-GRU
  w/o cross-attn    -> Input = [pool X_t ; pool X_a ; pool X_v] (3 tokens instead of 6)
  w/o enc-dec       -> Y_m' = Linear(Input) directly
  w/o multi-task    -> only MSE(Y_m', Y) is trained; the Y_i / Y_m heads are not built
Heads whose loss is switched off are not built, so every parameter receives a gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmsa.attention import mha
from mmsa.config import make_config
from mmsa.encoders import TextEncoder, call_rnn
from mmsa.models import register
from mmsa.types import Batch, ModelOutput

MODS = ("t", "a", "v")
FIELD = {"t": "text", "a": "audio", "v": "vision"}


@dataclass
class UFENMTFNConfig:
    dataset: str = "mosi"
    text_dim: int = 768  # width of batch.text features; replaced by the BERT's width when one is built
    text_model: str = "minilm"  # packaged MiniLM-L6-H384, a local BERT directory, or "tiny" (tests)
    freeze_text: bool = True  # frozen BERT shared per process (no text parameters to train)
    use_text_features: bool = False  # read batch.text (pre-extracted states), build no BERT
    audio_dim: int = 5
    vision_dim: int = 20
    d_m: int = 64  # unimodal feature width (Bi-GRU output, X^fusion, cross-attention)
    ufen_layers: int = 2  # l, number of Conv1D + self-attention layers (paper best: 2)
    conv_kernel: int = 3  # K
    conv_filters: tuple = (32, 32, 32, 32)  # F_1..F_4 (the first ufen_layers are used)
    self_heads: int = 4  # heads of UFEN self-attention (must divide every F_k)
    cross_heads: int = 4  # heads of MTFN cross-modal attention (must divide d_m)
    trans_heads: int = 4  # heads of the encoder/decoder layers
    trans_ff: int = 128  # feed-forward width of the encoder/decoder layers
    dropout: float = 0.1  # on features (after the Bi-GRU, inside the encoder/decoder)
    attn_dropout: float = 0.0  # on attention weights of long sequences (0: ~5x faster on CPU)
    subtasks: tuple = ("t", "a", "v")  # unimodal sub-tasks Y_i in the loss
    use_self_attention: bool = True
    use_conv: bool = True
    use_gru: bool = True
    use_cross_attention: bool = True
    use_encoder_decoder: bool = True
    use_multitask: bool = True
    use_unimodal_labels: bool = False  # Y_i regress batch.label_t/a/v when present (SIMS)

    PRESETS: ClassVar[dict] = {
        "mosi": dict(text_dim=768, audio_dim=5, vision_dim=20),
        "mosei": dict(text_dim=768, audio_dim=74, vision_dim=35),
        "sims": dict(text_dim=768, audio_dim=33, vision_dim=709, use_unimodal_labels=True),
    }

    def __post_init__(self):
        self.subtasks = tuple(self.subtasks)
        self.conv_filters = tuple(int(f) for f in self.conv_filters)
        if not 1 <= self.ufen_layers <= len(self.conv_filters):
            raise ValueError(f"ufen_layers must be in 1..{len(self.conv_filters)}, got {self.ufen_layers}")
        bad = [s for s in self.subtasks if s not in MODS]
        if bad:
            raise ValueError(f"subtasks must be a subset of {MODS}, got {self.subtasks}")
        if self.d_m % 2 or self.d_m % self.cross_heads or self.d_m % self.trans_heads:
            raise ValueError(f"d_m={self.d_m} must be even and divisible by cross_heads and trans_heads")
        for f in self.conv_filters[: self.ufen_layers]:
            if f % self.self_heads:
                raise ValueError(f"conv filter count {f} is not divisible by self_heads={self.self_heads}")


def valid_mask(batch: Batch, modality: str, T: int) -> torch.Tensor:
    """(B, T) bool, True at steps inside the sequence's length."""
    lengths = batch.lengths(modality).clamp(min=1, max=T)
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


# ----------------------------------------------------------------------------- UFEN


class UFENLayer(nn.Module):
    """One level of the multi-scale extractor: Conv1D (Eq. 3) -> self-attention (Eq. 4) ->
    up-sampling Linear back to d_m (Eq. 5).  Returns (next level input, up-sampled output)."""

    def __init__(self, d_in: int, filters: int, d_m: int, cfg: UFENMTFNConfig):
        super().__init__()
        k = cfg.conv_kernel if cfg.use_conv else 1
        self.conv = nn.Conv1d(d_in, filters, kernel_size=k, padding=k // 2)
        self.attn = nn.MultiheadAttention(filters, cfg.self_heads, dropout=cfg.attn_dropout, batch_first=True) \
            if cfg.use_self_attention else None
        self.norm = nn.LayerNorm(filters) if cfg.use_self_attention else None
        self.up = nn.Linear(filters, d_m)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x * mask.unsqueeze(-1).to(x.dtype)  # padding must not leak into the convolution
        h = F.relu(self.conv(x.transpose(1, 2)).transpose(1, 2))  # Eq. 3: X^layer = Conv1D(X, K, F)
        if self.attn is not None:  # Eq. 4: Attention(Q=K=V=X^layer)
            a, _ = mha(self.attn, h, h, h, mask)                  # (a clip with no valid step: a = 0)
            z = self.norm(h + a)
        else:
            z = h
        return h, self.up(z)  # Eq. 5: Up(.) -> R^{d_m}


class UFEN(nn.Module):
    """Unimodal feature extraction network for one modality (paper Fig. 3)."""

    def __init__(self, d_in: int, cfg: UFENMTFNConfig):
        super().__init__()
        d_m = cfg.d_m
        if cfg.use_gru:  # Eq. 1-2: h_t = [GRU_fwd(X_t, h_{t-1}) ; GRU_bwd(X_t, h_{t+1})]
            self.gru = nn.GRU(d_in, d_m // 2, batch_first=True, bidirectional=True)
            self.proj = None
        else:
            self.gru = None
            self.proj = nn.Linear(d_in, d_m)
        layers, d = [], d_m
        for f in cfg.conv_filters[: cfg.ufen_layers]:
            layers.append(UFENLayer(d, f, d_m, cfg))
            d = f
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if self.gru is not None:  # packed, so padding steps never enter the recurrence
            lengths = mask.sum(1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = call_rnn(self.gru, packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # X_i^{Bi-GRU}
        else:
            h = self.proj(x)
        h = self.dropout(h)
        fusion = 0
        for layer in self.layers:  # layer = 1..l, each reading the previous one
            h, up = layer(h, mask)
            fusion = fusion + up  # Eq. 6: X_i^fusion = Up_1 (+) Up_2 (+) ... (+) Up_l
        return fusion * mask.unsqueeze(-1).to(fusion.dtype)


# ----------------------------------------------------------------------------- MTFN


class CrossModalAttention(nn.Module):
    """i -> j: query from modality i, key/value from modality j (Eq. 8-10), then LayerNorm (Eq. 11)."""

    def __init__(self, cfg: UFENMTFNConfig):
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.d_m, cfg.cross_heads, dropout=cfg.attn_dropout, batch_first=True)
        self.norm = nn.LayerNorm(cfg.d_m)

    def forward(self, xi, xj, mask_j):
        a, _ = mha(self.attn, xi, xj, xj, mask_j)  # MhAtt(Q_i, K_j, V_j)
        return self.norm(xi + a)  # CA_{i->j} = LN(X_i + MhAtt(...))


DIRECTIONS = (("t", "a"), ("t", "v"), ("a", "t"), ("a", "v"), ("v", "t"), ("v", "a"))


class UFENMTFN(nn.Module):
    def __init__(self, cfg: UFENMTFNConfig):
        super().__init__()
        self.cfg = cfg
        d_m = cfg.d_m
        # the text encoder: token states X_t (B, L, text width) from a BERT or from batch.text
        self.text_encoder = TextEncoder(cfg.text_model, freeze=cfg.freeze_text,
                                        use_features=cfg.use_text_features, feature_dim=cfg.text_dim)
        self.text_dim = self.text_encoder.dim
        dims = {"t": self.text_dim, "a": cfg.audio_dim, "v": cfg.vision_dim}
        self.ufen = nn.ModuleDict({m: UFEN(dims[m], cfg) for m in MODS})
        # Eq. 7: Y_i = W_i pool(X_i^fusion) + b_i, only for the unimodal sub-tasks that are trained
        heads = cfg.subtasks if cfg.use_multitask else ()
        self.unimodal_head = nn.ModuleDict({m: nn.Linear(d_m, 1) for m in MODS if m in heads})
        # MTFN, part 1: six cross-modal attentions
        if cfg.use_cross_attention:
            self.cross = nn.ModuleDict({f"{i}{j}": CrossModalAttention(cfg) for i, j in DIRECTIONS})
            self.n_tokens = len(DIRECTIONS)
        else:
            self.cross = None
            self.n_tokens = len(MODS)
        # MTFN, part 2: encoder-decoder layer (paper Fig. 5)
        if cfg.use_encoder_decoder:
            kw = dict(d_model=d_m, nhead=cfg.trans_heads, dim_feedforward=cfg.trans_ff,
                      dropout=cfg.dropout, batch_first=True)
            self.encoder = nn.TransformerEncoderLayer(**kw)
            self.decoder = nn.TransformerDecoderLayer(**kw)
        else:
            self.encoder = self.decoder = None
        width = self.n_tokens * d_m
        self.head_m = nn.Linear(width, 1) if cfg.use_multitask else None  # Eq. 15: Y_m = W_m Input + b_m
        self.head_de = nn.Linear(width, 1)  # Eq. 16: Y_m' = W_de Decoder(...) + b_de

    # -- input checks ---------------------------------------------------------------------
    def _inputs(self, batch: Batch) -> dict:
        cfg = self.cfg
        B = batch.label.shape[0] if batch.label is not None else batch.audio.shape[0]
        out = {"t": self.text_encoder(batch)[0]}  # checks batch.text / batch.text_ids itself
        for m, d in (("a", cfg.audio_dim), ("v", cfg.vision_dim)):
            x = getattr(batch, FIELD[m])
            step = {"a": "Ta", "v": "Tv"}[m]
            if x.dim() != 3 or x.shape[0] != B or x.shape[-1] != d:
                raise ValueError(f"batch.{FIELD[m]} has shape {tuple(x.shape)}; expected (B={B}, {step}, {d}) "
                                 f"({FIELD[m]}_dim={d} in UFENMTFNConfig)")
            out[m] = x
        if out["t"].shape[0] != B:
            raise ValueError(f"text has batch size {out['t'].shape[0]}; expected B={B}")
        return out

    # -- forward --------------------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.cfg
        xs = self._inputs(batch)
        masks = {m: valid_mask(batch, FIELD[m], x.shape[1]) for m, x in xs.items()}

        # UFEN per modality -> X_i^fusion (B, T_i, d_m) and its pooled summary
        feats = {m: self.ufen[m](xs[m], masks[m]) for m in MODS}
        pooled = {m: masked_mean(feats[m], masks[m]) for m in MODS}
        y_uni = {m: head(pooled[m]).squeeze(-1) for m, head in self.unimodal_head.items()}

        # Cross-modal attention i->j, pooled over the query's steps (Eq. 8-11)
        if self.cross is not None:
            tokens = [masked_mean(self.cross[f"{i}{j}"](feats[i], feats[j], masks[j]), masks[i])
                      for i, j in DIRECTIONS]
        else:
            tokens = [pooled[m] for m in MODS]
        seq = torch.stack(tokens, 1)  # (B, 6, d_m)
        inp = seq.flatten(1)  # Eq. 12: Input = [CA_{t->a}; CA_{t->v}; ...] in R^{B x 6 d_m}

        # Encoder-decoder (Eq. 13-14): the decoder attends to the encoder output
        if self.encoder is not None:
            memory = self.encoder(seq)
            dec = self.decoder(seq, memory).flatten(1)
        else:
            dec = inp
        y_m2 = self.head_de(dec).squeeze(-1)  # Eq. 16: Y_m' (the prediction)
        extras = {f"y_{m}": y.detach() for m, y in y_uni.items()}
        extras["fused"] = dec.detach()
        y_m = None
        if self.head_m is not None:
            y_m = self.head_m(inp).squeeze(-1)  # Eq. 15: Y_m
            extras["y_m"] = y_m.detach()

        # Multi-task loss (Eq. 17-18): L_total = sum_i L^i_gt + L^f_gt + L^{en-de}_gt, all MSE
        losses = {}
        if batch.label is not None:
            y = batch.label.float()
            losses["task"] = F.mse_loss(y_m2.float(), y)
            if y_m is not None:
                losses["fusion_input"] = F.mse_loss(y_m.float(), y)
            for m, pred in y_uni.items():
                target = getattr(batch, f"label_{m}") if cfg.use_unimodal_labels else None
                target = y if target is None else target.float()
                losses[f"unimodal_{m}"] = F.mse_loss(pred.float(), target)
        return ModelOutput(pred=y_m2, losses=losses, extras=extras)


@register("ufen_mtfn")
def build_ufen_mtfn(**config) -> UFENMTFN:
    return UFENMTFN(make_config(UFENMTFNConfig, **config))
