"""One experimental protocol shared by the chapters, and a cache of trained models.

A comparison means something only when every model sees the same data, the same splits, the
same training budget and the same missing-modality simulation.  ``Protocol`` writes that down
once; the chapters on EMT-DLFR, DAST-GAN, the GAN, missing modalities, ablations and
visualisations (02, 03, 04, 07, 08, 09) all use it:

    p = Protocol()                                   # SynthMSA, sizes, lengths, budget, seeds
    data = load(p)                                   # {"train"|"valid"|"test": MSASplit}
    trainer = fit("dast_gan", p, seed=1)             # trained once, then loaded from build/runs
    evaluate(trainer, data["test"], p, pattern="random", rate=0.5)

``fit`` trains with early stopping on the validation MAE and keeps the run under
``build/runs/<model>-<hash>/`` (``best.pt``, ``last.pt``, ``history.json``): a later chapter that
asks for the same model, configuration, protocol and seed loads it instead of training again,
and an interrupted run resumes from ``last.pt``.  The hash covers the protocol, the model
configuration, the seed and the source of every module a training imports (``training_sources``),
so any change to those retrains; editing an analysis module does not.

``BOOK_MODELS`` holds the sizes the book trains at on a 2-core CPU and each model's learning rate
and dropout, chosen on the validation split (never on test).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mmsa import missing
from mmsa.checkpoint import read_checkpoint
from mmsa.data import DATASETS, default_dir, load_splits, make_loader
from mmsa.train import Trainer
from mmsa.training import make_trainer

# the data sets a protocol compares regression models on (mmsa.data.datasets)
DATASET_NAMES = tuple(name for name, spec in DATASETS.items() if spec.task == "regression")

# The book's model sizes (2-core CPU) and per-model training settings.  "train" entries override
# the protocol's TrainConfig (e.g. lr); everything else goes to ``mmsa.models.build``.
BASELINES = ("lf_dnn", "ef_lstm", "tfn", "lmf", "mult", "misa", "self_mm", "tfr_net")
_SMALL_EMT = dict(d_model=32, n_layers=2, n_heads=4, attn_dropout=0.1, freeze_text=True)
BOOK_MODELS: dict[str, dict] = {
    "emt_dlfr": dict(_SMALL_EMT),
    # the paper's GAN schedule (5 warm-up + 10 ramp epochs of 35-40) shrunk in proportion to the
    # book's runs, which early stopping ends after about 15-25 epochs
    "dast_gan": dict(_SMALL_EMT, gan_warmup=2, gan_ramp=4),
    # Baselines: the book sizes are their configs' defaults (preset="book"; preset="mmsa" = the
    # reference toolkit's MOSI sizes).  lr x dropout chosen on the VALIDATION split under Protocol()
    # (seed 1, best validation MAE, benchmarks/tune_baselines.py; never on test).  Validation MAE
    # measured (constant predictor: 1.295; [ ] = chosen):
    #               lr 3e-4           lr 1e-3           lr 3e-3
    #   dropout    0.1     0.3       0.1     0.3       0.1     0.3
    #   lf_dnn    .745    .734      .738   [.725]     .753    .737
    #   ef_lstm   .805    .813      .745    .765      .746   [.737]
    #   tfn       .714    .746     [.710]   .718      .731    .723
    #   lmf       .735   [.710]     .731    .757      .772    .751
    #   mult      .752    .710      .671   [.652]     .673    .653
    #   misa      .830    .840     [.790]  1.288     1.293   1.293   (1.29: stopped at the constant)
    #   self_mm   .782    .784     [.740]   .770      .830    .812
    #   tfr_net   .620    .730     [.568]   .627      .610    .606
    "lf_dnn": dict(freeze_text=True, dropout=0.3, train=dict(lr=1e-3)),
    "ef_lstm": dict(freeze_text=True, dropout=0.3, train=dict(lr=3e-3)),
    "tfn": dict(freeze_text=True, dropout=0.1, train=dict(lr=1e-3)),
    "lmf": dict(freeze_text=True, dropout=0.3, train=dict(lr=3e-4)),
    "mult": dict(freeze_text=True, dropout=0.3, train=dict(lr=1e-3)),
    "misa": dict(freeze_text=True, dropout=0.1, train=dict(lr=1e-3)),
    "self_mm": dict(freeze_text=True, dropout=0.1, train=dict(lr=1e-3)),
    "tfr_net": dict(freeze_text=True, dropout=0.1, train=dict(lr=1e-3)),
    "ufen_mtfn": dict(),
}


@dataclass
class Protocol:
    """Data, budget and missing-modality simulation shared by the chapters that compare models.

    dataset:        "synth_mosi" / "synth_sims" (SynthMSA, generated and cached under data_dir) or
                    "mosi" / "mosei" / "sims" (public feature pickles read from data_dir)
    sizes, lengths: SynthMSA only: (train, valid, test) sizes and (text, audio, vision) lengths
    reliability:    SynthMSA only: "polarity" (the default story) or "independent" (positive control)
    train_missing:  (pattern, low, high): the incomplete training view drops positions at a rate
                    drawn uniformly in [low, high] per batch (fresh every epoch)
    text_bank:      each clip's words are dropped with one of this many masks fixed in advance
                    (audio/vision masks stay fresh), so that every incomplete sentence is read by
                    the frozen BERT once (``mmsa.missing.make_train_transform``); 0 = fresh masks
    model_size:     "book" (``BOOK_MODELS``: small, for a 2-core CPU) or "paper" (each model's own
                    dataset preset: the papers' / the reference toolkit's sizes; for a GPU)
    text_model, freeze_text: the BERT every model reads the text with ("minilm" = the packaged
                    MiniLM, or a local BERT directory) and whether it is frozen (CPU) or fine-tuned
    """

    dataset: str = "synth_mosi"
    data_dir: str = "data/synth"
    data_seed: int = 0
    sizes: tuple = (600, 200, 300)
    lengths: tuple = (32, 50, 50)
    reliability: str = "polarity"
    batch_size: int = 32
    epochs: int = 40
    patience: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_missing: tuple = ("random", 0.0, 0.6)
    text_bank: int = 4
    model_size: str = "book"
    text_model: str = "minilm"
    freeze_text: bool = True
    seeds: tuple = (1, 2, 3)
    device: str = "cpu"

    def __post_init__(self):
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {sorted(DATASET_NAMES)}")
        if self.model_size not in ("book", "paper"):
            raise ValueError(f"unknown model_size {self.model_size!r}; valid: 'book', 'paper'")
        if self.data_dir == "data/synth":
            self.data_dir = default_dir(self.dataset)   # the layout of data/README.md

    @classmethod
    def from_params(cls, params: dict) -> "Protocol":
        """The protocol of a notebook's parameters in one call, ``Protocol.from_params(globals())``:
        every field of ``Protocol`` named in ``params`` is taken (a list becomes a tuple), every
        other field keeps its default; other names in ``params`` are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in names})

    @property
    def metric_dataset(self) -> str:
        return "sims" if self.dataset.endswith("sims") else "mosi"

    def key(self) -> dict:
        """What a trained model depends on (seeds and device excluded: they are chosen per run)."""
        d = dataclasses.asdict(self)
        d.pop("seeds"), d.pop("device")
        return d


