"""Weighted least squares of a straight line: the one fit behind the Einstein fit (MSD vs t) and the
Arrhenius fit (ln D vs 1000/T)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


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
