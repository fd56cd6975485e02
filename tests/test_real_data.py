"""A chapter runs on the public feature files by parameters alone (issue: real data, not SynthMSA).

The real MOSI/MOSEI/SIMS pickles cannot be shipped; this test writes a file in exactly their format
(MOSI shapes 50/375/500, dims 768/5/20, ``text_bert`` ids, -inf in audio) where the book expects it,
runs notebook 02 with ``-p dataset mosi -p data_dir <dir>`` (preset ``ci/realdata``), and checks
that the notebook reports the data it really read."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_data import mosi_like

ROOT = Path(__file__).resolve().parent.parent


def test_notebook_02_runs_on_a_public_format_mosi_file(tmp_path):
    data = mosi_like(seed=3, sizes={"train": 24, "valid": 8, "test": 8})
    data["train"]["audio"][0, :3, 1] = -np.inf                     # as in the public files
    (tmp_path / "MOSI").mkdir()
    with open(tmp_path / "MOSI" / "unaligned_50.pkl", "wb") as f:
        pickle.dump(data, f)
    out = ROOT / "build" / "realdata" / "metrics" / "02.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "mmsa.book", "run", "--preset", "realdata", "--only", "02",
                          "-p", "data_dir", str(tmp_path / "MOSI")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["dataset"] == "mosi" and metrics["n_train"] == 24
    assert np.isfinite(metrics["mae_emt_dlfr_r05"]) and np.isfinite(metrics["const_mae"])
    assert "leak_cls_cosine_stored" in metrics          # the text-leak section runs on real data too


def test_a_missing_real_file_names_the_path_and_the_source(tmp_path):
    from mmsa import experiment

    p = experiment.Protocol(dataset="mosi", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        experiment.load(p)
    assert "unaligned_50.pkl" in str(err.value) and "MMSA" in str(err.value)
    assert experiment.Protocol(dataset="sims").data_dir == "data/SIMS"
