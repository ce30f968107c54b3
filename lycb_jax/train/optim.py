"""Optimiser and learning-rate schedule.

Schedule: CHGNet's ``CosLR`` is ``CosineAnnealingLR(T_max=10*epochs, eta_min=0.01*lr)`` stepped
10 times per epoch, i.e. one cosine from lr to 0.01*lr over the whole run in 10*epochs stairs.
Here the same cosine is applied smoothly per optimiser step
(``optax.cosine_decay_schedule(lr, epochs*steps_per_epoch, alpha=0.01)``). The rates are
evaluated on the host and fed to the train program as an input, so runs that differ only in
learning rate, schedule or number of epochs share compiled programs (and the persistent cache).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from lycb_jax.train.config import FinetuneConfig


def learning_rates(cfg: FinetuneConfig, steps_per_epoch: int) -> np.ndarray:
    """Learning rate of every optimiser step of the run (float32 [epochs * steps_per_epoch])."""
    n = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cos":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, n, alpha=cfg.decay_fraction)(jnp.arange(n))
    elif cfg.scheduler == "constant":
        lr = jnp.full(n, cfg.learning_rate)
    else:
        raise ValueError(f"scheduler {cfg.scheduler!r}: use cos or constant")
    return np.asarray(lr, np.float32)


def make_optimizer(cfg: FinetuneConfig, labels) -> optax.GradientTransformation:
    """Adam/AdamW at unit learning rate on trainable groups, ``set_to_zero`` on frozen ones
    (``labels``: :func:`lycb_jax.models.groups.param_labels`); the train step scales the updates
    by -learning rate (:func:`learning_rates`), which is how ``optax.adam``/``adamw`` end
    (``scale_by_learning_rate``)."""
    if cfg.optimizer == "adam":
        wd = cfg.weight_decay or 0.0
        opt = optax.scale_by_adam() if wd == 0 else optax.chain(optax.add_decayed_weights(wd), optax.scale_by_adam())
    elif cfg.optimizer == "adamw":
        opt = optax.chain(optax.scale_by_adam(),
                          optax.add_decayed_weights(1e-2 if cfg.weight_decay is None else cfg.weight_decay))
    else:
        raise ValueError(f"optimizer {cfg.optimizer!r}: use adam or adamw")
    return optax.multi_transform({"trainable": opt, "frozen": optax.set_to_zero()}, labels)
