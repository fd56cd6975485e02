"""Tune every baseline under the shared protocol: a small lr x dropout grid, scored on VALIDATION.

Every baseline gets the same budget (``mmsa.experiment.Protocol``: SynthMSA 600/200/300, lengths
32/50/50, batch 32, at most 40 epochs, early stopping with patience 6 on the validation MAE, random
missing U(0, 0.6) on the training view) at its book size (``BOOK_MODELS``), and the same search:

    lr ∈ {3e-4, 1e-3, 3e-3}  x  dropout ∈ {0.1, 0.3},   seed 1,   best validation MAE wins.

The test split is never read by the search.  ``--check`` evaluates the chosen settings once on the
test split (seeds 1, 2, 3; random missing at rates 0 and 0.5) against the constant predictor.
Not part of CI; run with one thread:

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tune_baselines.py                 # the grid, all baselines
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tune_baselines.py --models mult tfr_net
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tune_baselines.py --check         # test MAE of BOOK_MODELS
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tune_baselines.py --time          # seconds per epoch

Runs are cached under ``build/tune_runs`` (``mmsa.experiment.fit``), so an interrupted search
resumes.  ``--cache-train-text`` (default on) lets the shared frozen text encoder keep every
incomplete training sentence it encodes: all configurations with the same seed see the same masks
(with the protocol's ``text_bank`` the cache keeps them anyway), so each is encoded once per
process instead of once per configuration (identical values, less time).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mmsa.experiment import BOOK_MODELS, Protocol, const_mae, evaluate, fit, load

BASELINES = ("lf_dnn", "ef_lstm", "tfn", "lmf", "mult", "misa", "self_mm", "tfr_net")
LRS = (3e-4, 1e-3, 3e-3)
DROPOUTS = (0.1, 0.3)


def cache_training_text() -> None:
    """Let the shared frozen BERT store the [UNK]'d training sentences as well (same values)."""
    from mmsa.encoders import FrozenBert

    call = FrozenBert.__call__

    def always_store(self, ids, mask, store=True):
        return call(self, ids, mask, store=True)

    always_store.__wrapped__ = call
    FrozenBert.__call__ = always_store


def seconds_per_epoch(trainer) -> float:
    return float(np.mean([h["train_seconds"] for h in trainer.history]))


def grid(models, p, data, root) -> dict:
    results = {}
    for name in models:
        for lr in LRS:
            for dropout in DROPOUTS:
                t0 = time.perf_counter()
                tr = fit(name, p, seed=1, data=data, root=root, train={"lr": lr}, dropout=dropout)
                best = min(h["valid_mae"] for h in tr.history)
                results[(name, lr, dropout)] = dict(valid_mae=best, best_epoch=tr.best_epoch, epochs=len(tr.history),
                                                    s_per_epoch=seconds_per_epoch(tr), cached=tr.cached)
                r = results[(name, lr, dropout)]
                print(f"{name:8s} lr={lr:<7g} dropout={dropout:<4g} valid MAE {best:.4f}  best epoch "
                      f"{r['best_epoch']:2d}/{r['epochs']:2d}  {r['s_per_epoch']:.1f} s/epoch"
                      f"{' (cached)' if tr.cached else ''}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    print("\nvalidation MAE (seed 1)      " + "  ".join(f"lr={lr:g}/d={d:g}" for lr in LRS for d in DROPOUTS))
    for name in models:
        row = [results[(name, lr, d)]["valid_mae"] for lr in LRS for d in DROPOUTS]
        lr, d = min(((lr, d) for lr in LRS for d in DROPOUTS), key=lambda k: results[(name, *k)]["valid_mae"])
        print(f"{name:10s} " + "  ".join(f"{v:14.4f}" for v in row) + f"   best: lr={lr:g}, dropout={d:g}")
    return results


def check(models, p, data, root) -> dict:
    """Test MAE of the BOOK_MODELS settings, seeds 1-3, random missing at rates 0 and 0.5."""
    c = const_mae(data)
    out = {"const_mae": c}
    print(f"constant predictor test MAE {c:.4f}; target: every baseline <= {0.85 * c:.4f} (0.85 x const)")
    for name in models:
        maes = {0.0: [], 0.5: []}
        for seed in (1, 2, 3):
            tr = fit(name, p, seed=seed, data=data, root=root)
            for rate in maes:
                maes[rate].append(evaluate(tr, data["test"], p, pattern="random", rate=rate)["mae"])
        out[name] = {str(r): float(np.mean(v)) for r, v in maes.items()}
        print(f"{name:8s} test MAE rate 0: {np.mean(maes[0.0]):.4f} ± {np.std(maes[0.0]):.4f}   "
              f"rate 0.5: {np.mean(maes[0.5]):.4f} ± {np.std(maes[0.5]):.4f}   "
              f"ratio to const {np.mean(maes[0.0]) / c:.3f} / {np.mean(maes[0.5]) / c:.3f}", flush=True)
    return out


def text_seconds_per_epoch(p, data) -> float:
    """Seconds to encode one epoch of incomplete training sentences with the frozen MiniLM (no cache)."""
    from mmsa import missing
    from mmsa.encoders import FrozenBert
    from mmsa.experiment import loaders

    bert = FrozenBert.get("minilm")
    pattern, low, high = p.train_missing
    transform = missing.make_train_transform(pattern, (low, high), base_seed=99)
    t0 = time.perf_counter()
    for step, batch in enumerate(loaders(p, data, seed=99)["train"]):
        batch = transform(batch, 1, step)
        bert.__class__.__call__.__wrapped__(bert, batch.text_ids, batch.text_mask, store=False)
    return time.perf_counter() - t0


def timing(models, p, data, root, epochs: int = 3) -> None:
    """Seconds per training epoch at the book size, split into the model's own cost (text states
    cached) and the frozen MiniLM's cost of encoding the incomplete training sentences (the same
    for every model that reads text through it), both measured in this process."""
    q = Protocol(**{**p.__dict__, "epochs": epochs, "patience": epochs + 1})
    fit(models[0], q, seed=1, data=data, root=root, retrain=True)  # warm-up: fills the text cache
    text = text_seconds_per_epoch(p, data)
    print(f"MiniLM on one epoch of fresh incomplete training sentences: {text:.2f} s (with the protocol's "
          f"text_bank={p.text_bank} paid about {p.text_bank} times per seed and process, then cached)")
    for name in models:
        tr = fit(name, q, seed=1, data=data, root=root, retrain=True)
        secs = [h["train_seconds"] for h in tr.history]
        n = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
        print(f"{name:8s} {np.mean(secs):6.2f} s/epoch with the text states cached "
              f"(epochs: {', '.join(f'{s:.1f}' for s in secs)})  {n / 1e3:.0f}k trainable parameters", flush=True)
    print(f"MiniLM again: {text_seconds_per_epoch(p, data):.2f} s/epoch")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(BASELINES), choices=BASELINES)
    ap.add_argument("--root", default="build/tune_runs")
    ap.add_argument("--check", action="store_true", help="test MAE of the BOOK_MODELS settings (seeds 1-3)")
    ap.add_argument("--time", action="store_true", help="seconds per epoch at the book size")
    ap.add_argument("--no-cache-train-text", dest="cache_text", action="store_false")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = Protocol()
    data = load(p)
    if args.cache_text or args.time:
        cache_training_text()
    print("book settings:", {m: BOOK_MODELS.get(m) for m in args.models})
    if args.time:
        timing(args.models, p, data, args.root + "_time")
        return
    result = check(args.models, p, data, args.root) if args.check else grid(args.models, p, data, args.root)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({str(k): v for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
