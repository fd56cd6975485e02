"""DAST-GAN: 7 ablation variants, DAM availability/weights, STA maps, GAN schedule and D step."""
from types import SimpleNamespace

import pytest
import torch

from mmsa.fusion.dam import availability
from mmsa.models import build, count_parameters, inference_parameters
from mmsa.models.dast_gan import GANSchedule, gan_patience_start
from mmsa.types import Batch

from test_emt_dlfr import CLS, SEP, UNK, make_batch, overfit  # noqa: E402,F401  (one hand-built batch for both)


TINY = dict(text_model="tiny", d_model=16, n_layers=2, n_heads=2, proj_dim=16, pred_hidden=8, mlp_hidden=32,
            sta_steps=8, dam_hidden=16, disc_hidden=(32, 16))
VARIANTS = {  # the paper's ablation table
    "full": {}, "w/o DAM": dict(use_dam=False), "w/o STA": dict(use_sta=False), "w/o GAN": dict(use_gan=False),
    "w/o DAM+STA": dict(use_dam=False, use_sta=False), "w/o DAM+GAN": dict(use_dam=False, use_gan=False),
    "w/o STA+GAN": dict(use_sta=False, use_gan=False),
}


def tiny(**kw):
    return build("dast_gan", dataset="mosi", **{**TINY, **kw})


def fake_trainer(model):
    return SimpleNamespace(model=model, device=torch.device("cpu"), epoch=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_trainable_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    model = tiny(**VARIANTS[variant], dam_supervision=0.1 if variant == "full" else 0.0)
    model.adv_weight = 0.1
    out = model(make_batch())
    assert out.pred.shape == (4,)
    expected = {"task", "task_full", "attraction", "reconstruction"} | ({"adversarial"} if model.cfg.use_gan else set()) \
        | ({"unimodal", "dam_reliability"} if model.cfg.use_dam and model.cfg.dam_supervision > 0 else set())
    assert set(out.losses) == expected
    out.loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and not n.startswith("discriminator.")]
    assert not missing, missing
    assert hasattr(model, "discriminator") == model.cfg.use_gan
    assert hasattr(model, "dam") == model.cfg.use_dam


def test_mosi_preset_shapes_and_extras():
    torch.manual_seed(0)
    model = build("dast_gan", dataset="mosi", text_model="tiny")
    cfg = model.cfg
    assert (cfg.d_model, cfg.n_layers, cfg.sta_steps, cfg.tau, cfg.w_adv) == (128, 3, 50, 1.2, 0.1)
    assert model.discriminator[0].in_features == 512
    out = model(make_batch())
    assert out.extras["modality_weights"].shape == (4, 3)
    assert out.extras["temporal_attention"].shape == (4, 4, 3, 50)
    assert out.extras["f_full"].shape == (4, 512) and out.extras["f_miss"].shape == (4, 512)
    assert not out.extras["f_full"].requires_grad



def test_presets_read_the_hyper_parameter_table_one_way_for_every_row():
    """The table's middle column is the EMT-DLFR code's MOSEI config and its right column the
    code's SIMS config: sizes and loss weights both follow that reading."""
    mosei = build("dast_gan", dataset="mosei", text_model="tiny").cfg
    sims = build("dast_gan", dataset="sims", text_model="tiny").cfg
    assert (mosei.d_model, mosei.n_layers, mosei.attn_dropout, mosei.w_att, mosei.w_rec, mosei.w_adv) == (128, 2, 0.0, 1.0, 1.0, 0.1)
    assert (sims.d_model, sims.n_layers, sims.attn_dropout, sims.w_att, sims.w_rec, sims.w_adv) == (32, 4, 0.0, 0.5, 0.5, 0.08)
    emt = build("emt_dlfr", dataset="mosei", text_model="tiny").cfg
    assert (emt.w_att, emt.w_rec) == (1.0, 1.0)


