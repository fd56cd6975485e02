"""Seed-002 raw data: TESS / MVSA-Multiple parsing, 7->3 mapping, majority vote, pairing, splits,
and feature extraction with tiny random-init encoders (all files written to a tmp folder)."""
import pickle
import wave
from collections import Counter

import numpy as np
import pytest
import torch

from mmsa.data import extract, raw

EMOTION_DIRS = {"angry": "angry", "disgust": "disgust", "fear": "Fear", "happy": "happy",
                "neutral": "neutral", "ps": "pleasant_surprised", "sad": "Sad"}


def write_wav(path, n=2400, rate=24414, freq=220.0, width=2):
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes((x * 32767).astype("<i2").tobytes())


@pytest.fixture
def tess(tmp_path):
    root = tmp_path / "TESS"
    words = ["back", "dog", "bath", "pick", "bite", "chair", "learn", "road", "size", "wire"]
    for spk in ("OAF", "YAF"):
        for emo, folder in EMOTION_DIRS.items():
            d = root / f"{spk}_{folder}"
            d.mkdir(parents=True)
            for k, w in enumerate(words):
                write_wav(d / f"{spk}_{w}_{emo}.wav", n=1200 + 300 * (k % 3))
    return root


# label lines: id, then three annotators' text,image pairs
MVSA_LINES = {
    "1": "positive,positive positive,neutral neutral,neutral",  # votes 2,2,1 -> positive
    "2": "negative,neutral negative,negative positive,positive",  # 0,0,2 -> negative
    "3": "positive,negative neutral,neutral neutral,positive",  # None,1,2 -> tie -> dropped
    "4": "positive,neutral negative,neutral neutral,neutral",  # 2,0,1 -> 1-1-1 tie
    "5": "neutral,neutral neutral,neutral negative,positive",  # 1,1,None -> neutral
    "6": "positive,negative negative,positive neutral,neutral",  # None,None,1 -> 1 vote, tie
}


@pytest.fixture
def mvsa(tmp_path):
    from PIL import Image

    root = tmp_path / "MVSA"
    (root / "data").mkdir(parents=True)
    lines = ["ID\ttext,image\ttext,image\ttext,image"]
    rng = np.random.default_rng(0)
    for sid, labs in MVSA_LINES.items():
        lines.append(sid + "\t" + "\t".join(labs.split()))
        (root / "data" / f"{sid}.txt").write_text(f"tweet {sid} is here http://t.co/x  #fun\n")
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "data" / f"{sid}.jpg")
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------- TESS


@pytest.mark.parametrize("name,expected", [
    ("OAF_back_angry.wav", ("OAF", "back", "angry", 0)),
    ("YAF_dog_ps.wav", ("YAF", "dog", "ps", 2)),
    ("YAF_dog_happy.wav", ("YAF", "dog", "happy", 2)),
    ("OAF_bath_neutral.wav", ("OAF", "bath", "neutral", 1)),
    ("OAF_bath_Fear.wav", ("OAF", "bath", "fear", 0)),
    ("yaf_pick_disgust.wav", ("YAF", "pick", "disgust", 0)),
    ("YAF_pick_sad.wav", ("YAF", "pick", "sad", 0)),
    ("OAF_bite_pleasant_surprise.wav", ("OAF", "bite", "ps", 2)),
])
def test_parse_tess_name_and_7_to_3(name, expected):
    r = raw.parse_tess_name(name)
    assert (r["speaker"], r["word"], r["emotion"], r["label"]) == expected


def test_tess_mapping_table_and_errors():
    assert Counter(raw.TESS_TO_CLASS.values()) == {0: 4, 1: 1, 2: 2}
    with pytest.raises(ValueError, match="unknown TESS emotion 'bored'"):
        raw.parse_tess_name("OAF_back_bored.wav")
    with pytest.raises(ValueError, match="<speaker>_<word>_<emotion>"):
        raw.parse_tess_name("back.wav")


def test_load_tess(tess, tmp_path):
    recs = raw.load_tess(tess)
    assert len(recs) == 2 * 7 * 10
    assert Counter(r["label"] for r in recs) == {0: 80, 1: 20, 2: 40}
    assert all(r["path"].endswith(".wav") for r in recs)
    with pytest.raises(FileNotFoundError, match="TESS folder not found"):
        raw.load_tess(tmp_path / "nope")


# ---------------------------------------------------------------------------------------- MVSA


