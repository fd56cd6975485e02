"""mmsa.attention computes what nn.MultiheadAttention computes (fp32, to 1e-5), without NaNs.

The helper replaced nn.MultiheadAttention calls in EMT, STA, MulT and TFR-Net with the same
parameters, so its numerics are pinned against the module itself, on key masks, additive biases,
samples without any valid key, the returned weights, and the CPU length groups.
"""
import pytest
import torch
from torch import nn

from mmsa.attention import Dropout, LengthGroups, attend, keep_mask, mha


def _mask(B, S, g):
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    return torch.arange(S)[None] < lengths[:, None]


@pytest.mark.parametrize("kind", ["self", "cross", "separate"])
def test_mha_matches_multihead_attention(kind):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q = torch.randn(6, 7, 16, generator=g)
    kv = q if kind == "self" else torch.randn(6, 9 if kind != "self" else 7, 16, generator=g)
    v = kv if kind != "separate" else torch.randn(*kv.shape, generator=g)
    valid = _mask(6, kv.shape[1], g)
    bias = torch.randn(6, 7, kv.shape[1], generator=g)
    ours, w = mha(module, q, kv, v, valid, bias, need_weights=True)
    ref, ref_w = module(q, kv, v, key_padding_mask=~valid, attn_mask=bias.repeat_interleave(4, 0),
                        need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)
    fused, none = mha(module, q, kv, v, valid, bias)          # the fused path gives the same output
    assert none is None
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_sample_without_valid_keys_gives_zero_not_nan():
    torch.manual_seed(0)
    module = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[1] = False
    out, w = mha(module, x, x, x, valid, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert out[1].abs().max() == 0 and w[1].abs().max() == 0
    ref, _ = module(x[[0, 2]], x[[0, 2]], x[[0, 2]])
    torch.testing.assert_close(out[[0, 2]], ref, atol=1e-5, rtol=1e-5)


def test_attend_rejects_wrong_mask_shape():
    q = torch.randn(2, 1, 3, 4)
    with pytest.raises(ValueError, match=r"expected \(B, S\) = \(2, 3\)"):
        attend(q, q, q, valid=torch.ones(2, 4, dtype=torch.bool))


def test_length_groups_split_merge_round_trip():
    valid = torch.arange(10)[None] < torch.tensor([3, 10, 1, 7, 5, 2, 9, 4, 6, 8, 10, 1, 2, 3, 4, 5])[:, None]
    groups = LengthGroups.of(valid, size=4, min_length=1)
    assert groups is not None and len(groups.cuts) == 4
    x = torch.randn(16, 10, 3)
    parts = groups.split(x)
    for part, cut, idx in zip(parts, groups.cuts, groups.order.split(groups.sizes)):
        assert valid[idx, cut:].sum() == 0                    # nothing valid is cut away
    torch.testing.assert_close(groups.merge(list(parts)), x)
    assert LengthGroups.of(valid[:7], size=4, min_length=1) is None   # small batches run as one
    assert LengthGroups.of(valid, size=4) is None                     # so do short clips (T < 128)


def test_keep_mask_rate_and_seed():
    like = torch.zeros(1, dtype=torch.float64)
    torch.manual_seed(1)
    a = keep_mask((200, 500), 0.3, like)
    torch.manual_seed(1)
    b = keep_mask((200, 500), 0.3, like)
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == (200, 500)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs((1 - a.mean()).item() - 0.3) < 0.005          # drop rate p (sd 0.002 for 1e5 draws)
    assert keep_mask((7, 3), 0.0, like).eq(1).all()           # odd sizes, p = 0 and p = 1
    assert keep_mask((7, 3), 1.0, like).eq(0).all()
    d = Dropout(0.5).train()
    y = d(torch.ones(1000))
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(d.eval()(torch.ones(4)), torch.ones(4))


# ---------------------------------------------------------------- every model, helper vs module
def _reference_mha(module, query, key, value, valid=None, bias=None, need_weights=False):
    """What the models computed before the helper: nn.MultiheadAttention itself (empty rows -> 0)."""
    kpm = empty = None
    if valid is not None:
        kpm = ~valid.bool()
        empty = kpm.all(1)
        kpm = kpm & ~empty[:, None]
    mask = None if bias is None else bias.float().repeat_interleave(module.num_heads, 0)
    if kpm is not None and mask is not None:
        mask = mask.masked_fill(kpm.repeat_interleave(module.num_heads, 0)[:, None, :], float("-inf"))
        kpm = None
    out, w = module(query, key, value, key_padding_mask=kpm, attn_mask=mask, need_weights=need_weights,
                    average_attn_weights=False)
    if empty is not None:
        out = out * (~empty).to(out.dtype)[:, None, None]
        w = None if w is None else w * (~empty).to(w.dtype)[:, None, None, None]
    return out, w


def _reference_attend(q, k, v, valid=None, bias=None, dropout_p=0.0, need_weights=False):
    """softmax(q kᵀ/√d + bias, over the valid keys) v, written out (eval: no dropout)."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + (bias[:, None] if bias.dim() == 3 else bias)
    alive = None
    if valid is not None:
        empty = ~valid.any(1)
        scores = scores.masked_fill(~(valid | empty[:, None])[:, None, None, :], float("-inf"))
        alive = (~empty).to(q.dtype)
    w = scores.softmax(-1)
    out = w @ v
    if alive is not None:
        out, w = out * alive[:, None, None, None], w * alive[:, None, None, None]
    return out, (w if need_weights else None), alive


@pytest.mark.parametrize("name", ["emt_dlfr", "dast_gan", "mult", "tfr_net", "ufen_mtfn", "cmsta_cg"])
def test_models_give_the_outputs_of_nn_multihead_attention(name, monkeypatch):
    """Each model that attends through mmsa.attention, in fp32 eval mode, complete and with
    missing steps: the same outputs (1e-5) as with the reference implementations above."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_no_oracle import CONFIGS, complete_batch

    from mmsa import missing
    from mmsa.models import build
    import mmsa.fusion.emt as emt
    import mmsa.fusion.sta as sta
    import mmsa.models.baselines.common as common
    import mmsa.models.cmsta_cg as cmsta_cg
    import mmsa.models.ufen_mtfn as ufen_mtfn

    kw, bkw = CONFIGS[name]
    torch.manual_seed(0)
    model = build(name, **kw).eval()
    batches = [complete_batch(**bkw)]
    batches.append(missing.apply(batches[0], "random", 0.5, seed=3))

    def outputs():
        with torch.no_grad():
            return [model(b) for b in batches]

    ours = outputs()
    monkeypatch.setattr(emt, "mha", _reference_mha)
    monkeypatch.setattr(sta, "mha", _reference_mha)
    monkeypatch.setattr(ufen_mtfn, "mha", _reference_mha)
    monkeypatch.setattr(cmsta_cg, "mha", _reference_mha)
    monkeypatch.setattr(common, "attend", _reference_attend)
    ref = outputs()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.pred, b.pred, atol=1e-5, rtol=1e-5)


