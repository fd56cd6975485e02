"""CM-STA + CG + TCMFI: shapes, gradients per ablation, gates, bilinear terms, errors."""
import pytest
import torch

from mmsa.models import build, count_parameters
from mmsa.models.cmsta_cg import (
    CMSTACG,
    CMSTACGConfig,
    bilinear_interactions,
    gate_contexts,
    masked_mean,
    sinusoidal_positions,
    valid_steps,
)
from mmsa.types import Batch

DIMS = dict(text_dim=12, audio_dim=6, vision_dim=10)
TINY = dict(DIMS, d_model=16, num_heads=2, fusion_heads=2, fusion_layers=2, ff_dim=32, gate_hidden=16,
            bilinear_dim=4, classifier_hidden=16)
ABLATIONS = {
    "full": {},
    "no_cmsta": dict(use_cmsta=False),
    "no_cg": dict(use_cg=False),
    "no_tcmfi": dict(use_tcmfi=False),
    "no_cmsta_cg": dict(use_cmsta=False, use_cg=False),
}


def make_batch(B=3, L=5, Ta=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        text=torch.randn(B, L, 12, generator=g),
        audio=torch.randn(B, Ta, 6, generator=g),
        vision=torch.randn(B, 49, 10, generator=g),
        label=torch.arange(B) % 3,
        text_lengths=torch.tensor([L, 3, 2][:B]) if B <= 3 else None,
        audio_lengths=torch.tensor([Ta, 4, 6][:B]) if B <= 3 else None,
    )


def tiny(**kw):
    torch.manual_seed(0)
    return build("cmsta_cg", dataset="synth3", **TINY, **kw)


def test_registry_shapes_and_extras():
    model = tiny().eval()
    out = model(make_batch())
    assert out.pred.shape == (3, 3)
    assert set(out.losses) == {"task"} and out.losses["task"].ndim == 0
    ex = out.extras
    assert ex["gates"].shape == (3, 3) and ex["gate_vectors"].shape == (3, 3, 16)
    assert ex["fused"].shape == (3, 16)
    assert ex["cross_attention"]["ti"].shape == (3, 5, 49)
    assert ex["cross_attention"]["ta"].shape == (3, 5, 8)
    assert ex["cross_attention"]["ai"].shape == (3, 8, 49)
    # attention rows are distributions, and padded audio keys (sample 1 has 4 frames) get no weight
    assert torch.allclose(ex["cross_attention"]["ta"].sum(-1), torch.ones(3, 5), atol=1e-5)
    assert ex["cross_attention"]["ta"][1, :, 4:].abs().max() == 0
    assert ex["fusion_weights"].shape == (3, 2)


def test_loss_is_cross_entropy_of_logits():
    model = tiny().eval()
    b = make_batch()
    out = model(b)
    expected = torch.nn.functional.cross_entropy(out.pred, b.label)
    assert torch.allclose(out.losses["task"], expected)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_gradients_reach_every_parameter(name):
    model = tiny(**ABLATIONS[name]).train()
    out = model(make_batch())
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"{name}: no gradient for {missing}"


def test_ablation_structure():
    assert tiny(use_cmsta=False).cmsta is None and tiny(use_cmsta=False).grid_pos is None
    assert tiny(use_cg=False).gates is None
    assert tiny(use_tcmfi=False).tcmfi is None
    assert tiny(use_cmsta=False, use_cg=False).classifier[0].in_features == 16  # tcmfi -> D
    assert tiny(use_tcmfi=False).classifier[0].in_features == 6 * 16
    assert tiny(use_tcmfi=False, use_cmsta=False, use_cg=False).classifier[0].in_features == 3 * 16
    n = {k: count_parameters(tiny(**v)) for k, v in ABLATIONS.items()}
    assert n["full"] > n["no_cg"] and n["full"] > n["no_cmsta"] and n["full"] > n["no_tcmfi"]
    out = tiny(use_cg=False).eval()(make_batch())
    assert "gates" not in out.extras and "cross_attention" in out.extras


def test_gates_strictly_between_0_and_1():
    model = tiny().eval()
    out = model(make_batch())
    g = out.extras["gate_vectors"]
    assert (g > 0).all() and (g < 1).all()
    # eq. (11): the gate multiplies the mean-pooled projected features of its modality
    b = make_batch()
    feats = model.proj["text"](b.text)
    pooled_t = masked_mean(feats, valid_steps(b, "text"))
    pair, _ = model.cmsta(model.add_positions({m: model.proj[m](getattr(b, m)) for m in ("text", "audio", "vision")}),
                          {m: valid_steps(b, m) for m in ("text", "audio", "vision")})
    g_t = model.gates["text"](gate_contexts(pair)["text"])
    assert torch.allclose(g_t, g[:, 0], atol=1e-6)
    assert torch.allclose(gate_contexts(pair)["vision"], pair["ti"] + pair["ai"])  # eq. (6)
    assert pooled_t.shape == (3, 16)


