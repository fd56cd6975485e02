"""EMT-DLFR: shapes per preset, gradients, DLFR losses on hand cases, eval path, NaN-safety, overfit."""
import pytest
import torch

from mmsa.losses import reconstruction_loss, simsiam_loss, task_loss
from mmsa.models import build, count_parameters, inference_parameters
from mmsa.types import Batch

from batches import bert_ids

UNK, CLS, SEP = 100, 101, 102


def make_batch(B=4, L=9, Ta=12, Tv=10, da=5, dv=20, drop=0.4, seed=0, text_dim=None, label_classes=0):
    """Hand-built (incomplete view, with .full) Batch of random tensors.

    text_dim=None: ids + mask; otherwise also (B,L,text_dim) features (zeroed where dropped).
    drop: rate of dropped valid positions (text content tokens -> [UNK], frames -> 0); 0 = none.
    """
    g = torch.Generator().manual_seed(seed)
    tl = torch.tensor([L, L - 2, 4, L - 1][:B])
    al = torch.tensor([Ta, Ta - 3, 5, 2][:B])
    vl = torch.tensor([Tv, 1, Tv - 4, 6][:B])
    ids, mask = bert_ids(tl, L, g)
    a = torch.randn(B, Ta, da, generator=g) * (torch.arange(Ta)[None] < al[:, None])[..., None]
    v = torch.randn(B, Tv, dv, generator=g) * (torch.arange(Tv)[None] < vl[:, None])[..., None]
    label = torch.randint(0, label_classes, (B,), generator=g) if label_classes else torch.rand(B, generator=g) * 6 - 3
    text = torch.randn(B, L, text_dim, generator=g) * mask[..., None] if text_dim else None
    full = Batch(audio=a, vision=v, label=label, text=text, text_ids=ids, text_mask=mask,
                 audio_lengths=al, vision_lengths=vl)
    mt = (torch.rand(B, L, generator=g) >= drop).float()
    special = (ids == CLS) | (ids == SEP) | (ids == 0)
    mt[special] = 1.0
    ma = (torch.rand(B, Ta, generator=g) >= drop).float()
    mv = (torch.rand(B, Tv, generator=g) >= drop).float()
    ids2 = ids.masked_fill(mt == 0, UNK)
    text2 = text * mt[..., None] if text is not None else None
    return full.replace(text_ids=ids2, text=text2, audio=a * ma[..., None], vision=v * mv[..., None],
                        missing={"text": mt, "audio": ma, "vision": mv}, full=full)


TINY = dict(text_model="tiny", d_model=16, n_layers=2, n_heads=2, proj_dim=16, pred_hidden=8, mlp_hidden=32)


def tiny(dataset="mosi", **kw):
    return build("emt_dlfr", dataset=dataset, **{**TINY, **kw})


@pytest.mark.parametrize("dataset,da,dv", [("mosi", 5, 20), ("sims", 33, 709)])
def test_shapes_per_preset(dataset, da, dv):
    torch.manual_seed(0)
    model = build("emt_dlfr", dataset=dataset, text_model="tiny")
    assert model.cfg.audio_dim == da and model.cfg.vision_dim == dv
    assert model.cfg.d_model == (128 if dataset == "mosi" else 32)
    batch = make_batch(da=da, dv=dv)
    out = model(batch)
    D = model.cfg.d_model
    assert out.pred.shape == (4,)
    assert out.extras["global_context"].shape == (4, 3, D)
    assert out.extras["modality_weights"].shape == (4, 3)
    assert torch.allclose(out.extras["modality_weights"].sum(1), torch.ones(4))
    assert out.extras["h"].shape == (4, 32 + 16 + 32 + 3 * D)
    assert set(out.losses) == {"task", "task_full", "attraction", "reconstruction"}