def test_pair_polarity_rule():
    assert raw.pair_polarity("positive", "positive") == 2
    assert raw.pair_polarity("neutral", "negative") == 0
    assert raw.pair_polarity("positive", "neutral") == 2
    assert raw.pair_polarity("neutral", "neutral") == 1
    assert raw.pair_polarity("positive", "negative") is None
    assert raw.pair_polarity("negative", "positive") is None


def test_majority_vote_and_ties():
    assert raw.majority_label([2, 2, 1]) == 2
    assert raw.majority_label([0, None, 0]) == 0
    assert raw.majority_label([2, 0, 1]) is None  # 1-1-1
    assert raw.majority_label([2, 0, 1], tie="neutral") == 1
    assert raw.majority_label([2, None, 0]) is None  # 1-1 with an inconsistent annotator
    assert raw.majority_label([None, None, 2]) is None  # one vote is not a majority
    assert raw.majority_label([None, None, None], tie="neutral") == 1
    with pytest.raises(ValueError, match="tie must be"):
        raw.majority_label([1, 1, 1], tie="first")


def test_parse_and_load_mvsa(mvsa):
    labels = raw.parse_mvsa_labels(mvsa / "labelResultAll.txt")
    assert {k: v["label"] for k, v in labels.items()} == {"1": 2, "2": 0, "3": None, "4": None, "5": 1, "6": None}
    assert labels["3"]["votes"] == [None, 1, 2]
    recs = raw.load_mvsa_multiple(mvsa)
    assert [r["id"] for r in recs] == ["1", "2", "5"]
    assert recs[0]["text"] == "tweet 1 is here #fun"  # URL removed, spaces collapsed
    recs_n = raw.load_mvsa_multiple(mvsa, tie="neutral")
    assert [(r["id"], r["label"]) for r in recs_n] == [("1", 2), ("2", 0), ("3", 1), ("4", 1), ("5", 1), ("6", 1)]


def test_mvsa_bad_label_is_reported(tmp_path):
    p = tmp_path / "labelResultAll.txt"
    p.write_text("ID\ttext,image\n7\tpositive,happy\n")
    with pytest.raises(ValueError, match=r":2: unknown label 'happy'"):
        raw.parse_mvsa_labels(p)


# ---------------------------------------------------------------------------------------- splits


def test_split_8_1_1_seeded():
    s = raw.split_indices(4151, seed=42)
    assert [len(s[k]) for k in raw.SPLITS] == [3321, 415, 415]  # the paper's Table 1
    assert [len(v) for v in raw.split_indices(17507).values()] == [14005, 1751, 1751]
    allidx = np.concatenate(list(s.values()))
    assert sorted(allidx.tolist()) == list(range(4151))
    again = raw.split_indices(4151, seed=42)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = raw.split_indices(4151, seed=7)
    assert not np.array_equal(s["test"], other["test"])
    # stratified: same sizes, and every split keeps the class proportions (here 4:1:2)
    labels = np.repeat([0, 1, 2], [80, 20, 40])
    st = raw.split_indices(140, seed=0, labels=labels)
    assert [len(st[k]) for k in raw.SPLITS] == [112, 14, 14]
    for k in ("valid", "test"):
        counts = np.bincount(labels[st[k]], minlength=3)
        assert np.abs(counts - np.array([8, 2, 4])).max() <= 1 and counts.min() >= 1


def test_pair_by_class_seeded_and_balanced():
    audio = [{"id": f"a{k}", "path": f"a{k}.wav", "label": k % 3, "emotion": "x"} for k in range(9)]
    ti = [{"id": str(k), "text": "t", "image": "i.jpg", "label": k % 3} for k in range(30)]
    p1 = raw.pair_by_class(ti, audio, seed=3)
    assert len(p1) == 30
    label_of = {a["id"]: a["label"] for a in audio}
    assert all(label_of[p["audio_id"]] == p["label"] for p in p1)
    # each class has 3 clips and 10 text-image pairs: reuse is balanced (3 or 4 times each)
    assert set(Counter(p["audio_id"] for p in p1).values()) <= {3, 4}
    assert p1 == raw.pair_by_class(ti, audio, seed=3)
    assert p1 != raw.pair_by_class(ti, audio, seed=4)
    with pytest.raises(ValueError, match="no audio clip of class 'neutral'"):
        raw.pair_by_class(ti, [a for a in audio if a["label"] != 1])


