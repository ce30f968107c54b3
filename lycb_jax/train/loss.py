"""The fine-tuning loss of one padded batch.

CHGNet's ``CombinedLoss`` defaults: 1 * L(E/atom, eV/atom) + 1 * L(F components, eV/A)
+ 0.1 * L(9 stress components, GPa) + 0.1 * L(|m|, muB), L = MSE (default), Huber (delta 0.1)
or MAE, each term a mean over the valid (labelled, non-padding) entries of the batch.

Matrix products: on a GPU three TF32 passes unless the user chose a precision
(:func:`matmul_precision`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax

from lycb_jax import runtime
from lycb_jax.models import energy_forces_stress
from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.pack import batch_graph


def matmul_precision() -> str:
    """Matrix-product algorithm of the fine-tuning programs: the user's choice if any
    (:func:`lycb_jax.runtime.set_matmul_precision`, $LYCB_JAX_MATMUL_PRECISION, or
    $JAX_DEFAULT_MATMUL_PRECISION), else on a GPU three TF32 passes (float32 accuracy: the same
    train loss to 7 digits as "highest"; forces within 4e-5 eV/A in benchmarks/profile_md.py),
    22% faster train steps (H200, bench_compile_h200_prec_*.json), else
    :func:`lycb_jax.runtime.matmul_precision` ("highest")."""
    if runtime.chosen_matmul_precision():
        return runtime.chosen_matmul_precision()
    if "JAX_DEFAULT_MATMUL_PRECISION" in os.environ:
        return jax.config.jax_default_matmul_precision or "default"
    return "TF32_TF32_F32_X3" if jax.default_backend() == "gpu" else runtime.matmul_precision()


def _term(pred, target, mask, cfg: FinetuneConfig):
    """Masked mean loss and error sums (|d|, d^2, count) of one target."""
    d = jnp.where(mask, pred - jnp.where(mask, target, 0.0), 0.0)
    if cfg.criterion == "mse":
        per = d * d
    elif cfg.criterion == "huber":
        per = optax.huber_loss(d, delta=cfg.huber_delta)
    elif cfg.criterion == "mae":
        per = jnp.abs(jnp.where(mask, d, 1.0))  # where: no NaN gradient at d = 0
    else:
        raise ValueError(f"criterion {cfg.criterion!r}: use mse, huber or mae")
    n = jnp.sum(mask)
    loss = jnp.sum(jnp.where(mask, per, 0.0)) / jnp.maximum(n, 1)
    return loss, jnp.stack([jnp.sum(jnp.abs(d)), jnp.sum(d * d), n.astype(d.dtype)])


def batch_loss(module, params, batch: dict, *, cfg: FinetuneConfig):
    """Weighted loss of one padded batch and error sums {e, f, s, m: [sum|d|, sum d^2, count]}.

    Energy per atom (eV/atom), forces (eV/A), stress (GPa, 9 components), magmoms (muB), on
    the batch's precomputed graphs, matrix products at :func:`matmul_precision`. Returns
    (loss, stats, predicted total energies [B] in eV)."""
    with runtime.precision_scope(matmul_precision()):
        e, f, s, m = jax.vmap(energy_forces_stress, in_axes=(None, None, 0, 0, 0, 0, 0))(
            module, params, batch["species"], batch["positions"], batch["cells"], batch["atom_mask"],
            batch_graph(batch))
    w = batch["weight"] > 0
    n_atoms = jnp.maximum(jnp.sum(batch["atom_mask"], axis=1), 1)
    atom_ok = w[:, None] & batch["atom_mask"]
    terms = {
        "e": _term(e / n_atoms, batch["energy"], w & batch["e_mask"], cfg),
        "f": _term(f, batch["forces"], (atom_ok & batch["f_mask"])[..., None] & jnp.ones(3, bool), cfg),
        "s": _term(s, batch["stress"], (w & batch["s_mask"])[:, None, None] & jnp.ones((3, 3), bool), cfg),
        "m": _term(m, batch["magmom"], atom_ok & batch["m_mask"], cfg),
    }
    weights = {"e": cfg.energy_weight, "f": cfg.force_weight, "s": cfg.stress_weight, "m": cfg.magmom_weight}
    loss = sum(weights[k] * terms[k][0] for k in terms)
    return loss, {k: v[1] for k, v in terms.items()}, e
