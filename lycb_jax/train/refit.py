"""Refit of the composition model (``atom_ref``, eV per element) to a data set's energies."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lycb_jax.models import Model
from lycb_jax.models.predict import predict
from lycb_jax.train.data import Dataset


def refit_composition(model: Model, ds: Dataset, predicted: np.ndarray | None = None) -> tuple[Model, dict]:
    """Least-squares refit of ``atom_ref`` (eV per element) so that the mean energy per atom
    residual (labels minus model, eV/atom) is removed element-wise.

    Solves ``fractions @ delta = residual_per_atom`` for the elements present (minimum-norm
    solution when compositions are linearly dependent, e.g. fixed Li:Y ratio), adds ``delta`` to
    ``atom_ref``; other elements are untouched. ``predicted``: the model's total energies (eV) of
    ``ds`` if already known (else :func:`lycb_jax.predict` computes them). Returns the new model
    and the per-element shifts (eV) with the residual MAE before and after (meV/atom).
    """
    ok = np.isfinite(ds.energy)
    sub = ds.subset(np.flatnonzero(ok))
    if predicted is None:
        pred = np.array([p.energy for p in predict(model, sub.systems)])
    else:
        pred = np.asarray(predicted, np.float64)[ok]
    n = np.array([len(s) for s in sub.systems], float)
    resid = (sub.energy - pred) / n
    z = sorted({int(v) for s in sub.systems for v in s.numbers})
    frac = np.array([[np.sum(s.numbers == e) for e in z] for s in sub.systems], float) / n[:, None]
    delta, *_ = np.linalg.lstsq(frac, resid, rcond=None)
    ref = np.asarray(model.params["atom_ref"], np.float64).copy()
    ref[np.array(z) - 1] += delta
    params = dict(model.params, atom_ref=jnp.asarray(ref, jnp.float32))
    info = {"shift_eV": {int(e): float(d) for e, d in zip(z, delta)},
            "residual_mae_meV_per_atom_before": 1e3 * float(np.mean(np.abs(resid))),
            "residual_mae_meV_per_atom_after": 1e3 * float(np.mean(np.abs(resid - frac @ delta)))}
    return dataclasses.replace(model, params=params), info
