"""End to end: files in the public MMSA format written by another program load and train every
model family; LF-DNN on SynthMSA clearly beats the constant-mean predictor, deterministically."""
import pickle

import numpy as np
import pytest
import torch

from mmsa import models
from mmsa.data import load_features, make_loader, synthetic_splits
from mmsa.missing import make_train_transform
from mmsa.train import Trainer, TrainConfig

from test_data import mosi_like

SMALL = {  # small widths so one step of every model is cheap at MOSI's real lengths
    "emt_dlfr": dict(use_text_features=True, d_model=16, n_layers=1, audio_hidden=8, vision_hidden=8,
                     audio_out=8, vision_out=8, mlp_hidden=16, proj_dim=16, pred_hidden=8),
    "ufen_mtfn": {},
}
DAST_VARIANTS = [dict(use_dam=d, use_sta=s, use_gan=g) for d in (True, False) for s in (True, False)
                 for g in (True, False) if (d, s, g) != (False, False, False)]


@pytest.fixture(scope="module")
def public_pickle(tmp_path_factory):
    path = tmp_path_factory.mktemp("mosi") / "unaligned_50.pkl"
    with open(path, "wb") as f:
        pickle.dump(mosi_like(seed=3, sizes={"train": 8, "valid": 4, "test": 4}), f)
    return load_features(path, "mosi", verbose=False)


def _train(model, splits, **cfg):
    trainer = Trainer(model, TrainConfig(epochs=1, progress=False, seed=0, **cfg),
                      train_transform=make_train_transform("random", 0.3, 0))
    trainer.fit(make_loader(splits["train"], 4, shuffle=True), make_loader(splits["valid"], 4))
    result = trainer.evaluate(make_loader(splits["test"], 4))
    assert np.isfinite(result["mae"]) and np.isfinite(result["loss"])
    return result


@pytest.mark.parametrize("name", ["lf_dnn", "ef_lstm", "tfn", "lmf", "mult", "misa", "self_mm", "tfr_net", "ufen_mtfn"])
def test_public_format_trains(public_pickle, name):
    torch.manual_seed(0)
    _train(models.build_for_data(name, public_pickle["train"], **SMALL.get(name, {})), public_pickle)


@pytest.mark.parametrize("variant", [None] + DAST_VARIANTS, ids=lambda v: "emt_dlfr" if v is None else
                         "dast_gan-" + "-".join(k[4:] for k, on in v.items() if on))
def test_public_format_trains_emt_and_dast_variants(public_pickle, variant):
    torch.manual_seed(0)
    name = "emt_dlfr" if variant is None else "dast_gan"
    model = models.build_for_data(name, public_pickle["train"], **SMALL["emt_dlfr"], **(variant or {}))
    callbacks = [model.gan_schedule()] if variant and variant["use_gan"] else []
    trainer = Trainer(model, TrainConfig(epochs=1, progress=False, seed=0), callbacks=callbacks,
                      train_transform=make_train_transform("random", 0.3, 0))
    trainer.fit(make_loader(public_pickle["train"], 4, shuffle=True), make_loader(public_pickle["valid"], 4))
    assert np.isfinite(trainer.evaluate(make_loader(public_pickle["test"], 4))["mae"])


def test_lf_dnn_on_synthmsa_beats_mean_predictor_deterministically(tmp_path_factory):
    splits = synthetic_splits("mosi", (240, 60, 60), seed=0, root="data/synth", lengths=(50, 50, 50), verbose=False)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = models.build_for_data("lf_dnn", splits["train"])
        trainer = Trainer(model, TrainConfig(epochs=15, lr=3e-3, progress=False, seed=1, metric_dataset="synth_mosi"))
        trainer.fit(make_loader(splits["train"], 32, shuffle=True, seed=1), make_loader(splits["valid"], 64))
        results.append(trainer.evaluate(make_loader(splits["test"], 64)))
    assert results[0] == results[1]
    y_tr, y_te = splits["train"].labels, splits["test"].labels
    mean_mae = float(np.abs(y_te - y_tr.mean()).mean())
    assert results[0]["mae"] <= 0.8 * mean_mae, (results[0]["mae"], mean_mae)
