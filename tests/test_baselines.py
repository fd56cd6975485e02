"""Classic baselines (docs/design.md §3.6): shapes, gradients, overfitting, TFN/LMF identities, ULGM,
TFR-Net's reconstruction, presets, the text encoder, errors.  Tiny sizes and a tiny random BERT."""
import pytest
import torch
import torch.nn.functional as F

from mmsa import missing
from mmsa.models import available, build, inference_parameters
from mmsa.models.baselines import CONFIGS, MMSA_TRAIN, TFN, UnimodalLabelGenerator, cmd, segment_average
from mmsa.train import TrainConfig, param_groups
from mmsa.types import Batch

from batches import bert_ids

CLS, SEP, UNK = 101, 102, 100
DIMS = dict(text_model="tiny", audio_dim=5, vision_dim=7)
TEXT_DIM = 32  # the tiny BERT's width
SMALL = {
    "lf_dnn": dict(hidden_text=8, text_out=8, hidden_audio=4, hidden_vision=4, post_fusion_dim=8, dropout=0.0),
    "ef_lstm": dict(hidden=8, dropout=0.0),
    "tfn": dict(hidden_text=8, text_out=6, hidden_audio=4, hidden_vision=4, post_fusion_dim=8, dropout=0.0),
    "lmf": dict(hidden_text=8, text_out=6, hidden_audio=4, hidden_vision=4, rank=3, fusion_dim=8, dropout=0.0),
    "mult": dict(d_model=8, heads=2, cross_layers=1, self_layers=1, dropout=0.0, embed_dropout=0.0),
    "misa": dict(hidden=8, rnn_hidden=4, fusion_ff=16, dropout=0.0),
    "self_mm": dict(audio_hidden=4, vision_hidden=4, audio_out=4, vision_out=4, post_fusion_dim=8, post_text_dim=8,
                    post_audio_dim=8, post_vision_dim=8, dropout=0.0),
    "tfr_net": dict(d_model=8, heads=2, fusion_hidden=(4, 4, 4), cls_hidden=8, dropout=0.0),
}
NAMES = sorted(SMALL)


