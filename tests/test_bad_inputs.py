"""Bad-input sweep: a valid public-format file (MOSI keys and shapes, small N) under many
corruptions.  Each one must end in a clear ``FeatureFileError`` naming the file, the key and what
was expected, or in a reported repair (counted in ``split.repaired`` and printed) after which a
model runs on the data and gives finite outputs -- never a crash inside a model, never silent
garbage.  ``len(ERRORS) + len(REPAIRS)`` is the number of corruptions covered."""
import pickle

import numpy as np
import pytest
import torch

from mmsa import models
from mmsa.data import FeatureFileError, load_features, make_loader
from mmsa.data.mmsa_pickle import FeatureKeyError

from test_data import mosi_like


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo should-never-run",))


def put(split, key, value):
    def mutate(d):
        d[split][key] = value(d[split]) if callable(value) else value
    return mutate


def setitem(split, key, index, value):
    def mutate(d):
        arr = np.array(d[split][key], dtype=np.float64 if isinstance(value, float) else None)
        arr[index] = value
        d[split][key] = arr
    return mutate


def ragged_text_bert(d):
    tb = d["train"]["text_bert"]
    d["train"]["text_bert"] = [tb[i] if i % 2 else tb[i][:, :40] for i in range(len(tb))]


def ragged_object_text_bert(d):
    tb = d["train"]["text_bert"]
    arr = np.empty(len(tb), dtype=object)
    for i in range(len(tb)):
        arr[i] = tb[i] if i % 2 else tb[i][:, :40]
    d["train"]["text_bert"] = arr


def drop(split, key):
    def mutate(d):
        del d[split][key]
    return mutate


def shorten(split, key, n=1):
    return put(split, key, lambda s: np.asarray(s[key])[:-n])


