"""Mixed precision: every registered model trains under autocast on the CPU as well as on CUDA.

The Trainer only turns autocast on for CUDA, but a reader may force it (``amp_dtype="bf16"``) or
wrap a model in ``torch.autocast("cpu")`` by hand; oneDNN has no reduced-precision LSTM on
AVX2-only CPUs, so every recurrent layer goes through ``mmsa.encoders.call_rnn``, which runs it
in fp32 there.
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmsa.encoders import call_rnn
from mmsa.models import available, build

from test_no_oracle import CONFIGS, complete_batch


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("packed", [False, True])
def test_call_rnn_runs_in_fp32_under_cpu_autocast(kind, packed):
    torch.manual_seed(0)
    rnn = kind(6, 4, batch_first=True)
    x = torch.randn(3, 5, 6)
    inp = lambda t: pack_padded_sequence(t, torch.tensor([5, 3, 2]), batch_first=True) if packed else t
    data = lambda out: out.data if packed else out
    ref = data(rnn(inp(x))[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = data(call_rnn(rnn, inp(x.bfloat16()))[0])   # a bf16 input, as from a Linear under autocast
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)  # only the input was rounded to bf16
    # without autocast it is the plain call, bit for bit
    assert torch.equal(data(call_rnn(rnn, inp(x))[0]), ref)


def test_call_rnn_with_weights_is_functional_call():
    torch.manual_seed(0)
    rnn = nn.LSTM(3, 2, batch_first=True)
    x = torch.randn(2, 4, 3)
    doubled = {n: 2 * p for n, p in rnn.named_parameters()}
    expected = torch.func.functional_call(rnn, doubled, (x,))[0]
    assert torch.equal(call_rnn(rnn, x, doubled)[0], expected)
    assert not torch.equal(expected, rnn(x)[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", available())
def test_every_model_trains_under_cpu_autocast(name, dtype):
    kw, batch_kw = CONFIGS[name]
    torch.manual_seed(0)
    model = build(name, **kw).train()
    batch = complete_batch(**batch_kw)
    out = model(batch)
    out.loss.backward()
    fp32_grads = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        out = model(batch)
    assert torch.isfinite(out.pred.float()).all() and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == fp32_grads  # the same parameters learn as in fp32
    assert not [n for n, g in grads.items() if not torch.isfinite(g).all()]
