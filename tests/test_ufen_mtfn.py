"""UFEN + MTFN: shapes, gradients, the multi-task loss, ablation flags, errors."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mmsa.models import build
from mmsa.models.ufen_mtfn import UFENMTFNConfig
from mmsa.types import Batch

DIMS = dict(text_dim=12, audio_dim=5, vision_dim=7)
SMALL = dict(d_m=16, conv_filters=(8, 8, 8, 8), self_heads=2, cross_heads=2, trans_heads=2, trans_ff=32,
             dropout=0.0, use_text_features=True, **DIMS)


def make_batch(B=4, L=6, Ta=9, Tv=8, seed=0, unimodal=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    lengths = lambda T: torch.randint(1, T + 1, (B,), generator=g).index_fill_(0, torch.tensor([0]), T)
    b = Batch(text=r(B, L, DIMS["text_dim"]), audio=r(B, Ta, DIMS["audio_dim"]), vision=r(B, Tv, DIMS["vision_dim"]),
              label=torch.rand(B, generator=g) * 6 - 3,
              text_lengths=lengths(L), audio_lengths=lengths(Ta), vision_lengths=lengths(Tv))
    if unimodal:
        b = b.replace(label_t=torch.rand(B, generator=g) * 6 - 3, label_a=torch.rand(B, generator=g) * 6 - 3,
                      label_v=torch.rand(B, generator=g) * 6 - 3)
    return b


def model(**kw):
    torch.manual_seed(0)
    return build("ufen_mtfn", **{**SMALL, **kw})


@pytest.fixture
def batch():
    return make_batch()


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_shapes_each_ufen_depth(batch, layers):
    m = model(ufen_layers=layers)
    assert len(m.ufen["a"].layers) == layers
    out = m(batch)
    assert out.pred.shape == (4,)
    assert out.extras["fused"].shape == (4, 6 * 16)
    for k in ("y_t", "y_a", "y_v", "y_m"):
        assert out.extras[k].shape == (4,)
    assert set(out.losses) == {"task", "fusion_input", "unimodal_t", "unimodal_a", "unimodal_v"}
    feats = m.ufen["v"](batch.vision, torch.arange(8)[None] < batch.vision_lengths[:, None])
    assert feats.shape == (4, 8, 16)


ABLATIONS = [
    {},
    {"use_self_attention": False},
    {"use_conv": False},
    {"use_gru": False},
    {"use_cross_attention": False},
    {"use_encoder_decoder": False},
    {"use_multitask": False},
    {"subtasks": ()},
    {"subtasks": ("v",)},
    {"ufen_layers": 4},
]


@pytest.mark.parametrize("flags", ABLATIONS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "full")
def test_gradients_reach_every_parameter(batch, flags):
    m = model(**flags)
    m.train()
    out = m(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"


def test_ablation_flags_change_the_architecture():
    full = model()
    assert len(full.cross) == 6 and full.encoder is not None and full.ufen["t"].gru is not None
    assert full.ufen["t"].layers[0].conv.kernel_size == (3,)
    assert model(use_conv=False).ufen["t"].layers[0].conv.kernel_size == (1,)
    assert model(use_self_attention=False).ufen["t"].layers[0].attn is None
    assert model(use_gru=False).ufen["t"].gru is None
    no_cross = model(use_cross_attention=False)
    assert no_cross.cross is None and no_cross(make_batch()).extras["fused"].shape == (4, 3 * 16)
    assert model(use_encoder_decoder=False).encoder is None


def test_loss_is_sum_of_hand_computed_mses():
    b = make_batch(B=3, seed=1)
    m = model().eval()
    out = m(b)
    ex, y = out.extras, b.label
    mse = lambda p: ((p - y) ** 2).mean()
    expected = {"task": mse(out.pred), "fusion_input": mse(ex["y_m"]),
                "unimodal_t": mse(ex["y_t"]), "unimodal_a": mse(ex["y_a"]), "unimodal_v": mse(ex["y_v"])}
    assert set(out.losses) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(out.losses[k], v)
    torch.testing.assert_close(out.loss, sum(expected.values()))


def test_disabling_subtasks_removes_terms():
    b = make_batch()
    out = model(subtasks=("t", "v"))(b)
    assert set(out.losses) == {"task", "fusion_input", "unimodal_t", "unimodal_v"}
    assert "y_a" not in out.extras
    out = model(subtasks=())(b)
    assert set(out.losses) == {"task", "fusion_input"}
    out = model(use_multitask=False)(b)
    assert set(out.losses) == {"task"}
    torch.testing.assert_close(out.loss, F.mse_loss(out.pred, b.label))


def test_unimodal_labels_used_when_flag_set():
    b = make_batch(unimodal=True)
    m = model(use_unimodal_labels=True).eval()
    out = m(b)
    for k in "tav":
        target = getattr(b, f"label_{k}")
        torch.testing.assert_close(out.losses[f"unimodal_{k}"], F.mse_loss(out.extras[f"y_{k}"], target))
        assert not torch.allclose(out.losses[f"unimodal_{k}"], F.mse_loss(out.extras[f"y_{k}"], b.label))
    # flag off -> the multimodal label Y, even when unimodal labels exist
    m.cfg = dataclasses.replace(m.cfg, use_unimodal_labels=False)
    out = m(b)
    torch.testing.assert_close(out.losses["unimodal_a"], F.mse_loss(out.extras["y_a"], b.label))
    # flag on but no unimodal labels in the batch -> falls back to Y
    m.cfg = dataclasses.replace(m.cfg, use_unimodal_labels=True)
    out = m(make_batch())
    torch.testing.assert_close(out.losses["unimodal_t"], F.mse_loss(out.extras["y_t"], make_batch().label))


def test_batch_size_one_and_padding_invariance():
    b = make_batch(B=1, L=5, Ta=6, Tv=4)
    m = model().eval()
    out = m(b)
    assert out.pred.shape == (1,) and torch.isfinite(out.loss)
    # extra zero padding past the lengths must not change the prediction
    pad = lambda x: torch.cat([x, torch.randn(1, 3, x.shape[-1])], 1)
    padded = b.replace(text=pad(b.text), audio=pad(b.audio), vision=pad(b.vision))
    torch.testing.assert_close(m(padded).pred, out.pred, atol=1e-5, rtol=1e-5)


def test_bad_shapes_name_expected_shape(batch):
    m = model()
    with pytest.raises(ValueError, match=r"batch.audio has shape \(4, 9, 3\); expected \(B=4, Ta, 5\)"):
        m(batch.replace(audio=torch.randn(4, 9, 3)))
    with pytest.raises(ValueError, match=r"batch.text has shape \(4, 12\); expected \(B, L, 12\)"):
        m(batch.replace(text=torch.randn(4, 12)))
    with pytest.raises(ValueError, match=r"batch.text is None; expected .* \(B, L, 12\)"):
        m(batch.replace(text=None))


def test_config_presets_and_validation():
    cfg = UFENMTFNConfig.PRESETS
    assert cfg["sims"]["vision_dim"] == 709 and cfg["mosei"]["audio_dim"] == 74
    m = build("ufen_mtfn", dataset="synth_mosi", text_dim=384)
    assert m.cfg.text_dim == 384 and m.cfg.audio_dim == 5 and m.cfg.dataset == "synth_mosi"
    with pytest.raises(TypeError, match="valid keys"):
        build("ufen_mtfn", ufen_layer=2)
    with pytest.raises(ValueError, match="ufen_layers"):
        build("ufen_mtfn", ufen_layers=5)
    with pytest.raises(ValueError, match="subtasks"):
        build("ufen_mtfn", subtasks=("x",))


def ids_batch(B=3, L=7):
    """A batch that carries BERT token ids ([CLS] w w w [SEP] pad) instead of text features."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (B, L), generator=g)
    ids[:, 0] = 101
    lengths = torch.tensor([L, 5, 4][:B])
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    ids[torch.arange(B), lengths - 1] = 102
    ids = ids * mask
    return Batch(audio=torch.randn(B, 9, 5, generator=g), vision=torch.randn(B, 8, 7, generator=g),
                 label=torch.rand(B, generator=g) * 6 - 3, text_ids=ids, text_mask=mask, text_lengths=lengths)