# name -> (mutation of the dict, or a function returning the file bytes; dataset; regex the message must match)
ERRORS = {
    "missing key": (drop("train", "audio"), "mosi", r"\[train\]: missing key\(s\) \['audio'\]"),
    "missing split": (lambda d: d.pop("test"), "mosi", r"splits \['train', 'valid', 'test'\]"),
    "top level not a dict": (lambda d: list(d.values()), "mosi", r"got a list"),
    "split not a dict": (put("valid", None, None), "mosi", r"\[valid\]: a split must be a dict"),
    "audio as strings (wrong dtype)": (put("train", "audio", lambda s: s["audio"].astype(str)), "mosi",
                                       r"'audio' has dtype <U"),
    "labels as strings (wrong dtype)": (put("test", "regression_labels", lambda s: np.array(["pos"] * 4)), "mosi",
                                        r"'regression_labels' has dtype <U"),
    "labels as objects": (put("test", "regression_labels", lambda s: np.array([None, "x", 1, 2], object)),
                          "mosi", r"'regression_labels' is an object array holding \['NoneType', 'str'\]"),
    "audio rank 2 (wrong rank)": (put("train", "audio", lambda s: s["audio"][:, :, 0]), "mosi",
                                  r"'audio' has shape \(6, 375\), expected \(6, 375, 5\) \(rank 2 instead of 3"),
    "labels rank 2 (wrong rank)": (put("train", "regression_labels", np.zeros((6, 2), np.float32)), "mosi",
                                   r"'regression_labels' has shape \(6, 2\), expected \(N,\)"),
    "vision feature size": (put("train", "vision", np.zeros((6, 500, 35), np.float32)), "mosi",
                            r"'vision' has shape \(6, 500, 35\), expected \(6, 500, 20\)"),
    "text length": (put("train", "text", np.zeros((6, 40, 768), np.float32)), "mosi",
                    r"'text' has shape \(6, 40, 768\), expected \(6, 50, 768\)"),
    "MOSI file read as SIMS": (lambda d: None, "sims", r"'text' has shape \(6, 50, 768\), expected \(6, 39, 768\).*right dataset"),
    "NaN label": (setitem("train", "regression_labels", 2, np.nan), "mosi",
                  r"'regression_labels' contains 1 NaN/inf label\(s\) \(first at index 2\)"),
    "+inf label": (setitem("valid", "regression_labels", 0, np.inf), "mosi", r"\[valid\]: 'regression_labels' contains 1 NaN/inf"),
    "-inf unimodal label": (put("train", "regression_labels_T", np.array([0, 0, -np.inf, 0, 0, 0])), "mosi",
                            r"'regression_labels_T' contains 1 NaN/inf"),
    "label out of range": (setitem("test", "regression_labels", 1, 7.0), "mosi", r"outside the mosi label range \[-3.0, 3.0\]"),
    "empty split": (lambda d: d.update(valid=mosi_like(sizes={"valid": 0})["valid"]), "mosi", r"\[valid\]: the split is empty"),
    "N differs: audio": (shorten("train", "audio"), "mosi", r"'audio' has shape \(5, 375, 5\).*5 samples, but 'regression_labels' has N=6"),
    "N differs: text_bert": (shorten("test", "text_bert"), "mosi", r"'text_bert' has shape \(3, 3, 50\).*3 samples, but"),
    "N differs: lengths": (put("train", "audio_lengths", lambda s: list(s["audio_lengths"]) + [3]), "mosi",
                           r"'audio_lengths' has shape \(7,\), expected \(6,\)"),
    "N differs: ids": (shorten("train", "id", 2), "mosi", r"'id' has 4 entries, expected N=6"),
    "N differs: raw_text": (shorten("valid", "raw_text"), "mosi", r"'raw_text' has 2 entries, expected N=3"),
    "text ids beyond vocabulary": (lambda d: d["train"]["text_bert"].__setitem__((1, 0, 2), 40000), "mosi",
                                   r"token ids must lie in \[0, 30522\) for mosi; 1 ids lie outside"),
    "SIMS ids beyond the Chinese vocabulary": (None, "sims-vocab", r"token ids must lie in \[0, 21128\) for sims"),
    "negative text ids": (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), -5), "mosi", r"1 ids lie outside \(min -5"),
    "fractional text ids": (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), 101.5), "mosi",
                            r"'text_bert' holds non-integer or non-finite values"),
    "NaN text ids": (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), np.nan), "mosi", r"non-integer or non-finite"),
    "mask not 0/1": (lambda d: d["train"]["text_bert"].__setitem__((0, 1, 1), 2), "mosi", r"attention mask and must be 0/1"),
    "ragged text_bert (list)": (ragged_text_bert, "mosi", r"'text_bert' cannot be read as one array"),
    "ragged text_bert (object array)": (ragged_object_text_bert, "mosi", r"'text_bert' is an object array holding \['ndarray'\]"),
    "zero-length sequence axis": (put("train", "audio", np.zeros((6, 0, 5), np.float32)), "synth_mosi",
                                  r"'audio' has shape \(6, 0, 5\): zero-length sequences"),
    "truncated file": (lambda raw: raw[: len(raw) // 3], "mosi", r"cannot be read as a feature pickle.*truncated"),
    "empty file": (lambda raw: b"", "mosi", r"it is empty"),
    "not a pickle (a zip archive)": (lambda raw: b"PK\x03\x04" + raw[4:100], "mosi", r"not an MMSA feature pickle"),
    "pickle that would run code": (put("train", "extra", Evil()), "mosi", r"refused to unpickle '(posix|os|nt)\.system'"),
}
FILE_LEVEL = {"truncated file", "empty file", "not a pickle (a zip archive)"}

# name -> (mutation, {split: {what: count}} expected in split.repaired)
REPAIRS = {
    "zero length": (setitem("train", "audio_lengths", 0, 0), {"train": {"audio_lengths": 1}}),
    "length beyond the array": (setitem("test", "vision_lengths", 3, 900), {"test": {"vision_lengths": 1}}),
    "negative lengths": (setitem("train", "vision_lengths", [1, 2], -4), {"train": {"vision_lengths": 2}}),
    "NaN length": (setitem("valid", "audio_lengths", 1, np.nan), {"valid": {"audio_lengths": 1}}),
    "fractional length": (setitem("train", "audio_lengths", 5, 12.5), {"train": {"audio_lengths": 1}}),
    "NaN text features": (lambda d: d["train"]["text"].__setitem__((0, 3, slice(0, 4)), np.nan), {"train": {"text": 4}}),
    "-inf audio (as in MOSEI)": (lambda d: d["valid"]["audio"].__setitem__((2, 0), -np.inf), {"valid": {"audio": 5}}),
    "float64 beyond float32": (put("test", "vision", lambda s: np.where(np.arange(500)[None, :, None] == 0,
                                                                        np.float64(1e300), s["vision"].astype(np.float64))),
                               {"test": {"vision": 4 * 20}}),
    "all-zero text mask": (lambda d: d["train"]["text_bert"][3, 1].__imul__(0), {"train": {"text_lengths": 1}}),
}


def _write(tmp_path, name, mutate, dataset):
    data = mosi_like()
    path = tmp_path / "unaligned_50.pkl"
    if name in FILE_LEVEL:
        path.write_bytes(mutate(pickle.dumps(data)))
        return path, dataset
    if dataset == "sims-vocab":  # a SIMS-shaped file with an English-vocabulary id
        data = {k: dict(v) for k, v in mosi_like().items()}
        for s in data.values():
            n = len(s["id"])
            s["text"] = np.zeros((n, 39, 768), np.float32)
            s["text_bert"] = s["text_bert"][:, :, :39].copy()
            s["audio"], s["vision"] = np.zeros((n, 400, 33), np.float32), np.zeros((n, 55, 709), np.float32)
            s["audio_lengths"], s["vision_lengths"] = [10] * n, [10] * n
            s["regression_labels"] = s["regression_labels"] / 3
        data["train"]["text_bert"][0, 0, 1] = 25000
        dataset = "sims"
    else:
        if name == "split not a dict":
            data["valid"] = ["not", "a", "dict"]
        else:
            out = mutate(data)
            data = out if isinstance(out, list) else data
    path.write_bytes(pickle.dumps(data))
    return path, dataset


def test_enough_corruptions_covered():
    assert len(ERRORS) + len(REPAIRS) >= 20
    print(f"{len(ERRORS)} corruptions end in a named error, {len(REPAIRS)} in a reported repair")


@pytest.mark.parametrize("name", list(ERRORS))
def test_corruption_gives_a_clear_error(tmp_path, name):
    mutate, dataset, pattern = ERRORS[name]
    path, dataset = _write(tmp_path, name, mutate, dataset)
    with pytest.raises(FeatureFileError, match=pattern) as err:
        load_features(path, dataset, verbose=False)
    assert str(path) in str(err.value)  # every message names the file
    if name.startswith("missing"):
        assert isinstance(err.value, (FeatureKeyError, KeyError))


@pytest.mark.parametrize("name", list(REPAIRS))
def test_corruption_is_repaired_and_reported(tmp_path, name, capsys):
    mutate, expected = REPAIRS[name]
    path, _ = _write(tmp_path, name, mutate, "mosi")
    splits = load_features(path, "mosi")
    assert {k: s.repaired for k, s in splits.items() if s.repaired} == expected
    out = capsys.readouterr().out
    assert out.count("[mmsa.data]") == 1 and str(path) in out
    for split_name, counts in expected.items():
        for what, n in counts.items():
            assert f"{split_name}: " in out and f"{what} {n}" in out
    for s in splits.values():  # what a model sees is finite, lengths inside 1..T, every text has a token
        assert all(np.isfinite(getattr(s, m)).all() for m in ("text", "audio", "vision"))
        for m in ("audio", "vision"):
            lengths = getattr(s, f"{m}_lengths")
            assert lengths.dtype == np.int64 and lengths.min() >= 1 and lengths.max() <= getattr(s, m).shape[1]
        assert s.text_bert[:, 1].sum(1).min() >= 1
    # and a model that packs sequences by their lengths runs on it with finite outputs
    torch.manual_seed(0)
    for model_name in ("tfn", "misa"):
        model = models.build_for_data(model_name, splits["train"]).eval()
        for split in splits.values():
            for batch in make_loader(split, 8):
                out = model(batch)
                assert torch.isfinite(out.pred).all() and torch.isfinite(out.loss)


def test_legitimate_variants_load_unchanged(tmp_path):
    """Not corruptions: (N, 1) labels, lengths as lists, numbers stored in object arrays."""
    data = mosi_like()
    data["train"]["regression_labels"] = data["train"]["regression_labels"][:, None]
    data["valid"]["regression_labels"] = np.array(list(data["valid"]["regression_labels"]), dtype=object)
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data))
    splits = load_features(path, "mosi")
    assert all(not s.repaired for s in splits.values())
    np.testing.assert_allclose(splits["train"].labels, mosi_like()["train"]["regression_labels"])
    assert splits["valid"].labels.dtype == np.float32