def test_discriminator_gets_gradients_from_the_d_loss_and_changes_only_in_the_d_step():
    torch.manual_seed(0)
    model = tiny()
    model.adv_weight = 0.1
    trainer = fake_trainer(model)
    sched = GANSchedule()
    sched.on_fit_start(trainer)
    sched.on_epoch_start(trainer, 8)
    assert model.adv_weight == pytest.approx(0.03)
    gen_params = [p for n, p in model.named_parameters() if not n.startswith("discriminator.")]
    opt = torch.optim.Adam(gen_params, lr=1e-2)
    d_before = {n: p.detach().clone() for n, p in model.discriminator.named_parameters()}
    out = model(make_batch())
    opt.zero_grad()
    out.loss.backward()
    opt.step()                                     # the Trainer's step: D untouched
    for k, v in model.discriminator.named_parameters():
        assert torch.equal(v, d_before[k]), k
    g_before = [p.detach().clone() for p in gen_params]
    grads = {}
    for n, p in model.discriminator.named_parameters():
        p.register_hook(lambda g, n=n: grads.__setitem__(n, g))
    sched.on_batch_end(trainer, None, out)         # the D step
    assert set(grads) == {n for n, _ in model.discriminator.named_parameters()}
    assert all(g.abs().sum() > 0 for g in grads.values())
    changed = [k for k, v in model.discriminator.named_parameters() if not torch.equal(v, d_before[k])]
    assert len(changed) == len(d_before) == 6
    assert all(torch.equal(a, b) for a, b in zip(g_before, gen_params))
    logs = {}
    sched.on_epoch_end(trainer, 8, logs)
    assert set(logs) == {"adv_weight", "d_loss", "d_acc"} and 0.0 <= logs["d_acc"] <= 1.0


@pytest.mark.parametrize("epoch,lam", [(1, 0.0), (5, 0.0), (6, 0.01), (10, 0.05), (15, 0.1), (20, 0.1)])
def test_lambda_schedule(epoch, lam):
    assert GANSchedule(warmup=5, ramp=10, w_adv=0.1).lambda_at(epoch) == pytest.approx(lam)


def test_patience_start_and_schedule_from_config():
    model = tiny()
    assert gan_patience_start(model.cfg) == 15 and gan_patience_start(model) == 15
    assert gan_patience_start(tiny(use_gan=False)) == 0
    s = model.gan_schedule()
    assert (s.warmup, s.ramp, s.w_adv, s.lr, s.betas) == (5, 10, 0.1, 1e-4, (0.5, 0.999))


def test_adversarial_term_skipped_when_weight_zero():
    model = tiny()
    model.adv_weight = 0.0
    assert "adversarial" not in model(make_batch()).losses


def test_schedule_state_roundtrip():
    model = tiny()
    model.adv_weight = 0.1
    trainer = fake_trainer(model)
    s1 = GANSchedule(warmup=2, ramp=3, w_adv=0.2)
    s1.on_fit_start(trainer)
    s1.on_batch_end(trainer, None, model(make_batch()))
    state = s1.state_dict()
    s2 = GANSchedule()
    s2.load_state_dict(state)                       # before on_fit_start: kept pending
    s2.on_fit_start(trainer)
    assert (s2.warmup, s2.ramp, s2.w_adv) == (2, 3, 0.2)
    assert s2.optimizer.state_dict()["state"].keys() == s1.optimizer.state_dict()["state"].keys()


def test_eval_never_calls_the_discriminator():
    model = tiny().eval()
    model.adv_weight = 0.1

    def boom(*args):
        raise AssertionError("discriminator called in eval")

    model.discriminator.register_forward_pre_hook(boom)
    out = model(make_batch())
    assert set(out.losses) == {"task"} and "f_full" not in out.extras
    model.train()
    with pytest.raises(AssertionError, match="discriminator called"):
        model(make_batch())


def test_availability_is_read_from_the_input_not_the_oracle_mask():
    batch = make_batch(drop=0.0)
    b2 = batch.replace(audio=batch.audio.clone(), text_ids=batch.text_ids.clone())
    b2.audio[0, :6] = 0.0                 # 6 of 12 valid frames zeroed, missing mask says nothing
    b2.text_ids[0, 1:5] = UNK             # 4 of 7 content tokens ([CLS]/[SEP] excluded)
    b2.missing["vision"][:] = 0.0         # oracle says vision dropped, the data is intact
    rho, keys = availability(b2)
    assert rho[0, 0].item() == pytest.approx(3 / 7)
    assert rho[0, 1].item() == pytest.approx(0.5)
    assert torch.allclose(rho[:, 2], torch.ones(4))
    assert keys["text"][0].sum() == 9 - 4 and keys["audio"][0].sum() == 6


