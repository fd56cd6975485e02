"""Classic baselines on the shared Batch/ModelOutput interface (SPEC §3.6).

* LF-DNN (late fusion): each modality is mean-pooled over its valid (and observed) steps,
  passed through its own small MLP, and the three unimodal vectors are concatenated and
  mapped to the prediction.  Williams et al. (2018) use it as the simplest late-fusion
  reference; it is our "does the pipeline learn at all?" model.
* EF-LSTM (early fusion): the three sequences are resampled to the text length, concatenated
  frame by frame and read by one LSTM (Poria et al., 2017 style early fusion).  Real
  unaligned data has different lengths per modality, so each audio/vision sequence is
  averaged into L equal segments of its valid part first.

* TFN, LMF, MulT, MISA, Self-MM, TFR-Net: compact versions of the baselines in the seeds'
  tables, one section each below (docstring = paper + its one idea, equations in comments).

All read pre-extracted text features (``batch.text``), as the MMSA toolkit's versions do.
Regression: L1 loss (the field's default for MOSI/MOSEI/SIMS); classification: cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmsa.config import make_config
from mmsa.models import register
from mmsa.types import Batch, ModelOutput


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B,T,D) over positions where mask (B,T) is 1; zeros if none."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def text_features(batch: Batch, text_dim: int) -> torch.Tensor:
    if batch.text is None:
        raise ValueError("this baseline reads pre-extracted text features: batch.text (B, L, Dt) is None")
    if batch.text.shape[-1] != text_dim:
        raise ValueError(f"batch.text has feature dim {batch.text.shape[-1]}, expected text_dim={text_dim} "
                         f"(pass text_dim= to build)")
    return batch.text


def supervised_loss(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes > 1:
        return F.cross_entropy(pred.float(), label.long())
    return F.l1_loss(pred.float(), label.float())


# ----------------------------------------------------------------------------- LF-DNN


@dataclass
class LFDNNConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden_text: int = 128
    hidden_audio: int = 16
    hidden_vision: int = 32
    post_fusion_dim: int = 128
    dropout: float = 0.2
    num_classes: int = 1  # 1 = regression

    PRESETS: ClassVar[dict] = {
        "mosi": dict(text_dim=768, audio_dim=5, vision_dim=20),
        "mosei": dict(text_dim=768, audio_dim=74, vision_dim=35),
        "sims": dict(text_dim=768, audio_dim=33, vision_dim=709),
    }


class SubNet(nn.Sequential):
    """BatchNorm-free unimodal MLP: Linear-ReLU-Dropout-Linear-ReLU."""

    def __init__(self, d_in: int, d_hidden: int, dropout: float):
        super().__init__(nn.LayerNorm(d_in), nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_hidden), nn.ReLU())


class LFDNN(nn.Module):
    def __init__(self, cfg: LFDNNConfig):
        super().__init__()
        self.cfg = cfg
        self.text_net = SubNet(cfg.text_dim, cfg.hidden_text, cfg.dropout)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)
        d = cfg.hidden_text + cfg.hidden_audio + cfg.hidden_vision
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        t = masked_mean(text_features(batch, self.cfg.text_dim), batch.observed("text"))
        a = masked_mean(batch.audio, batch.observed("audio"))
        v = masked_mean(batch.vision, batch.observed("vision"))
        h = torch.cat([self.text_net(t), self.audio_net(a), self.vision_net(v)], dim=-1)
        pred = self.head(h)
        pred = pred.squeeze(-1) if self.cfg.num_classes == 1 else pred
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h})


@register("lf_dnn")
def build_lf_dnn(**config) -> LFDNN:
    return LFDNN(make_config(LFDNNConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- EF-LSTM


@dataclass
class EFLSTMConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden: int = 64
    dropout: float = 0.3
    num_classes: int = 1

    PRESETS: ClassVar[dict] = LFDNNConfig.PRESETS


def segment_average(x: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Average each sequence's valid part x[b, :len_b] into n equal segments -> (B, n, D)."""
    B, T, _ = x.shape
    pos = torch.arange(T, device=x.device)[None].float()  # (1,T)
    seg = torch.floor(pos * n / lengths.clamp(min=1)[:, None].float()).long()  # segment id per step
    valid = pos < lengths[:, None]
    seg = torch.where(valid, seg.clamp(max=n - 1), torch.full_like(seg, n))  # invalid -> bin n
    onehot = F.one_hot(seg, n + 1)[..., :n].to(x.dtype)  # (B,T,n)
    summed = torch.einsum("btn,btd->bnd", onehot, x)
    return summed / onehot.sum(1).clamp(min=1.0).unsqueeze(-1)


