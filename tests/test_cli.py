"""`mmsa train`: a user's mistakes end in one clear line and exit status 2 (no traceback);
--seed fixes the initial weights; --out holds the resolved config and loadable checkpoints."""
import json
import pickle

import pytest
import torch

from mmsa.cli import main
from mmsa.train import load_trained, read_checkpoint

from test_data import mosi_like

SMALL = ["--set", "hidden_text=8", "hidden_audio=4", "hidden_vision=4", "post_fusion_dim=8"]


@pytest.fixture(scope="module")
def mosi_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("MOSI")
    with open(folder / "unaligned_50.pkl", "wb") as f:
        pickle.dump(mosi_like(seed=2, sizes={"train": 12, "valid": 4, "test": 4}), f)
    return folder


def run(capsys, *argv):
    code = main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and err.startswith("mmsa: error: ") and err.count("\n") == 1, err
    return err


def test_unknown_model(capsys, mosi_dir):
    err = fails(capsys, "nosuch", "--dataset", "mosi", "--data-dir", str(mosi_dir))
    assert "unknown model 'nosuch'" in err and "lf_dnn" in err and "dast_gan" in err


def test_unknown_dataset(capsys):
    err = fails(capsys, "lf_dnn", "--dataset", "nosuch")
    assert "unknown dataset 'nosuch'" in err and "mosi, mosei, sims, synth_mosi, synth_sims, synth3" in err


def test_unknown_model_config_key(capsys, mosi_dir):
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--set", "hidden_txt=8")
    assert "hidden_txt" in err and "hidden_text" in err and "valid keys" in err


def test_unknown_and_bad_train_config(capsys, mosi_dir):
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--train", "epoch=3")
    assert "'epoch'" in err and "epochs" in err and "valid keys" in err
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--train", "optimizer=sgd")
    assert "optimizer must be 'adam' or 'adamw', got 'sgd'" in err
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--train", "epochs")
    assert "--train expects key=value, got 'epochs'" in err


def test_missing_data_file(capsys, tmp_path):
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(tmp_path))
    assert str(tmp_path / "unaligned_50.pkl") in err and "data/README.md" in err


def test_truncated_data_file(capsys, tmp_path, mosi_dir):
    raw = (mosi_dir / "unaligned_50.pkl").read_bytes()
    path = tmp_path / "unaligned_50.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(path))
    assert str(path) in err and "truncated" in err


def test_wrong_format_data_file(capsys, tmp_path, mosi_dir):
    path = tmp_path / "features.pkl"
    path.write_text("id,text,label\n1,hello,0.5\n")  # a CSV saved under a .pkl name
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(path))
    assert str(path) in err and "not an MMSA feature pickle" in err
    data = mosi_like(seed=2, sizes={"train": 4, "valid": 2, "test": 2})  # a MOSI file read as SIMS
    path = tmp_path / "mosi_as_sims.pkl"
    path.write_bytes(pickle.dumps(data))
    err = fails(capsys, "lf_dnn", "--dataset", "sims", "--data-dir", str(path))
    assert str(path) in err and "right dataset" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda(capsys, mosi_dir):
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--device", "cuda")
    assert "'cuda'" in err and "CUDA is not available" in err and "auto, cpu" in err
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--train", "device=cuda:1")
    assert "'cuda:1'" in err and "auto, cpu" in err


def test_other_mistakes(capsys, mosi_dir):
    base = ["lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir)]
    assert "unknown device 'gpu'" in fails(capsys, *base, "--device", "gpu")
    assert "--missing expects PATTERN:RATE" in fails(capsys, *base, "--missing", "random")
    assert "'sometimes:0.3'" in fails(capsys, *base, "--missing", "sometimes:0.3")
    assert "--resume needs --out" in fails(capsys, *base, "--resume")
    assert "--epochs must be >= 1" in fails(capsys, *base, "--epochs", "0")
    with pytest.raises(SystemExit) as exit_:  # argparse's own errors use status 2 as well
        main(["train"])
    assert exit_.value.code == 2


def test_seed_fixes_initial_weights_and_out_holds_the_config(capsys, mosi_dir, tmp_path):
    argv = ["lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "1", "--batch-size", "4",
            "--train", "progress=false", "restore_best=false", *SMALL]
    results = []
    for i, (global_seed, seed) in enumerate([(0, 5), (123, 5), (0, 6)]):
        torch.manual_seed(global_seed)  # whatever ran before must not matter: --seed decides
        code, out, _ = run(capsys, *argv, "--seed", str(seed), "--out", str(tmp_path / f"run{i}"))
        assert code == 0
        results.append(read_checkpoint(tmp_path / f"run{i}" / "last.pt")["model"])
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)
    assert same(results[0], results[1]) and not same(results[0], results[2])

    config = json.loads((tmp_path / "run0" / "config.json").read_text())
    assert config["model"] == "lf_dnn" and config["seed"] == 5 and config["dataset"] == "mosi"
    assert config["model_config"]["hidden_text"] == 8 and config["model_config"]["text_dim"] == 768
    assert config["train_config"]["epochs"] == 1 and config["train_config"]["out_dir"] == str(tmp_path / "run0")
    for name in ("best.pt", "last.pt"):  # plain weights_only loads; name and config inside
        state = torch.load(tmp_path / "run0" / name, weights_only=True)
        assert state["model_name"] == "lf_dnn" and state["model_config"] == config["model_config"]
    model = load_trained(tmp_path / "run0" / "best.pt")
    assert model.cfg.hidden_text == 8 and not model.training
    assert same(model.state_dict(), read_checkpoint(tmp_path / "run0" / "best.pt")["model"])


def test_resume_without_a_checkpoint_starts_fresh(capsys, mosi_dir, tmp_path):
    argv = ["lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "2", "--batch-size", "4",
            "--seed", "3", "--train", "progress=false", *SMALL]
    code, out, err = run(capsys, *argv, "--out", str(tmp_path / "a"), "--resume")
    assert code == 0 and "no checkpoint in" in err and "starting from epoch 1" in err
    code, out2, _ = run(capsys, *argv, "--out", str(tmp_path / "b"))
    assert json.loads(out) == json.loads(out2)
