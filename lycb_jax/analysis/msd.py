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


def msd_fft(positions, mobile=None, framework=None, *, masses=None, dtype=jnp.float32):
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


def msd_covariance_model(lags, n_frames, n_atoms=1):
    """Covariance [K, K] of the all-origin MSD at ``lags`` [K] (frames) for a 3D Brownian walk with
    D = 1 A^2/frame, ``n_atoms`` independent walkers and ``n_frames`` stored frames (A^4).

    Multiply by D^2 (A^2/frame)^2.  Continuous-time result for the time-origin average over
    T - tau origins (T = n_frames): per axis Cov = 2 (2D)^2 I / ((T - t1)(T - t2)) with
    I = int count(v) overlap(v)^2 dv over the offset v of the two displacement intervals; the
    integrand is a cubic on three pieces, so two-point Gauss-Legendre per piece is exact.
    Needs t1 + t2 <= T (lags up to T/2).  For T -> inf it is 8 D^2 t1^2 (3 t2 - t1) / (T N) in 3D.
    The same model underlies kinisi's covariance (McCluskey et al., JCTC 2025); written out here
    because kinisi's is tied to its own data objects.  float64 numpy.
    """
    lag = np.asarray(lags, np.float64)
    t = float(n_frames)
    if np.any(lag <= 0) or np.any(2 * lag > t + 1e-9):
        raise ValueError(f"lags must be in (0, n_frames/2] = (0, {t / 2:g}] frames")
    t1, t2 = np.minimum.outer(lag, lag), np.maximum.outer(lag, lag)
    nodes = np.array([-1.0, 1.0]) / np.sqrt(3.0)

    def piece(a, b, count, overlap):
        mid, half = (a + b) / 2, (b - a) / 2
        return sum(half * count(mid + half * k) * overlap(mid + half * k) ** 2 for k in nodes)

    integral = (piece(-t2, t1 - t2, lambda v: t - t1 + v, lambda v: v + t2)
                + piece(t1 - t2, 0.0, lambda v: t - t2 + 0 * v, lambda v: t1 + 0 * v)
                + piece(0.0, t1, lambda v: t - t2 - v, lambda v: t1 - v))
    return 24.0 * integral / ((t - t1) * (t - t2) * n_atoms)


@jax.jit
def displacement_moments(x, lags):
    """(<d^2>, <d^4>) [K] over all origins and atoms of displacements d at ``lags`` [K] (frames,
    traced ints) of positions x [T, N, 3] (A); A^2 and A^4.  For the non-Gaussian scaling of the
    MSD covariance (Gaussian in 3D: <d^4> / <d^2>^2 = 5/3)."""
    t = x.shape[0]
    idx = jnp.arange(t)

    def one(n):
        d2 = jnp.sum((x[jnp.minimum(idx + n, t - 1)] - x) ** 2, axis=-1)
        w = (idx + n < t)[:, None].astype(x.dtype)
        cnt = jnp.sum(w) * x.shape[1]
        return jnp.sum(w * d2) / cnt, jnp.sum(w * d2**2) / cnt

    return jax.lax.map(one, jnp.asarray(lags))
