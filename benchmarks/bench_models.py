"""Training-step speed and peak memory of every registered model at the papers' sizes.

One *step* is what the book's Trainer does per batch: forward, the model's full training loss,
backward, Adam (and, for DAST-GAN, the discriminator step of its GAN schedule, after the ramp so
that the adversarial term is paid).  Every training batch is made incomplete by the book's
training transform (random missing rate in [0, 0.6]), as the Trainer does.

Data: a MOSI-format feature pickle that this script writes (the public layout of data/README.md:
text 50 BERT ids, audio 375 x 5, vision 500 x 20, random lengths), read with
``mmsa.data.load_features`` like a downloaded file.  Text goes through the packaged MiniLM: fine-tuned
where the model's preset says so (EMT-DLFR, DAST-GAN, MISA, Self-MM, TFR-Net), else frozen and cached
per sentence.  By default the timed batches are first passed once without gradients, which fills that
cache, as from a real training's second epoch (the reference toolkit's non-BERT models likewise read
precomputed text features); ``--cold`` times the first epoch instead, with every sentence encoded.

``--text-model toolkit-tiny`` swaps our MiniLM (22.7 M parameters) for a BERT of the reference
runner's shape (2 layers, hidden 768, vocabulary 1000: 9.6 M), the one the toolkit fine-tunes offline,
so that MISA, Self-MM and TFR-Net are compared at an equal text encoder too.

Each model runs in its own subprocess, so the peak resident memory (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA) belongs to that model alone.

    python benchmarks/bench_models.py                            # every model, papers' sizes, CPU
    python benchmarks/bench_models.py emt_dlfr dast_gan --threads 2 --steps 3
    python benchmarks/bench_models.py lf_dnn tfn lmf mult misa self_mm tfr_net \\
        --reference /path/to/toolkit_rows.jsonl                   # side by side with the toolkit

Our models run at their MOSI preset (the papers' sizes); the baselines at ``preset="mmsa"``, the
reference toolkit's MOSI hyper-parameters (its ``get_config_regression(name, "mosi")``), so that a
side-by-side comparison is at equal config.  ``--reference`` reads JSON lines
``{"model": ..., "steps_per_s": ...}`` measured by a runner of the reference toolkit (PyPI
``mmsa`` 2.2.1) on a file of the same shapes in the same session, and puts them beside ours.
Rows are appended to ``benchmarks/results.csv`` with the machine's description.

Memory: on a CPU the script, like the Trainer, calls ``mmsa.runtime.keep_freed_memory()`` (freed
attention maps stay with the process, so a step does not fault their pages in again; column
``freed_memory=kept``).  The reference toolkit gains as much from the same glibc setting, given by
environment variables (``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736``): compare ``kept``
rows with a reference run under those variables, and ``--malloc-default`` rows
(``freed_memory=returned``) with a reference run without them.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

MOSI = dict(L=50, Ta=375, Tv=500, da=5, dv=20)
FIELDS = ["date", "machine", "device", "threads", "model", "preset", "batch", "steps", "params",
          "seconds_per_step", "steps_per_s", "infer_seconds_per_batch", "peak_memory_mib", "text_cache", "reference_steps_per_s", "ours_over_reference",
          "amp", "text_model", "freed_memory"]


def write_mosi_pickle(path: Path, n: int, seed: int = 0) -> Path:
    """A MOSI-format file (public layout, unaligned_50.pkl) with n clips in every split."""
    rng = np.random.default_rng(seed)
    data = {}
    for split in ("train", "valid", "test"):
        tl = rng.integers(8, MOSI["L"] + 1, n)
        ids = np.zeros((n, MOSI["L"]), np.int64)
        mask = np.zeros_like(ids)
        for i, k in enumerate(tl):
            ids[i, :k] = [101, *rng.integers(104, 1000, k - 2), 102]   # in both vocabularies (--text-model)
            mask[i, :k] = 1
        al, vl = rng.integers(50, MOSI["Ta"] + 1, n), rng.integers(50, MOSI["Tv"] + 1, n)
        audio = rng.normal(size=(n, MOSI["Ta"], MOSI["da"])).astype(np.float32)
        vision = rng.normal(size=(n, MOSI["Tv"], MOSI["dv"])).astype(np.float32)
        for i in range(n):
            audio[i, al[i]:] = 0
            vision[i, vl[i]:] = 0
        data[split] = {
            "raw_text": np.array([f"clip {i}" for i in range(n)]), "id": np.array([f"v{i}$_${i}" for i in range(n)]),
            "text": rng.normal(size=(n, MOSI["L"], 768)).astype(np.float32),
            "text_bert": np.stack([ids, mask, np.zeros_like(ids)], 1).astype(np.float32),
            "audio": audio, "vision": vision, "audio_lengths": list(al), "vision_lengths": list(vl),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def write_toolkit_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised BERT of the reference toolkit runner's shape (hidden 768, 2 layers,
    12 heads, feed-forward 1024, vocabulary 1000: 9.6 M parameters), saved as a local checkpoint.

    Offline, the toolkit fine-tunes that BERT in MISA, Self-MM and TFR-Net (../shared/peer runner);
    ``--text-model toolkit-tiny`` gives our models the same one, so their steps compare at an
    equal text encoder.  Speed does not depend on the weights, only on the shapes."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                     intermediate_size=1024, max_position_embeddings=512)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return folder


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: KiB


def time_one(name: str, pkl: str, batch: int, steps: int, device: str, threads: int, warm: bool = True,
             text_model: str = "minilm", keep_freed: bool = True) -> dict:
    """Build ``name`` at the papers' sizes, run 1 untimed + ``steps`` timed training steps."""
    from mmsa import data as mdata
    from mmsa import efficiency as ef
    from mmsa.missing import make_train_transform
    from mmsa.models import build_for_data, count_parameters
    from mmsa.runtime import keep_freed_memory, resolve_device

    torch.set_num_threads(threads)
    dev = resolve_device(device)
    kept = dev.type == "cpu" and keep_freed and keep_freed_memory()   # as the Trainer does on a CPU
    split = mdata.load_features(pkl, "mosi")["train"]
    torch.manual_seed(0)
    kw = {"preset": "mmsa"} if name in MMSA_MODELS else {}         # baselines: the toolkit's MOSI sizes
    if text_model != "minilm":
        kw["text_model"] = text_model
    model = build_for_data(name, split, **kw).to(dev)
    # the Trainer's own step (mmsa.efficiency.timing_trainer): its optimiser groups, autocast and the
    # model's callbacks -- DAST-GAN after its ramp: L_adv and the discriminator step are paid
    trainer = ef.timing_trainer(model, dev, lr=1e-4, keep_freed=keep_freed)
    dtype = trainer.amp_dtype
    # the book's incomplete training view (random rate in [0, 0.6], 4 masks per sentence), as the Trainer applies it
    transform = make_train_transform("random", (0.0, 0.6), base_seed=0, text_bank=4)
    loader = mdata.make_loader(split, batch, shuffle=False, seed=0)
    batches = [transform(b, 1, i) for i, b in zip(range(steps + 1), loader)]
    if warm:                                  # fill the frozen-BERT cache (see the module docstring)
        with torch.no_grad():
            for b in batches:
                model.eval()(b.to(dev))
    model.train()
    times = []
    for i, b in enumerate(batches):
        b = b.to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.step(b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if i == 0 and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
    sec = float(np.mean(times[1:]))
    model.eval()                                                # inference: one view, no losses' backward
    infer = []
    with torch.no_grad():
        for b in batches:
            b = b.to(dev)
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(b)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            infer.append(time.perf_counter() - t0)
    return dict(model=name, preset="mmsa" if kw else "mosi", batch=batch, steps=steps,
                params=count_parameters(model), seconds_per_step=round(sec, 4), steps_per_s=round(1 / sec, 4),
                infer_seconds_per_batch=round(float(np.mean(infer[1:])), 4),
                peak_memory_mib=round(peak_mib(dev), 1), text_cache="warm" if warm else "cold", device=str(dev), amp=str(dtype).replace("torch.", "") if dtype else "fp32",
                text_model="minilm" if text_model == "minilm" else "toolkit-tiny",
                freed_memory="kept" if kept else "returned")


MMSA_MODELS = ("lf_dnn", "ef_lstm", "tfn", "lmf", "mult", "misa", "self_mm", "tfr_net")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def main(argv=None) -> int:
    from mmsa.models import available

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="registered model names (default: all regression models)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one untimed step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cold", action="store_true",
                    help="time with an empty frozen-BERT cache (every step encodes its sentences)")
    ap.add_argument("--reference", help="JSON lines of the reference toolkit's steps/s (same shapes, same session)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.csv")))
    ap.add_argument("--text-model", default="minilm",
                    help="'minilm' (the packaged MiniLM, 22.7 M) or 'toolkit-tiny' (the reference runner's "
                         "2-layer BERT, 9.6 M, random weights: equal text encoders for MISA, Self-MM, TFR-Net)")
    ap.add_argument("--malloc-default", action="store_true",
                    help="CPU: leave glibc's malloc as it is (freed maps go back to the OS, every step "
                         "faults its pages in again) instead of mmsa.runtime.keep_freed_memory(), which the "
                         "Trainer calls on a CPU")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "PICKLE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.text_model not in ("minilm", "toolkit-tiny") and not Path(a.text_model, "config.json").exists():
        print(f"--text-model {a.text_model!r}: expected 'minilm', 'toolkit-tiny' or a BERT directory", file=sys.stderr)
        return 2
    if a.one:                                            # child process: one model, one JSON line
        print(json.dumps(time_one(a.one[0], a.one[1], a.batch, a.steps, a.device, a.threads, not a.cold,
                                  a.text_model, not a.malloc_default)))
        return 0
    names = a.models or [m for m in available() if m != "cmsta_cg"]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown model(s) {unknown}; valid: {available()}", file=sys.stderr)
        return 2
    reference = {}
    if a.reference:
        for line in Path(a.reference).read_text().splitlines():
            if line.strip().startswith("{"):
                row = json.loads(line)
                reference[row["model"]] = float(row["steps_per_s"])
    with tempfile.TemporaryDirectory() as tmp:
        pkl = write_mosi_pickle(Path(tmp) / "MOSI" / "unaligned_50.pkl", a.batch * (a.steps + 1))
        text_model = a.text_model
        if text_model == "toolkit-tiny":
            text_model = str(write_toolkit_tiny_bert(Path(tmp) / "toolkit_tiny_bert"))
        rows = []
        for name in names:
            cmd = [sys.executable, __file__, "--one", name, str(pkl), "--batch", str(a.batch),
                   "--steps", str(a.steps), "--threads", str(a.threads), "--device", a.device,
                   "--text-model", text_model] + (["--cold"] if a.cold else []) + \
                  (["--malloc-default"] if a.malloc_default else [])
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            if res.returncode != 0:
                print(f"{name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            ref = reference.get(name)
            row.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), machine=machine(),
                       threads=a.threads, reference_steps_per_s=ref if ref else "",
                       ours_over_reference=round(row["steps_per_s"] / ref, 3) if ref else "")
            rows.append(row)
            print(f"{name:10s} {row['preset']:5s} {row['seconds_per_step']:8.3f} s/step  {row['steps_per_s']:7.3f} steps/s  "
                  f"infer {row['infer_seconds_per_batch']:.3f} s/batch  "
                  f"peak {row['peak_memory_mib']:7.0f} MiB  params {row['params']:,}"
                  + (f"  reference {ref:.3f} steps/s -> x{row['ours_over_reference']}" if ref else ""), flush=True)
    out = Path(a.out)
    old = []
    if out.exists():                       # rows of an older layout are kept under today's header
        with open(out, newline="") as f:
            # before the options: MiniLM, glibc's default malloc
            old = [{"text_model": "minilm", "freed_memory": "returned", **r} for r in csv.DictReader(f)]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(old + rows)
    print(f"{len(rows)} row(s) appended to {out}")
    return 0 if len(rows) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