@pytest.mark.parametrize("freeze", [True, False])
def test_text_through_a_bert(freeze):
    """text_model / freeze_text as in EMT-DLFR: token ids go through a BERT (here the random 'tiny' one)."""
    kw = {**SMALL, "use_text_features": False, "text_model": "tiny", "freeze_text": freeze}
    torch.manual_seed(0)
    m = build("ufen_mtfn", **kw).train()
    assert m.text_dim == 32 and m.ufen["t"].gru.input_size == 32  # the BERT's width, not text_dim=12
    out = m(ids_batch())
    out.loss.backward()
    bert = [p for n, p in m.named_parameters() if "bert" in n]
    assert all(p.requires_grad != freeze for p in bert)
    others = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not others, f"no gradient for {others}"


def test_dropped_word_changes_the_text_states():
    """With a BERT, an [UNK] in place of a word changes the prediction; the UNK batch's stale
    pre-extracted features (the complete sentence's) are not read."""
    kw = {**SMALL, "use_text_features": False, "text_model": "tiny", "freeze_text": True}
    torch.manual_seed(0)
    m = build("ufen_mtfn", **kw).eval()
    b = ids_batch()
    dropped = b.replace(text_ids=b.text_ids.clone().index_put_((torch.tensor([0]), torch.tensor([2])), torch.tensor(100)),
                        text=torch.randn(3, 7, 12))
    p0, p1 = m(b).pred, m(dropped).pred
    assert not torch.isclose(p0[0], p1[0]) and torch.allclose(p0[1:], p1[1:], atol=1e-6)


def test_book_default_is_the_frozen_minilm():
    m = build("ufen_mtfn", dataset="synth_mosi", text_dim=384, audio_dim=5, vision_dim=20)
    assert m.cfg.freeze_text and not m.cfg.use_text_features
    assert m.text_dim == 384 and m.text_encoder.frozen is not None
    assert not any("bert" in n for n, _ in m.named_parameters())  # shared, not a parameter of the model
