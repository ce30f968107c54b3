"""Wrapped vs unwrapped coordinates: detect wrapping, unwrap by integer cell images.

positions [T, N, 3] in Angstrom; cell [3, 3] or per-frame [T, 3, 3] (rows = lattice vectors, Angstrom);
a per-frame cell (NpT) is unwrapped with each frame's own cell (``unwrap_npt``).
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

    Fixed cell [3, 3]: integer cell images are added (no error accumulates); JAX (float32 unless x64).
    Per-frame cell [T, 3, 3] (NpT): ``unwrap_npt`` (each frame's own cell; numpy float64).
    Valid when no atom moves more than half a cell vector between stored frames.
    """
    if np.ndim(cell) == 3:
        return unwrap_npt(positions, cell)
    cell = jnp.asarray(cell)
    n = _image_shifts(positions, cell)
    return jnp.asarray(positions) - _rowvec(n, cell)


def unwrap_npt(positions, cells):
    """Unwrap positions [T, N, 3] (A) of a run with a changing cell [T, 3, 3] (rows, A): each frame is
    wrapped into its own cell, then the minimum-image step between consecutive frames, taken in the
    later frame's cell, is accumulated (the "toroidal-view-preserving" scheme of von Buelow, Bullerjahn
    and Hummer, J. Chem. Phys. 153, 021101 (2020)).  Adding images times each frame's cell instead
    (``(s + n) h_t``, what an NpT integrator's scaled coordinates give) makes the box fluctuations grow
    with the number of images crossed and inflates D.  Takes wrapped positions or the integrator's
    ``(s + n) h_t`` ones (both wrap to the same frames); float64 numpy (a cumulative sum of steps)."""
    pos, h = np.asarray(positions, np.float64), np.asarray(cells, np.float64)
    if h.ndim != 3 or h.shape[0] != pos.shape[0]:
        raise ValueError(f"cells must be [T, 3, 3] with T = {pos.shape[0]} frames, got {h.shape}")
    frac = np.einsum("tni,tij->tnj", pos, np.linalg.inv(h))
    wrapped = np.einsum("tni,tij->tnj", frac - np.floor(frac), h)
    step = wrapped[1:] - wrapped[:-1]
    step_frac = np.einsum("tni,tij->tnj", step, np.linalg.inv(h[1:]))
    step -= np.einsum("tni,tij->tnj", np.round(step_frac), h[1:])
    return np.concatenate([pos[:1], pos[:1] + np.cumsum(step, axis=0)])


def _unwrap64(positions, cell):
    """``unwrap`` in numpy float64 (the image counts from JAX, the positions kept in float64)."""
    pos, cell = np.asarray(positions, np.float64), np.asarray(cell, np.float64)
    if cell.ndim == 3:
        return unwrap_npt(pos, cell)
    n = np.asarray(_image_shifts(pos, cell), np.float64)
    return pos - _rowvec(n, cell, np)
