"""Classic baselines (SPEC §3.6): shapes, gradients, overfitting, TFN/LMF identities, ULGM, errors."""
import pytest
import torch

from mmsa.models import available, build, inference_parameters
from mmsa.models.baselines import TFN, UnimodalLabelGenerator, cmd
from mmsa.types import Batch

DIMS = dict(text_dim=12, audio_dim=5, vision_dim=7)
SMALL = {
    "lf_dnn": dict(hidden_text=8, hidden_audio=4, hidden_vision=4, post_fusion_dim=8, dropout=0.0),
    "ef_lstm": dict(hidden=8, dropout=0.0),
    "tfn": dict(hidden_text=6, hidden_audio=3, hidden_vision=4, post_fusion_dim=8, dropout=0.0),
    "lmf": dict(hidden_text=6, hidden_audio=3, hidden_vision=4, rank=3, fusion_dim=8, dropout=0.0),
    "mult": dict(d_model=8, heads=2, cross_layers=1, self_layers=1, dropout=0.0, embed_dropout=0.0),
    "misa": dict(hidden=8, fusion_heads=2, dropout=0.0),
    "self_mm": dict(text_out=8, audio_out=4, vision_out=4, post_fusion_dim=8, post_unimodal_dim=4, dropout=0.0),
    "tfr_net": dict(d_model=8, heads=2, dropout=0.0),
}
NAMES = sorted(SMALL)


def make_batch(B=4, L=6, Ta=9, Tv=8, seed=0, classes=1):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    lengths = lambda T: torch.randint(1, T + 1, (B,), generator=g).index_fill_(0, torch.tensor([0]), T)
    if classes > 1:
        label = torch.arange(B) % classes
    else:  # both signs (Self-MM centres), unbalanced (L1 bias gradient ≠ 0)
        label = torch.linspace(-1.0, 2.5, B) if B > 1 else torch.tensor([1.5])
    return Batch(text=r(B, L, DIMS["text_dim"]), audio=r(B, Ta, DIMS["audio_dim"]), vision=r(B, Tv, DIMS["vision_dim"]),
                 label=label, text_lengths=lengths(L), audio_lengths=lengths(Ta), vision_lengths=lengths(Tv))


def make_incomplete(batch, rate=0.4, seed=1):
    """The incomplete view by hand: dropped steps zeroed, ``missing`` masks set, ``full`` = original."""
    g = torch.Generator().manual_seed(seed)
    missing, feats = {}, {}
    for m in ("text", "audio", "vision"):
        x = getattr(batch, m)
        keep = (torch.rand(x.shape[:2], generator=g) > rate).float()
        keep[0, 0] = 0.0  # at least one dropped step per modality
        missing[m], feats[m] = keep, x * keep.unsqueeze(-1)
    return batch.replace(**feats, missing=missing, full=batch)


def model(name, **kw):
    torch.manual_seed(0)
    return build(name, **{**DIMS, **SMALL[name], **kw})


def test_every_baseline_is_registered():
    assert set(NAMES) <= set(available())


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, classes):
    m = model(name, num_classes=classes).eval()
    for B in (4, 1):
        out = m(make_batch(B=B, classes=classes))
        assert out.pred.shape == ((B,) if classes == 1 else (B, classes))
        assert list(out.losses)[0] == "task"
        assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_sequences_give_finite_outputs_and_gradients(name):
    b = make_batch()
    b = b.replace(audio_lengths=b.audio_lengths.index_fill(0, torch.tensor([1]), 0),  # empty sequence
                  missing={m: torch.ones(4, getattr(b, m).shape[1]).index_fill_(0, torch.tensor([2]), 0.0)
                           for m in ("text", "audio", "vision")}, full=b)  # sample 2: everything missing
    m = model(name).train()
    out = m(b)
    assert torch.isfinite(out.pred).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def grad_batch(name):
    b = make_batch(B=5)  # odd B: the L1 gradient of the output bias (a sum of ±1) cannot cancel
    return make_incomplete(b) if name == "tfr_net" else b


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    m = model(name).train()
    b = grad_batch(name)
    if name == "self_mm":  # one step fills the class centres; then generated labels differ from y_m
        m(b)
        assert m.ulgm.ready
    out = m(b)
    if name == "tfr_net":
        assert out.losses["reconstruction"] > 0
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_tiny_batch_overfits(name):
    m = model(name).train()
    b = make_batch(B=4, seed=3)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m(b).losses["task"].item()
    for step in range(150):  # stop as soon as the L1 loss has dropped by 80%
        out = m(b)
        if out.losses["task"].item() <= 0.2 * first:
            break
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.losses["task"].item() <= 0.2 * first, f"{name}: L1 {first:.3f} -> {out.losses['task'].item():.3f}"