def make_batch(B=4, L=7, Ta=9, Tv=8, seed=0, classes=1):
    """A complete batch: BERT ids + mask (and matching text features), frames, lengths (row 0 full length)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lambda T, low: torch.randint(low, T + 1, (B,), generator=g).index_fill_(0, torch.tensor([0]), T)
    tl, al, vl = lengths(L, 3), lengths(Ta, 1), lengths(Tv, 1)
    ids, mask = bert_ids(tl, L, g)
    seq = lambda T, d, n: torch.randn(B, T, d, generator=g) * (torch.arange(T)[None] < n[:, None])[..., None]
    if classes > 1:
        label = torch.arange(B) % classes
    else:  # both signs (Self-MM centres), unbalanced (L1 bias gradient ≠ 0)
        label = torch.linspace(-1.0, 2.5, B) if B > 1 else torch.tensor([1.5])
    return Batch(text=seq(L, TEXT_DIM, tl), text_ids=ids, text_mask=mask, text_lengths=tl,
                 audio=seq(Ta, DIMS["audio_dim"], al), vision=seq(Tv, DIMS["vision_dim"], vl),
                 audio_lengths=al, vision_lengths=vl, label=label, ids=[f"s{seed}-{i}" for i in range(B)])


def incomplete(batch, rate=0.4, seed=1):
    return missing.apply(batch, "random", rate, seed=seed)


def model(name, **kw):
    torch.manual_seed(0)
    return build(name, **{**DIMS, **SMALL[name], **kw})


def test_every_baseline_is_registered():
    assert set(NAMES) <= set(available())
    assert set(CONFIGS) == set(NAMES) == set(MMSA_TRAIN)


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
def test_everything_dropped_and_empty_sequences_stay_finite(name):
    b = make_batch()
    b = b.replace(audio_lengths=b.audio_lengths.index_fill(0, torch.tensor([1]), 0))  # an empty sequence
    b = missing.apply(b, "random", 1.0, seed=0)  # every word [UNK], every frame zero
    m = model(name).train()
    out = m(b)
    assert torch.isfinite(out.pred).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    m = model(name).train()
    b = incomplete(make_batch(B=5))  # odd B: the L1 gradient of the output bias (a sum of ±1) cannot cancel
    if name == "self_mm":  # one step fills the class centres; then generated labels differ from y_m
        b = b.replace(ids=[])  # (without ids no per-sample memory: the fresh labels are used at once)
        m(b)
        assert m.ulgm.ready
    out = m(b)
    if name == "tfr_net":
        assert out.losses["reconstruction"] > 0
    out.loss.backward()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert not any("bert" in n for n in trainable)  # freeze_text=True: the text encoder is not trained
    silent = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not silent, f"no gradient for {silent}"


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


@pytest.mark.parametrize("name", NAMES)
def test_dropped_words_leave_no_trace(name):
    """With every word dropped, the prediction no longer depends on which sentence it was."""
    m = model(name).eval()
    a, b = make_batch(seed=0), make_batch(seed=0)
    b = b.replace(text_ids=torch.where((a.text_ids != CLS) & (a.text_ids != SEP) & (a.text_ids != 0),
                                       a.text_ids + 7, a.text_ids))  # other words, same lengths
    assert not torch.equal(m(a).pred, m(b).pred)
    only = ("text",)
    drop = lambda x: missing.apply(x, "random", 1.0, seed=0, modalities=only)
    assert torch.equal(m(drop(a)).pred, m(drop(b)).pred)


@pytest.mark.parametrize("name", NAMES)
def test_fine_tuned_text_encoder_gets_bert_lr(name):
    m = model(name, freeze_text=False).train()
    bert = [n for n, p in m.named_parameters() if p.requires_grad and "bert" in n]
    assert bert and all(n.startswith("text_encoder.bert.") or ".text_encoder.bert." in n for n in bert)
    groups = {g["name"]: g for g in param_groups(m, 1e-3, 5e-5, 0.0)}
    assert groups["bert"]["lr"] == 5e-5 and len(groups["bert"]["params"]) == len(bert)
    m(incomplete(make_batch())).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.named_parameters() if "bert" in n)


@pytest.mark.parametrize("name", NAMES)
def test_feature_mode_reads_batch_text(name):
    m = build(name, **{**DIMS, **SMALL[name]}, use_text_features=True, text_dim=TEXT_DIM).eval()
    b = make_batch()
    ref = m(b).pred
    assert not torch.equal(m(b.replace(text=b.text * 2)).pred, ref)
    assert torch.equal(m(b.replace(text_ids=torch.zeros_like(b.text_ids))).pred, ref)  # ids unused
    with pytest.raises(ValueError, match=r"expected \(B, L, 32\)"):
        m(b.replace(text=torch.randn(4, 7, 5)))


# ----------------------------------------------------------------------------- presets

MMSA_EXPECTED = {
    "mult": dict(d_model=50, heads=10, cross_layers=4, self_layers=4, conv_kernels=(5, 5, 5),
                 attn_dropout=(0.3, 0.2, 0.0), embed_dropout=0.2, out_dropout=0.5, text_dropout=0.5),
    "tfr_net": dict(d_model=30, heads=6, layers=3, conv_kernels=(1, 5, 3), attn_dropout=(0.2, 0.1, 0.0),
                    fusion_hidden=(36, 20, 48),
                    fusion_layers=3, cls_hidden=128, rec_weights=(5.0, 2.0, 20.0), freeze_text=False),
    "misa": dict(hidden=128, rnn_hidden=0, dropout=0.2, sim_weight=0.3, diff_weight=0.1, fusion_ff=2048,
                 freeze_text=False),
    "self_mm": dict(audio_hidden=16, vision_hidden=32, audio_out=16, vision_out=32, post_fusion_dim=128,
                    post_text_dim=32, post_audio_dim=16, post_vision_dim=32, freeze_text=False),
    "lf_dnn": dict(hidden_text=128, text_out=256, hidden_audio=16, hidden_vision=128, post_fusion_dim=128),
    "ef_lstm": dict(hidden=128, layers=4, dropout=0.5),
    "tfn": dict(hidden_text=128, text_out=32, hidden_audio=32, hidden_vision=128, post_fusion_dim=64,
                post_fusion_dropout=0.5),
    "lmf": dict(hidden_text=128, text_out=64, hidden_audio=16, hidden_vision=128, rank=3, fusion_dim=0),
}


@pytest.mark.parametrize("name", NAMES)
def test_mmsa_preset_sizes_and_overrides(name):
    cfg = CONFIGS[name]
    book = cfg()
    from mmsa.models.baselines.common import build_config

    mmsa = build_config(cfg, dict(dataset="mosi", preset="mmsa"))
    for key, value in MMSA_EXPECTED[name].items():
        assert getattr(mmsa, key) == value, key
    assert any(getattr(book, k) != v for k, v in MMSA_EXPECTED[name].items())  # the book's default is smaller
    assert (mmsa.audio_dim, mmsa.vision_dim) == (5, 20)
    assert build_config(cfg, dict(preset="mmsa", dropout=0.05)).dropout == 0.05  # explicit keys win
    assert set(MMSA_TRAIN[name]) <= set(TrainConfig.__dataclass_fields__) | {"batch_size"}


def test_mmsa_presets_build_and_run():
    b = incomplete(make_batch(B=3))
    for name in ("mult", "tfr_net", "lmf"):
        torch.manual_seed(0)
        m = build(name, **DIMS, preset="mmsa").train()
        out = m(b)
        assert out.pred.shape == (3,) and torch.isfinite(out.loss)
    assert build("lmf", **DIMS, preset="mmsa").head.__class__.__name__ == "Identity"  # h is the prediction
    # attention dropout by the modality of the keys, as the toolkit; its memory/intra stacks use text's
    mult, tfr = build("mult", **DIMS, preset="mmsa"), build("tfr_net", **DIMS, preset="mmsa")
    assert [mult.cross[f"{s}_to_text"].layers[0].attn_dropout for s in ("audio", "vision")] == [0.2, 0.0]
    assert mult.cross["text_to_vision"].layers[0].attn_dropout == 0.3
    assert mult.memory["audio"].layers[0].attn_dropout == 0.3
    assert [tfr.inter[f"{s}_to_text"].layers[0].attn_dropout for s in ("audio", "vision")] == [0.1, 0.0]
    assert tfr.intra["vision"].layers[0].attn_dropout == 0.2
    assert len(mult.memory["text"].layers) == 4 and len(tfr.intra["text"].layers) == 3


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match=r"unknown preset 'MMSA'.*'book', 'mmsa'"):
        build("mult", **DIMS, preset="MMSA")


# ----------------------------------------------------------------------------- model identities


def test_tfn_fused_tensor_size_and_content():
    m = model("tfn").eval()
    out = m(make_batch())
    dt, da, dv = 6, 4, 4
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
    zt, za, zv = torch.randn(2, 6).double(), torch.randn(2, 4).double(), torch.randn(2, 4).double()
    # W = Σ_i λ_i w_t^(i) ⊗ w_a^(i) ⊗ w_v^(i), shape (7, 5, 5, h);  h = Z · W + b with Z = TFN's tensor
    W = torch.einsum("r,rih,rjh,rkh->ijkh", m.rank_weights, m.factor_t, m.factor_a, m.factor_v)
    Z = TFN.fuse(zt, za, zv)
    explicit = Z @ W.reshape(-1, W.shape[-1]) + m.fusion_bias
    assert torch.allclose(m.fuse(zt, za, zv), explicit, atol=1e-10)


def test_segment_average_by_hand():
    x = torch.arange(6.0).view(1, 6, 1).repeat(2, 1, 1)  # steps 0..5
    out = segment_average(x, lengths=torch.tensor([6, 4]), n=torch.tensor([3, 2]), width=4)
    assert out[0, :, 0].tolist() == [0.5, 2.5, 4.5, 0.0]  # 6 steps -> 3 segments of 2
    assert out[1, :, 0].tolist() == [0.5, 2.5, 0.0, 0.0]  # valid 4 steps -> 2 segments, padding ignored


def tfr_case():
    """A hand-made incomplete batch: audio of sample 0 drops steps 1 and 3 of its 9 valid steps;
    sample 1's record also marks a padding step (beyond its length) as dropped."""
    full = make_batch(B=2)
    full = full.replace(audio_lengths=torch.tensor([9, 5]))
    keep = torch.ones(2, 9)
    keep[0, [1, 3]] = 0.0
    keep[1, 7] = 0.0  # padding: must not count
    b = full.replace(audio=full.audio * keep[..., None], missing={"audio": keep}, full=full)
    return b