def test_fully_missing_modality_gets_weight_near_zero_and_no_nan():
    torch.manual_seed(0)
    model = tiny()
    model.adv_weight = 0.1
    batch = make_batch()
    batch = batch.replace(vision=torch.zeros_like(batch.vision))
    out = model(batch)
    alpha = out.extras["modality_weights"]
    assert (alpha[:, 2] < 0.01).all(), alpha
    assert torch.allclose(alpha.sum(1), torch.ones(4))
    assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()
    assert (out.extras["temporal_attention"][:, :, 2] == 0).all()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # zero-length sequences too
    z = batch.replace(audio_lengths=torch.zeros(4, dtype=torch.long))
    assert torch.isfinite(model(z).loss)


def test_temporal_attention_rows_are_distributions_in_eval():
    model = tiny().eval()
    batch = make_batch()
    ta = model(batch).extras["temporal_attention"]
    assert ta.shape == (4, 2, 3, 8)
    present = torch.stack([k.any(1) for k in availability(batch)[1].values()], 1).float()  # (B,3)
    assert present.min() == 0 and present.max() == 1   # sample 1's only vision frame was dropped
    assert torch.allclose(ta.sum(-1), present[:, None].expand(4, 2, 3), atol=1e-5)


def test_without_dam_weights_are_fixed_thirds():
    out = tiny(use_dam=False)(make_batch())
    assert torch.allclose(out.extras["modality_weights"], torch.full((4, 3), 1 / 3))


def test_inference_parameters_exclude_discriminator_projectors_predictors():
    model = tiny()
    prefixes = ("discriminator.", "projector.", "predictor.", "recon.", "unimodal.")
    train_only = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
    disc = sum(p.numel() for p in model.discriminator.parameters())
    assert disc > 0
    assert inference_parameters(model) == count_parameters(model, trainable_only=False) - train_only


def test_cpu_determinism():
    preds = []
    for _ in range(2):
        torch.manual_seed(3)
        model = tiny()
        model.adv_weight = 0.1
        torch.manual_seed(4)
        out = model(make_batch())
        preds.append((out.pred.detach(), out.loss.detach(), out.extras["temporal_attention"]))
    assert all(torch.equal(a, b) for a, b in zip(*preds))


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    model = tiny(attn_dropout=0.0, mlp_dropout=0.0, disc_dropout=0.0)
    model.adv_weight = 0.01
    batch = make_batch(drop=0.2)
    gen = [p for n, p in model.named_parameters() if not n.startswith("discriminator.")]
    first, last = overfit(model, batch, gen)
    assert last < 0.1 * first, (first, last)


def test_availability_of_text_features_without_ids():
    B, L = 2, 6
    text = torch.randn(B, L, 4)
    text[0, 1:5] = 0.0                       # all 4 words of sample 0 dropped, [CLS]/[SEP] kept
    text[1, 2] = 0.0                         # 1 of 3 words of sample 1 (length 5) dropped
    text[1, 5] = 0.0                         # padding
    batch = Batch(audio=torch.ones(B, 3, 2), vision=torch.ones(B, 3, 2), label=torch.zeros(B), text=text,
                  text_lengths=torch.tensor([6, 5]))
    rho, _ = availability(batch)
    assert torch.allclose(rho[:, 0], torch.tensor([0.0, 2 / 3]))


def test_bf16_autocast_forward_backward_and_d_step():
    torch.manual_seed(0)
    model = tiny()
    model.adv_weight = 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_batch())
    assert out.pred.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    sched = GANSchedule()
    trainer = fake_trainer(model)
    sched.on_fit_start(trainer)
    sched.on_batch_end(trainer, None, out)
    logs = {}
    sched.on_epoch_end(trainer, 6, logs)
    assert logs["adv_weight"] == pytest.approx(0.01) and torch.isfinite(torch.tensor(logs["d_loss"]))


