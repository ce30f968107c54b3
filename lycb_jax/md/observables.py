"""Streaming (order-n) multiple-time-origin MSD accumulators: pure JAX init / update / finalize.

For runs too long to keep every frame (2 ns x 8 replicas x 500 atoms), the MD loop can carry a small
accumulator instead (Frenkel & Smit, *Understanding Molecular Simulation*, 2nd ed., Alg. 9;
Dubbeldam et al., Mol. Simul. 35, 1084 (2009)).  Level l holds the last ``block`` positions sampled
every ``block**l`` updates; each new sample at level l adds its squared displacement to each stored one,
i.e. lags k * block**l (k = 1..block) with time origins at multiples of block**l.  Level 0 is exactly
the all-origin MSD for lags 1..block; level l is the same quantity with origins thinned to every
block**l updates.  Memory: levels x block x N x 3 positions, whatever the run length; cost per
update: levels x block x N x 3 subtractions.

Units: positions in Angstrom (unwrapped, drift-corrected by the caller if wanted: the MD does it with
:func:`relative_to_framework`, the rule of :mod:`lycb_jax.analysis.msd`), MSD in A^2, lags in updates
(multiply by the time between updates).  ``mobile`` weights select the atoms averaged over (default
all), so that the MD can feed every atom of a replica and the mobile species is chosen at init.  The state is a pytree of arrays: vmap it over
replicas, carry it through ``lax.scan``, save it in a checkpoint and resume from it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class StreamingMSD(NamedTuple):
    """Accumulator state (levels L, block B, atoms N)."""

    buffer: jax.Array  # [L, B, N, 3] last B samples per level (ring), A
    n_samples: jax.Array  # [L] samples received per level
    sum_tracer: jax.Array  # [L, B] sum over pairs and atoms of |d|^2 at lag (k + 1) B^l, A^2
    sum_collective: jax.Array  # [L, B] sum over pairs of |sum_i d_i|^2, A^2
    n_pairs: jax.Array  # [L, B] pairs (time origins) accumulated per lag
    step: jax.Array  # updates so far
    mobile: jax.Array  # [N] 1 for the atoms averaged over (the mobile species), 0 for the others


def streaming_init(n_atoms: int, levels: int = 5, block: int = 10, *, dtype=jnp.float32, mobile=None) -> StreamingMSD:
    """Empty accumulator for ``n_atoms`` atoms covering lags 1 .. block**levels updates; ``mobile``:
    boolean [N] mask of the atoms the MSD averages over (default all)."""
    mobile = jnp.ones(n_atoms, dtype) if mobile is None else jnp.asarray(mobile).astype(dtype)
    return StreamingMSD(jnp.zeros((levels, block, n_atoms, 3), dtype), jnp.zeros(levels, jnp.int32),
                        jnp.zeros((levels, block), dtype), jnp.zeros((levels, block), dtype),
                        jnp.zeros((levels, block), jnp.int32), jnp.zeros((), jnp.int32), mobile)


def relative_to_framework(x, mobile, masses):
    """Positions x [N, 3] (A) relative to the mass-weighted centre of mass of the framework (the atoms
    not ``mobile`` [N]; ``masses`` [N] amu); unchanged when every atom is mobile.  The drift-removal rule
    of :mod:`lycb_jax.analysis.msd` (``_select`` with masses), in a form that jit/vmap with traced masks."""
    w = (1 - jnp.asarray(mobile, x.dtype)) * jnp.asarray(masses, x.dtype)
    total = jnp.sum(w)
    com = jnp.sum(w[:, None] * x, axis=0) / jnp.where(total > 0, total, 1)
    return x - jnp.where(total > 0, com, 0)


def streaming_update(state: StreamingMSD, x) -> StreamingMSD:
    """Add one frame x [N, 3] (A).  Branch-free (jit/vmap/scan-able); shapes fixed by the state."""
    levels, block = state.n_samples.shape[0], state.buffer.shape[1]
    x = jnp.asarray(x, state.buffer.dtype)
    period = jnp.asarray([block**level for level in range(levels)], jnp.int32)
    due = (state.step % period) == 0  # [L] this update is a sample of level l
    k = jnp.arange(1, block + 1)  # lag in samples of the level
    slot = (state.n_samples[:, None] - k[None, :]) % block  # [L, B] where the sample k back is stored
    old = jnp.take_along_axis(state.buffer, slot[:, :, None, None], axis=1)  # [L, B, N, 3]
    d = (x[None, None] - old) * state.mobile[:, None]
    valid = (due[:, None] & (state.n_samples[:, None] >= k[None, :]))  # [L, B]
    w = valid.astype(x.dtype)
    sum_tr = state.sum_tracer + w * jnp.sum(d**2, axis=(-1, -2))
    sum_col = state.sum_collective + w * jnp.sum(jnp.sum(d, axis=-2) ** 2, axis=-1)
    write = jax.nn.one_hot(state.n_samples % block, block, dtype=x.dtype) * due[:, None].astype(x.dtype)  # [L, B]
    buffer = state.buffer + write[:, :, None, None] * (x[None, None] - state.buffer)
    return StreamingMSD(buffer, state.n_samples + due.astype(jnp.int32), sum_tr, sum_col,
                        state.n_pairs + valid.astype(jnp.int32), state.step + 1, state.mobile)


def streaming_finalize(state: StreamingMSD, keep_empty: bool = False):
    """(lags [M] in updates, tracer MSD [..., M], collective MSD [..., M] (A^2, per mobile atom as
    ``msd_fft``), pairs [..., M]); leading axes of the state (replicas) are kept.  A lag reached by two
    levels is taken from the lower one (more origins).  Lags without a pair in any replica are dropped
    unless ``keep_empty`` (then every lag of the grid, NaN where a replica has no pair).  numpy, outside jit."""
    n_pairs = np.asarray(state.n_pairs)
    levels, block = n_pairs.shape[-2:]
    batch = n_pairs.shape[:-2]
    lags = (np.arange(1, block + 1)[None, :] * block ** np.arange(levels)[:, None]).reshape(-1)
    lag, first = np.unique(lags, return_index=True)  # level-major order: the first occurrence is the lower level
    flat = lambda a: np.asarray(a, np.float64).reshape(batch + (-1,))[..., first]
    pairs, tr, col = flat(n_pairs).astype(np.int64), flat(state.sum_tracer), flat(state.sum_collective)
    keep = np.ones(lag.shape, bool) if keep_empty else np.any(pairs > 0, axis=tuple(range(len(batch))))
    n_mobile = np.asarray(state.mobile, np.float64).sum(-1)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(pairs > 0, pairs * n_mobile, np.nan)
        return lag[keep], (tr / norm)[..., keep], (col / norm)[..., keep], pairs[..., keep]