def test_tfn_fused_tensor_size_and_content():
    m = model("tfn").eval()
    out = m(make_batch())
    dt, da, dv = 6, 3, 4
    assert out.extras["fused"].shape == (4, (dt + 1) * (da + 1) * (dv + 1))
    z = out.extras["fused"].view(4, dt + 1, da + 1, dv + 1)
    # the appended 1s keep the unimodal vectors and a constant inside the tensor
    assert torch.allclose(z[:, :dt, -1, -1], out.extras["z_t"])
    assert torch.allclose(z[:, -1, :da, -1], out.extras["z_a"])
    assert torch.allclose(z[:, -1, -1, :dv], out.extras["z_v"])
    assert torch.allclose(z[:, -1, -1, -1], torch.ones(4))
    assert torch.allclose(z[:, 1, 2, -1], out.extras["z_t"][:, 1] * out.extras["z_a"][:, 2])  # a bimodal term


def test_lmf_equals_explicit_tensor_fusion():
    m = model("lmf").double()
    torch.manual_seed(1)
    zt, za, zv = torch.randn(2, 6).double(), torch.randn(2, 3).double(), torch.randn(2, 4).double()
    # W = Σ_i λ_i w_t^(i) ⊗ w_a^(i) ⊗ w_v^(i), shape (7, 4, 5, h);  h = Z · W + b with Z = TFN's tensor
    W = torch.einsum("r,rih,rjh,rkh->ijkh", m.rank_weights, m.factor_t, m.factor_a, m.factor_v)
    Z = TFN.fuse(zt, za, zv)
    explicit = Z @ W.reshape(-1, W.shape[-1]) + m.fusion_bias
    assert torch.allclose(m.fuse(zt, za, zv), explicit, atol=1e-10)


def test_tfr_net_reconstruction_counts_only_dropped_positions():
    m = model("tfr_net").eval()
    b = make_incomplete(make_batch())
    base = m(b).losses["reconstruction"]
    # changing the complete view where a step was observed leaves the term unchanged ...
    obs_a = b.missing["audio"].bool().unsqueeze(-1)
    full2 = b.full.replace(audio=torch.where(obs_a, b.full.audio + 5.0, b.full.audio))
    assert torch.allclose(m(b.replace(full=full2)).losses["reconstruction"], base)
    # ... changing it at a dropped step does change it
    full3 = b.full.replace(audio=torch.where(obs_a, b.full.audio, b.full.audio + 5.0))
    assert m(b.replace(full=full3)).losses["reconstruction"] > base + 0.1
    assert "reconstruction" not in m(make_batch()).losses  # complete batch: no target, no term
    assert inference_parameters(m) < sum(p.numel() for p in m.parameters())  # recon.* is training-only


def test_self_mm_label_generation_by_hand():
    g = UnimodalLabelGenerator({k: 2 for k in "mtav"}, momentum=0.1, bound=3.0)
    for k in "mtav":
        getattr(g, f"center_{k}").copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # C_p, C_n
    g.seen.fill_(1.0)
    f_m = torch.tensor([[0.5, 0.0]])  # D_p = 0.5, D_n = 1.5 -> α_m = 2
    feats = {"m": f_m, "t": torch.zeros(1, 2), "a": f_m.clone(), "v": torch.tensor([[-0.5, 0.0]])}
    y = g.generate(feats, torch.tensor([2.0]))
    # α_t = 0: ½·2·0/2 + ½·(2+0-2) = 0;  α_a = α_m: ½·2 + ½·2 = 2;  α_v = (0.5-1.5)/1.5 = -2/3
    assert torch.allclose(y["t"], torch.tensor([0.0]), atol=1e-6)
    assert torch.allclose(y["a"], torch.tensor([2.0]), atol=1e-6)
    assert torch.allclose(y["v"], torch.tensor([0.5 * 2 * (-2 / 3) / 2 + 0.5 * (2 - 2 / 3 - 2)]), atol=1e-6)
    # momentum over visits n: y^(1) = y_m, y^(2) = 1/3 y^(1) + 2/3 ŷ  (each call returns the previous value)
    ym, new = torch.tensor([2.0]), {k: torch.tensor([0.5]) for k in "tav"}
    assert g.remember(["s0"], ym, new)["t"].item() == 2.0
    assert g.remember(["s0"], ym, new)["t"].item() == 2.0
    assert g.remember(["s0"], ym, new)["t"].item() == pytest.approx(2.0 / 3 + 1.0 / 3)


def test_cmd_is_zero_for_identical_samples_and_positive_otherwise():
    x = torch.randn(16, 4)
    assert cmd(x, x).item() < 1e-4
    assert cmd(x, x + 1.0).item() == pytest.approx(2.0, abs=1e-4)  # shifted mean: ||1||_2 = 2, moments equal


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_lists_valid_keys(name):
    with pytest.raises(TypeError, match="valid keys are:.*num_classes"):
        build(name, **DIMS, not_a_key=1)


def test_wrong_feature_dim_names_the_expected_shape():
    m = model("mult")
    b = make_batch()
    with pytest.raises(ValueError, match=r"audio_dim=5"):
        m(b.replace(audio=torch.randn(4, 9, 3)))
