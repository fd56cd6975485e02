"""mmsa.missing: seeded, non-mutating missing-modality simulation (SPEC §4.3)."""
import numpy as np
import pytest
import torch

from mmsa import missing
from mmsa.types import Batch

TEXT_LEN = [5, 3, 6, 2]  # valid text lengths incl. [CLS]/[SEP]
AUDIO_LEN = [8, 5, 2, 7]
VISION_LEN = [4, 4, 1, 3]


def make_batch(with_features=True):
    B, L = 4, 6
    ids = torch.zeros(B, L, dtype=torch.long)
    for i, n in enumerate(TEXT_LEN):
        ids[i, 0] = 101
        ids[i, 1 : n - 1] = torch.arange(1000, 1000 + n - 2)
        ids[i, n - 1] = 102
    mask = (torch.arange(L)[None] < torch.tensor(TEXT_LEN)[:, None]).long()
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(B, 8, 2, generator=g) + 1.0  # strictly non-zero, so zeroed frames are visible
    vision = torch.rand(B, 4, 3, generator=g) + 1.0
    text = (torch.rand(B, L, 5, generator=g) + 1.0) * mask[..., None] if with_features else None
    return Batch(
        audio=audio, vision=vision, label=torch.tensor([0.5, -1.0, 2.0, 0.0]), text=text,
        text_ids=ids, text_mask=mask, audio_lengths=torch.tensor(AUDIO_LEN), vision_lengths=torch.tensor(VISION_LEN),
    )


