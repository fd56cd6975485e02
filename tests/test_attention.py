"""mmsa.attention computes what nn.MultiheadAttention computes (fp32, to 1e-5), without NaNs.

The helper replaced nn.MultiheadAttention calls in EMT, STA, MulT and TFR-Net with the same
parameters, so its numerics are pinned against the module itself, on key masks, additive biases,
samples without any valid key, the returned weights, and the CPU length groups.
"""
import pytest
import torch
from torch import nn

from mmsa.attention import Dropout, LengthGroups, attend, dropout_mask, mha


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
    groups = LengthGroups.of(valid, size=4)
    assert groups is not None and len(groups.cuts) == 4
    x = torch.randn(16, 10, 3)
    parts = groups.split(x)
    for part, cut, idx in zip(parts, groups.cuts, groups.order.split(groups.sizes)):
        assert valid[idx, cut:].sum() == 0                    # nothing valid is cut away
    torch.testing.assert_close(groups.merge(list(parts)), x)
    assert LengthGroups.of(valid[:7], size=4) is None         # small batches run as one


def test_dropout_mask_rate_and_seed():
    torch.manual_seed(1)
    a = dropout_mask((200, 500), 0.3, torch.device("cpu"))
    torch.manual_seed(1)
    b = dropout_mask((200, 500), 0.3, torch.device("cpu"))
    assert torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.3) < 0.01
    d = Dropout(0.5).train()
    y = d(torch.ones(1000))
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(d.eval()(torch.ones(4)), torch.ones(4))
