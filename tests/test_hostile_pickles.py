"""Fuzz test of the feature-file loader: hostile and randomly damaged pickles never crash it.

Each file is loaded with ``load_features`` in a child process whose address space is capped at
2 GiB above what the imports took (``RLIMIT_AS``): a file may load, or end in a
``FeatureFileError`` -- never a signal (SIGSEGV), never another exception (``MemoryError``,
``RecursionError``, ...), never more memory.  Files are loaded in batches (one child per ~60
files, the import of torch is the slow part); a batch that dies is re-run one file per child
to name the culprit.  The hostile files (``hostile_pickles.py``) are assembled from raw opcodes
out of the pieces a feature file legitimately uses; with ``pickle.load`` they crash the
interpreter or conjure data out of nothing (``test_the_hostile_files_are_hostile``).
"""
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hostile_pickles import HOSTILE

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2 * 2**30
BATCH = 60

CHILD = r"""
import json, re, resource, sys
from mmsa.data import FeatureFileError, load_features
status = open("/proc/self/status").read()
vm = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + %(limit)d, resource.getrlimit(resource.RLIMIT_AS)[1]))
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
dataset = sys.argv[1]
for path in sys.argv[2:]:
    try:
        load_features(path, dataset, verbose=False)
        out = {"path": path, "result": "loaded"}
    except FeatureFileError as err:
        out = {"path": path, "result": "FeatureFileError", "message": str(err)}
    except BaseException as err:
        out = {"path": path, "result": type(err).__name__, "message": str(err)[:500]}
    print(json.dumps(out), flush=True)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
print(json.dumps({"grown": grown}), flush=True)
""" % {"limit": LIMIT}


def _run_child(dataset: str, paths: list) -> tuple[dict, int, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", CHILD, dataset, *map(str, paths)], capture_output=True,
                         text=True, timeout=300, env=env, cwd=ROOT)
    results, grown = {}, 0
    for line in res.stdout.splitlines():
        row = json.loads(line)
        if "grown" in row:
            grown = row["grown"]
        else:
            results[row["path"]] = row
    return results, res.returncode, grown


def load_all(dataset: str, paths: list) -> dict:
    """{path: result row}; a child that dies (signal, crash) is re-run one file per child."""
    out = {}
    for i in range(0, len(paths), BATCH):
        batch = paths[i:i + BATCH]
        results, code, grown = _run_child(dataset, batch)
        assert grown < LIMIT, f"loading {len(batch)} files grew the child by {grown / 2**30:.1f} GiB"
        if code == 0 and len(results) == len(batch):
            out.update(results)
            continue
        for path in batch:  # find the file that killed the batch
            one, code, _ = _run_child(dataset, [path])
            out[str(path)] = one.get(str(path)) or {"path": str(path), "result": f"child exit status {code}"
                                                    + (" (a signal)" if code < 0 else "")}
    return out


def test_enough_hostile_files():
    assert len(HOSTILE) >= 30


def test_hostile_files_end_in_a_named_refusal(tmp_path):
    paths, names = [], {}
    for i, (name, (raw, _)) in enumerate(HOSTILE.items()):
        path = tmp_path / f"hostile{i:02d}.pkl"
        path.write_bytes(raw)
        paths.append(path)
        names[str(path)] = name
    results = load_all("mosi", paths)
    bad = {names[p]: (r["result"], r.get("message", "")[:300]) for p, r in results.items()
           if r["result"] != "FeatureFileError"}
    assert not bad, bad
    for path, row in results.items():  # the message names the file and where in it
        assert row["message"].startswith(path), row
        keys = HOSTILE[names[path]][1]
        if keys:
            assert "".join(f"[{k!r}]" for k in keys) in row["message"], (names[path], row["message"])


def _small_feature_file(rng, n=3):
    """A valid SynthMSA-format file (sizes read from the file) with tiny arrays: mostly structure."""
    data = {}
    for split in ("train", "valid", "test"):
        ids = rng.integers(1, 100, (n, 4))
        data[split] = {
            "raw_text": np.array([f"text {i}" for i in range(n)], dtype=object),
            "id": np.array([f"v{i}$_$0" for i in range(n)]),
            "text": rng.normal(size=(n, 4, 6)).astype(np.float32),
            "text_bert": np.stack([ids, np.ones_like(ids), np.zeros_like(ids)], 1).astype(np.float32),
            "audio": rng.normal(size=(n, 5, 2)).astype(np.float32),
            "vision": rng.normal(size=(n, 3, 3)).astype(np.float32),
            "audio_lengths": [np.int64(5)] * n, "vision_lengths": list(range(1, n + 1)),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "regression_labels_T": np.linspace(-1, 1, n),
        }
    return data


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    raw = bytearray(raw)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        i = rng.randrange(len(raw))
        op = rng.randrange(7)
        if op == 0:
            raw[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            raw[i] = rng.randrange(256)
        elif op == 2:
            raw[i] = rng.choice(b"()}]hqtuesRb\x85\x86\x87\x93\x94\x8cKJNX.")  # opcodes, to reach deeper
        elif op == 3:
            del raw[i:i + rng.randrange(1, 16)]
        elif op == 4:
            raw[i:i] = raw[rng.randrange(len(raw)):][:rng.randrange(1, 64)]
        elif op == 5:
            raw[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            raw = raw[:i]
        if not raw:
            raw = bytearray(b"\x80")
    return bytes(raw)


def test_random_mutations_of_a_valid_file(tmp_path):
    rng = random.Random(26)
    bases = [pickle.dumps(_small_feature_file(np.random.default_rng(p)), protocol=p) for p in (2, 4, 5)]
    bases.append(bases[0].replace(b"numpy._core", b"numpy.core"))  # numpy 1.x module names (GLOBAL text)
    for i, raw in enumerate(bases):  # the unmutated files load: the mutations start from valid files
        (tmp_path / f"base{i}.pkl").write_bytes(raw)
    paths = [tmp_path / f"base{i}.pkl" for i in range(len(bases))]
    for j in range(240):
        path = tmp_path / f"mut{j:03d}.pkl"
        path.write_bytes(_mutate(bases[j % len(bases)], rng))
        paths.append(path)
    results = load_all("synth_mosi", paths)
    assert all(results[str(p)]["result"] == "loaded" for p in paths[:len(bases)]), \
        [results[str(p)] for p in paths[:len(bases)]]
    bad = {Path(p).name: (r["result"], r.get("message", "")[:300]) for p, r in results.items()
           if r["result"] not in ("loaded", "FeatureFileError")}
    assert not bad, bad
    counts = {k: sum(r["result"] == k for r in results.values()) for k in ("loaded", "FeatureFileError")}
    print(f"{len(paths)} files: {counts}")
    assert counts["FeatureFileError"] >= 100  # the mutations do reach the loader's checks


@pytest.mark.parametrize("name, check", [
    ("object array, 1 element for 1000", "crash"),
    ("ndarray constructor, zero strides", "60000 clips"),
])
def test_the_hostile_files_are_hostile(tmp_path, name, check):
    """Not vacuous: plain ``pickle.load`` (numpy and builtins only) crashes on or inflates these files."""
    path = tmp_path / "h.pkl"
    path.write_bytes(HOSTILE[name][0])
    code = ("import pickle, sys; a = pickle.load(open(sys.argv[1], 'rb'))['train']['audio']; "
            "print(a.shape[0])")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    if check == "crash":
        assert res.returncode < 0, (res.returncode, res.stdout, res.stderr[-500:])  # killed by a signal
    else:
        assert res.returncode == 0 and res.stdout.strip() == "60000", res.stderr[-500:]
