"""Setting up a training run: the one function that turns (model, data, config) into a Trainer.

``mmsa train`` (``mmsa.cli``), ``mmsa.experiment.fit``, the timed training step of
``mmsa.efficiency`` and the benchmarks all call ``make_trainer``, so a model is trained the same
way wherever it is trained.  The model supplies its own hooks (docs/design.md §2):

* ``training_callbacks()``   -> Trainer callbacks (DAST-GAN: its GAN schedule);
* ``patience_start_epoch()`` -> the epoch after which early-stopping patience counts (DAST-GAN:
  after its warm-up and ramp) -- unless the caller's config names one;
* optimiser groups: every trainable parameter except the ``discriminator.`` (a callback's own
  optimiser steps it), BERT weights at ``bert_lr`` (``mmsa.train.param_groups``).

    trainer = make_trainer(model, dict(epochs=20, seed=1), train_transform=..., model_name="dast_gan")
    trainer.fit(loaders["train"], loaders["valid"])

Which data sets exist and how each is loaded: ``mmsa.data.datasets``.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from mmsa.train import Trainer, TrainConfig, train_config
from mmsa.types import Batch


def model_hooks(model: nn.Module) -> dict:
    """What ``model`` asks of its training: ``callbacks`` and ``patience_start_epoch``."""
    return {"callbacks": list(model.training_callbacks()) if hasattr(model, "training_callbacks") else [],
            "patience_start_epoch": int(model.patience_start_epoch()) if hasattr(model, "patience_start_epoch") else 0}


def make_trainer(model: nn.Module, config: dict | TrainConfig | None = None, *,
                 train_transform: Optional[Callable[[Batch, int, int], Batch]] = None,
                 eval_transform: Optional[Callable[[Batch, int], Batch]] = None,
                 model_name: Optional[str] = None) -> Trainer:
    """The Trainer for ``model``: its hooks (callbacks, patience start) plus the caller's config.

    ``config``: TrainConfig keys (a dict; unknown keys raise with the valid ones listed) or a
    ``TrainConfig``.  A dict without ``patience_start_epoch`` takes the model's; a TrainConfig is
    used as it is.  ``model_name`` (the registry name) goes into checkpoints so that
    ``mmsa.checkpoint.load_trained`` can rebuild the model.
    """
    hooks = model_hooks(model)
    if not isinstance(config, TrainConfig):
        config = train_config(**{"patience_start_epoch": hooks["patience_start_epoch"], **(config or {})})
    return Trainer(model, config, callbacks=hooks["callbacks"], train_transform=train_transform,
                   eval_transform=eval_transform, model_name=model_name)


def fit_and_test(model, train_loader, valid_loader, test_loader, config: dict | TrainConfig | None = None,
                 **kw) -> tuple[Trainer, dict]:
    """Convenience for notebooks: train with early stopping, then test metrics of the best model."""
    trainer = make_trainer(model, config, **kw)
    trainer.fit(train_loader, valid_loader)
    return trainer, trainer.evaluate(test_loader)


__all__ = ["make_trainer", "model_hooks", "fit_and_test"]
