"""DAST-GAN (Tan & Zhang, Sensors 2025; docs/design.md §3.3): EMT-DLFR + DAM + STA + GAN.

Everything of EMT-DLFR (``mmsa.models.emt_dlfr``) stays; three switchable modules are added:

 1. DAM  (``use_dam``)  availability ρ read from the input, missing compensation of G⁰, dynamic
                        modality weights α = softmax((MLP([LN(vec G^(m)); ρ_m]) + log(ρ+ε))/τ)
                        replacing EMT's pooling in every layer (``mmsa.fusion.dam``).  Off: α = 1/3.
 2. STA  (``use_sta``)  local streams aligned to T=50 steps, temporal + spatial attention, fusion
                        gate, attention-pooled over time into s ∈ (B,D) (``mmsa.fusion.sta``).
                        Off: one standard self-attention layer in its place.
 3. GAN  (``use_gan``)  f = [vec(G^L); s]; a spectral-norm discriminator tells complete-view
                        features (real) from incomplete-view ones (fake).  The generator term
                        losses["adversarial"] = λ(e)·BCE(D(f_miss), 1) uses ``model.adv_weight``
                        = λ(e), set each epoch by the ``GANSchedule`` callback, which also owns
                        the discriminator's optimiser and its step.
 Head: ŷ = MLP(concat[h_l, h_a, h_v, vec(G^L), s]).
 L = L1(ŷ_miss) + w_att (Σ L_attra + L1(ŷ_full)) + w_rec Σ L_rec + λ(e) L_adv

The seven ablations of the paper are flag combinations, e.g. ``build("dast_gan", use_dam=False)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mmsa.config import make_config
from mmsa.fusion.dam import DAM, availability, input_texture
from mmsa.fusion.sta import STA, PlainSelfAttention
from mmsa.losses import adversarial_loss, discriminator_loss
from mmsa.models import register
from mmsa.models.emt_dlfr import EMTDLFR, EMTDLFRConfig
from mmsa.types import MODALITIES, Batch


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x (B,T,D) over the positions where valid (B,T) is True; 0 where none is."""
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


@dataclass
class DASTGANConfig(EMTDLFRConfig):
    use_dam: bool = True
    use_sta: bool = True
    use_gan: bool = True
    # DAM
    tau: float = 1.2
    dam_hidden: int = 128
    dam_eps: float = 1e-6
    # reliability supervision of DAM (training only; 0 = the weights learn from the task loss alone)
    dam_supervision: float = 0.0      # weight of the unimodal heads' L1 and of the CE(target, α); off by default
    dam_target_tau: float = 0.5       # temperature of the target softmax(-|ŷ_m - y| / τ_t)
    dam_target: str = "heads"         # "heads": that target; "truth" (intervention, SynthMSA only): the clip's
                                      # true reliabilities r_m / Σ r (docs/design.md §3.3.1)
    dam_texture: bool = False         # intervention (not the paper): DAM's scorer also reads each modality's
                                      # input texture (``mmsa.fusion.dam.input_texture``), docs/design.md §3.3.1
    # STA
    sta_steps: int = 50
    attract_sta: bool = False            # DLFR's attraction also on STA's summary s (see attraction_dims)
    align_sigma: Optional[float] = 0.1   # Gaussian anchoring of aligned steps (relative time)
    # GAN
    disc_hidden: tuple = (256, 64)
    disc_dropout: float = 0.3
    disc_spectral_norm: bool = True   # False: intervention (not the paper), docs/design.md §3.3.1
    w_adv: float = 0.1
    gan_warmup: int = 5
    gan_ramp: int = 10
    gan_lr: float = 1e-4

    PRESETS: ClassVar[dict] = {
        "mosi": {**EMTDLFRConfig.PRESETS["mosi"], "w_adv": 0.1},
        "mosei": {**EMTDLFRConfig.PRESETS["mosei"], "w_adv": 0.1},     # the table's middle column
        "sims": {**EMTDLFRConfig.PRESETS["sims"], "w_adv": 0.08},      # its right column
    }