def test_bilinear_terms_hand_computed():
    bil = torch.nn.Bilinear(2, 2, 1)
    with torch.no_grad():
        bil.weight.copy_(torch.tensor([[[1.0, 2.0], [0.0, -1.0]]]))
        bil.bias.zero_()
    t = torch.tensor([[1.0, 2.0]])
    i = torch.tensor([[3.0, 1.0]])
    a = torch.tensor([[0.0, 1.0]])
    # B_TI = t W i^T = [1,2] [[1,2],[0,-1]] [3,1]^T = [1, 0] . [3, 1] = 3
    # B_TA = [1, 0] . [0, 1] = 0 ;  B_IA = i W = [3, 5] . [0, 1] = 5
    out = bilinear_interactions(t, i, a, bil)
    assert torch.allclose(out, torch.tensor([[3.0, 0.0, 5.0]]))


def test_masked_mean_and_positions():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[1.0, 1.0, 0.0]])).item() == 2.0
    assert masked_mean(x, torch.zeros(1, 3)).item() == pytest.approx(104 / 3)  # nothing valid: plain mean
    pe = sinusoidal_positions(4, 6, "cpu", torch.float32)
    assert pe.shape == (4, 6) and pe[0, 0] == 0 and pe[0, 1] == 1


def test_batch_size_one_and_padding_invariance():
    model = tiny().eval()
    b = make_batch()
    one = Batch(text=b.text[1:2, :3], audio=b.audio[1:2, :4], vision=b.vision[1:2], label=b.label[1:2])
    out_one = model(one)
    out_all = model(b)
    assert out_one.pred.shape == (1, 3)
    # sample 1 padded to L=5 / Ta=8 gives the same logits as unpadded
    assert torch.allclose(out_one.pred[0], out_all.pred[1], atol=1e-5)


def test_fully_missing_modality_gives_finite_output():
    model = tiny().eval()
    b = make_batch()
    b = b.replace(audio=torch.zeros_like(b.audio), audio_lengths=torch.zeros(3, dtype=torch.long))
    out = model(b)
    assert torch.isfinite(out.pred).all() and torch.isfinite(out.losses["task"])


def test_forward_never_reads_the_missing_record():
    """Masks come from the lengths: a simulator's record of dropped steps changes nothing."""
    model = tiny().eval()
    b = make_batch()
    dropped = b.replace(missing={"audio": torch.zeros(3, 8), "text": torch.zeros(3, 5)})
    assert torch.equal(model(b).pred, model(dropped).pred)


def test_attention_maps_only_in_eval():
    model = tiny()
    assert "cross_attention" not in model.train()(make_batch()).extras
    assert "cross_attention" in model.eval()(make_batch()).extras


def test_gate_initialisation_keeps_the_signal():
    """He-initialised ReLU layers: the pre-sigmoid gate varies across samples at initialisation
    (PyTorch's default Linear init shrinks it ~0.4x per layer, to a constant gate of 0.5)."""
    torch.manual_seed(0)
    gate = build("cmsta_cg", dataset="synth3", **dict(TINY, d_model=64, gate_hidden=64)).gates["text"]
    context = torch.randn(256, 64)
    pre = gate.mlp[:-1](context)
    assert 0.3 < pre.std(0).mean() < 3.0
    torch.manual_seed(0)
    default = torch.nn.Sequential(*[torch.nn.Linear(64, 64) if i % 2 == 0 else torch.nn.ReLU() for i in range(7)])
    assert default(context).std(0).mean() < 0.1  # what the gates looked like before


def test_slot_positions_unit_scale():
    model = tiny()
    assert 0.5 < model.tcmfi.position.std() < 1.5
    assert tiny(position_std=0.02).tcmfi.position.std() < 0.05


def test_determinism():
    b = make_batch()
    m1, m2 = tiny().train(), tiny().train()
    torch.manual_seed(5)
    o1 = m1(b).pred
    torch.manual_seed(5)
    o2 = m2(b).pred
    assert torch.equal(o1, o2)


def test_errors_name_expected_shapes():
    model = tiny()
    b = make_batch()
    with pytest.raises(ValueError, match=r"7x7 grid.*\(B, 49, 10\)"):
        model(b.replace(vision=torch.randn(3, 36, 10)))
    with pytest.raises(ValueError, match=r"batch.audio must have shape \(B, T, 6\)"):
        model(b.replace(audio=torch.randn(3, 8, 5)))
    with pytest.raises(ValueError, match="long class index"):
        model(b.replace(label=torch.zeros(3)))
    with pytest.raises(ValueError, match="batch.text must be"):
        model(b.replace(text=None))
    with pytest.raises(TypeError, match="valid keys"):
        build("cmsta_cg", use_cmsat=False)


def test_presets_and_paper_scale():
    cfg = CMSTACGConfig.PRESETS
    assert cfg["synth3"]["text_dim"] == 384
    assert CMSTACGConfig.TRAIN_PRESET["lr"] == 2e-3 and CMSTACGConfig.TRAIN_PRESET["batch_size"] == 16
    model = build("cmsta_cg", dataset="tess_mvsa")
    assert isinstance(model, CMSTACG) and model.cfg.vision_dim == 2048
    # the paper reports 2,497,666 parameters; the default D=128 configuration is within 2 %
    assert abs(count_parameters(model) - 2_497_666) / 2_497_666 < 0.02