def test_explicit_attention_gradients_with_key_masks_are_finite_and_exact():
    """The key mask rides in the q·k product as an extra −inf column: no NaN may reach q, k or v
    (a sample with no valid key included), and the gradients equal the written-out reference."""
    torch.manual_seed(0)
    B, H, T, S, d = 4, 3, 7, 9, 5
    q, k, v = (torch.randn(B, H, n, d, dtype=torch.float64, requires_grad=True) for n in (T, S, S))
    valid = torch.rand(B, S) > 0.4
    valid[0], valid[1] = False, True
    grads = []
    for fn in (attend, _reference_attend):
        out, w, _ = fn(q, k, v, valid, need_weights=True)
        (out.square().sum() + (w * torch.arange(S, dtype=w.dtype)).sum()).backward()
        grads.append([x.grad.clone() for x in (q, k, v)])
        for x in (q, k, v):
            x.grad = None
    for ours, ref in zip(*grads):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["emt_dlfr", "dast_gan", "mult", "tfr_net"])
def test_length_groups_give_the_outputs_of_one_padded_call(name, monkeypatch):
    """Long clips (T >= 128) of mixed lengths run in length groups on a CPU: the predictions (and
    TFR-Net's reconstruction loss, read on the valid dropped steps) equal one padded call's."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_no_oracle import CONFIGS

    from mmsa import missing
    from mmsa.models import build
    from mmsa.types import Batch

    kw, _ = CONFIGS[name]
    kw = dict(kw, **({"dropout": 0.0} if name == "tfr_net" else {}))
    torch.manual_seed(0)
    model = build(name, **kw)
    g = torch.Generator().manual_seed(1)
    B, L, T = 16, 9, 140
    tl = torch.randint(3, L + 1, (B,), generator=g)
    al, vl = torch.randint(1, T + 1, (B,), generator=g), torch.randint(1, T + 1, (B,), generator=g)
    seq = lambda d, n: torch.randn(B, T, d, generator=g) * (torch.arange(T)[None] < n[:, None])[..., None]
    ids = torch.randint(1000, 2000, (B, L), generator=g) * (torch.arange(L)[None] < tl[:, None])
    batch = Batch(text=torch.randn(B, L, 12, generator=g), text_ids=ids, text_mask=(ids > 0).long(), text_lengths=tl,
                  audio=seq(5, al), vision=seq(20, vl), audio_lengths=al, vision_lengths=vl,
                  label=torch.linspace(-2, 2, B), ids=[f"s{i}" for i in range(B)])
    batch = missing.apply(batch, "random", 0.4, seed=2)
    calls = []
    of = LengthGroups.of.__func__

    def spy(cls, valid, *a, **k):
        calls.append(of(cls, valid, *a, **k))
        return calls[-1]

    def run():
        model.eval()
        with torch.no_grad():
            pred = model(batch).pred
            if name != "tfr_net":
                return pred, None
            model.train()
            return pred, model(batch).losses["reconstruction"]

    monkeypatch.setattr(LengthGroups, "of", classmethod(spy))
    grouped = run()
    assert any(c is not None for c in calls), "the batch did not take the length-group path"
    monkeypatch.setattr(LengthGroups, "of", classmethod(lambda cls, valid, *a, **k: None))
    padded = run()
    torch.testing.assert_close(grouped[0], padded[0], atol=1e-5, rtol=1e-5)
    if name == "tfr_net":
        torch.testing.assert_close(grouped[1], padded[1], atol=1e-5, rtol=1e-5)