# --------------------------------------------------------------------------- DAM scorer and STA pooling
def test_dam_scores_each_candidate_with_one_scorer_on_normalised_tokens():
    from mmsa.fusion.dam import DAM

    torch.manual_seed(0)
    dam = DAM(dim=8, hidden=16)
    cands = torch.randn(5, 3, 3, 8)
    rho = torch.ones(5, 3)
    a = dam.weights(cands, rho)
    assert a.shape == (5, 3) and torch.allclose(a.sum(-1), torch.ones(5))
    # one scorer for all modalities: permuting the candidates permutes the weights
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(dam.weights(cands[:, perm], rho), a[:, perm], atol=1e-6)
    # LayerNorm: a candidate that is merely larger (x10) is not preferred for its size
    scaled = cands.clone()
    scaled[:, 0] *= 10
    assert torch.allclose(dam.weights(scaled, rho), a, atol=1e-4)
    # a modality with nothing observed gets ~0 weight whatever the scorer says (log(rho + eps))
    rho0 = rho.clone()
    rho0[:, 1] = 0
    assert dam.weights(cands, rho0)[:, 1].max() < 1e-4


def test_sta_attention_pooling_sums_to_one_over_time_and_is_zero_for_an_absent_modality():
    torch.manual_seed(0)
    model = tiny().eval()
    batch = make_batch()
    from mmsa import missing

    out = model(missing.fixed_pattern(batch, keep=("text", "audio")))
    beta = out.extras["temporal_pooling"]
    assert beta.shape == (4, 3, model.cfg.sta_steps)
    assert torch.allclose(beta[:, :2].sum(-1), torch.ones(4, 2), atol=1e-5)
    assert beta[:, 2].abs().sum() == 0           # vision dropped: no step to pool


def test_all_words_dropped_the_prediction_no_longer_depends_on_the_sentence():
    """The text-leak check: with every word [UNK], two batches that differ only in their words
    (same lengths, same audio/vision) get the same prediction from a frozen-BERT model."""
    from mmsa import missing

    torch.manual_seed(0)
    model = tiny(freeze_text=True).eval()
    a = make_batch()
    ids = a.text_ids.clone()
    content = (ids != CLS) & (ids != SEP) & (ids != 0)
    other = torch.where(content, torch.randint(2000, 3000, ids.shape), ids)
    b = a.replace(text_ids=other)
    with torch.no_grad():
        assert (model(a).pred - model(b).pred).abs().max() > 1e-4      # the words matter ...
        pa = model(missing.fixed_pattern(a, keep=("audio", "vision"))).pred
        pb = model(missing.fixed_pattern(b, keep=("audio", "vision"))).pred
    assert torch.allclose(pa, pb, atol=1e-5)                             # ... until they are gone


def test_reliability_supervision_by_hand():
    """α* = softmax(-|ŷ_m - y| / τ_t) over the available modalities; L_dam = CE(α*, α)."""
    torch.manual_seed(0)
    model = tiny(dam_supervision=0.1)
    view = {"enc": {"local": {m: torch.zeros(2, 3, d) for m, d in model.enc_dims.items()},
                    "valid": {m: torch.ones(2, 3, dtype=torch.bool) for m in model.enc_dims}},
            "fused": {"extras": {"availability": torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
                                 "layer_weights": torch.full((2, 2, 3), 1 / 3)}}}
    with torch.no_grad():
        for i, m in enumerate(("text", "audio", "vision")):
            model.unimodal[m][-1].weight.zero_()
            model.unimodal[m][-1].bias.fill_(float(i))       # ŷ = 0, 1, 2
    y = torch.tensor([0.0, 2.0])
    l_uni, l_dam = model.reliability_supervision(view, y)
    err = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    l_uni, l_dam = float(l_uni), float(l_dam)
    assert l_uni == pytest.approx(float(err.mean()))
    t0 = torch.softmax(-err[0] / 0.5, 0)
    t1 = torch.softmax(torch.tensor([-4.0, -float("inf"), 0.0]), 0)      # audio unavailable
    expected = -(0.5 * (t0 * torch.log(torch.full((3,), 1 / 3))).sum() + 0.5 * (t1[[0, 2]] * torch.log(torch.full((2,), 1 / 3))).sum())
    assert l_dam == pytest.approx(float(expected), rel=1e-5)
    assert not hasattr(tiny(dam_supervision=0.0), "unimodal")


