"""Inverse refinement by reweighting (DiffTRe): move chosen layer groups of a model so that the
NVT-averaged stress in given cells (e.g. the experimental lattice at 300 K) equals a target (1 bar),
while a penalty keeps the fit to DFT energies and forces.

Why the stress and not the NpT volume: in a fixed cell the mean stress converges in a few ps of a small
cell, and a cell whose mean stress is -P at T is the NpT average cell at (T, P) to first order, all six
lattice degrees of freedom at once. The volume itself is then checked by NpT runs before and after.

Loss = mean over targets of sum_ij ((<sigma_ij>_theta - sigma*_ij) / stress_scale)^2 / 9
       + dft_weight * L_DFT(theta) / L_DFT(theta_0),
with <sigma>_theta reweighted from frames sampled at theta_0 (:mod:`lycb_jax.sensitivity.reweight`), the
kinetic stress -(N-1) kT / V (parameter independent) added, and L_DFT the fine-tuning loss
(:func:`lycb_jax.train.loss.batch_loss`) on labelled structures. The optimiser stops (reason "resample")
before the effective sample size of any target falls below ``min_ess_fraction``: re-sample at the new
parameters and call again. Units: GPa, eV, K.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lycb_jax.graph import Graph
from lycb_jax.sensitivity.reweight import (Frames, _energies, check_frames, frame_graphs, merge_params,
                                           reweighted_mean, split_params, virial_stress)
from lycb_jax.units import EV_A3_TO_GPA, KB


class StressTarget(NamedTuple):
    """Frames of one fixed-cell NVT run at ``temperature_K`` (K) with their reference energies (eV, at the
    sampling parameters), the kinetic stress [3, 3] (GPa, ASE sign) and the wanted total stress [3, 3] (GPa)."""

    frames: Frames
    graphs: Graph
    ref_energies: jax.Array
    kT: jax.Array
    kinetic_stress: jax.Array
    target_stress: jax.Array


def stress_target(model, frames: Frames, temperature_K: float, *, pressure_gpa: float = 1e-4, params=None,
                  stress_gpa=None, batch_size: int | None = 16) -> StressTarget:
    """A :class:`StressTarget` for frames of a fixed-cell run sampled with ``params`` (default the model's)
    at ``temperature_K``; the wanted stress is ``stress_gpa`` [3, 3] (GPa, ASE sign) if given, else
    -``pressure_gpa`` * I (1 bar by default)."""
    check_frames(frames)
    cells = np.asarray(frames.cells)
    if not np.allclose(cells, cells[:1], atol=1e-6):
        raise ValueError("stress_target needs frames of one fixed cell (an NVT run); these cells differ")
    if not temperature_K > 0:
        raise ValueError(f"temperature must be positive (K), got {temperature_K}")
    graphs, _ = frame_graphs(frames, model.module.cutoffs)
    ref = _energies(model.params if params is None else params, model.module, frames, graphs, batch_size)
    n = int(np.sum(np.asarray(frames.atom_mask)))
    vol = abs(np.linalg.det(cells[0]))
    kinetic = -(n - 1) * KB * temperature_K / vol * EV_A3_TO_GPA  # momentum fixed: 3N-3 degrees of freedom
    dtype = frames.positions.dtype
    return StressTarget(frames, graphs, ref, jnp.asarray(KB * temperature_K, dtype),
                        jnp.asarray(kinetic * np.eye(3), dtype),
                        jnp.asarray(-pressure_gpa * np.eye(3) if stress_gpa is None else stress_gpa, dtype))


def mean_stress(module, params, target: StressTarget, *, batch_size: int | None = 16):
    """(<sigma>_params [3, 3] in GPa including the kinetic part, Kish n_eff / F) of one target."""
    mean, w = reweighted_mean(params, module, target.frames, graphs=target.graphs, ref_energies=target.ref_energies,
                              kT=target.kT, observable=virial_stress, batch_size=batch_size)
    return mean + target.kinetic_stress, 1.0 / jnp.sum(w**2) / w.shape[0]


@dataclasses.dataclass
class RefineResult:
    """Refined ``params``, the per-step ``history`` (loss, residual pressure and n_eff per target, DFT
    loss ratio) and why it stopped: "converged", "resample" (n_eff too low) or "steps"."""

    params: dict
    history: list[dict]
    reason: str


def refine_stress(model, targets: Sequence[StressTarget], dft_batches: Sequence[dict] = (), *,
                  dft_loss: Callable | None = None,
                  select: Sequence[str] = ("readout",), steps: int = 50, learning_rate: float = 1e-4,
                  dft_weight: float = 1.0, stress_scale_gpa: float = 0.1, tolerance_gpa: float = 0.05,
                  min_ess_fraction: float = 0.5, params=None, batch_size: int | None = 16,
                  dft_reference: float | None = None, log: Callable | None = print) -> RefineResult:
    """Adam steps on the layer groups ``select`` of ``params`` (default the model's) that bring every
    target's mean stress to its wanted value (see the module doc). ``dft_loss(params, batch) -> scalar``
    over ``dft_batches`` is the penalty (e.g. :func:`lycb_jax.train.loss.batch_loss`'s loss with stress
    weight 0). Stops at "converged" (every stress component within ``tolerance_gpa``), "resample" (the
    next step would leave n_eff / F < ``min_ess_fraction`` for some target; the params returned are the
    last ones above it) or after ``steps``. ``dft_reference``: L_DFT of the original model, so that
    the penalty of a later round is relative to it (default: L_DFT at the starting ``params``)."""
    if not targets:
        raise ValueError("refine_stress needs at least one StressTarget")
    if dft_batches and dft_loss is None:
        raise ValueError("dft_batches given without dft_loss")
    module = model.module
    params = model.params if params is None else params
    selected, rest = split_params(params, select, module.layer_groups())
    targets, dft_batches = tuple(targets), tuple(dft_batches)

    def stress_loss(sel, targets):
        p = merge_params(sel, rest)
        res, ess = [], []
        for t in targets:
            s, e = mean_stress(module, p, t, batch_size=batch_size)
            res.append(s - t.target_stress)
            ess.append(e)
        res = jnp.stack(res)
        return jnp.mean(jnp.sum((res / stress_scale_gpa) ** 2, axis=(1, 2)) / 9), (res, jnp.stack(ess))

    # the stress term and each DFT batch are differentiated in separate calls (one program per shape) and
    # summed here: one program over all of them would hold every batch's residuals at once
    stress_grad = jax.jit(jax.value_and_grad(stress_loss, has_aux=True))
    dft_grad = jax.jit(jax.value_and_grad(lambda sel, batch: dft_loss(merge_params(sel, rest), batch)))
    dft0 = dft_reference or (sum(float(dft_grad(selected, b)[0]) for b in dft_batches) if dft_batches else 1.0)
    opt = optax.adam(learning_rate)
    opt_state = opt.init(selected)
    history, last_ok, reason = [], selected, "steps"
    for step in range(steps + 1):
        (loss, (res, ess)), g = stress_grad(selected, targets)
        dft = 0.0
        for b in dft_batches:
            lb, gb = dft_grad(selected, b)
            dft += float(lb) / dft0
            g = jax.tree.map(lambda a, c: a + dft_weight / dft0 * c, g, gb)
        loss = float(loss) + dft_weight * dft
        res, ess = np.asarray(res), np.asarray(ess)
        row = {"step": step, "loss": float(loss), "dft_loss_ratio": float(dft) if dft_batches else None,
               "pressure_gpa": [float(-np.trace(r) / 3) for r in res],  # residual: <P> - P*
               "max_abs_stress_residual_gpa": float(np.max(np.abs(res))), "ess_fraction": [float(e) for e in ess]}
        if np.any(ess < min_ess_fraction):
            reason = "resample"
            break
        history.append(row)
        last_ok = selected
        if log:
            log(f"refine step {step:3d}: loss {row['loss']:.4g}, residual P "
                + " ".join(f"{p:+.3f}" for p in row["pressure_gpa"]) + " GPa, n_eff/F "
                + " ".join(f"{e:.2f}" for e in row["ess_fraction"])
                + (f", DFT loss x{row['dft_loss_ratio']:.3f}" if dft_batches else ""))
        if row["max_abs_stress_residual_gpa"] < tolerance_gpa:
            reason = "converged"
            break
        if step == steps:
            break
        updates, opt_state = opt.update(g, opt_state, selected)
        selected = optax.apply_updates(selected, updates)
    return RefineResult(merge_params(last_ok, rest), history, reason)


def dft_penalty(model, dataset, energy_weight: float = 1.0, *, force_weight: float = 1.0, stress_weight: float = 0.0,
                batch_size: int = 32) -> tuple[list[dict], Callable]:
    """(batches, loss(params, batch)) of a labelled :class:`lycb_jax.train.data.Dataset` for
    :func:`refine_stress`'s penalty: the fine-tuning MSE loss with these weights (stress 0 by default:
    the refinement is meant to move the stress away from the DFT reference's)."""
    from lycb_jax.train.config import FinetuneConfig
    from lycb_jax.train.loss import batch_loss
    from lycb_jax.train.pack import bucket_limit, choose_buckets, iter_batches, pack_dataset

    cfg = FinetuneConfig(energy_weight=energy_weight, force_weight=force_weight, stress_weight=stress_weight,
                         magmom_weight=0.0, criterion="mse", batch_size=batch_size)
    packed = pack_dataset(dataset, choose_buckets([len(s) for s in dataset.systems], bucket_limit(cfg)),
                          model.cutoffs)
    batches = [b for _, b in iter_batches(packed, batch_size)]
    module = model.module
    return batches, lambda params, batch: batch_loss(module, params, batch, cfg=cfg)[0]