def snapshot(b):
    return {k: v.clone() for k, v in vars(b).items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("pattern", missing.PATTERNS)
def test_same_seed_same_masks_other_seed_differs(pattern):
    b = make_batch()
    x, y, z = (missing.apply(b, pattern, 0.5, seed=s) for s in (3, 3, 4))
    for m in ("text", "audio", "vision"):
        assert torch.equal(x.missing[m], y.missing[m])
    assert torch.equal(x.text_ids, y.text_ids) and torch.equal(x.audio, y.audio)
    assert any(not torch.equal(x.missing[m], z.missing[m]) for m in ("text", "audio", "vision"))


@pytest.mark.parametrize("pattern", missing.PATTERNS)
def test_input_not_mutated_and_full_is_input(pattern):
    b = make_batch()
    before = snapshot(b)
    out = missing.apply(b, pattern, 0.7, seed=1)
    for k, v in before.items():
        assert torch.equal(getattr(b, k), v), k
    assert b.missing == {} and b.full is None
    assert out is not b and out.full is b
    # applying again keeps the original complete view and combines the masks
    again = missing.apply(out, "random", 0.5, seed=2)
    assert again.full is b
    assert torch.all(again.missing["audio"] <= out.missing["audio"])


@pytest.mark.parametrize("pattern", missing.PATTERNS)
def test_rate_zero_is_identity(pattern):
    b = make_batch()
    out = missing.apply(b, pattern, 0.0, seed=5)
    assert torch.equal(out.text_ids, b.text_ids) and torch.equal(out.text, b.text)
    assert torch.equal(out.audio, b.audio) and torch.equal(out.vision, b.vision)
    for m in ("text", "audio", "vision"):
        assert torch.equal(out.missing[m], torch.ones_like(out.missing[m]))


@pytest.mark.parametrize("pattern", ["random", "burst"])
def test_rate_one_keeps_only_cls_and_sep(pattern):
    b = make_batch()
    out = missing.apply(b, pattern, 1.0, seed=0)
    for i, n in enumerate(TEXT_LEN):
        assert out.text_ids[i, 0] == 101 and out.text_ids[i, n - 1] == 102
        assert torch.all(out.text_ids[i, 1 : n - 1] == 100)
        assert torch.all(out.text_ids[i, n:] == 0)  # padding untouched
        assert torch.all(out.text[i, 1 : n - 1] == 0) and torch.all(out.text[i, [0, n - 1]] != 0)
        assert out.audio[i, : AUDIO_LEN[i]].abs().sum() == 0 and out.vision[i, : VISION_LEN[i]].abs().sum() == 0
    # observed = valid and kept: only [CLS]/[SEP] stay for text, nothing for audio
    assert out.observed("text").sum(1).tolist() == [2, 2, 2, 2]
    assert out.observed("audio").sum() == 0
    assert torch.equal(out.lengths("audio"), b.lengths("audio"))  # lengths unchanged


def test_random_rate_is_respected_on_average():
    B, T = 64, 200
    b = Batch(audio=torch.ones(B, T, 1), vision=torch.ones(B, T, 1), label=torch.zeros(B),
              text=torch.ones(B, 10, 1))
    out = missing.apply(b, "random", 0.3, seed=0, modalities=("audio",))
    assert abs(1 - out.missing["audio"].mean().item() - 0.3) < 0.01
    assert set(out.missing) == {"audio"}  # other modalities untouched


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_burst_is_one_contiguous_span_of_rounded_length(rate):
    b = make_batch()
    out = missing.apply(b, "burst", rate, seed=11)
    for m, lens, first in (("audio", AUDIO_LEN, 0), ("vision", VISION_LEN, 0), ("text", TEXT_LEN, 1)):
        for i, n in enumerate(lens):
            droppable = n - 2 if m == "text" else n
            dropped = torch.nonzero(out.missing[m][i] == 0).flatten().tolist()
            expect = int(np.floor(rate * droppable + 0.5))  # round half up
            assert len(dropped) == expect, (m, i)
            if dropped:
                assert dropped == list(range(dropped[0], dropped[0] + expect))  # contiguous
                assert dropped[0] >= first and dropped[-1] < first + droppable


def test_modality_pattern_keeps_at_least_one():
    b = make_batch()
    for seed in range(5):
        out = missing.apply(b, "modality", 1.0, seed=seed)
        # a modality is kept when the simulation removed none of its positions
        whole = torch.stack([out.missing[m].min(1).values == 1 for m in ("text", "audio", "vision")], 1)
        # rate 1: exactly one modality kept per sample (sample 3 has only [CLS]/[SEP], so a
        # dropped text leaves its mask all ones there; check samples 0-2)
        assert torch.all(whole[:3].sum(1) == 1)
        assert torch.all(whole.sum(1) >= 1)
    # a modality is dropped as a whole or not at all
    out = missing.apply(b, "modality", 0.5, seed=3)
    for i, n in enumerate(AUDIO_LEN):
        assert out.missing["audio"][i, :n].unique().numel() == 1


def test_fixed_patterns():
    b = make_batch()
    t_only = missing.fixed_pattern(b, keep=("text",))
    assert torch.equal(t_only.text_ids, b.text_ids)
    assert t_only.observed("audio").sum() == 0 and t_only.observed("vision").sum() == 0
    av = missing.fixed_pattern(b, keep="av")
    assert torch.equal(av.audio, b.audio)
    assert av.observed("text").sum(1).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown modality"):
        missing.fixed_pattern(b, keep=("smell",))


def test_per_modality_rates_and_errors():
    b = make_batch()
    out = missing.apply(b, "random", 0.0, seed=0, rates={"audio": 1.0})
    assert out.observed("audio").sum() == 0 and torch.equal(out.vision, b.vision)
    with pytest.raises(ValueError, match="valid"):
        missing.apply(b, "zigzag", 0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        missing.apply(b, "random", 1.5)


def test_text_features_only_batch():
    b = make_batch()
    b = b.replace(text_ids=None)
    out = missing.apply(b, "random", 1.0, seed=0)
    assert out.text_ids is None
    for i, n in enumerate(TEXT_LEN):
        assert torch.all(out.text[i, 1 : n - 1] == 0) and torch.all(out.text[i, [0, n - 1]] != 0)


def test_transforms_fresh_per_step_fixed_per_index():
    b = make_batch()
    tr = missing.make_train_transform("random", 0.5, base_seed=0)
    a, a2, c = tr(b, 1, 0), tr(b, 1, 0), tr(b, 2, 0)
    assert torch.equal(a.audio, a2.audio) and not torch.equal(a.missing["audio"], c.missing["audio"])
    ev = missing.make_eval_transform("burst", 0.5, base_seed=0)
    assert torch.equal(ev(b, 3).missing["vision"], ev(b, 3).missing["vision"])
    ranged = missing.make_train_transform("random", (0.0, 0.0), base_seed=1)
    assert torch.equal(ranged(b, 1, 1).audio, b.audio)  # range (0, 0): nothing dropped
    with pytest.raises(ValueError, match="low <= high"):
        missing.make_train_transform("random", (0.6, 0.2))


def test_auilc_hand_example():
    # trapezoids: (0.8+0.6)/2*0.5 + (0.6+0.2)/2*0.5 = 0.35 + 0.2
    assert missing.auilc([0.0, 0.5, 1.0], [0.8, 0.6, 0.2]) == pytest.approx(0.55)
    assert missing.auilc([1.0, 0.0, 0.5], [0.2, 0.8, 0.6]) == pytest.approx(0.55)  # order-free
    with pytest.raises(ValueError):
        missing.auilc([0.0], [1.0])


def test_text_bank_draws_each_clips_words_from_k_fixed_masks_and_keeps_audio_fresh():
    from mmsa.types import Batch

    g = torch.Generator().manual_seed(0)
    B, L, T = 6, 12, 9
    ids = torch.randint(1000, 2000, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = Batch(audio=torch.randn(B, T, 2, generator=g) + 5, vision=torch.randn(B, T, 2, generator=g) + 5,
                  label=torch.zeros(B), text_ids=ids, text_mask=torch.ones(B, L, dtype=torch.long),
                  ids=[f"clip{i}" for i in range(B)])
    tf = missing.make_train_transform("random", (0.2, 0.6), base_seed=3, text_bank=2)
    seen_text, seen_audio = set(), set()
    for step in range(40):
        out = tf(batch, 1, step)
        assert out.full is batch
        seen_text.add(out.text_ids[0].numpy().tobytes())
        seen_audio.add((out.audio[0] == 0).numpy().tobytes())
        # text dropped only inside the sentence, as apply() does
        assert torch.equal(out.text_ids[:, 0], ids[:, 0]) and torch.equal(out.text_ids[:, -1], ids[:, -1])
    assert len(seen_text) <= 2            # clip 0's words: one of its 2 fixed masks
    assert len(seen_audio) > 10           # audio: fresh masks
    # the bank depends on the clip id, not on the clip's position in the batch
    perm = [1, 0, 2, 3, 4, 5]
    swapped = batch.replace(text_ids=ids[perm], audio=batch.audio[perm], vision=batch.vision[perm],
                            ids=[batch.ids[i] for i in perm])
    bank0 = {tf(batch, 2, s).text_ids[0].numpy().tobytes() for s in range(30)}
    bank0_moved = {tf(swapped, 2, s).text_ids[1].numpy().tobytes() for s in range(30)}
    assert bank0 == bank0_moved
