"""Repository-level checks: layout, README commands, environment.yml vs pyproject, licence, environment."""
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_top_level_layout():
    for name in ["README.md", "LICENSE", "environment.yml", "pyproject.toml", "notebooks", "mmsa", "data", "figures",
                 "tests", "docs/design.md", ".ci/run"]:
        assert (ROOT / name).exists(), f"missing {name}"
    assert not (ROOT / "notebooks" / "_parts").exists(), "notebooks/_parts is a leftover of splicing"


def _spec(requirement: str) -> tuple[str, str]:
    name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)(.*)", requirement.split(";")[0].strip()).groups()
    return name.lower().replace("_", "-"), spec.strip()


def test_environment_yml_installs_the_package_and_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # the package itself with its dev extra: pip resolves every dependency from pyproject.toml
    assert any(re.fullmatch(r"-e \.\[[\w,]*\bdev\b[\w,]*\]", p) for p in pip), pip
    pinned = dict(_spec(d) for d in META["dependencies"])
    for line in pip:
        if not line.startswith("-"):  # anything listed besides the package must match pyproject
            name, spec = _spec(line)
            assert pinned.get(name) == spec, f"environment.yml pip: {line!r} vs pyproject {pinned.get(name)!r}"
    conda = [d for d in deps if isinstance(d, str)]
    python = next(d for d in conda if d.startswith("python"))
    low = META["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[-1].split("."))) >= tuple(map(int, low.split("."))), python
    torch = next(d for d in conda if d.startswith("pytorch"))  # conda-forge's name of torch
    assert torch.removeprefix("pytorch") == pinned["torch"], (torch, pinned["torch"])


def test_numpy_2_required():
    assert dict(_spec(d) for d in META["dependencies"])["numpy"] == ">=2.0"  # the code uses np.trapezoid


def test_license_file_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert META["license"] == "MIT" and text.startswith("MIT License")
    assert "Copyright (c)" in text and "mmsa-textbook authors" in text
    assert "LICENSE" in META.get("license-files", ["LICENSE"])


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]
    assert "python -m mmsa.book test" in commands
    assert "python -m mmsa.book test" in ci
    install = next(c for c in commands if c.startswith("pip install torch"))
    assert install.replace("pip install", "pip install -q") in ci or install in ci


def test_every_notebook_has_one_parameters_cell():
    import nbformat

    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert nbs, "no notebooks"
    for path in nbs:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_importing_mmsa_leaves_the_environment_unchanged():
    code = ("import json, os; before = dict(os.environ)\n"
            "import mmsa, mmsa.pretrained, mmsa.encoders, mmsa.data, mmsa.models, mmsa.train, mmsa.book\n"
            "after = dict(os.environ)\n"
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
            " if before.get(k) != after.get(k)}))")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {}


def test_packaged_minilm_loads_by_path_without_the_network():
    """No offline variables set, every socket refused: the MiniLM tokenizer and model still load."""
    code = (
        "import socket\n"
        "attempts = []\n"
        "def refuse(*a, **k): attempts.append(a); raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from transformers import AutoTokenizer, BertModel\n"
        "from mmsa.pretrained import resolve_text_model\n"
        "path = resolve_text_model('minilm')\n"
        "tok = AutoTokenizer.from_pretrained(path)\n"
        "model = BertModel.from_pretrained(path, add_pooling_layer=False)\n"
        "ids = tok(['a fine film'], return_tensors='pt')\n"
        "print(len(attempts), tuple(model(**ids).last_hidden_state.shape))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=_clean_env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "0 (1, 5, 384)"  # no connection attempted
