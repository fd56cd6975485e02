"""Tests for mmsa.data: the MMSA pickle reader, the Batch loader and SynthMSA."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmsa.data import DATASETS, load_features, make_loader, make_synthetic, synthetic_splits
from mmsa.data.lexicon import lexicon_score
from mmsa.data.mmsa_pickle import zscore_
from mmsa.types import Batch

SIZES = {"train": 6, "valid": 3, "test": 4}


def mosi_like(seed=0, sizes=SIZES):
    """A MOSI-format file as another program (the MMSA toolkit) would write it: plain numpy."""
    rng = np.random.default_rng(seed)
    data = {}
    for name, n in sizes.items():
        ids = np.zeros((n, 50), np.int64)
        mask = np.zeros((n, 50), np.int64)
        for i in range(n):
            k = 5 + i
            ids[i, :k] = [101] + list(rng.integers(1000, 2000, k - 2)) + [102]
            mask[i, :k] = 1
        audio_len = rng.integers(10, 376, n)
        vision_len = rng.integers(10, 501, n)
        audio = rng.normal(size=(n, 375, 5)).astype(np.float32)
        vision = rng.normal(size=(n, 500, 20)).astype(np.float32)
        for i in range(n):
            audio[i, audio_len[i]:] = 0
            vision[i, vision_len[i]:] = 0
        data[name] = {
            "raw_text": np.array([f"sentence {i}" for i in range(n)]),
            "id": np.array([f"vid{i}$_${i}" for i in range(n)]),
            "text": rng.normal(size=(n, 50, 768)).astype(np.float32),
            "text_bert": np.stack([ids, mask, np.zeros_like(ids)], 1).astype(np.float32),
            "audio": audio, "vision": vision,
            "audio_lengths": list(audio_len), "vision_lengths": list(vision_len),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    return data


def write(tmp_path, data, name="mosi.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


# ------------------------------------------------------------------ the public format
def test_mosi_format_loads_and_batches(tmp_path):
    data = mosi_like()
    splits = load_features(write(tmp_path, data), "mosi")
    assert set(splits) == {"train", "valid", "test"}
    tr = splits["train"]
    assert (tr.dataset, tr.name, tr.task, tr.dims, len(tr)) == ("mosi", "train", "regression", (768, 5, 20), 6)
    assert tr.repaired == {}
    batches = list(make_loader(tr, batch_size=4))
    assert [b.size for b in batches] == [4, 2]
    b = batches[0]
    assert isinstance(b, Batch)
    assert b.text.shape == (4, 50, 768) and b.audio.shape == (4, 375, 5) and b.vision.shape == (4, 500, 20)
    assert b.text_ids.dtype == torch.long and b.text_ids.shape == (4, 50)
    assert b.text_ids[0, 0] == 101 and b.text_mask[0].sum() == 5 and b.text_lengths.tolist() == [5, 6, 7, 8]
    assert b.audio_lengths.dtype == torch.long
    assert b.audio_lengths.tolist() == list(data["train"]["audio_lengths"][:4])
    assert b.label.dtype == torch.float32
    np.testing.assert_allclose(b.label.numpy(), data["train"]["regression_labels"][:4])
    assert b.truth == {} and b.label_t is None
    assert b.ids == ["vid0$_$0", "vid1$_$1", "vid2$_$2", "vid3$_$3"]
    assert b.observed("audio").sum(1).tolist() == b.audio_lengths.tolist()


def test_folder_path_uses_default_file_name(tmp_path):
    (tmp_path / "MOSI").mkdir()
    write(tmp_path / "MOSI", mosi_like(), "unaligned_50.pkl")
    assert len(load_features(tmp_path / "MOSI", "mosi")["test"]) == 4


def test_missing_file_message(tmp_path):
    path = tmp_path / "MOSI" / "unaligned_50.pkl"
    with pytest.raises(FileNotFoundError) as err:
        load_features(path, "mosi")
    msg = str(err.value)
    assert str(path) in msg and "MMSA" in msg and "make_synthetic" in msg
    with pytest.raises(FileNotFoundError, match="unaligned_39.pkl"):
        load_features(tmp_path / "nope.pkl", "sims")
    with pytest.raises(ValueError, match="known datasets: mosi, mosei, sims"):
        load_features(path, "cmu-mosi")


def test_wrong_keys_named(tmp_path):
    data = mosi_like()
    del data["valid"]["audio_lengths"]
    with pytest.raises(KeyError) as err:
        load_features(write(tmp_path, data), "mosi")
    assert "['audio_lengths']" in str(err.value) and "regression_labels" in str(err.value)
    assert "[valid]" in str(err.value)
    with pytest.raises(KeyError, match=r"\['train', 'valid', 'test'\]"):
        load_features(write(tmp_path, {"train": {}, "dev": {}}, "x.pkl"), "mosi")


def test_wrong_dims_named(tmp_path):
    data = mosi_like()
    data["train"]["audio"] = np.zeros((6, 375, 74), np.float32)  # MOSEI audio in a MOSI file
    with pytest.raises(ValueError) as err:
        load_features(write(tmp_path, data), "mosi")
    assert "(6, 375, 74)" in str(err.value) and "expected (6, 375, 5)" in str(err.value)
    data = mosi_like()
    data["test"]["text_bert"] = data["test"]["text_bert"][:, :, :39]
    with pytest.raises(ValueError, match=r"'text_bert' has shape \(4, 3, 39\), expected \(4, 3, 50\)"):
        load_features(write(tmp_path, data), "mosi")


def test_nonfinite_values_repaired_and_counted(tmp_path, capsys):
    data = mosi_like()
    data["train"]["text"][0, 0, 0] = np.nan
    data["train"]["audio"][1, 0, :2] = -np.inf  # MOSEI's audio really has -inf
    data["test"]["vision"][0, 0, 0] = np.inf
    splits = load_features(write(tmp_path, data), "mosi")
    assert splits["train"].repaired == {"text": 1, "audio": 2}
    assert splits["test"].repaired == {"vision": 1} and splits["valid"].repaired == {}
    assert splits["train"].audio[1, 0, :2].tolist() == [0.0, 0.0]
    assert all(np.isfinite(getattr(s, m)).all() for s in splits.values() for m in ("text", "audio", "vision"))
    out = capsys.readouterr().out
    assert out.count("[mmsa.data]") == 1 and "train: text 1, audio 2" in out and "test: vision 1" in out


def test_empty_split_error(tmp_path):
    data = mosi_like(sizes={"train": 6, "valid": 0, "test": 4})
    with pytest.raises(ValueError, match=r"\[valid\]: the split is empty"):
        load_features(write(tmp_path, data), "mosi")


def test_labels_out_of_range(tmp_path):
    data = mosi_like()
    data["test"]["regression_labels"][2] = 3.5
    with pytest.raises(ValueError, match=r"outside the mosi label range \[-3.0, 3.0\]"):
        load_features(write(tmp_path, data), "mosi")
    data = mosi_like()  # a MOSI file loaded as SIMS: wrong range (and dims)
    for s in data.values():
        s["regression_labels"][:] = 2.0
    with pytest.raises(ValueError):
        load_features(write(tmp_path, data), "sims")


def test_zscore_hand_computed():
    # train audio: valid frames 1 and 3 (mean 2, std 1); the padded 100 must be ignored
    train = SimpleNamespace(audio=np.array([[[1.0], [3.0], [100.0]]], np.float32), audio_lengths=np.array([2]))
    test = SimpleNamespace(audio=np.array([[[4.0], [2.0], [0.0]]], np.float32), audio_lengths=np.array([1]))
    stats = zscore_({"train": train, "test": test}, modalities=("audio",))
    assert stats["audio"][0].tolist() == [2.0] and stats["audio"][1].tolist() == [1.0]
    assert train.audio[0, :, 0].tolist() == [-1.0, 1.0, 0.0]
    assert test.audio[0, :, 0].tolist() == [2.0, 0.0, 0.0]  # frame 2 is padding: stays 0


def test_zscore_on_load_uses_valid_train_frames(tmp_path):
    data = mosi_like()
    splits = load_features(write(tmp_path, data), "mosi", zscore=True)
    raw = data["train"]
    frames = np.concatenate([raw["vision"][i, :raw["vision_lengths"][i]] for i in range(6)])
    mean, std = frames.mean(0), frames.std(0)
    i, t = 2, int(data["test"]["vision_lengths"][2])
    np.testing.assert_allclose(splits["test"].vision[i, :t], (data["test"]["vision"][i, :t] - mean) / std, rtol=1e-4, atol=1e-5)
    assert not splits["test"].vision[i, t:].any()
    v = splits["train"].vision
    valid = np.arange(500)[None] < np.asarray(raw["vision_lengths"])[:, None]
    np.testing.assert_allclose(v[valid].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(v[valid].std(0), 1, atol=1e-3)


def test_batch_size_one_and_seeded_shuffle(tmp_path):
    tr = load_features(write(tmp_path, mosi_like()), "mosi")["train"]
    batches = list(make_loader(tr, batch_size=1))
    assert len(batches) == 6 and batches[3].text.shape == (1, 50, 768) and batches[3].label.shape == (1,)
    order = lambda seed: [i for b in make_loader(tr, 2, shuffle=True, seed=seed) for i in b.ids]
    assert order(5) == order(5) and sorted(order(5)) == sorted(tr.ids)
    assert any(order(5) != order(s) for s in (6, 7, 8))
    assert len(list(make_loader(tr, 4, drop_last=True))) == 1


# ------------------------------------------------------------------ SynthMSA
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return synthetic_splits("mosi", sizes=(240, 40, 120), seed=3, root=root, lengths=(32, 100, 100), verbose=False)


@pytest.fixture(scope="module")
def synth3(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth3")
    return synthetic_splits("3class", sizes=(150, 30, 60), seed=1, root=root, lengths=(32, 40, 49), verbose=False)


def test_make_synthetic_seeded(tmp_path):
    kw = dict(kind="sims", sizes=(5, 2, 2), lengths=(24, 30, 20), dims=(None, 4, 6))
    a = pickle.load(open(make_synthetic(tmp_path / "a.pkl", seed=0, **kw), "rb"))
    b = pickle.load(open(make_synthetic(tmp_path / "b.pkl", seed=0, **kw), "rb"))
    c = pickle.load(open(make_synthetic(tmp_path / "c.pkl", seed=1, **kw), "rb"))
    for split in ("train", "valid", "test"):
        assert a[split].keys() == b[split].keys()
        for k in a[split]:
            assert np.array_equal(a[split][k], b[split][k]), k
    assert not np.array_equal(a["train"]["audio"], c["train"]["audio"])
    assert list(a["train"]["raw_text"]) != list(c["train"]["raw_text"])
    assert not np.array_equal(a["train"]["text"], c["train"]["text"])
    s = load_features(tmp_path / "a.pkl", "synth_sims")["train"]
    assert s.dims == (384, 4, 6) and s.seq_lens == (24, 30, 20)
    assert np.abs(s.regression_labels).max() <= 1.0 and set(s.unimodal) == {"T", "A", "V"}


def test_synthetic_cached_by_name(tmp_path):
    kw = dict(kind="mosi", sizes=(3, 2, 2), seed=0, root=tmp_path, lengths=(20, 16, 16), verbose=False)
    synthetic_splits(**kw)
    files = list(tmp_path.glob("*.pkl"))
    assert len(files) == 1 and "n3-2-2" in files[0].name and "s0" in files[0].name and "L20-16-16" in files[0].name
    mtime = files[0].stat().st_mtime_ns
    synthetic_splits(**kw)
    assert files[0].stat().st_mtime_ns == mtime


def test_synth_truth_keys_and_labels(synth):
    tr = synth["train"]
    assert tr.dataset == "synth_mosi" and tr.dims == (384, 5, 20) and tr.seq_lens == (32, 100, 100)
    r, win, conf = tr.truth["reliability"], tr.truth["cue_window"], tr.truth["conflict"]
    assert r.shape == (240, 3) and win.shape == (240, 3, 2) and conf.shape == (240,)
    assert (r > 0).all() and (r <= 1).all()
    limits = [tr.text_bert[:, 1].sum(1), tr.audio_lengths, tr.vision_lengths]
    for m in range(3):
        assert (win[:, m, 0] >= 0).all() and (win[:, m, 0] < win[:, m, 1]).all() and (win[:, m, 1] <= limits[m]).all()
    frac = (win[:, 1:, 1] - win[:, 1:, 0]) / np.stack(limits[1:], 1)
    assert frac.min() >= 0.05 and frac.max() <= 0.3  # short bursts
    assert 0.03 < conf.mean() < 0.2
    y = tr.regression_labels
    assert y.min() >= -3 and y.max() <= 3 and np.allclose(y * 5, np.round(y * 5), atol=1e-4)
    assert (y < 0).mean() > 0.25 and (y > 0).mean() > 0.25 and (np.abs(y) > 2.5).mean() < 0.15
    for m in "TAV":
        assert np.allclose(tr.unimodal[m] * 5, np.round(tr.unimodal[m] * 5), atol=1e-4)
    # a conflicting sample has a unimodal label of the opposite sign
    i = np.flatnonzero(conf)
    assert (np.sign(np.stack([tr.unimodal[m][i] for m in "AV"], 1)) == -np.sign(y[i])[:, None]).any(1).mean() > 0.5
    b = next(iter(make_loader(tr, batch_size=8)))
    assert b.truth["reliability"].dtype == torch.float32 and b.truth["cue_window"].dtype == torch.long
    assert b.truth["conflict"].dtype == torch.bool and b.label_t.shape == (8,)


def test_reliability_follows_polarity(synth):
    tr = synth["train"]
    r, y = tr.truth["reliability"], tr.regression_labels
    neg, pos = y < -0.5, y > 1.5
    assert r[neg, 0].mean() > r[neg, 1:].mean() + 0.3
    assert r[pos, 1:].mean() > r[pos, 0].mean() + 0.3
    # realised for text: its words agree with the label more often on negative clips
    agree = np.sign(tr.unimodal["T"]) == np.sign(y)
    assert agree[neg].mean() > agree[pos].mean() + 0.2


def test_text_is_real_and_decodes(synth):
    from transformers import AutoTokenizer

    from mmsa.pretrained import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    tr = synth["train"]
    ids, mask = tr.text_bert[:, 0], tr.text_bert[:, 1]
    assert (ids[:, 0] == 101).all() and not (ids == 100).any()
    for i in range(20):
        decoded = tok.decode(ids[i][mask[i] == 1], skip_special_tokens=True)
        assert "".join(decoded.split()) == "".join(tr.raw_text[i].lower().split())
        t0, t1 = tr.truth["cue_window"][i, 0]
        cue = tok.convert_ids_to_tokens(ids[i, t0:t1])
        assert any(w in tr.raw_text[i].lower() for w in cue) and cue[-1] not in {".", "[SEP]"}
    assert np.all(tr.text[mask == 0] == 0) and np.abs(tr.text[mask == 1]).mean() > 0.1
    scores = np.array([lexicon_score(t) for t in tr.raw_text])
    assert np.corrcoef(scores, tr.regression_labels)[0, 1] > 0.4


def _pooled(split, window=False):
    def pool(x, lengths, win):
        t = np.arange(x.shape[1])[None]
        m = (t < lengths[:, None]) if not window else (t >= win[:, 0:1]) & (t < win[:, 1:2])
        return (x * m[..., None]).sum(1) / m.sum(1, keepdims=True)

    mask = split.text_bert[:, 1]
    feats = [pool(split.audio, split.audio_lengths, split.truth["cue_window"][:, 1]),
             pool(split.vision, split.vision_lengths, split.truth["cue_window"][:, 2])]
    if not window:
        feats.append(pool(split.text, mask.sum(1), None))
    return np.concatenate(feats, 1)


def test_signal_is_learnable(synth):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    tr, te = synth["train"], synth["test"]
    alphas = np.logspace(-2, 4, 13)
    # mean-pooled text+audio+vision, and audio+vision pooled over the true cue window only
    for window, floor in ((False, 0.25), (True, 0.45)):
        model = RidgeCV(alphas=alphas).fit(_pooled(tr, window), tr.regression_labels)
        assert r2_score(te.regression_labels, model.predict(_pooled(te, window))) > floor, window


def test_three_class_variant(synth3):
    tr = synth3["train"]
    assert tr.dataset == "synth3" and tr.task == "classification" and tr.num_classes == 3
    assert tr.dims == (384, 32, 64) and tr.seq_lens == (32, 40, 49) and (tr.vision_lengths == 49).all()
    counts = np.bincount(tr.labels, minlength=3)
    assert counts.min() >= 0.15 * len(tr)
    s = tr.regression_labels
    assert ((s < -0.5) == (tr.labels == 0)).all() and ((np.abs(s) <= 0.5) == (tr.labels == 1)).all()
    win = tr.truth["cue_window"][:, 2]
    assert (win[:, 0] >= 0).all() and (win[:, 1] <= 49).all() and (win[:, 1] - win[:, 0] >= 9).all()
    b = next(iter(make_loader(tr, batch_size=1)))
    assert b.label.dtype == torch.long and b.label.shape == (1,) and b.vision.shape == (1, 49, 64)
    # the cue block carries the sentiment: patch features inside it predict the class
    te = synth3["test"]
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(_pooled(tr, window=True)[:, 32:], s)
    assert np.corrcoef(model.predict(_pooled(te, window=True)[:, 32:]), te.regression_labels)[0, 1] > 0.5
    assert "synth3" in DATASETS and DATASETS["synth3"].task == "classification"
