"""The train and eval programs, jitted and compiled ahead of time, one per bucket.

On a GPU the programs are compiled with XLA's autotuning off (:func:`compiler_options`: 35 instead
of 56 s for the train program, 5% slower steps, benchmarks/results/bench_compile_h200_autotune.json)
and use three-pass TF32 matrix products (:func:`lycb_jax.train.loss.matmul_precision`). The
learning rate is an input of the train program, so runs that differ only in learning rate,
schedule or number of epochs share compiled programs (and the persistent cache).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import numpy as np
import optax

from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.loss import batch_loss
from lycb_jax.train.pack import iter_batches

LOSS_FIELDS = ("criterion", "huber_delta", "energy_weight", "force_weight", "stress_weight", "magmom_weight")


def compiler_options() -> dict | None:
    """XLA options for the fine-tuning programs: no autotuning on a GPU (see the module docstring)."""
    return {"xla_gpu_autotune_level": 0} if jax.default_backend() == "gpu" else None


def loss_key(cfg: FinetuneConfig) -> tuple:
    """The config fields that define the loss, as a hashable key for :func:`make_eval_step`."""
    return tuple((k, getattr(cfg, k)) for k in LOSS_FIELDS)


def make_steps(module, tx: optax.GradientTransformation, labels, *, cfg: FinetuneConfig):
    """(train_step(params, opt_state, batch, learning_rate), eval_step(params, batch)), jitted.

    The train step returns (params, opt_state, loss, stats); ``learning_rate`` is per step
    (:func:`lycb_jax.train.optim.learning_rates`); ``labels`` marks frozen leaves."""
    def loss_aux(params, batch):
        loss, stats, _ = batch_loss(module, params, batch, cfg=cfg)
        return loss, stats

    def train_step(params, opt_state, batch, learning_rate):
        (loss, stats), grads = jax.value_and_grad(loss_aux, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        new = optax.apply_updates(params, jax.tree.map(lambda u: -learning_rate * u, updates))
        # frozen leaves are carried over as they are (bit-identical, and no dead compute)
        new = jax.tree.map(lambda lab, old, nw: old if lab == "frozen" else nw, labels, params, new)
        return new, opt_state, loss, stats

    donate = (0, 1) if jax.default_backend() != "cpu" else ()  # CPU cannot donate buffers
    return jax.jit(train_step, donate_argnums=donate), make_eval_step(module, loss_key(cfg))


@functools.lru_cache(maxsize=16)
def make_eval_step(module, key: tuple):
    """Jitted (loss, stats, energies) of a batch (:func:`lycb_jax.train.loss.batch_loss`), cached
    per module and loss settings (``key``: :func:`loss_key`)."""
    cfg = FinetuneConfig(**dict(key))
    return jax.jit(lambda params, batch: batch_loss(module, params, batch, cfg=cfg),
                   compiler_options=compiler_options())


def compile_programs(train_step, eval_step, params, *, opt_state, packs: dict, batch_size: int,
                     eval_splits: Sequence[str] = ("train", "val", "test")):
    """Ahead-of-time compile every bucket's train and eval program at once: ({capacity: train},
    {capacity: eval}); ``packs``: split name -> packed buckets (:mod:`lycb_jax.train.pack`).

    Tracing runs here one program after the other; the XLA compilations run in threads, which
    XLA does outside the GIL, so that the 2 x buckets programs build side by side instead of
    one per first batch of each bucket (the train step takes about a minute alone on an H100)."""
    jobs = {}
    for name, packed in packs.items():
        for pb in packed:
            cap, batch = next(iter_batches([pb], batch_size))
            if name == "train" and ("train", cap) not in jobs:
                jobs["train", cap] = train_step.lower(params, opt_state, batch, np.float32(0.0))
            if name in eval_splits and ("eval", cap) not in jobs:
                jobs["eval", cap] = eval_step.lower(params, batch)
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        done = dict(zip(jobs, pool.map(lambda lowered: lowered.compile(compiler_options()), jobs.values())))
    return ({cap: fn for (kind, cap), fn in done.items() if kind == "train"},
            {cap: fn for (kind, cap), fn in done.items() if kind == "eval"})