def test_tfr_net_reconstruction_counts_only_dropped_valid_positions():
    m = model("tfr_net", rec_weights=(0.0, 1.0, 0.0)).train()
    b = tfr_case()
    torch.manual_seed(0)
    out = m(b)
    rec, target = out.extras["recon_audio"], b.full.audio
    expected = F.smooth_l1_loss(rec[0, [1, 3]], target[0, [1, 3]])  # mean over the 2 dropped steps x 5 dims
    assert torch.allclose(out.losses["reconstruction"], expected)
    # changing the complete view where a step was observed (or is padding) leaves the term unchanged ...
    bumped = b.full.audio.clone()
    bumped[0, [0, 2, 4, 8]] += 5.0
    bumped[1, :] += 5.0
    torch.manual_seed(0)
    assert torch.allclose(m(b.replace(full=b.full.replace(audio=bumped))).losses["reconstruction"], expected)
    # ... changing it at a dropped step does change it
    bumped = b.full.audio.clone()
    bumped[0, 3] += 5.0
    torch.manual_seed(0)
    assert m(b.replace(full=b.full.replace(audio=bumped))).losses["reconstruction"] > expected + 0.1


def test_tfr_net_reconstruction_is_training_only():
    m = model("tfr_net")
    b = tfr_case()
    assert "reconstruction" not in m.eval()(b).losses  # eval: no target read, no term
    assert "reconstruction" not in m.train()(make_batch()).losses  # a complete batch: nothing to restore
    gens = sum(p.numel() for n, p in m.named_parameters() if n.startswith("recon."))
    assert gens > 0 and inference_parameters(m) == sum(p.numel() for p in m.parameters()) - gens
    out = m.train()(b)
    out.losses["reconstruction"].backward()  # the generator's loss trains the alignment encoder too
    assert m.inter["text_to_audio"].layers[0].q.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.gates.parameters())  # ... but not the fusion


