"""`mmsa train`: a user's mistakes end in one clear line and exit status 2 (no traceback);
--seed fixes the initial weights; --out holds the resolved config and loadable checkpoints."""
import json
import pickle

import pytest
import torch

from mmsa.cli import main
from mmsa.checkpoint import load_trained, read_checkpoint

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


# ---------------------------------------------------------------- issue 26: every mistake is one message
def test_numbers_are_read_as_numbers(capsys, mosi_dir, tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string; --set/--train read it as the number it is."""
    code, out, err = run(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "1",
                         "--batch-size", "4", "--out", str(tmp_path / "run"), *SMALL, "dropout=1e-1",
                         "--train", "lr=1e-3", "progress=false")
    assert code == 0 and "Traceback" not in err, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["lr"] == 1e-3 and config["model_config"]["dropout"] == 0.1


def test_values_of_the_wrong_type_name_their_key(capsys, mosi_dir):
    base = ["lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir)]
    err = fails(capsys, *base, "--set", "dropout=abc")
    assert "--set dropout='abc'" in err
    err = fails(capsys, *base, "--set", "hidden_text=8", "dropout=abc")  # the culprit among several
    assert "dropout='abc'" in err and "hidden_text" not in err
    err = fails(capsys, *base, "--train", "lr=abc")
    assert "--train lr='abc'" in err and "a number" in err
    err = fails(capsys, *base, "--train", "progress=3")
    assert "progress=3" in err and "boolean" in err


def test_n_samples_checked(capsys, mosi_dir, tmp_path):
    err = fails(capsys, "lf_dnn", "--data-dir", str(tmp_path), "--n-samples", "-5")
    assert "--n-samples must be >= 8" in err and "-5" in err
    err = fails(capsys, "lf_dnn", "--data-dir", str(tmp_path), "--n-samples", "0")
    assert "--n-samples must be >= 8" in err and "got 0" in err
    err = fails(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--n-samples", "10")
    assert "--n-samples 10" in err and "mosi is read whole" in err


def _first_run(capsys, mosi_dir, out):
    argv = ["lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "1", "--batch-size", "4",
            "--train", "progress=false", "--out", str(out), *SMALL]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    return argv


def test_resume_mistakes_are_one_message_and_write_nothing(capsys, mosi_dir, tmp_path):
    out = tmp_path / "run"
    argv = _first_run(capsys, mosi_dir, out)
    config = (out / "config.json").read_bytes()
    # another model: refused before config.json is rewritten
    other = ["tfn", *argv[1:]]
    err = fails(capsys, *other, "--resume")
    assert "holds a run of model 'lf_dnn', not 'tfn'" in err
    assert (out / "config.json").read_bytes() == config
    # the same model with other sizes
    err = fails(capsys, *argv, "hidden_text=16", "--resume")
    assert "does not fit this model" in err and "(64,) now" in err
    assert (out / "config.json").read_bytes() == config
    # no usable checkpoint: each file's reason, the security reason of a refused one in full
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo never",))

    torch.save({"model": {}, "x": Evil()}, out / "last.pt")
    (out / "last.prev.pt").write_bytes(b"garbage")
    err = fails(capsys, *argv, "--resume")
    assert "no usable checkpoint in" in err and str(out / "last.pt") in err and str(out / "last.prev.pt") in err
    assert "GLOBAL" in err and "system" in err and "could run code" in err
    assert (out / "config.json").read_bytes() == config


def test_a_checkpoint_without_checksum_says_so(capsys, mosi_dir, tmp_path):
    _first_run(capsys, mosi_dir, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    del state["checksum"]
    torch.save(state, tmp_path / "old.pt")
    capsys.readouterr()
    model = load_trained(tmp_path / "old.pt")
    assert model.cfg.hidden_text == 8
    assert "carries no checksum" in capsys.readouterr().err


def test_training_with_a_progress_bar_warns_nothing(capsys, mosi_dir, tmp_path, recwarn):
    code, _, err = run(capsys, "lf_dnn", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "1",
                       "--batch-size", "4", *SMALL, "--train", "progress=true")
    assert code == 0, err
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]
    assert "requires_grad" not in err


def book_fails(capsys, *argv) -> str:
    from mmsa.book.runner import main as book_main

    code = book_main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and err.startswith("python -m mmsa.book run: error: ") \
        and err.count("\n") == 1, err
    assert "running" not in out  # nothing ran
    return err


def test_book_run_mistakes_are_checked_before_anything_runs(capsys):
    err = book_fails(capsys, "run", "--kernel", "nosuch", "--only", "00")
    assert "--kernel 'nosuch'" in err and "python3" in err
    err = book_fails(capsys, "run", "-p", "epochs", "0", "--only", "02")
    assert "parameter epochs = 0" in err and ">= 1" in err
    err = book_fails(capsys, "run", "-p", "seeds", "[]", "--only", "02")
    assert "parameter seeds = []" in err and "empty" in err


def test_train_dast_gan_counts_patience_only_after_the_gan_ramp(capsys, mosi_dir, monkeypatch):
    """`mmsa train dast_gan` sets up training as mmsa.experiment.fit does: the model's GAN schedule as
    a callback and early-stopping patience counted only after warm-up + ramp."""
    from mmsa.models.dast_gan import GANSchedule
    from mmsa.train import Trainer

    seen = {}

    def fake_fit(self, *a, **k):
        seen["start"], seen["callbacks"] = self.config.patience_start_epoch, self.callbacks
        raise SystemExit(0)

    monkeypatch.setattr(Trainer, "fit", fake_fit)
    with pytest.raises(SystemExit):
        main(["train", "dast_gan", "--dataset", "mosi", "--data-dir", str(mosi_dir), "--epochs", "2",
              "--set", "text_model=tiny", "d_model=8", "n_layers=1", "gan_warmup=3", "gan_ramp=4"])
    assert seen["start"] == 7
    assert any(isinstance(c, GANSchedule) for c in seen["callbacks"])
