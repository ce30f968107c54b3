"""Wrapped vs unwrapped coordinates: detect wrapping, unwrap by integer cell images.

positions [T, N, 3] in Angstrom; cell [3, 3] or per-frame [T, 3, 3] (rows = lattice vectors, Angstrom).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _rowvec(v, m, xp=jnp):
    """v [T, N, 3] times matrix m [3, 3] or per-frame [T, 3, 3]."""
    return v @ m if m.ndim == 2 else xp.einsum("tni,tij->tnj", v, m)


def _frac_steps(positions, cell):
    """(fractional positions [T, N, 3], frame-to-frame fractional steps [T-1, N, 3])."""
    pos = jnp.asarray(positions)
    frac = _rowvec(pos, jnp.linalg.inv(jnp.asarray(cell, pos.dtype)))
    return frac, frac[1:] - frac[:-1]


def wrap_jumps(positions, cell, threshold=0.5):
    """Number of frame-to-frame jumps larger than ``threshold`` in fractional coordinates.

    A jump of about one cell length between consecutive frames means the coordinates are wrapped.
    """
    _, d = _frac_steps(positions, cell)
    return jnp.sum(jnp.abs(d) > threshold)


def check_unwrapped(positions, cell, threshold=0.5):
    """Raise ValueError if the trajectory looks wrapped (jumps of ~a cell length between frames)."""
    _, d = _frac_steps(np.asarray(positions, np.float64), np.asarray(cell, np.float64))
    bad = np.argwhere(np.abs(np.asarray(d)) > threshold)
    if bad.size:
        f, a, k = bad[0]
        raise ValueError(
            f"trajectory has wrapped coordinates: {len(bad)} jumps > {threshold} of a cell vector between "
            f"consecutive frames (first: atom {a}, frames {f}->{f + 1}, axis {k}); unwrap it with "
            "lycb_jax.analysis.unwrap(positions, cell) or pass wrapped='unwrap'"
        )


def _image_shifts(positions, cell):
    """Cumulative integer cell images [T, N, 3] crossed since frame 0 (minimum-image steps)."""
    _, d = _frac_steps(positions, cell)
    return jnp.concatenate([jnp.zeros_like(d[:1]), jnp.cumsum(jnp.round(d), axis=0)])


def unwrap(positions, cell):
    """Unwrap positions [T, N, 3] (Angstrom) by minimum-image frame-to-frame steps in fractional coords.

    Valid when no atom moves more than half a cell vector between stored frames.  Only integer
    cell images are added, so no error accumulates.  JAX (float32 unless x64 is enabled).
    """
    cell = jnp.asarray(cell)
    n = _image_shifts(positions, cell)
    return jnp.asarray(positions) - _rowvec(n, cell)


def _unwrap64(positions, cell):
    """``unwrap`` in numpy float64 (the image counts from JAX, the positions kept in float64)."""
    pos, cell = np.asarray(positions, np.float64), np.asarray(cell, np.float64)
    n = np.asarray(_image_shifts(pos, cell), np.float64)
    return pos - _rowvec(n, cell, np)