class EFLSTM(nn.Module):
    def __init__(self, cfg: EFLSTMConfig):
        super().__init__()
        self.cfg = cfg
        d_in = cfg.text_dim + cfg.audio_dim + cfg.vision_dim
        self.norm = nn.LayerNorm(d_in)
        self.lstm = nn.LSTM(d_in, cfg.hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        text = text_features(batch, self.cfg.text_dim) * batch.observed("text").unsqueeze(-1)
        L = text.shape[1]
        audio = segment_average(batch.audio, batch.lengths("audio"), L)
        vision = segment_average(batch.vision, batch.lengths("vision"), L)
        x = self.norm(torch.cat([text, audio, vision], dim=-1))
        lengths = batch.lengths("text").clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        pred = self.head(h[-1])
        pred = pred.squeeze(-1) if self.cfg.num_classes == 1 else pred
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h[-1]})


@register("ef_lstm")
def build_ef_lstm(**config) -> EFLSTM:
    return EFLSTM(make_config(EFLSTMConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- shared pieces
# (used by TFN, LMF, MulT, MISA, Self-MM and TFR-Net below)

PRESETS_ALL: dict = LFDNNConfig.PRESETS
MODS = ("text", "audio", "vision")


def modality_features(batch: Batch, cfg) -> dict:
    """{"text"|"audio"|"vision": (B,T,D)} with each feature size checked against the config."""
    feats = {"text": text_features(batch, cfg.text_dim)}
    for m in ("audio", "vision"):
        x, d = getattr(batch, m), getattr(cfg, f"{m}_dim")
        if x.dim() != 3 or x.shape[-1] != d:
            raise ValueError(f"batch.{m} has shape {tuple(x.shape)}, expected (B, T, {m}_dim={d})")
        feats[m] = x
    return feats


def finish(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    return pred.squeeze(-1) if num_classes == 1 else pred


def key_padding(observed: torch.Tensor) -> torch.Tensor:
    """Bool (B,T) key-padding mask (True = ignore) from a (B,T) observed mask.  A row with no
    observed step attends to all of its (zero) steps instead, so softmax never sees only -inf
    and a fully-missing modality cannot produce NaN."""
    pad = observed <= 0
    return pad & ~pad.all(dim=1, keepdim=True)


def sinusoid(T: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """(T, d) sinusoidal position table (Vaswani et al., 2017), on like's device and dtype."""
    pos = torch.arange(T, device=like.device, dtype=torch.float32)[:, None]
    ang = pos / 10000 ** (torch.arange(0, d, 2, device=like.device, dtype=torch.float32) / d)
    pe = torch.zeros(T, d, device=like.device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(ang), torch.cos(ang)[:, : d // 2]
    return pe.to(like.dtype)


class CrossmodalLayer(nn.Module):
    """Pre-LN transformer block where queries come from x and keys/values from src:
    x <- x + MHA(LN(x), LN(src), LN(src));  x <- x + FFN(LN(x)).  src = x gives self-attention."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(src)
        h, _ = self.attn(self.ln_q(x), kv, kv, key_padding_mask=src_pad, need_weights=False)
        x = x + self.drop(h)
        return x + self.drop(self.ff(self.ln_ff(x)))


class SequenceEncoder(nn.Module):
    """LSTM over the valid steps (unobserved steps zeroed) -> last hidden state(s) -> Linear."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, bidirectional: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.lstm = nn.LSTM(d_in, d_hidden, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(d_hidden * (2 if bidirectional else 1), d_out)

    def forward(self, x: torch.Tensor, observed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.norm(x) * observed.unsqueeze(-1).to(x.dtype)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (directions, B, H)
        return self.out(torch.cat(list(h), dim=-1))


# ----------------------------------------------------------------------------- TFN


@dataclass
class TFNConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden_text: int = 64  # d_t (the paper's language subnet outputs 128)
    hidden_audio: int = 16
    hidden_vision: int = 32
    post_fusion_dim: int = 64
    dropout: float = 0.2
    num_classes: int = 1

    PRESETS: ClassVar[dict] = PRESETS_ALL


class TFN(nn.Module):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017).

    The one idea: model unimodal, bimodal and trimodal interactions at once with the outer
    product of the three unimodal vectors, each extended by a constant 1 (tensor fusion):
        z^m = [z^t; 1] ⊗ [z^a; 1] ⊗ [z^v; 1]   in R^{(d_t+1)(d_a+1)(d_v+1)}
    The 1s keep copies of every unimodal vector and every bimodal product inside z^m.
    Subnets: language = LSTM over word features + linear; audio/vision = mean over time + MLP.
    """

    def __init__(self, cfg: TFNConfig):
        super().__init__()
        self.cfg = cfg
        self.text_net = SequenceEncoder(cfg.text_dim, cfg.hidden_text, cfg.hidden_text)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)
        d = (cfg.hidden_text + 1) * (cfg.hidden_audio + 1) * (cfg.hidden_vision + 1)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim), nn.ReLU(),
                                  nn.Linear(cfg.post_fusion_dim, cfg.num_classes))

    @staticmethod
    def fuse(zt: torch.Tensor, za: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
        one = lambda z: torch.cat([z, torch.ones_like(z[:, :1])], dim=-1)  # [z; 1]
        zm = torch.einsum("bi,bj,bk->bijk", one(zt), one(za), one(zv))  # tensor fusion: the 3-fold outer product
        return zm.flatten(1)

    def forward(self, batch: Batch) -> ModelOutput:
        x = modality_features(batch, self.cfg)
        zt = self.text_net(x["text"], batch.observed("text"), batch.lengths("text"))
        za = self.audio_net(masked_mean(x["audio"], batch.observed("audio")))
        zv = self.vision_net(masked_mean(x["vision"], batch.observed("vision")))
        zm = self.fuse(zt, za, zv)
        pred = finish(self.head(zm), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": zm, "z_t": zt, "z_a": za, "z_v": zv})


@register("tfn")
def build_tfn(**config) -> TFN:
    return TFN(make_config(TFNConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- LMF


@dataclass
class LMFConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden_text: int = 64
    hidden_audio: int = 16
    hidden_vision: int = 32
    rank: int = 4  # r
    fusion_dim: int = 32  # d_h, the size of the fused vector h
    dropout: float = 0.2
    num_classes: int = 1

    PRESETS: ClassVar[dict] = PRESETS_ALL


class LMF(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018).

    The one idea: TFN's h = W · Z with Z = ⊗_m [z_m; 1] never needs the tensor Z.  Write the
    weight tensor W as a rank-r sum of modality-specific factors, W = Σ_i ⊗_m w_m^(i);
    then
        h = Σ_{i=1}^{r} λ_i · ( ⊙_m  W_m^(i) [z_m; 1] ) + b
    i.e. one linear map per modality and rank, an elementwise product across modalities and a
    weighted sum over the rank.  Cost is linear, not multiplicative, in the unimodal sizes.
    """

    def __init__(self, cfg: LMFConfig):
        super().__init__()
        self.cfg = cfg
        self.text_net = SequenceEncoder(cfg.text_dim, cfg.hidden_text, cfg.hidden_text)
        self.audio_net = SubNet(cfg.audio_dim, cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(cfg.vision_dim, cfg.hidden_vision, cfg.dropout)
        factor = lambda d: nn.Parameter(torch.randn(cfg.rank, d + 1, cfg.fusion_dim) * (d + 1) ** -0.5)
        self.factor_t, self.factor_a, self.factor_v = (factor(cfg.hidden_text), factor(cfg.hidden_audio),
                                                       factor(cfg.hidden_vision))
        self.rank_weights = nn.Parameter(torch.full((cfg.rank,), 1.0 / cfg.rank))  # λ_i
        self.fusion_bias = nn.Parameter(torch.zeros(cfg.fusion_dim))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.fusion_dim, cfg.num_classes))

    def fuse(self, zt: torch.Tensor, za: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
        one = lambda z: torch.cat([z, torch.ones_like(z[:, :1])], dim=-1)
        ft = torch.einsum("bd,rdh->brh", one(zt), self.factor_t.to(zt.dtype))  # W_t^(i) [z_t; 1]
        fa = torch.einsum("bd,rdh->brh", one(za), self.factor_a.to(za.dtype))
        fv = torch.einsum("bd,rdh->brh", one(zv), self.factor_v.to(zv.dtype))
        return torch.einsum("r,brh->bh", self.rank_weights.to(ft.dtype), ft * fa * fv) + self.fusion_bias  # h = Σ_i λ_i ⊙_m f_m^(i) + b

    forward = TFN.forward  # same unimodal subnets and head as TFN; only ``fuse`` differs


@register("lmf")
def build_lmf(**config) -> LMF:
    return LMF(make_config(LMFConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- MulT


@dataclass
class MulTConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    d_model: int = 32  # d, the common size after the Conv1d projections (paper: 30 / 40)
    heads: int = 4  # must divide d_model
    cross_layers: int = 2  # crossmodal layers per direction (paper: 4-5)
    self_layers: int = 1  # self-attention "memory" layers per target modality (paper: 3)
    conv_kernel: int = 1  # odd
    dropout: float = 0.1
    embed_dropout: float = 0.1
    num_classes: int = 1

    PRESETS: ClassVar[dict] = PRESETS_ALL


class MulT(nn.Module):
    """Multimodal Transformer (Tsai et al., ACL 2019) for unaligned sequences.

    The one idea: a crossmodal transformer lets a target modality α repeatedly attend to a
    source modality β, so no word-level alignment is needed (per layer i):
        Z^[i]_{β→α} = CM^[i]_{β→α}( LN(Z^[i-1]_{β→α}), LN(X_β) ) + LN(Z^[i-1]_{β→α}),  then a FFN
    with queries from α and keys/values from β (crossmodal attention: softmax(Q_α K_βᵀ / √d) V_β).
    Six directions (t←a, t←v, a←t, a←v, v←t, v←a); per target the two results are
    concatenated (Z_α = [Z_{β→α}; Z_{γ→α}], 2d) and read by a self-attention transformer
    (the "memory"); the last valid state of each target is concatenated -> residual MLP.
    """

    def __init__(self, cfg: MulTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if d % cfg.heads or cfg.conv_kernel % 2 == 0:
            raise ValueError(f"MulT needs d_model % heads == 0 and an odd conv_kernel; got d_model={d}, "
                             f"heads={cfg.heads}, conv_kernel={cfg.conv_kernel}")
        dims = {"text": cfg.text_dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        # temporal convolution: X̂_m = Conv1D(X_m, k) ∈ R^{T_m × d}
        self.proj = nn.ModuleDict({m: nn.Conv1d(dims[m], d, cfg.conv_kernel, padding=cfg.conv_kernel // 2,
                                                bias=False) for m in MODS})
        self.cross = nn.ModuleDict({
            f"{src}_to_{tgt}": nn.ModuleList(CrossmodalLayer(d, cfg.heads, cfg.dropout) for _ in range(cfg.cross_layers))
            for tgt in MODS for src in MODS if src != tgt})
        self.memory = nn.ModuleDict({
            m: nn.ModuleList(CrossmodalLayer(2 * d, cfg.heads, cfg.dropout) for _ in range(cfg.self_layers))
            for m in MODS})
        self.embed_drop = nn.Dropout(cfg.embed_dropout)
        self.proj1, self.proj2 = nn.Linear(6 * d, 6 * d), nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, cfg.num_classes)

    def forward(self, batch: Batch) -> ModelOutput:
        feats = modality_features(batch, self.cfg)
        x, pad = {}, {}
        for m in MODS:
            h = self.proj[m](feats[m].transpose(1, 2)).transpose(1, 2)  # (B,T,d)
            h = h * self.cfg.d_model ** 0.5 + sinusoid(h.shape[1], self.cfg.d_model, h)  # Z^[0] = √d X̂ + PE
            x[m], pad[m] = self.embed_drop(h), key_padding(batch.observed(m))
        pooled = []
        for tgt in MODS:
            zs = []
            for src in MODS:
                if src == tgt:
                    continue
                z = x[tgt]
                for layer in self.cross[f"{src}_to_{tgt}"]:  # crossmodal layers, queries α=tgt, keys/values β=src
                    z = layer(z, x[src], pad[src])
                zs.append(z)
            z = torch.cat(zs, dim=-1)  # Z_α = [Z_{β→α}; Z_{γ→α}]  (B, T_α, 2d)
            for layer in self.memory[tgt]:  # self-attention over the target's own steps
                z = layer(z, z, pad[tgt])
            last = (batch.lengths(tgt) - 1).clamp(min=0)  # the paper takes the last element
            pooled.append(z[torch.arange(z.shape[0], device=z.device), last])
        h = torch.cat(pooled, dim=-1)  # (B, 6d)
        h = h + self.proj2(F.dropout(F.relu(self.proj1(h)), self.cfg.dropout, self.training))  # residual MLP
        pred = finish(self.out(h), self.cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, self.cfg.num_classes)}
        return ModelOutput(pred=pred, losses=losses, extras={"fused": h})


@register("mult")
def build_mult(**config) -> MulT:
    return MulT(make_config(MulTConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- MISA


@dataclass
class MISAConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    hidden: int = 32  # d_h, size of u_m and of every shared/private vector
    fusion_heads: int = 2
    dropout: float = 0.1
    sim_weight: float = 1.0  # α, similarity (CMD) term
    diff_weight: float = 0.3  # β, difference (soft orthogonality) term
    recon_weight: float = 1.0  # γ, reconstruction term
    cmd_moments: int = 5  # K in CMD
    num_classes: int = 1

    PRESETS: ClassVar[dict] = PRESETS_ALL


def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central Moment Discrepancy (Zellinger et al., 2017) between two (B, d) samples:
    ||E x - E y||_2 + Σ_{k=2}^{K} ||c_k(x) - c_k(y)||_2,  c_k(x) = E (x - E x)^k."""
    mx, my = x.mean(0), y.mean(0)
    cx, cy = x - mx, y - my
    dist = lambda a, b: ((a - b).pow(2).sum() + 1e-12).sqrt()  # eps keeps the gradient finite at 0
    return dist(mx, my) + sum(dist(cx.pow(k).mean(0), cy.pow(k).mean(0)) for k in range(2, moments + 1))


def soft_orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||Aᵀ B||_F^2 on batch-centred, row-normalised (B, d) matrices (Bousmalis et al., 2016), averaged."""
    a = F.normalize(a - a.mean(0), dim=1, eps=1e-6)
    b = F.normalize(b - b.mean(0), dim=1, eps=1e-6)
    return (a.t() @ b).pow(2).mean()


class MISA(nn.Module):
    """MISA: Modality-Invariant and -Specific representations (Hazarika et al., ACM MM 2020).

    The one idea: split every utterance vector u_m into a shared part h^c_m = E_c(u_m)
    (one encoder for all modalities, pulled together across modalities) and a private part
    h^p_m = E_p^m(u_m) (pushed orthogonal to the shared part and to each other), and fuse the six.
        L = L_task + α L_sim + β L_diff + γ L_recon
        L_sim   = 1/3 Σ_{(m1,m2)} CMD_K(h^c_m1, h^c_m2)
        L_diff  = Σ_m ||h^cᵀ_m h^p_m||²_F + Σ_{m1≠m2} ||h^pᵀ_m1 h^p_m2||²_F
        L_recon = 1/3 Σ_m ||u_m - D(h^c_m + h^p_m)||² / d_h
    Fusion: a transformer encoder layer over the 6 vectors, concatenated -> MLP.
    Simplifications: text is an LSTM over the given token features (the paper fine-tunes BERT);
    each modality uses one bidirectional LSTM instead of the paper's two stacked ones.
    """

    def __init__(self, cfg: MISAConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        dims = {"text": cfg.text_dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        self.encoder = nn.ModuleDict({m: SequenceEncoder(dims[m], d, d, bidirectional=True) for m in MODS})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.ReLU(), nn.LayerNorm(d)) for m in MODS})  # -> u_m
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())  # E_c
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in MODS})  # E_p^m
        self.recon = nn.ModuleDict({m: nn.Linear(d, d) for m in MODS})  # D (training only)
        layer = nn.TransformerEncoderLayer(d, cfg.fusion_heads, dim_feedforward=2 * d, dropout=cfg.dropout,
                                           batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(6 * d, 3 * d), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(3 * d, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        cfg, x = self.cfg, modality_features(batch, self.cfg)
        u = {m: self.project[m](self.encoder[m](x[m], batch.observed(m), batch.lengths(m))) for m in MODS}
        hc = {m: self.shared(u[m]) for m in MODS}
        hp = {m: self.private[m](u[m]) for m in MODS}
        six = torch.stack([hp[m] for m in MODS] + [hc[m] for m in MODS], dim=1)  # (B, 6, d)
        fused = self.fusion(six).flatten(1)
        pred = finish(self.head(fused), cfg.num_classes)
        pairs = [("text", "audio"), ("text", "vision"), ("audio", "vision")]
        sim = sum(cmd(hc[a], hc[b], cfg.cmd_moments) for a, b in pairs) / 3  # L_sim
        diff = (sum(soft_orthogonality(hc[m], hp[m]) for m in MODS)
                + sum(soft_orthogonality(hp[a], hp[b]) for a, b in pairs))  # L_diff
        recon = sum(F.mse_loss(self.recon[m](hc[m] + hp[m]), u[m]) for m in MODS) / 3  # L_recon
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes),
                  "similarity": cfg.sim_weight * sim, "difference": cfg.diff_weight * diff,
                  "reconstruction": cfg.recon_weight * recon}
        extras = {"fused": fused, **{f"shared_{m}": hc[m] for m in MODS}, **{f"private_{m}": hp[m] for m in MODS}}
        return ModelOutput(pred=pred, losses=losses, extras=extras)


@register("misa")
def build_misa(**config) -> MISA:
    return MISA(make_config(MISAConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- Self-MM


@dataclass
class SelfMMConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    text_out: int = 32
    audio_out: int = 16
    vision_out: int = 16
    post_fusion_dim: int = 32
    post_unimodal_dim: int = 16
    dropout: float = 0.1
    label_bound: float = 3.0  # H: generated labels are clipped to [-H, H] (1 for SIMS)
    center_momentum: float = 0.1  # EMA rate of the class-centre buffers (our simplification)
    num_classes: int = 1

    PRESETS: ClassVar[dict] = {k: dict(v) for k, v in PRESETS_ALL.items()}
    PRESETS["sims"]["label_bound"] = 1.0


class UnimodalLabelGenerator(nn.Module):
    """ULGM of Self-MM.  For each representation s ∈ {m, t, a, v} (m = fusion) keep a positive
    and a negative class centre C_p^s, C_n^s of the post-fusion features F^s, then
        D_p^s = ||F^s - C_p^s||_2,  D_n^s = ||F^s - C_n^s||_2,  α_s = (D_n^s - D_p^s) / (D_p^s + ε)
        ŷ_s = ½ · y_m · α_s/α_m + ½ · (y_m + α_s - α_m)       (mean of the ratio and difference forms)
    and smooth each sample's label over its visits n (epochs) with the paper's momentum:
        y_s^(n) = (n-1)/(n+1) · y_s^(n-1) + 2/(n+1) · ŷ_s^(n),   y_s^(1) = y_m.
    Simplifications: the centres are exponential moving averages over training batches, kept
    as buffers (the paper recomputes them from a memory of every training sample's features);
    the per-sample label memory is keyed by ``batch.ids`` and lives outside the state_dict
    (not checkpointed); batches without ids use the freshly generated ŷ_s directly.
    """

    KEYS = ("m", "t", "a", "v")

    def __init__(self, dims: dict, momentum: float, bound: float):
        super().__init__()
        self.momentum, self.bound = momentum, bound
        for k in self.KEYS:
            self.register_buffer(f"center_{k}", torch.zeros(2, dims[k]))  # [positive, negative]
        self.register_buffer("seen", torch.zeros(2))  # 1 once a positive / negative centre exists
        self.memory: dict = {}  # sample id -> (tensor (3,) labels t,a,v, visits n)

    @property
    def ready(self) -> bool:
        return bool((self.seen > 0).all())

    @torch.no_grad()
    def update_centers(self, feats: dict, labels: dict) -> None:
        for j in (0, 1):
            for k in self.KEYS:
                sel = labels[k] > 0 if j == 0 else labels[k] < 0
                if sel.any():
                    c, buf = feats[k][sel].float().mean(0), getattr(self, f"center_{k}")
                    buf[j] = c if not self.seen[j] else (1 - self.momentum) * buf[j] + self.momentum * c
            if (labels["m"] > 0).any() if j == 0 else (labels["m"] < 0).any():
                self.seen[j] = 1.0

    @torch.no_grad()
    def generate(self, feats: dict, y_m: torch.Tensor) -> dict:
        def alpha(k):
            c = getattr(self, f"center_{k}")
            d_p, d_n = (feats[k].float() - c[0]).norm(dim=-1), (feats[k].float() - c[1]).norm(dim=-1)
            return (d_n - d_p) / (d_p + 1e-8)

        a_m = alpha("m")
        return {k: (0.5 * y_m * alpha(k) / (a_m + 1e-8) + 0.5 * (y_m + alpha(k) - a_m)).clamp(-self.bound, self.bound)
                for k in ("t", "a", "v")}

    @torch.no_grad()
    def remember(self, ids: list, y_m: torch.Tensor, new: dict) -> dict:
        """Momentum update of each sample's stored labels; returns the labels stored before it."""
        new_cpu = torch.stack([new[k] for k in ("t", "a", "v")], dim=1).float().cpu()
        y_cpu, rows = y_m.float().cpu(), []
        for i, sid in enumerate(ids):
            old, n = self.memory.get(sid, (y_cpu[i].repeat(3), 0))
            n += 1
            lab = old if n == 1 else (n - 1) / (n + 1) * old + 2 / (n + 1) * new_cpu[i]
            self.memory[sid] = (lab, n)
            rows.append(old)  # the loss uses the labels of the previous visit, as in the paper
        out = torch.stack(rows).to(y_m.device)
        return {k: out[:, i] for i, k in enumerate(("t", "a", "v"))}


class SelfMM(nn.Module):
    """Self-MM (Yu et al., AAAI 2021): self-supervised multi-task learning.

    The one idea: train three unimodal heads next to the multimodal one, with unimodal labels
    generated without annotation from how far each unimodal representation lies from the
    positive/negative class centres, relative to the fused representation (see ULGM).  Each
    unimodal loss is weighted by how much its label differs from the multimodal one:
        L = |ŷ_m - y_m| + Σ_s w_s |ŷ_s - y_s|,   w_s = tanh(|y_s - y_m|)
    Backbone: text = masked mean of the token features (the paper takes BERT's [CLS]),
    audio/vision = one LSTM each; fusion = concatenation -> MLP.
    Classification (num_classes > 1): the main head uses cross-entropy and the unimodal heads
    regress generated labels around the score y_m = class - (C-1)/2 (our extension).
    """

    def __init__(self, cfg: SelfMMConfig):
        super().__init__()
        self.cfg = cfg
        self.text_net = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.text_out))
        self.audio_net = SequenceEncoder(cfg.audio_dim, cfg.audio_out, cfg.audio_out)
        self.vision_net = SequenceEncoder(cfg.vision_dim, cfg.vision_out, cfg.vision_out)
        d_all = cfg.text_out + cfg.audio_out + cfg.vision_out
        self.post_fusion = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_all, cfg.post_fusion_dim), nn.ReLU())
        self.fusion_head = nn.Sequential(nn.Linear(cfg.post_fusion_dim, cfg.post_fusion_dim), nn.ReLU(),
                                         nn.Linear(cfg.post_fusion_dim, cfg.num_classes))
        dims_in = {"t": cfg.text_out, "a": cfg.audio_out, "v": cfg.vision_out}
        p = cfg.post_unimodal_dim
        self.post = nn.ModuleDict({k: nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, p), nn.ReLU())
                                   for k, d in dims_in.items()})  # F^s
        self.unimodal_head = nn.ModuleDict({k: nn.Sequential(nn.Linear(p, p), nn.ReLU(), nn.Linear(p, 1))
                                            for k in dims_in})
        self.ulgm = UnimodalLabelGenerator({"m": cfg.post_fusion_dim, "t": p, "a": p, "v": p},
                                           cfg.center_momentum, cfg.label_bound)

    def forward(self, batch: Batch) -> ModelOutput:
        cfg, x = self.cfg, modality_features(batch, self.cfg)
        h = {"t": self.text_net(masked_mean(x["text"], batch.observed("text"))),
             "a": self.audio_net(x["audio"], batch.observed("audio"), batch.lengths("audio")),
             "v": self.vision_net(x["vision"], batch.observed("vision"), batch.lengths("vision"))}
        feats = {"m": self.post_fusion(torch.cat([h["t"], h["a"], h["v"]], dim=-1))}
        feats.update({k: self.post[k](h[k]) for k in ("t", "a", "v")})
        pred = finish(self.fusion_head(feats["m"]), cfg.num_classes)
        y_hat = {k: self.unimodal_head[k](feats[k]).squeeze(-1) for k in ("t", "a", "v")}
        y_m = batch.label.float() if cfg.num_classes == 1 else batch.label.float() - (cfg.num_classes - 1) / 2
        detached = {k: f.detach() for k, f in feats.items()}
        # unimodal labels: y_m until both class centres exist, else generated by the ULGM
        labels = self.ulgm.generate(detached, y_m) if self.ulgm.ready else {k: y_m for k in ("t", "a", "v")}
        if self.training and batch.ids:
            labels = self.ulgm.remember(batch.ids, y_m, labels)  # momentum update over visits
        if self.training:
            self.ulgm.update_centers(detached, {"m": y_m, **labels})
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes)}
        for k in ("t", "a", "v"):
            w = torch.tanh((labels[k] - y_m).abs())  # w_s
            losses[f"unimodal_{k}"] = (w * (y_hat[k].float() - labels[k]).abs()).mean()
        extras = {"fused": feats["m"], **{f"y_{k}": y_hat[k] for k in y_hat},
                  **{f"label_{k}": labels[k] for k in labels}}
        return ModelOutput(pred=pred, losses=losses, extras=extras)