def load(p: Protocol, verbose: bool = False) -> dict:
    """{"train"|"valid"|"test": MSASplit} for the protocol's data set."""
    return load_splits(p.dataset, p.data_dir, sizes=tuple(p.sizes), seed=p.data_seed, lengths=tuple(p.lengths),
                       reliability=p.reliability, zscore=p.dataset == "sims", verbose=verbose)


def loaders(p: Protocol, data: dict, seed: int = 1) -> dict:
    return {"train": make_loader(data["train"], p.batch_size, shuffle=True, seed=seed),
            "valid": make_loader(data["valid"], 64),
            "test": make_loader(data["test"], 64)}


def model_config(name: str, data: dict, p: Optional[Protocol] = None, **overrides) -> tuple[dict, dict]:
    """(build kwargs, TrainConfig overrides) for ``name`` on ``data``: the book's size
    (``BOOK_MODELS``) or, with ``p.model_size == "paper"``, the model's dataset preset."""
    p = p or Protocol()
    if p.model_size == "book":
        base = {k: v for k, v in BOOK_MODELS.get(name, {}).items()}
    else:
        base = {"preset": "mmsa"} if name in BASELINES else {}
    if name != "cmsta_cg":
        base.update(text_model=p.text_model, freeze_text=p.freeze_text)
    train = dict(base.pop("train", {}))
    train.update(overrides.pop("train", {}))
    base.update(overrides)
    dims = dict(zip(("text_dim", "audio_dim", "vision_dim"), data["train"].dims))
    for k, v in dims.items():
        base.setdefault(k, v)
    base.setdefault("dataset", data["train"].dataset)
    return base, train


# Where training code starts: the protocol and training setup, the loop, data, missing-modality
# transforms.  The model's own module is added per model (``mmsa.models.module_of``).
TRAINING_ROOTS = ("mmsa.experiment", "mmsa.training", "mmsa.train", "mmsa.data", "mmsa.missing")


def _module_file(module: str, root: Path) -> Optional[Path]:
    parts = module.split(".")[1:]
    for f in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if parts and f.is_file():
            return f
    return None