def test_tfr_net_gates_are_per_step_and_in_unit_interval():
    out = model("tfr_net").eval()(make_batch())
    for m, T in (("text", 7), ("audio", 9), ("vision", 8)):
        g = out.extras[f"gate_{m}"]
        assert g.shape == (4, T) and (g > 0).all() and (g < 1).all()


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


def test_self_mm_reads_the_cls_state():
    m = model("self_mm").eval()
    b = make_batch()
    _, cls = m.text_encoder(b)
    feats = m.post["t"](cls)
    assert torch.allclose(m(b).extras["y_t"], m.heads["t"](feats).squeeze(-1))


def test_cmd_is_zero_for_identical_samples_and_positive_otherwise():
    x = torch.randn(16, 4)
    assert cmd(x, x).item() < 1e-4
    assert cmd(x, x + 1.0).item() == pytest.approx(2.0, abs=1e-4)  # shifted mean: ||1||_2 = 2, moments equal


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_lists_valid_keys(name):
    with pytest.raises(TypeError, match="valid keys are:.*num_classes"):
        build(name, **DIMS, not_a_key=1)


def test_wrong_feature_dim_names_the_expected_shape():
    m = model("mult")
    b = make_batch()
    with pytest.raises(ValueError, match=r"audio_dim=5"):
        m(b.replace(audio=torch.randn(4, 9, 3)))


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="d_model % heads"):
        build("mult", **DIMS, d_model=10, heads=4)
    with pytest.raises(ValueError, match="odd"):
        build("mult", **DIMS, conv_kernels=(1, 2, 3))
    with pytest.raises(ValueError, match="one value per modality"):
        build("tfr_net", **DIMS, rec_weights=(1.0, 1.0))


def test_ef_lstm_layers_equal_one_stacked_lstm():
    """EF-LSTM's per-layer LSTMs (dropout between them) compute what one nn.LSTM(num_layers=3)
    with the same weights computes, at each sentence's last token (eval: no dropout)."""
    from mmsa.models.baselines.common import lengths_of

    torch.manual_seed(0)
    model = build("ef_lstm", **DIMS, hidden=8, layers=3, dropout=0.5).eval()
    stacked = torch.nn.LSTM(model.lstm[0].input_size, 8, num_layers=3, batch_first=True)
    for i, lstm in enumerate(model.lstm):
        for name, p in lstm.named_parameters():
            getattr(stacked, name.replace("_l0", f"_l{i}")).data.copy_(p.data)
    batch = make_batch()
    seen = {}
    model.norm.register_forward_hook(lambda m, i, out: seen.update(x=out))
    with torch.no_grad():
        h = model(batch).extras["fused"]
        out, _ = stacked(seen["x"])
    n = lengths_of(batch, "text", seen["x"].shape[1])
    torch.testing.assert_close(h, out[torch.arange(len(n)), n - 1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_birnn_equals_the_packed_bidirectional_rnn(kind):
    """birnn (one call per direction, the backward one on each clip reversed within its length)
    gives the packed sequence's outputs, final states and gradients (float64, exact to 1e-10)."""
    from mmsa.models.baselines.common import birnn, run_rnn

    torch.manual_seed(0)
    rnn = kind(3, 4, batch_first=True, bidirectional=True).double()
    x = torch.randn(5, 9, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 1, 4, 7, 2])
    out, last = birnn(rnn, x, lengths)
    ref, state = run_rnn(rnn, x, lengths)
    state = state[0] if kind is torch.nn.LSTM else state
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(last, state, atol=1e-10, rtol=0)
    w = torch.randn_like(out)
    params = [x, *rnn.parameters()]
    g = torch.autograd.grad((out * w).sum() + last.sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum() + state.sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
