"""Thermodynamic derivatives from the fluctuations of one equilibrium run, with block-jackknife errors.

* C_v = <dE^2> / (k T^2) (NVT; E total energy, or potential energy plus the kinetic dof k/2);
* beta_T = <dV^2> / (k T <V>) and alpha_P = <dV dH> / (k T^2 <V>), H = E + P V (NpT, Allen and Tildesley 2.5).

Errors: the estimator is recomputed with each of ``n_blocks`` contiguous blocks left out (jackknife
over blocks), which accounts for time correlation shorter than a block and for the nonlinearity of
variances and ratios. Hand-written (a few lines of numpy) since pymbar/ase do not offer it for
arbitrary estimators. Inputs are host arrays of frames in time order; units: eV, Angstrom^3, K, bar.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lycb_jax.units import BAR, EV_A3_TO_GPA, KB


def block_jackknife(estimator: Callable, *series, n_blocks: int = 20) -> tuple[float, float]:
    """(estimate on all frames, jackknife standard error over ``n_blocks`` contiguous blocks) of
    ``estimator(*series)``; every series is [F] in time order (a leading remainder of F mod n_blocks
    frames is dropped). Blocks must be longer than the correlation time for the error to hold."""
    arrays = [np.asarray(s, np.float64) for s in series]
    n = len(arrays[0])
    if any(a.shape != (n,) for a in arrays):
        raise ValueError(f"all series must be 1-d of equal length, got {[a.shape for a in arrays]}")
    if n_blocks < 2 or n < 2 * n_blocks:
        raise ValueError(f"need n_blocks >= 2 and at least 2 frames per block ({n} frames, {n_blocks} blocks)")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("series contain non-finite values")
    size = n // n_blocks
    arrays = [a[n - size * n_blocks:] for a in arrays]
    full = float(estimator(*arrays))
    keep = np.ones(size * n_blocks, bool)
    leave_out = np.empty(n_blocks)
    for b in range(n_blocks):
        keep[:] = True
        keep[b * size:(b + 1) * size] = False
        leave_out[b] = estimator(*(a[keep] for a in arrays))
    err = np.sqrt((n_blocks - 1) / n_blocks * np.sum((leave_out - leave_out.mean()) ** 2))
    return full, float(err)


def heat_capacity_nvt(energy, temperature_K: float, kinetic_dof: int = 0, *, n_blocks: int = 20) -> tuple[float, float]:
    """(C_v, error) in eV/K from NVT energies [F] (eV) at ``temperature_K``: var(E) / (k T^2) + kinetic_dof k / 2.
    Pass the total energy with kinetic_dof = 0, or the potential energy with the kinetic degrees of
    freedom (3N - 3 with the total momentum fixed), which is less noisy and exact for classical momenta.
    Divide by k (:data:`lycb_jax.units.KB`) for units of k_B."""
    if not temperature_K > 0:
        raise ValueError(f"temperature must be positive (K), got {temperature_K}")
    kT2 = KB * temperature_K**2
    c, err = block_jackknife(lambda e: np.var(e) / kT2, energy, n_blocks=n_blocks)
    return c + 0.5 * kinetic_dof * KB, err


def npt_response(volume, energy, temperature_K: float, *, pressure_bar: float, n_blocks: int = 20) -> dict:
    """Isothermal compressibility and thermal expansion from NpT volumes [F] (Angstrom^3) and total energies [F]
    (eV) at ``temperature_K`` and ``pressure_bar``. Returns {"compressibility_per_GPa": (beta_T, err),
    "bulk_modulus_GPa": (1 / beta_T, err), "thermal_expansion_per_K": (alpha_P, err)} (volumetric alpha)."""
    if not temperature_K > 0:
        raise ValueError(f"temperature must be positive (K), got {temperature_K}")
    kT = KB * temperature_K
    v = np.asarray(volume, np.float64)
    h = np.asarray(energy, np.float64) + pressure_bar * BAR * v

    def beta_t(v):
        return np.var(v) / (kT * np.mean(v)) / EV_A3_TO_GPA  # A^3/eV -> 1/GPa

    def alpha_p(v, h):
        return np.mean((v - v.mean()) * (h - h.mean())) / (kT * temperature_K * np.mean(v))

    beta = block_jackknife(beta_t, v, n_blocks=n_blocks)
    bulk = block_jackknife(lambda v: 1.0 / beta_t(v), v, n_blocks=n_blocks)
    alpha = block_jackknife(alpha_p, v, h, n_blocks=n_blocks)
    return {"compressibility_per_GPa": beta, "bulk_modulus_GPa": bulk, "thermal_expansion_per_K": alpha}
