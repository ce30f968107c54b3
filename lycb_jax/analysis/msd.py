"""Time-origin-averaged tracer and collective MSD (paper Eq. 1), atom selection and drift removal.

Positions in Angstrom, MSD in Angstrom^2, lags in frames.

Drift removal (one rule, used by ``diffusion_coefficient``, ``analyze_trajectory`` and
``analyse_md``): mobile positions are taken relative to the framework centre of mass, weighted by
the atomic masses when they are known (``masses`` given), else the plain framework mean.  The
framework is every atom that is not of the mobile species; with none, nothing is removed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.fft import next_fast_len


class MSD(NamedTuple):
    """Tracer and collective MSD [..., T] (Angstrom^2); collective = |sum_i dr_i|^2 / N_mobile."""

    tracer: jax.Array
    collective: jax.Array


@jax.jit
def _msd_core(x):
    """Tracer and collective time-origin MSD of x [T, N, 3] (A) at lags 0..T-1 -> [2, T] (A^2).

    MSD(m) = S1(m) - 2 S2(m) with S1 from prefix sums of |x|^2 and S2 the FFT autocorrelation
    (Wiener-Khinchin).  Positions are centred on their time mean first to limit float32
    cancellation.  Hand-written because no JAX library provides it.  The autocorrelation is summed
    over atoms and axes before the inverse FFT (it is linear), and the collective spectrum reuses
    the atoms' transforms (FFT of the sum = sum of the FFTs): one forward, one (batched) inverse FFT.
    Row 0: tracer, averaged over the N atoms; row 1: |sum_i dr_i|^2 / N.
    """
    t, n = x.shape[0], x.shape[1]
    x = x - jnp.mean(x, axis=0)
    xs = jnp.sum(x, axis=1)
    nfft = next_fast_len(2 * t, real=True)
    f = jnp.fft.rfft(x, n=nfft, axis=0)
    fs = jnp.sum(f, axis=1)
    power = jnp.stack([jnp.sum(f.real**2 + f.imag**2, axis=(1, 2)), jnp.sum(fs.real**2 + fs.imag**2, axis=1)])
    s2 = jnp.fft.irfft(power, n=nfft, axis=1)[:, :t]
    sq = jnp.stack([jnp.sum(x**2, axis=(1, 2)), jnp.sum(xs**2, axis=1)])
    c = jnp.concatenate([jnp.zeros((2, 1), sq.dtype), jnp.cumsum(sq, axis=1)], axis=1)
    m = jnp.arange(t)
    s1 = c[:, t - m] + (c[:, t:] - c[:, m])
    return (s1 - 2.0 * s2) / ((t - m) * n)


def species_masks(symbols, species):
    """(mobile, framework) boolean masks [N] for element ``species`` among ``symbols``.

    framework = all other atoms, or None when there are none (no drift reference).
    ValueError if ``species`` is absent.
    """
    sym = np.asarray(symbols)
    mobile = sym == species
    if not mobile.any():
        raise ValueError(f"species {species!r} not in trajectory (present: {sorted(set(sym.tolist()))})")
    return mobile, (~mobile if (~mobile).any() else None)


def _select(positions, mobile=None, framework=None, masses=None, dtype=jnp.float32):
    """Mobile-ion positions [..., T, N_mobile, 3] (A) relative to the framework centre of mass.

    The one drift-removal rule (module docstring): centre of mass of ``framework`` weighted by
    ``masses`` (amu, [N]) if given, else the plain mean; nothing removed when ``framework`` is None.
    ``mobile``/``framework`` are concrete boolean masks over atoms (not traced).
    """
    pos = jnp.asarray(positions, dtype)
    n_atoms = pos.shape[-2]
    mob = np.arange(n_atoms) if mobile is None else np.flatnonzero(np.asarray(mobile, bool))
    x = pos[..., mob, :]
    if framework is not None:
        fw = np.flatnonzero(np.asarray(framework, bool))
        if fw.size == 0:
            raise ValueError("framework mask selects no atoms")
        w = jnp.ones(fw.size, dtype) if masses is None else jnp.asarray(np.asarray(masses)[fw], dtype)
        com = jnp.einsum("...tnk,n->...tk", pos[..., fw, :], w / jnp.sum(w))
        x = x - com[..., None, :]
    return x


def msd_fft(positions, mobile=None, framework=None, masses=None, dtype=jnp.float32):
    """Tracer and collective MSD of unwrapped positions [T, N, 3] (A) at lags 0..T-1 (frames).

    mobile: boolean mask [N] of the diffusing ions (default all atoms); framework: boolean mask
    [N] whose centre of mass drift is removed (mass-weighted with ``masses`` in amu, else plain;
    module docstring); masks must be concrete (numpy), so jit/vmap with them closed over, e.g.
    ``jax.vmap(partial(msd_fft, mobile=m, framework=f))(positions[R, T, N, 3])``.
    Returns ``MSD(tracer [T], collective [T])`` in A^2 (collective divided by N_mobile, so the
    Haven ratio is D_tracer / D_collective).
    """
    x = _select(positions, mobile, framework, masses, dtype)
    out = jax.vmap(_msd_core)(x) if x.ndim == 4 else _msd_core(x)
    return MSD(out[..., 0, :], out[..., 1, :])
