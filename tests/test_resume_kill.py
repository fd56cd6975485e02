"""Training killed at any moment loses at most one epoch and resumes to the same result.

The end-to-end test runs ``mmsa train ... --out DIR`` in subprocesses and SIGKILLs them several
times on a schedule drawn from a seeded RNG: at random moments, in the middle of writing
``last.pt`` (half the bytes written), between the two renames that rotate ``last.pt`` into
``last.prev.pt``, and once it also corrupts ``last.pt`` on disk.  Each time it resumes with
``--resume``; the final metrics and history equal those of an uninterrupted run (exactly, on CPU).
The unit tests below check the fallback rules of ``Trainer.load_checkpoint`` in-process.
"""
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmsa.checkpoint import checksum, previous_checkpoint, read_checkpoint
from mmsa.train import Trainer

from test_data import mosi_like
from test_train import cfg, data, loader, model  # noqa: F401  (data is a fixture)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--set", "hidden_text=16", "hidden_audio=4", "hidden_vision=4", "post_fusion_dim=16"]
EPOCHS = 16

# Runs the CLI with torch.save / os.replace wrapped so that the process SIGKILLs itself
# (mode "partial") after writing half of its n-th last.pt, or (mode "rename") right after the
# n-th rotation last.pt -> last.prev.pt, before the new last.pt is renamed into place.
KILLER = r"""
import io, os, signal, sys, torch
mode, n = sys.argv[1], int(sys.argv[2])
count = [0]
real_save, real_replace = torch.save, os.replace
def save(obj, f, *a, **k):
    if mode == "partial" and str(getattr(f, "name", "")).endswith("last.pt.tmp"):
        count[0] += 1
        if count[0] == n:
            buf = io.BytesIO()
            real_save(obj, buf, *a, **k)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
def replace(src, dst, *a, **k):
    real_replace(src, dst, *a, **k)
    if mode == "rename" and str(dst).endswith("last.prev.pt"):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
torch.save, os.replace = save, replace
from mmsa.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _start(out, data_dir, prefix=(), resume=False):
    args = ["train", "lf_dnn", "--dataset", "mosi", "--data-dir", str(data_dir), "--epochs", str(EPOCHS),
            "--batch-size", "4", "--seed", "7", "--out", str(out), "--train", "progress=false",
            "--train", "patience=1000", *MODEL]
    if resume:
        args.append("--resume")
    cmd = [sys.executable, *prefix, *args] if prefix else [sys.executable, "-m", "mmsa.cli", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs_done(out) -> int:
    try:
        return len(json.loads((Path(out) / "history.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _resumed_epoch(stderr: str):
    m = re.search(r"resuming from \S+ \(epoch (\d+) done\)", stderr)
    return int(m.group(1)) if m else None


def _history(out):
    return [{k: v for k, v in h.items() if k != "train_seconds"}
            for h in json.loads((Path(out) / "history.json").read_text())]


def test_killed_training_resumes_identically(tmp_path):
    data_dir = tmp_path / "MOSI"
    data_dir.mkdir()
    with open(data_dir / "unaligned_50.pkl", "wb") as f:
        pickle.dump(mosi_like(seed=1, sizes={"train": 40, "valid": 8, "test": 8}), f)
    reference = _start(tmp_path / "ref", data_dir)  # runs beside the killed ones
    out = tmp_path / "killed"
    rng = random.Random(2024)
    schedule = ["timed", "partial", "rename", "timed+corrupt"]
    done_at_kill, resumed_at, stderrs = [], [], []
    for i, kind in enumerate(schedule):
        n = rng.randint(1, 2)
        if kind in ("partial", "rename"):
            proc = _start(out, data_dir, prefix=["-c", KILLER, kind, str(n)], resume=i > 0)
            proc.wait(timeout=120)
        else:
            proc = _start(out, data_dir, resume=i > 0)
            target = _epochs_done(out) + rng.randint(1, 2)
            t0 = time.monotonic()
            while _epochs_done(out) < target and proc.poll() is None and time.monotonic() - t0 < 120:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05))  # a random moment of the next epoch (~50 ms each)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        stderr = proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL, (kind, proc.returncode, stderr[-2000:])
        stderrs.append(stderr)
        if i > 0:
            resumed_at.append(_resumed_epoch(stderr))
        done_at_kill.append(_epochs_done(out))
        if kind == "timed+corrupt":  # bit rot in the newest checkpoint: the checksum must catch it
            corrupted_epoch = read_checkpoint(out / "last.pt")["epoch"]
            raw = bytearray((out / "last.pt").read_bytes())
            for j in range(int(len(raw) * 0.5), int(len(raw) * 0.5) + 64):
                raw[j] ^= 0xFF
            (out / "last.pt").write_bytes(bytes(raw))
    final = _start(out, data_dir, resume=True)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr[-3000:]
    resumed_at.append(_resumed_epoch(stderr))
    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-3000:]

    # the kill between the renames left no last.pt, the corruption was noticed: both said so
    assert "last.pt: missing -- using the previous checkpoint" in stderrs[3]
    assert "is corrupt" in stderr and "using the previous checkpoint" in stderr and "last.prev.pt" in stderr
    # at most one epoch lost per kill: history.json is written just after last.pt, so the resumed
    # epoch is the last one in the history (+1 if killed between the two writes), or one less
    for done, resumed in zip(done_at_kill, resumed_at):
        assert resumed is not None and done - 1 <= resumed <= done + 1, (done_at_kill, resumed_at)
    assert resumed_at[-1] == corrupted_epoch - 1  # the corrupt last.pt cost exactly one epoch
    # ... and the end result is the uninterrupted one, exactly
    assert json.loads((out / "test_metrics.json").read_text()) == json.loads((tmp_path / "ref" / "test_metrics.json").read_text())
    assert _history(out) == _history(tmp_path / "ref")
    assert [h["epoch"] for h in _history(out)] == list(range(1, EPOCHS + 1))


# ------------------------------------------------------------------ load_checkpoint fallback rules
def _two_epochs(tmp_path, data):
    tr, va, _ = data
    t = Trainer(model(), cfg(epochs=2, out_dir=str(tmp_path)))
    t.fit(loader(tr, True), loader(va))
    return tmp_path / "last.pt"


def _resume_and_compare(tmp_path, data, capsys, expect_epoch):
    tr, va, te = data
    full = Trainer(model(), cfg(epochs=4))
    full.fit(loader(tr, True), loader(va))
    resumed = Trainer(model(), cfg(epochs=4, out_dir=str(tmp_path)))
    resumed.fit(loader(tr, True), loader(va), resume=True)
    err = capsys.readouterr().err
    assert f"(epoch {expect_epoch} done)" in err
    assert resumed.evaluate(loader(te)) == full.evaluate(loader(te))
    return err


def test_corrupt_last_falls_back_to_previous(tmp_path, data, capsys):
    last = _two_epochs(tmp_path, data)
    assert previous_checkpoint(last).name == "last.prev.pt"
    assert read_checkpoint(previous_checkpoint(last))["epoch"] == 1 and read_checkpoint(last)["epoch"] == 2
    raw = bytearray(last.read_bytes())
    weights = max(read_checkpoint(last)["model"].values(), key=lambda t: t.numel())
    at = raw.find(weights.numpy().tobytes())  # tensors are stored uncompressed
    assert at > 0
    raw[at + 100] ^= 0x01  # one flipped bit inside the weights: torch.load does not notice it
    last.write_bytes(bytes(raw))
    assert torch.load(last, weights_only=True)["epoch"] == 2
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(last)
    err = _resume_and_compare(tmp_path, data, capsys, expect_epoch=1)
    assert "last.pt: ValueError" in err and "using the previous checkpoint" in err


def test_truncated_or_missing_last_falls_back(tmp_path, data, capsys):
    last = _two_epochs(tmp_path, data)
    last.write_bytes(last.read_bytes()[:1000])  # a partial file
    err = _resume_and_compare(tmp_path, data, capsys, expect_epoch=1)
    assert "using the previous checkpoint" in err
    last.unlink()  # killed between the two renames: only last.prev.pt is left
    (tmp_path / "last.prev.pt").replace(tmp_path / "keep.pt")
    _two_epochs(tmp_path, data)
    last.unlink()
    err = _resume_and_compare(tmp_path, data, capsys, expect_epoch=1)
    assert "last.pt: missing" in err


def test_no_usable_checkpoint_is_an_error(tmp_path, data):
    t = Trainer(model(), cfg(out_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        t.load_checkpoint()
    last = _two_epochs(tmp_path, data)
    for p in (last, previous_checkpoint(last)):
        p.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no usable checkpoint.*last.pt.*last.prev.pt"):
        Trainer(model(), cfg(out_dir=str(tmp_path))).load_checkpoint()


def test_checksum_detects_a_changed_tensor(tmp_path, data):
    last = _two_epochs(tmp_path, data)
    state = torch.load(last, weights_only=True)  # plain weights_only load works
    assert state["checksum"] == checksum({k: v for k, v in state.items() if k != "checksum"})
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1e-3
    torch.save(state, last)
    with pytest.raises(ValueError, match="do not match the checksum"):
        read_checkpoint(last)