def make_discriminator(in_dim: int, hidden=(256, 64), dropout: float = 0.3, spectral: bool = True) -> nn.Module:
    """SN-Linear(in,256)-LeakyReLU(0.2)-Dropout(0.3)-SN-Linear(256,64)-LeakyReLU(0.2)-SN-Linear(64,1)
    (``spectral=False``: the same layers without their spectral norm)."""
    h1, h2 = hidden
    sn = spectral_norm if spectral else (lambda layer: layer)
    return nn.Sequential(sn(nn.Linear(in_dim, h1)), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         sn(nn.Linear(h1, h2)), nn.LeakyReLU(0.2), sn(nn.Linear(h2, 1)))


class DASTGAN(EMTDLFR):
    def __init__(self, cfg: DASTGANConfig):
        super().__init__(cfg)
        if cfg.dam_target not in ("heads", "truth"):
            raise ValueError(f"unknown dam_target {cfg.dam_target!r}; valid: 'heads', 'truth'")
        D = cfg.d_model
        if cfg.use_dam:
            self.dam = DAM(D, 3, cfg.dam_hidden, cfg.tau, cfg.dam_eps, n_signals=2 if cfg.dam_texture else 1)
        if cfg.use_sta:
            self.sta = STA(D, cfg.sta_steps, cfg.n_heads, cfg.attn_dropout, cfg.ff_mult, cfg.align_sigma)
        else:
            self.sta = PlainSelfAttention(D, cfg.n_heads, cfg.attn_dropout, cfg.ff_mult)
        if cfg.use_dam and cfg.dam_supervision > 0:  # training only (prefix "unimodal.")
            self.unimodal = nn.ModuleDict({m: nn.Sequential(nn.Linear(self.enc_dims[m], 64), nn.ReLU(), nn.Linear(64, 1))
                                           for m in MODALITIES})
        if cfg.use_gan:  # training only: excluded from inference_parameters and the Trainer's optimiser
            self.discriminator = make_discriminator(4 * D, cfg.disc_hidden, cfg.disc_dropout, cfg.disc_spectral_norm)
        self.adv_weight = 0.0  # λ(e), set by GANSchedule.on_epoch_start

    def _emt_pooling(self) -> bool:
        return False  # pooling is DAM (or fixed 1/3) below

    def head_dim(self) -> int:
        return super().head_dim() + self.cfg.d_model

    def attraction_dims(self) -> dict:
        """DLFR's high-level attraction pulls the two views together on vec(G^L), h_l, h_a, h_v.
        DAST-GAN's head also reads STA's summary s, which only the GAN constrains; ``attract_sta``
        adds a SimSiam term on s as well.  Off by default: it did not help in our measurements
        (2 seeds, test MAE +0.04 complete, +0.02 at 50 % missing; docs/design.md §3.3)."""
        dims = super().attraction_dims()
        if self.cfg.attract_sta:
            dims["s"] = self.cfg.d_model
        return dims

    def fuse(self, batch: Batch, g: Tensor, xs: list, valid: list) -> dict:
        rho, keys = availability(batch)                                   # Eq. 4 (from the input)
        rho = rho.to(g.device)
        if self.cfg.use_dam:
            g = self.dam.compensate(g, rho)                               # Eq. 5
            texture = input_texture(batch).to(g.device) if self.cfg.dam_texture else None
            pool = lambda g_prev, cands: self.dam(g_prev, cands, rho, texture)   # Eq. 6-7
        else:
            fixed = torch.full((g.shape[0], 3), 1.0 / 3, device=g.device)
            pool = lambda g_prev, cands: (cands.mean(1), fixed)
        g, xs, w = self.emt(g, xs, valid, pool=pool)
        alpha = w[:, -1]
        keys = [keys[m].to(g.device) & v for m, v in zip(MODALITIES, valid)]
        lengths = [batch.lengths(m) for m in MODALITIES]
        g_pool = torch.einsum("bm,bmd->bd", alpha.to(g.dtype), g)        # pooled global token ḡ
        s, sta_extras = self.sta(xs, keys, lengths, g_pool, alpha)        # Eq. 8-12
        extras = {"availability": rho, "layer_weights": w, "s": s, **sta_extras}
        return {"g": g, "xs": xs, "weights": alpha, "head_extra": [s], "feats": {"s": s}, "extras": extras}

    def forward(self, batch: Batch):
        out = super().forward(batch)
        out.extras.pop("aligned", None)
        return out

    def unimodal_predictions(self, view: dict) -> Tensor:
        """(B, 3) predictions of the unimodal heads (``dam_supervision > 0`` only) from each
        encoder's local states averaged over the valid steps."""
        enc = view["enc"]
        return torch.cat([self.unimodal[m](masked_mean(enc["local"][m], enc["valid"][m])).float()
                          for m in MODALITIES], -1)

    def reliability_supervision(self, view: dict, label: Tensor,
                                reliability: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """(Eq. 13) Which modality *is* reliable in this clip?  A small head per modality predicts
        the label from that modality alone (its encoder's local states, averaged over the valid
        steps); the smaller its error, the more the clip's sentiment is readable from m.  The DAM
        weights of every layer are pulled towards
            α* = softmax_m(−|ŷ_m − y| / τ_t)   (detached; modalities with ρ_m = 0 excluded)
        by a cross-entropy, and the heads learn with an L1.  With ``dam_target="truth"`` (an
        intervention, not the paper) the target is the clip's true reliabilities instead,
        α* = r_m / Σ_m' r_m' over the available modalities (``reliability``: (B, 3), SynthMSA's
        ground truth).  Returns (L_uni, L_dam)."""
        err = (self.unimodal_predictions(view) - label.float()[:, None]).abs()
        rho = view["fused"]["extras"]["availability"].float()
        if self.cfg.dam_target == "truth":
            if reliability is None:
                raise ValueError('dam_target="truth" needs the true reliabilities (batch.truth["reliability"], '
                                 "(B, 3)): only SynthMSA has them; use dam_target=\"heads\" on other data")
            r = reliability.to(rho.device).float().clamp(min=1e-6) * (rho > 0)
            target = r / r.sum(-1, keepdim=True).clamp(min=1e-6)
        else:
            target = (-err.detach() / self.cfg.dam_target_tau).masked_fill(rho <= 0, float("-inf")).softmax(-1)
        alpha = view["fused"]["extras"]["layer_weights"].float()                                  # (B,L,3)
        ce = -(target[:, None] * torch.log(alpha + 1e-8)).sum(-1).mean()
        return err.mean(), ce

    def training_extras(self, batch: Batch, miss: dict, full: dict, losses: dict) -> dict:
        if hasattr(self, "unimodal") and batch.label is not None and batch.label.dim() == 1 \
                and batch.label.is_floating_point():
            truth = (batch.truth or {}).get("reliability")
            terms = [self.reliability_supervision(v, batch.label, truth) for v in (miss, full)]
            losses["unimodal"] = self.cfg.dam_supervision * sum(t[0] for t in terms)
            losses["dam_reliability"] = self.cfg.dam_supervision * sum(t[1] for t in terms)
        f_miss = torch.cat([miss["feats"]["g"], miss["fused"]["extras"]["s"]], -1)
        f_full = torch.cat([full["feats"]["g"], full["fused"]["extras"]["s"]], -1)
        if self.cfg.use_gan and self.adv_weight > 0:
            losses["adversarial"] = self.adv_weight * adversarial_loss(self.discriminator(f_miss))
        return {"f_miss": f_miss.detach(), "f_full": f_full.detach()}

    def training_callbacks(self) -> list:
        """What ``mmsa.experiment.fit`` hands the Trainer: the GAN schedule when the GAN is on."""
        return [self.gan_schedule()] if self.cfg.use_gan else []

    def patience_start_epoch(self) -> int:
        return gan_patience_start(self.cfg)

    def gan_schedule(self) -> "GANSchedule":
        """The callback with this config's warm-up, ramp, w_adv and discriminator lr."""
        c = self.cfg
        return GANSchedule(warmup=c.gan_warmup, ramp=c.gan_ramp, w_adv=c.w_adv, lr=c.gan_lr)


@register("dast_gan")
def build_dast_gan(**config) -> DASTGAN:
    return DASTGAN(make_config(DASTGANConfig, **config))


def gan_patience_start(config) -> int:
    """Epoch after which early-stopping patience counts (``TrainConfig.patience_start_epoch``)."""
    config = getattr(config, "cfg", config)
    return int(config.gan_warmup + config.gan_ramp) if getattr(config, "use_gan", True) else 0


def _average_across_ranks(module: nn.Module) -> None:
    """Under torch.distributed, replace each gradient by its mean over the ranks.

    The discriminator is stepped by the callback, outside the DDP-wrapped forward/backward, so
    DDP never all-reduces its gradients: without this each rank's D would drift apart."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


class GANSchedule:
    """Trainer callback for the adversarial game ("progressive integration").

    λ(e) = 0                                   for e ≤ warmup        (epochs count from 1)
         = w_adv · min(1, (e − warmup) / ramp)  for e > warmup
    With (5, 10, 0.1): λ(1..5) = 0, λ(6) = 0.01, λ(10) = 0.05, λ(15) = 0.1, λ(e ≥ 15) = 0.1.

    The discriminator has its own Adam (lr, betas).  After every training micro-batch
    (``on_batch_end``) it takes one step on L_D with the detached ``extras["f_full"]`` (real)
    and ``extras["f_miss"]`` (fake); its gradients are zeroed first, because the generator's
    L_adv backward also leaves gradients in D.  Per epoch it logs ``d_loss`` (mean L_D) and
    ``d_acc`` (fraction of real and fake samples D classifies correctly).
    """

    def __init__(self, warmup: int = 5, ramp: int = 10, w_adv: float = 0.1, lr: float = 1e-4,
                 betas: tuple = (0.5, 0.999)):
        self.warmup, self.ramp, self.w_adv, self.lr, self.betas = warmup, ramp, w_adv, lr, tuple(betas)
        self.optimizer = None
        self._pending = None
        self._reset_stats()

    def lambda_at(self, epoch: int) -> float:
        if epoch <= self.warmup:
            return 0.0
        if self.ramp <= 0:
            return float(self.w_adv)
        return float(self.w_adv) * min(1.0, (epoch - self.warmup) / self.ramp)

    @staticmethod
    def _model(trainer) -> nn.Module:
        model = trainer.model
        return getattr(model, "module", model)  # unwrap DDP

    def _reset_stats(self):
        self._loss_sum, self._correct, self._seen, self._steps = None, None, None, 0

    def on_fit_start(self, trainer) -> None:
        model = self._model(trainer)
        if not hasattr(model, "discriminator"):
            raise ValueError("GANSchedule needs a model with a `discriminator` (build dast_gan with use_gan=True)")
        self.optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=self.lr, betas=self.betas)
        if self._pending is not None:
            self.optimizer.load_state_dict(self._pending)
            self._pending = None

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._model(trainer).adv_weight = self.lambda_at(epoch)
        self._reset_stats()

    def on_batch_end(self, trainer, batch, out) -> None:
        if "f_full" not in out.extras or "f_miss" not in out.extras:
            return
        model = self._model(trainer)
        disc = model.discriminator
        if self.optimizer is None:
            self.on_fit_start(trainer)
        real, fake = out.extras["f_full"].detach().float(), out.extras["f_miss"].detach().float()
        disc.zero_grad(set_to_none=True)      # drop the grads L_adv left in D
        device_type = real.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            d_real, d_fake = disc(real), disc(fake)
            loss = discriminator_loss(d_real, d_fake)
        loss.backward()
        _average_across_ranks(disc)           # DDP: every replica takes the same D step
        self.optimizer.step()
        disc.zero_grad(set_to_none=True)
        with torch.no_grad():                 # accumulate on device: no host sync per step
            correct = (d_real > 0).sum() + (d_fake <= 0).sum()
            self._loss_sum = loss.detach() if self._loss_sum is None else self._loss_sum + loss.detach()
            self._correct = correct if self._correct is None else self._correct + correct
        self._seen = (self._seen or 0) + d_real.numel() + d_fake.numel()
        self._steps += 1

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        logs["adv_weight"] = self.lambda_at(epoch)
        if self._steps:
            logs["d_loss"] = float(self._loss_sum) / self._steps
            logs["d_acc"] = float(self._correct) / self._seen

    def state_dict(self) -> dict:
        return {"warmup": self.warmup, "ramp": self.ramp, "w_adv": self.w_adv, "lr": self.lr,
                "betas": self.betas,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else self._pending}

    def load_state_dict(self, state: dict) -> None:
        self.warmup, self.ramp, self.w_adv = state["warmup"], state["ramp"], state["w_adv"]
        self.lr, self.betas = state["lr"], tuple(state["betas"])
        opt = state.get("optimizer")
        if opt is None:
            return
        if self.optimizer is not None:
            self.optimizer.load_state_dict(opt)
        else:
            self._pending = opt
