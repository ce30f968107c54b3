"""Arrhenius fit of D(T) (paper Eq. 3) and extrapolation of D and sigma to another temperature.

Units: T in K, D in cm^2/s, Ea in eV, sigma in mS/cm; the fit is ln D vs 1000/T (1/K).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lycb_jax.analysis.diffusion import nernst_einstein
from lycb_jax.analysis.stats import wls_line
from lycb_jax.units import KB


class Arrhenius(NamedTuple):
    """Arrhenius fit D = D0 exp(-Ea / kB T) (a pytree, so vmap-able)."""

    Ea: jax.Array  # eV
    Ea_err: jax.Array
    D0: jax.Array  # cm^2/s
    D0_err: jax.Array
    cov: jax.Array  # 2x2 covariance of (ln D0, Ea)
    chi2_red: jax.Array
    x_mean: jax.Array  # weighted mean of 1000/T (1/K); centred parameters used by ``extrapolate``
    y_mean: jax.Array  # weighted mean of ln D
    var_y_mean: jax.Array
    var_slope: jax.Array  # variance of d lnD / d(1000/T)


def arrhenius_fit(temperatures, D, D_err):
    """Weighted least squares of ln D vs 1000/T (weights (D / D_err)^2); jit/vmap-able, float32.

    temperatures (K), D and D_err (cm^2/s).  The covariance is scaled by max(1, chi2_red) (Birge
    ratio): scatter beyond the stated D errors inflates it, smaller scatter does not shrink it.
    """
    t = jnp.asarray(temperatures, jnp.float32)
    d = jnp.asarray(D, jnp.float32)
    w = (d / jnp.asarray(D_err, jnp.float32)) ** 2
    fit = wls_line(1000.0 / t, jnp.log(d), w)
    s = jnp.maximum(1.0, fit.chi2_red)
    var_b, var_ym = s / fit.sxx, s / fit.sum_w
    k = KB * 1000.0  # eV per (1000/T) unit of slope
    xm = fit.x_mean
    var_a = var_ym + xm**2 * var_b
    cov = jnp.array([[var_a, xm * var_b * k], [xm * var_b * k, var_b * k**2]])
    d0 = jnp.exp(fit.intercept)
    return Arrhenius(-fit.slope * k, jnp.sqrt(var_b) * k, d0, d0 * jnp.sqrt(var_a), cov, fit.chi2_red,
                     xm, fit.y_mean, var_ym, var_b)


def extrapolate(fit, temperature=300.0):
    """ln-normal extrapolation of D (cm^2/s) to ``temperature`` (K) -> (D, D_err, ln_err)."""
    x = 1000.0 / temperature
    slope = -fit.Ea / (KB * 1000.0)
    ln_d = fit.y_mean + slope * (x - fit.x_mean)
    ln_err = jnp.sqrt(fit.var_y_mean + (x - fit.x_mean) ** 2 * fit.var_slope)
    d = jnp.exp(ln_d)
    return d, d * ln_err, ln_err


def conductivity_at(fit, n_ions, volume_A3, *, temperature=300.0, charge=1.0):
    """Nernst-Einstein conductivity (mS/cm) at ``temperature`` (K) from the Arrhenius fit, with its
    propagated 1-sigma error (from the fit covariance, linearised in ln sigma); volume in A^3."""
    d, d_err, _ = extrapolate(fit, temperature)
    f = nernst_einstein(1.0, n_ions, volume_A3, temperature=temperature, charge=charge)
    return d * f, d_err * f
