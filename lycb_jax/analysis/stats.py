"""Straight-line fits: weighted least squares (the Arrhenius fit, ln D vs 1000/T) and generalised
least squares with a full data covariance (the Einstein fit, MSD vs t)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import cho_factor, cho_solve


class LineFit(NamedTuple):
    """y = intercept + slope * x fitted with weights w (a pytree, so vmap-able)."""

    slope: jax.Array
    intercept: jax.Array
    x_mean: jax.Array  # weighted means
    y_mean: jax.Array
    sum_w: jax.Array
    sxx: jax.Array  # sum w (x - x_mean)^2
    chi2_red: jax.Array  # sum w r^2 / max(n - 2, 1), n = number of points with w > 0


def wls_line(x, y, w) -> LineFit:
    """Weighted least squares line through (x, y) with weights w >= 0 (0 drops a point).

    Centred normal equations (stable in float32), jit/vmap-able.  Slope variance: ``1 / sxx`` when
    w = 1/sigma^2 are true inverse variances, ``chi2_red / sxx`` when estimated from the residuals;
    variance of ``y_mean``: ``1 / sum_w`` (times ``chi2_red`` likewise).
    """
    sw = jnp.sum(w)
    xm, ym = jnp.sum(w * x) / sw, jnp.sum(w * y) / sw
    dx = x - xm
    sxx = jnp.sum(w * dx**2)
    b = jnp.sum(w * dx * (y - ym)) / sxx
    chi2 = jnp.sum(w * (y - ym - b * dx) ** 2) / jnp.maximum(jnp.sum(w > 0) - 2, 1)
    return LineFit(b, ym - b * xm, xm, ym, sw, sxx, chi2)


class GLSLine(NamedTuple):
    """y = intercept + slope * x from generalised least squares with covariance ``cov`` (numpy)."""

    slope: float
    intercept: float
    cov: np.ndarray  # 2x2 covariance of (slope, intercept)
    chi2_red: float  # r^T C^-1 r / (K - 2): ~1 when the covariance model fits the scatter


def gls_line(x, y, cov) -> GLSLine:
    """Generalised least squares line through (x [K], y [K]) with the data covariance cov [K, K].

    float64 numpy on K <= ~100 points (a few microseconds; the MSD itself is computed on the
    device).  Cholesky solve; if the covariance is numerically not positive definite its eigenvalues
    are floored at 1e-12 of the largest (kinisi's minimum-eigenvalue reconditioning).
    """
    x, y, c = (np.asarray(v, np.float64) for v in (x, y, cov))
    a = np.stack([x, np.ones_like(x)], axis=1)
    try:
        factor = cho_factor(c)
        solve = lambda b: cho_solve(factor, b)  # noqa: E731
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(c)
        w = np.maximum(w, 1e-12 * w.max())
        solve = lambda b: (v / w) @ (v.T @ b)  # noqa: E731
    ci_a, ci_y = solve(a), solve(y)
    p_cov = np.linalg.inv(a.T @ ci_a)
    slope, intercept = p_cov @ (a.T @ ci_y)
    r = y - a @ np.array([slope, intercept])
    chi2 = float(r @ solve(r)) / max(x.size - 2, 1)
    return GLSLine(float(slope), float(intercept), p_cov, chi2)