@register("self_mm")
def build_self_mm(**config) -> SelfMM:
    return SelfMM(make_config(SelfMMConfig, config.pop("dataset", None), **config))


# ----------------------------------------------------------------------------- TFR-Net


@dataclass
class TFRNetConfig:
    dataset: str = "mosi"
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    d_model: int = 32
    heads: int = 4
    intra_layers: int = 1  # self-attention layers inside each modality
    inter_layers: int = 1  # layers attending to all three modalities
    dropout: float = 0.1
    recon_weight: float = 1.0  # λ in L = L_task + λ L_recon
    num_classes: int = 1

    PRESETS: ClassVar[dict] = PRESETS_ALL


class TFRNet(nn.Module):
    """TFR-Net: Transformer-based Feature Reconstruction Network (Yuan et al., ACM MM 2021).

    The one idea: for incomplete inputs, make the encoder *recover* what was dropped.  Each
    modality is encoded by intra-modal self-attention and inter-modal attention over the
    concatenation of all three sequences, so a dropped step can be inferred from its own
    context and from the other modalities; a reconstruction head maps every encoded step back
    to feature space and is trained only on the dropped positions against the complete view:
        L = L_task + λ · mean_{(m,t) dropped} SmoothL1( recon_m(Z_m[t]), X^full_m[t] )
    Simplifications: one reconstruction MLP per modality replaces the paper's low-rank
    attention reconstruction module (SMURF), and the prediction uses masked-mean pooling of the
    encoded sequences -> MLP instead of the paper's attention/GRU fusion; dropped inputs are
    zeroed (their values never reach the encoder) but their positions stay queries.
    """

    def __init__(self, cfg: TFRNetConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if d % cfg.heads:
            raise ValueError(f"TFR-Net needs d_model % heads == 0; got d_model={d}, heads={cfg.heads}")
        self.dims = {"text": cfg.text_dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], d) for m in MODS})
        self.modality_embed = nn.Parameter(torch.randn(3, d) * 0.02)
        self.intra = nn.ModuleDict({m: nn.ModuleList(CrossmodalLayer(d, cfg.heads, cfg.dropout)
                                                     for _ in range(cfg.intra_layers)) for m in MODS})
        self.inter = nn.ModuleDict({m: nn.ModuleList(CrossmodalLayer(d, cfg.heads, cfg.dropout)
                                                     for _ in range(cfg.inter_layers)) for m in MODS})
        self.recon = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, self.dims[m]))
                                    for m in MODS})  # training only
        self.head = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        cfg, feats = self.cfg, modality_features(batch, self.cfg)
        obs = {m: batch.observed(m) for m in MODS}
        z, pad = {}, {}
        for i, m in enumerate(MODS):
            x = feats[m] * obs[m].unsqueeze(-1).to(feats[m].dtype)  # dropped steps carry no value
            h = self.proj[m](x)
            h = h + sinusoid(h.shape[1], cfg.d_model, h) + self.modality_embed[i].to(h.dtype)
            pad[m] = key_padding(obs[m])
            for layer in self.intra[m]:  # intra-modal attention
                h = layer(h, h, pad[m])
            z[m] = h
        ctx = torch.cat([z[m] for m in MODS], dim=1)  # all three sequences, (B, L+Ta+Tv, d)
        ctx_pad = key_padding(torch.cat([obs[m] for m in MODS], dim=1))
        for m in MODS:  # inter-modal attention
            for layer in self.inter[m]:
                z[m] = layer(z[m], ctx, ctx_pad)
        valid = {m: (torch.arange(z[m].shape[1], device=z[m].device)[None] < batch.lengths(m)[:, None]) for m in MODS}
        fused = torch.cat([masked_mean(z[m], valid[m]) for m in MODS], dim=-1)
        pred = finish(self.head(fused), cfg.num_classes)
        losses = {"task": supervised_loss(pred, batch.label, cfg.num_classes)}
        extras = {"fused": fused}
        if batch.full is not None:  # reconstruction of the dropped positions
            full = modality_features(batch.full, cfg)
            num = den = fused.new_zeros((), dtype=torch.float32)
            for m in MODS:
                dropped = (valid[m].float() - obs[m]).clamp(min=0)  # valid but not observed
                rec = self.recon[m](z[m])
                err = F.smooth_l1_loss(rec.float(), full[m].float(), reduction="none").mean(-1)
                num, den = num + (err * dropped).sum(), den + dropped.sum()
                extras[f"recon_{m}"] = rec
            losses["reconstruction"] = cfg.recon_weight * num / den.clamp(min=1.0)
        return ModelOutput(pred=pred, losses=losses, extras=extras)


@register("tfr_net")
def build_tfr_net(**config) -> TFRNet:
    return TFRNet(make_config(TFRNetConfig, config.pop("dataset", None), **config))
