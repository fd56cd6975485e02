"""DAST-GAN vs EMT-DLFR: training seconds per epoch, inference cost and parameters, in one run.

docs/design.md §8 targets: DAST-GAN training cost <= 1.2 x EMT-DLFR's per epoch; inference cost = EMT-DLFR's
single view; on CUDA bf16 autocast and peak memory at batch 32.

Both models are built at the MOSI preset with frozen text features (``use_text_features=True``,
text_dim 768) and trained on the same synthetic random batches of MOSI's unaligned shapes
(text 50 x 768, audio 375 x 5, vision 500 x 20; 1284 training samples), made incomplete by
``mmsa.missing.apply(random, rate)``.  DAST-GAN runs as after its ramp (λ = w_adv, so L_adv and
the discriminator step are both paid).  Every model sees the identical batches in the same order.

    python benchmarks/bench_dast_vs_emt.py                   # CPU (or CUDA if available)
    python benchmarks/bench_dast_vs_emt.py --n-train 256 --epochs 1 --device cpu
Writes build/bench/dast_vs_emt.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmsa import efficiency as ef
from mmsa.models import build, count_parameters, inference_parameters
from mmsa.types import Batch

MOSI = dict(L=50, Ta=375, Tv=500, dt=768, da=5, dv=20, n_train=1284)


def synthetic_batches(n: int, batch_size: int, rate: float, seed: int = 0) -> list[Batch]:
    """Random MOSI-shaped batches (variable lengths), made incomplete with ``mmsa.missing``."""
    from mmsa.missing import apply

    g = torch.Generator().manual_seed(seed)
    out = []
    for i, start in enumerate(range(0, n, batch_size)):
        B = min(batch_size, n - start)
        tl = torch.randint(10, MOSI["L"] + 1, (B,), generator=g)
        al = torch.randint(50, MOSI["Ta"] + 1, (B,), generator=g)
        vl = torch.randint(50, MOSI["Tv"] + 1, (B,), generator=g)
        tmask = (torch.arange(MOSI["L"])[None] < tl[:, None]).long()
        text = torch.randn(B, MOSI["L"], MOSI["dt"], generator=g) * tmask[..., None]
        a = torch.randn(B, MOSI["Ta"], MOSI["da"], generator=g) * (torch.arange(MOSI["Ta"])[None] < al[:, None])[..., None]
        v = torch.randn(B, MOSI["Tv"], MOSI["dv"], generator=g) * (torch.arange(MOSI["Tv"])[None] < vl[:, None])[..., None]
        full = Batch(audio=a, vision=v, label=torch.rand(B, generator=g) * 6 - 3, text=text, text_mask=tmask,
                     audio_lengths=al, vision_lengths=vl)
        out.append(apply(full, "random", rate, seed=seed * 100003 + i))
    return out


def make_model(name: str, device):
    kw = dict(dataset="mosi", use_text_features=True, text_dim=MOSI["dt"])
    return build(name, **kw).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_epoch(trainer, batches, device) -> float:
    """One epoch of the Trainer's own step (``mmsa.efficiency.timing_trainer``): forward both views,
    backward, Adam (+ the discriminator step for DAST-GAN, after its ramp), its autocast."""
    trainer.model.train()
    batches = [b.to(device) for b in batches]
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        trainer.step(b)
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def infer_epoch(model, batches, device, amp: bool) -> float:
    model.eval()
    batches = [b.to(device) for b in batches]
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model(b)
    sync(device)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-train", type=int, default=MOSI["n_train"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per model (min is reported)")
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--out", default="build/bench/dast_vs_emt.json")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    amp = device.type == "cuda"                    # inference: bf16 autocast as the Trainer's (CUDA)
    torch.manual_seed(0)
    batches = synthetic_batches(args.n_train, args.batch_size, args.rate)
    models, trainers, train_times, infer_times, peak = {}, {}, {}, {}, {}
    for name in ("emt_dlfr", "dast_gan"):
        torch.manual_seed(0)
        models[name] = make_model(name, device)
        trainers[name] = ef.timing_trainer(models[name], device)   # keeps freed memory on a CPU, as training
        train_times[name], infer_times[name] = [], []
    # epochs alternate between the models so that load drift on a shared machine hits both alike
    for name in models:
        if device.type == "cuda":
            train_epoch(trainers[name], batches[:3], device)  # warm-up (cuDNN / kernel selection)
    for _ in range(args.epochs):
        for name in models:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            train_times[name].append(train_epoch(trainers[name], batches, device))
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
    for _ in range(args.epochs):
        for name, model in models.items():
            infer_times[name].append(infer_epoch(model, batches, device, amp))
    results = {
        name: {
            "train_s_per_epoch": min(train_times[name]), "train_times": train_times[name],
            "infer_s_per_epoch": min(infer_times[name]), "infer_times": infer_times[name],
            "params_total": count_parameters(model, trainable_only=False),
            "params_inference": inference_parameters(model),
            "peak_mem_mib_train": peak.get(name),
        }
        for name, model in models.items()
    }
    e, d = results["emt_dlfr"], results["dast_gan"]
    summary = {
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "amp_bf16": amp, "n_train": args.n_train, "batch_size": args.batch_size, "missing_rate": args.rate,
        "epochs_timed": args.epochs, "threads": torch.get_num_threads(),
        "train_ratio_dast_over_emt": d["train_s_per_epoch"] / e["train_s_per_epoch"],
        "infer_ratio_dast_over_emt": d["infer_s_per_epoch"] / e["infer_s_per_epoch"],
        "models": results,
    }
    print(f"device {summary['device']}  n_train {args.n_train}  batch {args.batch_size}  bf16 {amp}")
    print(f"{'model':10s} {'train s/ep':>11s} {'infer s/ep':>11s} {'params':>10s} {'infer params':>13s} {'peak MiB':>9s}")
    for name, r in results.items():
        mem = f"{r['peak_mem_mib_train']:.0f}" if r["peak_mem_mib_train"] is not None else "-"
        print(f"{name:10s} {r['train_s_per_epoch']:11.2f} {r['infer_s_per_epoch']:11.2f} "
              f"{r['params_total']:10d} {r['params_inference']:13d} {mem:>9s}")
    print(f"train ratio DAST/EMT {summary['train_ratio_dast_over_emt']:.3f}   "
          f"inference ratio {summary['infer_ratio_dast_over_emt']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()