def training_sources(name: str, root: Optional[Path] = None) -> set:
    """Source files a training of model ``name`` imports, found statically: every ``mmsa`` module
    reachable by ``import``/``from ... import`` statements (at any depth of the code) from the
    training roots and the model's module, with the ``__init__.py`` of each package on the way.
    No list to keep up: an analysis module is never reached, a new training dependency always is."""
    import ast

    from mmsa.models import module_of

    root = Path(root) if root is not None else Path(__file__).resolve().parent
    todo, seen = [*TRAINING_ROOTS, module_of(name)], set()
    files = {root / "__init__.py"}
    while todo:
        module = todo.pop()
        f = _module_file(module, root)
        if f is None or module in seen:
            continue
        seen.add(module)
        files.add(f)
        parts = module.split(".")
        todo += [".".join(parts[:k]) for k in range(2, len(parts))]          # parent packages
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("mmsa.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    (node.module == "mmsa" or node.module.startswith("mmsa.")):
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return files


def source_hash(name: str, root: Optional[Path] = None) -> str:
    """Hash of the code a training of ``name`` depends on (``training_sources``)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted(training_sources(name, root)):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def run_dir(name: str, p: Protocol, seed: int, config: dict, train: dict, root="build/runs") -> Path:
    blob = json.dumps({"model": name, "config": config, "train": train, "protocol": p.key(),
                       "seed": seed, "code": source_hash(name)}, sort_keys=True, default=str)
    return Path(root) / f"{name}-s{seed}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def fit(name: str, p: Protocol, seed: int = 1, data: Optional[dict] = None, root: str = "build/runs",
        retrain: bool = False, progress: bool = False, out: Optional[Path] = None, **overrides) -> Trainer:
    """Train ``name`` under protocol ``p`` (or load the finished run from ``root``).

    ``overrides`` go to ``mmsa.models.build`` (ablation flags, sizes); ``train={...}`` overrides
    TrainConfig fields.  Returns the Trainer with the best (validation) weights loaded;
    ``trainer.history`` holds the epochs and ``trainer.cached`` says whether it was loaded.
    """
    from mmsa.models import build

    data = data if data is not None else load(p)
    config, train = model_config(name, data, p, **overrides)
    out = Path(out) if out is not None else run_dir(name, p, seed, config, train, root)
    torch.manual_seed(seed)
    model = build(name, **config)
    pattern, low, high = p.train_missing
    tc = dict(epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay, patience=p.patience, seed=seed,
              device=p.device, metric_dataset=p.metric_dataset, progress=progress, out_dir=str(out))
    tc.update(train)
    transform = None
    if high > 0:
        transform = missing.make_train_transform(pattern, (low, high) if high > low else low, base_seed=seed,
                                                 text_bank=p.text_bank)
    trainer = make_trainer(model, tc, train_transform=transform, model_name=name)
    done = out / "done.json"
    if retrain and out.exists():
        shutil.rmtree(out)
    if done.exists():
        model.load_state_dict(read_checkpoint(out / "best.pt")["model"])
        info = json.loads(done.read_text())
        trainer.history, trainer.best_epoch = info["history"], info["best_epoch"]
        trainer.epoch = len(trainer.history)
        trainer.threads = info.get("threads")       # None: trained before the thread count was recorded
        trainer.cached = True
        return trainer
    loads = loaders(p, data, seed)
    share_text_states(root)                         # read what other processes already encoded
    trainer.fit(loads["train"], loads["valid"], resume=(out / "last.pt").exists())
    share_text_states(root)                         # and leave this run's new sentences for them
    # the thread count is not part of the key, but training is not bit-reproducible across thread counts
    # (a retraining on another count is a fresh draw): record it beside the history
    trainer.threads = torch.get_num_threads()
    done.write_text(json.dumps({"history": trainer.history, "best_epoch": trainer.best_epoch,
                                "threads": trainer.threads}, default=float))
    trainer.cached = False
    return trainer


def share_text_states(root: str = "build/runs") -> None:
    """Exchange the frozen BERT's sentence states with the other processes through
    ``<root>/_text_states`` (``mmsa.encoders.FrozenBert.sync``): a sentence is encoded once per
    machine instead of once per training process."""
    from mmsa.encoders import FrozenBert

    for frozen in FrozenBert.loaded():
        frozen.sync(Path(root) / "_text_states")


def _fit_job(job: tuple) -> str:
    """Worker of ``fit_all``: one training in a fresh process (one thread)."""
    name, p, seed, root, overrides, out = job
    torch.set_num_threads(1)
    fit(name, p, seed, root=root, out=out, **overrides)
    return f"{name} seed {seed}"


def fit_all(jobs: list, p: Protocol, root: str = "build/runs", workers: int = 1, progress: bool = True) -> dict:
    """Train many runs, ``workers`` at a time in separate processes, then load them all.

    jobs: [(label, model name, seed, overrides)], e.g. ("w/o GAN", "dast_gan", 2, {"use_gan": False}).
    Runs already in the cache are only loaded.  On a 2-core CPU, two one-thread workers finish
    about twice as fast as one two-thread process: the models are small and their operations too
    short to keep two threads busy.  Returns {(label, seed): Trainer}.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm.auto import tqdm

    data = load(p)
    dirs = {}
    for label, name, seed, overrides in jobs:      # the run folders are fixed here, once: the code
        config, train = model_config(name, data, p, **dict(overrides))   # may be edited meanwhile
        dirs[(label, seed)] = run_dir(name, p, seed, config, train, root)
    todo = [(name, p, seed, root, dict(overrides), dirs[(label, seed)]) for label, name, seed, overrides in jobs
            if not (dirs[(label, seed)] / "done.json").exists()]
    if todo:
        bar = tqdm(total=len(todo), desc="training runs", disable=not progress)
        if workers > 1 and len(todo) > 1:
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for _ in cf.as_completed([pool.submit(_fit_job, j) for j in todo]):
                    bar.update()
        else:
            for name, _, seed, _, overrides, out in todo:
                fit(name, p, seed, data=data, root=root, out=out, **overrides)
                bar.update()
        bar.close()
    trained_now = {job[5] for job in todo}
    out = {}
    for label, name, seed, overrides in jobs:
        t = out[(label, seed)] = fit(name, p, seed, data=data, root=root, out=dirs[(label, seed)], **dict(overrides))
        t.cached = dirs[(label, seed)] not in trained_now
    return out


# The four models every DAST-GAN chapter (02, 03, 04) compares, trained once per seed.
CORE = {"LF-DNN": ("lf_dnn", {}), "EMT-DLFR": ("emt_dlfr", {}), "DAST-GAN": ("dast_gan", {}),
        "DAST-GAN w/o GAN": ("dast_gan", {"use_gan": False})}
CORE_KEYS = {"LF-DNN": "lf_dnn", "EMT-DLFR": "emt_dlfr", "DAST-GAN": "dast_gan", "DAST-GAN w/o GAN": "dast_gan_nogan"}


def core_jobs(p: Protocol) -> list:
    """``fit_all`` jobs for the four core models and every seed of the protocol."""
    return [(label, name, seed, flags) for label, (name, flags) in CORE.items() for seed in p.seeds]


def compare(runs: dict, data: dict, p: Protocol, rates=(0.0, 0.5), pattern: str = "random"):
    """Test metrics of every run at each missing rate -> long DataFrame
    (model, seed, rate, mae, corr, acc2_non0, f1_non0, acc7)."""
    import pandas as pd

    rows = []
    for (label, seed), trainer in runs.items():
        for rate in rates:
            m = evaluate(trainer, data["test"], p, pattern, rate)
            rows.append({"model": label, "seed": seed, "rate": rate,
                         **{k: m[k] for k in ("mae", "corr", "acc2_non0", "f1_non0", "acc7")}})
    return pd.DataFrame(rows)


def core_metrics(table, data: dict) -> dict:
    """The numbers chapters 02-04 all report: const_mae and mae_<model>_r05 (mean over seeds) etc."""
    out = {"const_mae": const_mae(data), "dataset": data["train"].dataset, "n_train": len(data["train"])}
    for label, key in CORE_KEYS.items():
        for rate, tag in ((0.0, "r0"), (0.5, "r05")):
            sel = table[(table.model == label) & (table.rate == rate)]
            if len(sel):
                out[f"mae_{key}_{tag}"] = float(sel.mae.mean())
                out[f"mae_{key}_{tag}_std"] = float(sel.mae.std(ddof=0))
    return out


def eval_transform(pattern: str = "random", rate: float = 0.0, seed: int = 1000, **kw):
    """The evaluation masks: identical for every model (same pattern, rate and seed)."""
    if rate == 0:
        return None
    return missing.make_eval_transform(pattern, rate, base_seed=seed, **kw)


def evaluate(trainer: Trainer, split, p: Protocol, pattern: str = "random", rate: float = 0.0,
             seed: int = 1000, **kw) -> dict:
    """Test metrics of ``trainer``'s model on ``split`` with ``pattern`` missing at ``rate``."""
    return trainer.evaluate(make_loader(split, 64), transform=eval_transform(pattern, rate, seed, **kw))


def const_mae(data: dict) -> float:
    """MAE of the constant predictor (the training-label mean) on the test split."""
    y_tr = np.asarray(data["train"].regression_labels, float)
    y_te = np.asarray(data["test"].regression_labels, float)
    return float(np.abs(y_te - y_tr.mean()).mean())


__all__ = ["Protocol", "BOOK_MODELS", "CORE", "core_jobs", "compare", "core_metrics", "load", "loaders",
           "fit", "fit_all", "evaluate", "eval_transform",
           "model_config", "const_mae", "run_dir"]
