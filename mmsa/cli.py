"""Command line: train and evaluate any registered model on any dataset.

    mmsa models                                   # list registered models
    mmsa train lf_dnn --dataset synth_mosi --epochs 10 --set hidden_text=64 --out runs/lf
    mmsa train emt_dlfr --dataset mosi --data-dir data/MOSI --missing random:0.3
    mmsa train lf_dnn --dataset synth_mosi --out runs/lf --resume    # continue from last.pt

Model config keys go through ``--set key=value`` (values parsed as YAML); training keys
through ``--train key=value``.  Unknown keys are errors listing the valid ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FILES = {"mosi": "MOSI/unaligned_50.pkl", "mosei": "MOSEI/unaligned_50.pkl", "sims": "SIMS/unaligned_39.pkl"}


def _kv(items):
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def load_splits(dataset: str, data_dir: str | None, n_samples: int | None = None, seed: int = 0):
    """Real pickles from ``data_dir`` (or ``data/``), or SynthMSA for ``synth_*`` names."""
    from mmsa import data

    if dataset.startswith("synth"):
        kind = {"synth_mosi": "mosi", "synth": "mosi", "synth_sims": "sims", "synth3": "3class"}[dataset]
        n = n_samples or 300
        sizes = (n, max(n // 3, 8), max(n // 3, 8))
        return data.synthetic_splits(kind, sizes, seed, root=data_dir or "data/synth")
    path = Path(data_dir) if data_dir else Path("data") / FILES[dataset]
    if path.is_dir():
        path = path / Path(FILES[dataset]).name
    return data.load_features(path, dataset)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mmsa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list registered models")
    t = sub.add_parser("train", help="train a model, report test metrics")
    t.add_argument("model")
    t.add_argument("--dataset", default="synth_mosi", help="mosi | mosei | sims | synth_mosi | synth_sims | synth3")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--n-samples", type=int, default=None, help="SynthMSA training size")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=None, help="checkpoint/history folder")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--missing", default=None, help="train+test missing pattern, e.g. random:0.3")
    t.add_argument("--set", nargs="*", default=[], help="model config key=value")
    t.add_argument("--train", nargs="*", default=[], help="TrainConfig key=value")
    args = ap.parse_args(argv)

    from mmsa import models

    if args.cmd == "models":
        print("\n".join(models.available()))
        return 0

    from mmsa import data, missing
    from mmsa.train import Trainer, train_config

    splits = load_splits(args.dataset, args.data_dir, args.n_samples, args.seed)
    tr = splits["train"]
    classification = tr.task == "classification"
    model = models.build_for_data(args.model, tr, **_kv(args.set))
    cfg = dict(epochs=args.epochs, seed=args.seed, device=args.device, out_dir=args.out,
               task="classification" if classification else "regression",
               monitor="f1" if classification else "mae", mode="max" if classification else "min",
               metric_dataset=args.dataset)
    cfg.update(_kv(args.train))
    train_tf = eval_tf = None
    if args.missing:
        pattern, rate = args.missing.split(":")
        train_tf = missing.make_train_transform(pattern, float(rate), args.seed)
        eval_tf = missing.make_eval_transform(pattern, float(rate), args.seed)
    trainer = Trainer(model, train_config(**cfg), train_transform=train_tf, eval_transform=eval_tf)
    loaders = {k: data.make_loader(s, args.batch_size, shuffle=(k == "train"), seed=args.seed) for k, s in splits.items()}
    trainer.fit(loaders["train"], loaders["valid"], resume=args.resume)
    result = trainer.evaluate(loaders["test"])
    print(json.dumps({"best_epoch": trainer.best_epoch, "test": result}, indent=1))
    if args.out:
        Path(args.out, "test_metrics.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