def test_build_tess_mvsa(tess, mvsa):
    splits = raw.build_tess_mvsa(tess, mvsa, seed=0, tie="neutral")
    assert sum(len(v) for v in splits.values()) == 6
    tess_ids = {s: {r["audio_id"] for r in v} for s, v in splits.items()}
    assert not (tess_ids["train"] & tess_ids["test"])  # audio clips never cross splits
    for recs in splits.values():
        for r in recs:
            assert raw.parse_tess_name(r["audio"])["label"] == r["label"]


# ---------------------------------------------------------------------------------------- extraction


def test_read_wav_resamples_to_16k(tmp_path):
    write_wav(tmp_path / "a.wav", n=24414, rate=24414, freq=100.0)
    x = extract.read_wav(tmp_path / "a.wav")
    assert x.dtype == np.float32 and len(x) == 16000
    assert 0.45 < np.abs(x).max() <= 0.51
    # 100 Hz for 1 s: 200 sign changes
    assert abs(int((np.diff(np.sign(x)) != 0).sum()) - 200) <= 2


def test_load_image_shape(mvsa):
    x = extract.load_image(mvsa / "data" / "1.jpg")
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32


def tiny_encoders(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel, Wav2Vec2Config, Wav2Vec2Model

    from mmsa.pretrained import minilm_dir

    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    text_dir = tmp_path / "tiny_bert"
    bert.save_pretrained(text_dir)
    tok.save_pretrained(text_dir)
    w2v = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=False))
    audio_dir = tmp_path / "tiny_w2v"
    w2v.save_pretrained(audio_dir)
    return text_dir, audio_dir


def test_extraction_end_to_end(tess, mvsa, tmp_path):
    text_dir, audio_dir = tiny_encoders(tmp_path)
    text_enc = extract.load_text_encoder(text_dir)
    audio_enc = extract.load_audio_encoder(audio_dir)
    image_enc = extract.TinyImageCNN(channels=8)
    splits = raw.build_tess_mvsa(tess, mvsa, seed=0, tie="neutral")
    out = tmp_path / "feats" / "tess_mvsa.pkl"
    data = extract.write_features(splits, out, text_enc, audio_enc, image_enc, max_text_len=12)
    with open(out, "rb") as f:
        loaded = pickle.load(f)
    assert set(loaded) == {"train", "valid", "test"}
    tr = loaded["train"]
    n = len(splits["train"])
    assert tr["text"].shape == (n, 12, 16) and tr["text_bert"].shape == (n, 3, 12)
    assert tr["text_bert"][:, 0, 0].tolist() == [101] * n  # [CLS]
    assert tr["vision"].shape == (n, 49, 8)
    assert tr["audio"].ndim == 3 and tr["audio"].shape[2] == 16
    assert tr["audio"].shape[1] == loaded["test"]["audio"].shape[1]  # common padded length
    # 16 kHz clip of L samples -> frames of the two-conv stack: floor((floor((L-10)/5+1)-4)/4+1)
    L = len(extract.read_wav(splits["train"][0]["audio"]))
    assert tr["audio_lengths"][0] == ((L - 10) // 5 + 1 - 4) // 4 + 1
    assert tr["classification_labels"].tolist() == [r["label"] for r in splits["train"]]
    assert np.array_equal(tr["regression_labels"], tr["classification_labels"] - 1)
    assert data["train"]["id"].tolist() == [r["id"] for r in splits["train"]]
    # padded text positions hold zero features
    mask = tr["text_bert"][:, 1]
    assert np.abs(tr["text"][mask == 0]).max() == 0
    # the file passes the shared loader's checks for the 3-class format
    loader = pytest.importorskip("mmsa.data.mmsa_pickle")
    split = loader.load_features(out, "synth3")["train"]
    assert split.dims == (16, 16, 8) and split.task == "classification"
    assert split.labels.tolist() == tr["classification_labels"].tolist()


def test_missing_weights_and_timm_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="wav2vec 2.0 checkpoint"):
        extract.load_audio_encoder(tmp_path / "none")
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install timm"):
            extract.load_image_encoder()


def test_image_features_grid_and_row_major():
    class Ident(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward_features(self, x):
            return x[:, :, :7, :7]  # the input itself as a 7x7 "feature map"

    x = torch.arange(3 * 7 * 7, dtype=torch.float32).reshape(3, 7, 7)
    out = extract.image_features([x], Ident())
    assert out.shape == (1, 49, 3)
    assert out[0, 8, 0] == x[0, 1, 1]  # token k = (row k // 7, col k % 7)
    big = extract.image_features([torch.randn(3, 64, 64)], extract.TinyImageCNN(channels=8))
    assert big.shape == (1, 49, 8)
