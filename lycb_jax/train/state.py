"""The training state between epochs, ``<out>/train_state.npz``, so that a killed run can resume
with the same result as an uninterrupted one. Written atomically with a SHA-256 inside; the previous
epoch's state is kept as ``train_state.prev.npz`` and used, with a warning, if the newer one is
damaged (:mod:`lycb_jax.io.durable`)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.io import durable
from lycb_jax.train.config import TRAIN_STATE



def save_train_state(path: Path, epoch: int, params, *, opt_state, best, rng, history, meta: dict) -> None:
    """Everything needed to continue after ``epoch`` (parameters, optimiser state, best epoch as
    (val loss, epoch, params), shuffling RNG, history, and ``meta`` to check a resume against),
    written atomically with its checksum (the previous epoch's kept as ``train_state.prev.npz``).
    CheckpointWriteError naming the folder if the disk is full or the folder not writable."""
    arrays = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    arrays |= {f"o{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt_state))}
    arrays |= {f"b{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(best[2]))}
    info = dict(meta, epoch=epoch, best_loss=best[0], best_epoch=best[1], rng=rng.bit_generator.state,
                history=history)
    durable.save_npz(path / TRAIN_STATE, dict(arrays, info=np.array(json.dumps(info, default=float))), "train_state")


def has_train_state(path: Path | None) -> bool:
    """Whether ``path`` holds a training state to resume (either generation)."""
    return path is not None and any(p.exists() for p in (path / TRAIN_STATE, durable.previous(path / TRAIN_STATE)))


def remove_train_state(path: Path) -> None:
    """Remove both generations of the training state (the run is complete)."""
    for p in (path / TRAIN_STATE, durable.previous(path / TRAIN_STATE)):
        p.unlink(missing_ok=True)


def load_train_state(path: Path, params, opt_state, *, rng, meta: dict):
    """(epoch, params, opt_state, best, history) saved by :func:`save_train_state`, shaped like
    ``params`` and ``opt_state``; sets ``rng``'s state. The previous epoch's state is used, with a
    warning, if the newer one is damaged; CorruptCheckpointError if neither is good. Raises
    ValueError when the saved run's ``meta`` (data, hyperparameters) differs."""
    z, used = durable.load_npz_or_previous(path / TRAIN_STATE)
    info = json.loads(str(z["info"]))
    for key in meta:
        if info.get(key) != json.loads(json.dumps(meta[key], default=float)):
            raise ValueError(f"cannot resume from {used}: its {key} differs from this run's "
                             f"({info.get(key)} vs {meta[key]}); use another --out or drop --resume")

    def restore(tree, prefix):
        leaves, treedef = jax.tree.flatten(tree)
        return jax.tree.unflatten(treedef, [jnp.asarray(z[f"{prefix}{i}"]) for i in range(len(leaves))])

    params_r, opt_r = restore(params, "p"), restore(opt_state, "o")
    best_params = jax.tree.map(np.array, restore(params, "b"))
    rng.bit_generator.state = info["rng"]
    return info["epoch"], params_r, opt_r, (info["best_loss"], info["best_epoch"], best_params), info["history"]