def test_feature_mode_and_classification_head():
    model = tiny(use_text_features=True, text_dim=24, num_classes=3)
    assert model.text_encoder.bert is None
    out = model(make_batch(text_dim=24, label_classes=3))
    assert out.pred.shape == (4, 3) and torch.isfinite(out.loss)


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = tiny()
    model(make_batch()).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_reconstruction_loss_hand_case():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.5, 2.0], [9.0, 9.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    # SmoothL1(beta=1): 0.5*0.5^2=0.125, 2-0.5=1.5, 1-0.5=0.5, 0 -> sum 2.125 over 2 positions x 2 dims
    assert torch.isclose(reconstruction_loss(pred, target, mask), torch.tensor(2.125 / 4))
    # only dropped positions count: changing the kept position changes nothing
    target2 = target.clone()
    target2[0, 1] = -50.0
    assert torch.equal(reconstruction_loss(pred, target2, mask), reconstruction_loss(pred, target, mask))
    assert reconstruction_loss(pred, target, torch.zeros(1, 3)).item() == 0.0
    with pytest.raises(ValueError, match="expected"):
        reconstruction_loss(pred, target, torch.zeros(1, 4))


def test_model_reconstruction_is_zero_when_nothing_dropped():
    torch.manual_seed(0)
    model = tiny()
    assert model(make_batch(drop=0.0)).losses["reconstruction"].item() == 0.0
    no_full = make_batch(drop=0.5).replace(full=None)
    assert model(no_full).losses["reconstruction"].item() == 0.0
    assert model(make_batch(drop=0.5)).losses["reconstruction"].item() > 0.0


def test_model_reconstruction_uses_only_dropped_positions():
    torch.manual_seed(0)
    model = tiny(attn_dropout=0.0, mlp_dropout=0.0)
    batch = make_batch(drop=0.5)
    full = batch.full
    kept = (batch.missing["audio"] == 1)
    # change the complete view's audio only where nothing was dropped: the target at dropped
    # positions is unchanged, but the full view's encoder input changes too -> compare the term directly
    miss = model.view(batch)
    ref = model.view(full)
    r1 = model.reconstruction(batch, miss, ref, full)
    full2 = full.replace(audio=full.audio + 5.0 * kept[..., None])
    r2 = model.reconstruction(batch, miss, ref, full2)
    assert torch.allclose(r1, r2)
    full3 = full.replace(audio=full.audio + 5.0 * (~kept)[..., None])
    assert not torch.allclose(r1, model.reconstruction(batch, miss, ref, full3))


def test_simsiam_value_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = simsiam_loss(p, z, p, z)
    assert torch.isclose(loss, torch.tensor(-1.0))
    p_m, z_m, p_f, z_f = (torch.randn(4, 3, requires_grad=True) for _ in range(4))
    simsiam_loss(p_m, z_m, p_f, z_f).backward()
    assert p_m.grad is not None and p_f.grad is not None
    assert z_m.grad is None and z_f.grad is None


def test_attraction_does_not_backprop_into_target_branch():
    torch.manual_seed(0)
    model = tiny()
    batch = make_batch()
    miss, full = model.view(batch), model.view(batch.full)
    z_f = model.projector["g"](full["feats"]["g"])
    z_f.retain_grad()
    z_m = model.projector["g"](miss["feats"]["g"])
    z_m.retain_grad()
    simsiam_loss(model.predictor["g"](z_m), z_m, model.predictor["g"](z_f), z_f).backward()
    # each z only receives gradient through its own predictor p: equal to that path's grad alone
    z_m2 = z_m.detach().requires_grad_()
    simsiam_loss(model.predictor["g"](z_m2), z_m2.detach(), model.predictor["g"](z_f.detach()), z_f.detach()).backward()
    assert torch.allclose(z_m.grad, z_m2.grad, atol=1e-6)


def test_task_loss_l1():
    assert torch.isclose(task_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])), torch.tensor(1.5))


def test_eval_runs_only_the_incomplete_view():
    model = tiny().eval()
    calls = []
    for name in ("projector", "predictor", "recon"):
        for mod in getattr(model, name).values():
            mod.register_forward_hook(lambda *a, name=name: calls.append(name))
    seen = []
    model.audio_encoder.register_forward_hook(lambda m, i, o: seen.append(1))
    out = model(make_batch())
    assert calls == [] and len(seen) == 1
    assert set(out.losses) == {"task"}


def test_no_nan_with_a_fully_missing_modality():
    torch.manual_seed(0)
    model = tiny()
    batch = make_batch()
    batch = batch.replace(vision=torch.zeros_like(batch.vision),
                          vision_lengths=torch.tensor([0, 0, 3, 4]),
                          missing={**batch.missing, "vision": torch.zeros_like(batch.missing["vision"])})
    out = model(batch)
    assert torch.isfinite(out.pred).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cpu_determinism():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = tiny()
        torch.manual_seed(8)
        out = model(make_batch())
        outs.append((out.pred.detach(), out.loss.detach()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_inference_parameters_exclude_training_only_modules():
    model = tiny()
    training_only = sum(p.numel() for n, p in model.named_parameters()
                        if n.split(".")[0] in {"projector", "predictor", "recon"})
    assert training_only > 0
    assert inference_parameters(model) == count_parameters(model, trainable_only=False) - training_only


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(TypeError, match="valid keys"):
        build("emt_dlfr", dataset="mosi", d_modle=3)


def overfit(model, batch, params, steps=200, lr=3e-3):
    """Adam on one batch until the task loss falls below 10 % of its start; returns (first, last)."""
    opt = torch.optim.Adam(params, lr=lr)
    first = None
    for _ in range(steps):
        out = model(batch)
        task = out.losses["task"].item()
        first = task if first is None else first
        if task < 0.1 * first:
            break
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return first, task


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    model = tiny(attn_dropout=0.0, mlp_dropout=0.0, use_text_features=True, text_dim=8)
    batch = make_batch(text_dim=8, drop=0.2)
    first, last = overfit(model, batch, model.parameters())
    assert last < 0.1 * first, (first, last)


def test_both_views_in_one_pass_equal_two_passes():
    """stack_views/split_views: one forward over 2B clips gives each view exactly what its own
    forward gives (every operation is per clip)."""
    from mmsa import missing
    from mmsa.models.emt_dlfr import split_views, stack_views

    torch.manual_seed(0)
    for name in ("emt_dlfr", "dast_gan"):
        model = build(name, dataset="mosi", text_model="tiny", d_model=16, n_layers=2, n_heads=2,
                      proj_dim=16, pred_hidden=8, mlp_hidden=32).eval()
        full = make_batch()
        inc = missing.apply(full, "random", 0.5, seed=3)
        with torch.no_grad():
            a, b = split_views(model.view(stack_views(inc, full)), full.size)
            ref_a, ref_b = model.view(inc), model.view(full)
        for got, ref in ((a, ref_a), (b, ref_b)):
            assert torch.allclose(got["pred"], ref["pred"], atol=1e-5)
            assert torch.allclose(got["h"], ref["h"], atol=1e-5)
            assert torch.allclose(got["fused"]["g"], ref["fused"]["g"], atol=1e-5)