def test_reliability_supervision_true_target_by_hand():
    """dam_target="truth": α* = r_m / Σ r over the available modalities; the heads' L1 is unchanged."""
    torch.manual_seed(0)
    model = tiny(dam_supervision=0.1, dam_target="truth")
    view = {"enc": {"local": {m: torch.zeros(2, 3, d) for m, d in model.enc_dims.items()},
                    "valid": {m: torch.ones(2, 3, dtype=torch.bool) for m in model.enc_dims}},
            "fused": {"extras": {"availability": torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
                                 "layer_weights": torch.tensor([[[0.5, 0.25, 0.25]], [[0.5, 0.0, 0.5]]])}}}
    r = torch.tensor([[0.2, 0.2, 0.6], [0.5, 0.9, 0.5]])        # audio of clip 2 is unavailable: its r is ignored
    _, l_dam = model.reliability_supervision(view, torch.zeros(2), r)
    # clip 1: target (0.2, 0.2, 0.6), α (0.5, 0.25, 0.25); clip 2: target (0.5, 0, 0.5), α (0.5, 0, 0.5)
    ce1 = -(0.2 * torch.log(torch.tensor(0.5)) + 0.2 * torch.log(torch.tensor(0.25)) + 0.6 * torch.log(torch.tensor(0.25)))
    ce2 = -(2 * 0.5 * torch.log(torch.tensor(0.5)))
    assert float(l_dam) == pytest.approx(float((ce1 + ce2) / 2), rel=1e-5)
    with pytest.raises(ValueError, match="only SynthMSA has them"):
        model.reliability_supervision(view, torch.zeros(2))
    with pytest.raises(ValueError, match="unknown dam_target 'oracle'; valid: 'heads', 'truth'"):
        tiny(dam_target="oracle")


def test_true_reliability_target_reaches_the_loss_from_a_synthmsa_batch(tmp_path):
    """The truth target is read from batch.truth["reliability"] of a real SynthMSA loader (through the
    missing-modality training transform), and changes L_dam against the heads' target."""
    from mmsa import missing
    from mmsa.data import make_loader
    from mmsa.data.synthetic import synthetic_splits

    splits = synthetic_splits("mosi", sizes=(8, 4, 4), seed=0, root=tmp_path, lengths=(16, 10, 10),
                              reliability="texture", verbose=False)
    batch = next(iter(make_loader(splits["train"], 8)))
    batch = missing.make_train_transform("random", (0.0, 0.5), base_seed=1)(batch, 1, 0)
    assert batch.truth["reliability"].shape == (8, 3)
    losses = {}
    for target in ("heads", "truth"):
        torch.manual_seed(0)
        model = tiny(dam_supervision=0.1, dam_target=target)
        losses[target] = model(batch).losses["dam_reliability"]
        losses[target].backward()
        assert model.dam.mlp[0].weight.grad is not None
    assert float(losses["heads"]) != pytest.approx(float(losses["truth"]))


def test_discriminator_without_spectral_norm_is_an_option_and_the_default_keeps_it():
    from torch.nn.utils import parametrize

    on, off = tiny(), tiny(disc_spectral_norm=False)
    assert sum(parametrize.is_parametrized(m) for m in on.discriminator.modules()) == 3      # every Linear
    assert not any(parametrize.is_parametrized(m) for m in off.discriminator.modules())
    linears = lambda d: [tuple(m.weight.shape) for m in d if isinstance(m, torch.nn.Linear)]
    assert linears(on.discriminator) == linears(off.discriminator) and len(on.discriminator) == len(off.discriminator)
