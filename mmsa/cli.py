"""Command line: train and evaluate any registered model on any dataset.

    mmsa models                                   # list registered models
    mmsa train lf_dnn --dataset synth_mosi --epochs 10 --set hidden_text=64 --out runs/lf
    mmsa train emt_dlfr --dataset mosi --data-dir data/MOSI --missing random:0.3
    mmsa train lf_dnn --dataset synth_mosi --out runs/lf --resume    # continue from last.pt

Model config keys go through ``--set key=value`` (values parsed as YAML); training keys
through ``--train key=value``.  ``--seed`` seeds the weight initialisation and the training.
With ``--out DIR`` the run writes ``DIR/config.json`` (the resolved model and training
configs), ``last.pt``/``last.prev.pt``/``best.pt`` checkpoints, ``history.json`` and
``test_metrics.json``; a run killed at any moment continues with the same command plus
``--resume`` and ends with the same numbers as an uninterrupted one.

Mistakes (unknown model, dataset, config key or device, a value of the wrong type, a bad
``--n-samples``, a missing or unreadable data file, a ``--resume`` without a usable checkpoint of
the same model) print one line ``mmsa: error: ...`` naming the bad value and the valid ones, and
exit with status 2; a ``--resume`` is checked before ``config.json`` is rewritten.  Numbers in
``--set``/``--train`` are numbers (``lr=1e-3``), although YAML 1.1 reads ``1e-3`` as a string.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

ALIASES = {"synth": "synth_mosi"}
MIN_SAMPLES = 8  # --n-samples: enough clips for a training split (valid and test get max(n // 3, 8))


class UsageError(Exception):
    """A mistake of the user's: reported as ``mmsa: error: <message>``, exit status 2."""


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _kv(items, what: str) -> dict:
    """``key=value`` pairs; values parsed as YAML, and numbers read as numbers (YAML 1.1 reads
    ``1e-3`` -- no dot -- as a string)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{what} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UsageError(f"{what} {k}={v}: cannot parse the value {v!r} ({problem})") from None
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            text = value.strip()
            value = int(text) if text.lstrip("+-").isdigit() else float(text)
        out[k] = value
    return out


_SIMPLE_TYPES = {"bool": "a boolean (true/false)", "int": "an integer", "float": "a number", "str": "a string"}


def _check_types(cls, values: dict, what: str) -> None:
    """Values whose dataclass field is a plain bool/int/float/str (optionally ``Optional``) must
    have that type (an int is a fine float); a mismatch is a ``UsageError`` naming the key."""
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        ann = str(f.type).replace(" ", "")
        optional = ann.startswith("Optional[") or ann.endswith("|None")
        base = ann[len("Optional["):-1] if ann.startswith("Optional[") else ann.removesuffix("|None")
        if base not in _SIMPLE_TYPES:
            continue
        v = values[f.name]
        if v is None:
            ok = optional
        elif base == "bool":
            ok = isinstance(v, bool)
        elif base == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif base == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str)
        if not ok:
            raise UsageError(f"{what} {f.name}={v!r}: expected {_SIMPLE_TYPES[base]}"
                             + (" or null" if optional else "") + f" ({cls.__name__}.{f.name}: {f.type})")


def dataset_names() -> list[str]:
    from mmsa.data import DATASETS

    return list(DATASETS)


def load_splits(dataset: str, data_dir: str | None, n_samples: int | None = None, seed: int = 0):
    """The splits of ``dataset`` (``mmsa.data.load_splits``); a SynthMSA set of ``n_samples`` training
    clips (default 300; valid and test get a third each, at least 8) generated with ``seed``."""
    from mmsa import data

    dataset = ALIASES.get(dataset, dataset)
    if dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(dataset_names())} "
                         f"(synth = synth_mosi)")
    n = n_samples or 300
    return data.load_splits(dataset, data_dir, sizes=(n, max(n // 3, 8), max(n // 3, 8)), seed=seed)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mmsa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list registered models")
    t = sub.add_parser("train", help="train a model, report test metrics")
    t.add_argument("model")
    t.add_argument("--dataset", default="synth_mosi", help="mosi | mosei | sims | synth_mosi | synth_sims | synth3")
    t.add_argument("--data-dir", default=None, help="feature file or its folder (SynthMSA: cache folder)")
    t.add_argument("--n-samples", type=int, default=None, help="SynthMSA training size")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=1, help="seeds the weight initialisation and the training")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--out", default=None, help="checkpoint/history folder")
    t.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint (if any)")
    t.add_argument("--missing", default=None, help="train+test missing pattern, e.g. random:0.3")
    t.add_argument("--set", nargs="*", default=[], help="model config key=value")
    t.add_argument("--train", nargs="*", default=[], help="TrainConfig key=value")
    return ap


def _setup(args):
    """Everything before training; any mistake becomes a ``UsageError``."""
    from mmsa import data, missing, models
    from mmsa.data import FeatureFileError
    from mmsa.runtime import resolve_device, seed_everything
    from mmsa.train import TrainConfig, train_config

    try:
        resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.model.lower() not in models.available():
        raise UsageError(f"unknown model {args.model!r}; available models: {', '.join(models.available())}")
    dataset = ALIASES.get(args.dataset, args.dataset)
    if dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; valid datasets: {', '.join(dataset_names())} "
                         f"(synth = synth_mosi)")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the folder of the run to continue)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n_samples is not None:
        if dataset not in data.SYNTH_KINDS:
            raise UsageError(f"--n-samples {args.n_samples}: sets the size of a generated SynthMSA data set "
                             f"({', '.join(data.SYNTH_KINDS)}); {dataset} is read whole from its file")
        if args.n_samples < MIN_SAMPLES:
            raise UsageError(f"--n-samples must be >= {MIN_SAMPLES} (training clips), got {args.n_samples}")
    model_kw, train_kw = _kv(args.set, "--set"), _kv(args.train, "--train")
    train_tf = eval_tf = None
    if args.missing:
        pattern, _, rate = args.missing.partition(":")
        try:
            rate = float(rate)
        except ValueError:
            rate = -1.0
        if pattern not in missing.PATTERNS or not 0.0 <= rate <= 1.0:
            raise UsageError(f"--missing expects PATTERN:RATE with PATTERN one of {', '.join(missing.PATTERNS)} "
                             f"and RATE in [0, 1], got {args.missing!r}")
        train_tf = missing.make_train_transform(pattern, rate, args.seed)
        eval_tf = missing.make_eval_transform(pattern, rate, args.seed)
    classification = data.DATASETS[dataset].task == "classification"
    cfg = dict(epochs=args.epochs, seed=args.seed, device=args.device, out_dir=args.out,
               task="classification" if classification else "regression",
               monitor="f1" if classification else "mae", mode="max" if classification else "min",
               metric_dataset=dataset)
    cfg.update(train_kw)
    try:
        _check_types(TrainConfig, train_kw, "--train")
        resolve_device(train_config(**cfg).device)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--train: {err}") from None
    try:  # the slow part last: every cheap check above fails first
        splits = load_splits(dataset, args.data_dir, args.n_samples, args.seed)
    except (FileNotFoundError, FeatureFileError) as err:
        raise UsageError(str(err)) from None
    tr = splits["train"]
    seed_everything(args.seed)  # the weight initialisation depends on --seed
    try:
        model = models.build_for_data(args.model, tr, **model_kw)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--set {_culprit(args.model, tr, model_kw, err)}: {err}") from None
    cfg_cls = type(getattr(model, "cfg", None))
    if dataclasses.is_dataclass(cfg_cls):
        _check_types(cfg_cls, model_kw, "--set")
    return splits, model, cfg, train_tf, eval_tf


def _culprit(name: str, split, model_kw: dict, err: Exception) -> str:
    """The ``key=value`` of ``--set`` that made building the model fail (all of them if unclear)."""
    from mmsa import models

    shown = {k: f"{k}={v!r}" for k, v in model_kw.items()}
    named = [k for k in model_kw if k in str(err)]
    if named or len(model_kw) <= 1:
        return ", ".join(shown[k] for k in (named or model_kw)) or "(defaults)"
    for k in list(model_kw)[:8]:  # the value without which the model builds is the bad one
        try:
            models.build_for_data(name, split, **{j: v for j, v in model_kw.items() if j != k})
        except (TypeError, ValueError):
            continue
        return shown[k]
    return ", ".join(shown.values())


def check_resume(out: Path, args, model) -> None:
    """Before anything is written: ``--resume`` needs a readable checkpoint of the same model.

    Raises ``UsageError`` naming the folder and what is wrong (no usable checkpoint -- with the
    reason for each file --, another model name, parameters of other shapes)."""
    from mmsa.checkpoint import find_checkpoint

    state, _, problems = find_checkpoint(out / "last.pt")
    if state is None:
        raise UsageError(f"--resume: no usable checkpoint in {out} ({'; '.join(problems)}); run without "
                         f"--resume (or with another --out) to start over")
    name = state.get("model_name")
    if name and name != args.model.lower():
        raise UsageError(f"--resume: {out} holds a run of model {name!r}, not {args.model.lower()!r}; "
                         f"resume with the same model or use another --out")
    own = model.state_dict()
    saved = state.get("model", {})
    for key in sorted(set(own) | set(saved)):
        if key not in own or key not in saved or tuple(own[key].shape) != tuple(saved[key].shape):
            got = tuple(saved[key].shape) if key in saved else "absent"
            want = tuple(own[key].shape) if key in own else "absent"
            raise UsageError(f"--resume: the checkpoint in {out} does not fit this model ({key}: {got} in the "
                             f"checkpoint, {want} now); resume with the same --set values or use another --out")


def resolved_config(args, model, config) -> dict:
    """What ``config.json`` holds: enough to rebuild the model and repeat the run."""
    cfg = getattr(model, "cfg", None)
    return {
        "model": args.model.lower(),
        "model_config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None,
        "train_config": dataclasses.asdict(config),
        "dataset": ALIASES.get(args.dataset, args.dataset), "data_dir": args.data_dir,
        "n_samples": args.n_samples, "batch_size": args.batch_size, "missing": args.missing,
        "seed": args.seed,
    }


def train(args) -> int:
    from mmsa import data
    from mmsa.checkpoint import previous_checkpoint
    from mmsa.training import make_trainer

    splits, model, config, train_tf, eval_tf = _setup(args)
    # the model supplies its hooks (DAST-GAN: its GAN schedule; patience after the ramp)
    trainer = make_trainer(model, config, train_transform=train_tf, eval_transform=eval_tf,
                           model_name=args.model.lower())
    resume = args.resume
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        last = out / "last.pt"
        if resume and not last.exists() and not previous_checkpoint(last).exists():
            print(f"[mmsa] no checkpoint in {out} yet: starting from epoch 1", file=sys.stderr)
            resume = False
        if resume:
            check_resume(out, args, model)  # validate first, write config.json after
        resolved = resolved_config(args, model, trainer.config)
        (out / "config.json").write_text(json.dumps(resolved, indent=1, default=str))
    loaders = {k: data.make_loader(s, args.batch_size, shuffle=(k == "train"), seed=args.seed)
               for k, s in splits.items()}
    trainer.fit(loaders["train"], loaders["valid"], resume=resume)
    result = trainer.evaluate(loaders["test"])
    print(json.dumps({"best_epoch": trainer.best_epoch, "test": result}, indent=1))
    if args.out:
        Path(args.out, "test_metrics.json").write_text(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "models":
        from mmsa import models

        print("\n".join(models.available()))
        return 0
    try:
        return train(args)
    except UsageError as err:
        print(f"mmsa: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
