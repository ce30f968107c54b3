"""Li-ion transport analysis: MSD, diffusion coefficients, Arrhenius and Nernst-Einstein (paper Eq. 1-4).

Units: positions and cells in Angstrom, time in fs, temperatures in K, diffusion coefficients
in cm^2/s, activation energies in eV, conductivities in mS/cm.

Pipeline
--------
1. ``msd_fft``: time-origin-averaged tracer MSD (Eq. 1) and collective (charge) MSD of the mobile
   ions, FFT algorithm (O(T log T)), optional removal of the framework centre-of-mass drift.
2. ``diffusive_window`` + ``fit_einstein``: D = slope / 6 (Eq. 2) by least squares on the MSD
   over a diffusive window.  Window rule (documented, in frames):

   * end ``i1 = floor(end_fraction * (L - 1))`` with ``L = T // n_blocks`` the block length, so the
     same window fits in every block used for the error bar (defaults: ``end_fraction=0.5``,
     ``n_blocks=5``, i.e. the window ends at T/10; the MSD at longer lags is noisier).
   * start ``i0``: the local log-log slope ``alpha(t) = log2(MSD(2t) / MSD(t))`` is evaluated on a
     quarter-octave lag grid; ``i0`` is the first grid lag from which alpha stays within
     ``1 +/- tol`` (``tol=0.1``) for one octave (t .. 2t), which excludes the ballistic (alpha=2)
     and caging (alpha<1) regimes.  If no such lag exists below ``i1 / 4`` the fallback
     ``i0 = fallback_start * i1`` is used and a warning is issued.
3. Uncertainty of D: **block averaging** over ``n_blocks`` independent contiguous time blocks.
   The MSD of each block is fitted over the same lag window; ``D_err = std(D_blocks, ddof=1) /
   sqrt(n_blocks)``.  Correlations between MSD points (overlapping time origins) are thus
   included without a model; the estimate is slightly conservative for the full-trajectory D
   (which uses a few more time origins than the blocks).  The naive OLS slope error (ignores
   correlation, underestimates) is also returned as ``D_err_ols`` for reference only.
4. Too few hops: a warning when the tracer MSD at the window end is below
   ``min_hops * hop_distance**2`` (defaults 3 x (2.5 A)^2 = 18.75 A^2, i.e. fewer than ~3 Li hops
   per ion inside the fit window).
5. ``arrhenius_fit``: weighted least squares of ln D vs 1/T (weights 1/(D_err/D)^2) giving Ea, D0
   with standard errors and covariance; ``nernst_einstein`` (Eq. 4) and ``extrapolate`` to 300 K
   with an uncertainty propagated from the fit covariance.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.fft import next_fast_len

from lycb_jax.distributed import replica_mesh, shard_replicas

KB_EV = 8.617333262e-5  # Boltzmann constant, eV/K
KB_J = 1.380649e-23  # Boltzmann constant, J/K
E_C = 1.602176634e-19  # elementary charge, C
A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 A^2/fs = 1e-16 cm^2 / 1e-15 s


# ---------------------------------------------------------------------------------------------
# MSD
# ---------------------------------------------------------------------------------------------
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


class MSD(NamedTuple):
    """Tracer and collective MSD [..., T] (A^2); collective = |sum_i dr_i|^2 / N_mobile."""

    tracer: jax.Array
    collective: jax.Array


def _select(positions, mobile=None, framework=None, masses=None, dtype=jnp.float32):
    """Mobile-ion positions [T, N_mobile, 3] relative to the framework centre of mass (if given).

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
    [N] whose (mass-weighted if ``masses``, else plain) centre of mass drift is removed; masks
    must be concrete (numpy), so jit/vmap with them closed over, e.g.
    ``jax.vmap(partial(msd_fft, mobile=m, framework=f))(positions[R, T, N, 3])``.
    Returns ``MSD(tracer [T], collective [T])`` in A^2 (collective divided by N_mobile, so the
    Haven ratio is D_tracer / D_collective).
    """
    x = _select(positions, mobile, framework, masses, dtype)
    out = jax.vmap(_msd_core)(x) if x.ndim == 4 else _msd_core(x)
    return MSD(out[..., 0, :], out[..., 1, :])


# ---------------------------------------------------------------------------------------------
# Wrapped coordinates
# ---------------------------------------------------------------------------------------------
def _rowvec(v, m, xp=jnp):
    """v [T, N, 3] times matrix m [3, 3] or per-frame [T, 3, 3]."""
    return v @ m if m.ndim == 2 else xp.einsum("tni,tij->tnj", v, m)


def _frac_steps(positions, cell):
    pos = jnp.asarray(positions)
    frac = _rowvec(pos, jnp.linalg.inv(jnp.asarray(cell, pos.dtype)))
    return frac, frac[1:] - frac[:-1]


def wrap_jumps(positions, cell, threshold=0.5):
    """Number of frame-to-frame jumps larger than ``threshold`` in fractional coordinates.

    positions [T, N, 3] (A), cell [3, 3] or [T, 3, 3] (rows = lattice vectors, A).  A jump of
    about one cell length between consecutive frames means the coordinates are wrapped.
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
    """Unwrap positions [T, N, 3] (A) by minimum-image frame-to-frame steps in fractional coords.

    cell [3, 3] or [T, 3, 3] (rows = lattice vectors).  Valid when no atom moves more than half a
    cell vector between stored frames.  Only integer cell images are added, so no error accumulates.
    """
    cell = jnp.asarray(cell)
    n = _image_shifts(positions, cell)
    return jnp.asarray(positions) - _rowvec(n, cell)


# ---------------------------------------------------------------------------------------------
# Einstein fit and window
# ---------------------------------------------------------------------------------------------
def _wls(x, y, w):
    """Weighted least squares line y = a + b x -> (b, a, se_b); se_b from residuals, n = sum(w>0)."""
    sw = jnp.sum(w)
    xm, ym = jnp.sum(w * x) / sw, jnp.sum(w * y) / sw
    sxx = jnp.sum(w * (x - xm) ** 2)
    b = jnp.sum(w * (x - xm) * (y - ym)) / sxx
    a = ym - b * xm
    n = jnp.sum(w > 0)
    ssr = jnp.sum(w * (y - a - b * x) ** 2)
    return b, a, jnp.sqrt(ssr / (n - 2) / sxx)


def window_end(n_frames, n_blocks=5, end_fraction=0.5):
    """Last lag (frames) of the fit window: end_fraction of the block length T // n_blocks."""
    return int(end_fraction * (n_frames // n_blocks - 1))


def diffusive_window(msd, i1, tol=0.1, fallback_start=0.2):
    """Start lag i0 (frames) of the diffusive window ending at lag ``i1`` (see module docstring).

    msd [T] (A^2).  Returns (i0, found) as JAX scalars; jit/vmap-able (i1 static).
    """
    grid = np.unique(np.round(2.0 ** np.arange(0, np.log2(max(i1, 2)), 0.25)).astype(int))
    grid = grid[2 * grid <= i1]
    fallback = jnp.asarray(max(int(fallback_start * i1), 1))
    if grid.size < 5:
        return fallback, jnp.asarray(False)
    m = jnp.maximum(msd, 1e-30)
    alpha = jnp.log2(m[2 * grid] / m[grid])
    ok = jnp.abs(alpha - 1.0) <= tol
    k = np.arange(grid.size - 4)  # stays within tol over one octave (4 quarter-octave steps)
    stays = jnp.all(jnp.stack([ok[k + j] for j in range(5)]), axis=0) & (grid[k] <= i1 // 4)
    found = jnp.any(stays)
    return jnp.where(found, jnp.asarray(grid[k])[jnp.argmax(stays)], fallback), found


def fit_einstein(msd, dt_fs, i0, i1, weights=None, dim=3):
    """D (cm^2/s) from MSD = 2 dim D t + c fitted over lags i0..i1 (frames, inclusive).

    msd [T] (A^2) at lags 0..T-1 spaced by dt_fs (fs); ``weights`` [T] optional (default equal).
    Returns (D, intercept (A^2), D_err_ols) where D_err_ols is the plain least-squares slope error
    (ignores the correlation of MSD points; use the block error of ``diffusion_coefficient``).
    jit/vmap-able (i0, i1 may be traced).
    """
    lag = jnp.arange(msd.shape[-1])
    w = ((lag >= i0) & (lag <= i1)).astype(msd.dtype)
    if weights is not None:
        w = w * weights
    b, a, se = _wls(lag * jnp.asarray(dt_fs, msd.dtype), msd, w)
    f = A2_PER_FS_TO_CM2_PER_S / (2 * dim)
    return b * f, a, se * f


@partial(jax.jit, static_argnames=("n_blocks", "i1", "tol", "fallback_start", "fixed"))
def _analyze(x, dt_fs, i0_fixed, *, n_blocks, i1, tol, fallback_start, fixed):
    """x [T, N, 3] drift-corrected mobile positions -> dict of arrays (one trajectory)."""
    tr, col = _msd_core(x)
    if fixed:
        i0, found = i0_fixed, jnp.asarray(True)
    else:
        i0, found = diffusive_window(tr, i1, tol, fallback_start)
    d, c, d_ols = fit_einstein(tr, dt_fs, i0, i1)
    dc, _, _ = fit_einstein(col, dt_fs, i0, i1)
    length = x.shape[0] // n_blocks
    xb = x[: n_blocks * length].reshape(n_blocks, length, *x.shape[1:])
    mb = jax.vmap(_msd_core)(xb)
    fit = jax.vmap(lambda m: fit_einstein(m, dt_fs, i0, i1)[0])
    db, dcb = fit(mb[:, 0]), fit(mb[:, 1])
    se = lambda v: jnp.std(v, ddof=1) / math.sqrt(n_blocks)  # noqa: E731
    return dict(msd=tr, msd_collective=col, i0=i0, found=found, D=d, intercept=c, D_err=se(db),
                D_err_ols=d_ols, D_blocks=db, D_collective=dc, D_collective_err=se(dcb))


@dataclass
class Diffusion:
    """Einstein-relation result for one trajectory.  D in cm^2/s, times in fs, MSD in A^2."""

    D: float
    D_err: float  # block-averaging standard error (accounts for correlated MSD points)
    D_err_ols: float  # naive least-squares error (ignores correlation), reference only
    D_collective: float  # charge (collective) diffusivity
    D_collective_err: float
    haven_ratio: float  # D / D_collective
    window_fs: tuple  # (t0, t1) fit window
    window_found: bool  # False: no diffusive regime detected, fallback start used
    hops_per_ion: float  # MSD(t1) / hop_distance^2
    n_mobile: int
    n_frames: int
    dt_fs: float
    D_blocks: list = field(repr=False)
    msd: np.ndarray = field(repr=False)  # tracer MSD [T]
    msd_collective: np.ndarray = field(repr=False)
    intercept: float = 0.0  # A^2
    temperature: float | None = None  # K
    volume_A3: float | None = None
    sigma: float | None = None  # Nernst-Einstein conductivity, mS/cm
    sigma_err: float | None = None

    @property
    def time_fs(self):
        return np.arange(self.n_frames) * self.dt_fs


def diffusion_coefficient(positions, dt_fs, mobile=None, framework=None, masses=None, *, n_blocks=5,
                          end_fraction=0.5, tol=0.1, fallback_start=0.2, window_fs=None,
                          hop_distance=2.5, min_hops=3.0, temperature=None, volume_A3=None, charge=1.0,
                          mesh="auto"):
    """Tracer/collective D (cm^2/s) of unwrapped positions [T, N, 3] or [R, T, N, 3] (A).

    dt_fs: time between frames (fs).  Window and error rules: module docstring.  ``window_fs``
    = (t0, t1) fixes the window (ValueError if it does not fit in a block of T // n_blocks frames).
    With ``temperature`` (K) and ``volume_A3`` the Nernst-Einstein conductivity (mS/cm) is added
    (scalars, or one value per replica).
    Warns when fewer than ``min_hops`` hops of ``hop_distance`` (A) per ion happened in the window.
    Returns a ``Diffusion`` (or a list of them for a leading replica axis R, vmapped). With several
    local devices (``mesh="auto"``, or a ``distributed.replica_mesh``) the replica axis is padded
    and sharded over them; each device analyses its own replicas.
    """
    pos = np.asarray(positions)
    if pos.ndim not in (3, 4) or pos.shape[-1] != 3:
        raise ValueError(f"positions must be [T, N, 3] or [R, T, N, 3], got shape {pos.shape}")
    n_frames = pos.shape[-3]
    length = n_frames // n_blocks
    if window_fs is not None:
        i0, i1 = int(round(window_fs[0] / dt_fs)), int(round(window_fs[1] / dt_fs))
        if not 0 <= i0 < i1 - 2:
            raise ValueError(f"bad window_fs {window_fs}: need 0 <= t0 < t1 with >= 3 frames")
        if i1 >= length:
            raise ValueError(
                f"trajectory too short for the requested window: t1 = {window_fs[1]} fs needs blocks of "
                f"> {i1} frames, i.e. > {(i1 + 1) * n_blocks} frames for n_blocks={n_blocks}; got {n_frames}"
            )
    else:
        i0, i1 = 0, window_end(n_frames, n_blocks, end_fraction)
        if i1 < 20:
            raise ValueError(
                f"trajectory too short: {n_frames} frames gives a fit window of {i1} lags "
                f"(end_fraction={end_fraction} of blocks of {length} frames); need >= 20, i.e. >= "
                f"{math.ceil(20 / end_fraction + 1) * n_blocks} frames"
            )
    x = _select(pos, mobile, framework, masses)
    run = partial(_analyze, dt_fs=float(dt_fs), i0_fixed=i0, n_blocks=n_blocks, i1=i1, tol=tol,
                  fallback_start=fallback_start, fixed=window_fs is not None)
    if x.ndim == 4:
        mesh = replica_mesh() if mesh == "auto" else mesh
        n_rep = x.shape[0]
        if mesh is not None:
            (x,) = shard_replicas(mesh, -(-n_rep // mesh.devices.size) * mesh.devices.size, x)
        out = jax.tree_util.tree_map(lambda v: np.asarray(v)[:n_rep], jax.vmap(run)(x))  # padding dropped
        rows = [jax.tree_util.tree_map(lambda v, r=r: v[r], out) for r in range(n_rep)]
    else:
        rows = [jax.tree_util.tree_map(np.asarray, run(x))]
    per = lambda v, r: v[r] if np.ndim(v) else v  # noqa: E731  (per-replica T / volume allowed)
    res = [_result(o, i1, dt_fs, x.shape[-2], n_frames, hop_distance, min_hops, per(temperature, r),
                   per(volume_A3, r), charge) for r, o in enumerate(rows)]
    return res if x.ndim == 4 else res[0]


def _result(o, i1, dt_fs, n_mobile, n_frames, hop, min_hops, temperature, volume, charge):
    i0 = int(o["i0"])
    if not bool(o["found"]):
        warnings.warn(
            f"no diffusive regime detected (log-log MSD slope never stays within 1 +/- tol for an octave "
            f"before {i1 * dt_fs / 4:g} fs); fit window starts at the fallback {i0 * dt_fs:g} fs",
            stacklevel=3,
        )
    hops = float(o["msd"][i1]) / hop**2
    if hops < min_hops:
        warnings.warn(
            f"too few Li hops for a meaningful D: MSD at the end of the fit window ({i1 * dt_fs:g} fs) is "
            f"{float(o['msd'][i1]):.3g} A^2 = {hops:.2g} x ({hop} A)^2 per ion (< {min_hops}); "
            "run longer or hotter",
            stacklevel=3,
        )
    d, dc = float(o["D"]), float(o["D_collective"])
    r = Diffusion(D=d, D_err=float(o["D_err"]), D_err_ols=float(o["D_err_ols"]), D_collective=dc,
                  D_collective_err=float(o["D_collective_err"]), haven_ratio=d / dc if dc else math.nan,
                  window_fs=(i0 * dt_fs, i1 * dt_fs), window_found=bool(o["found"]), hops_per_ion=hops,
                  n_mobile=int(n_mobile), n_frames=int(n_frames), dt_fs=float(dt_fs),
                  D_blocks=[float(v) for v in o["D_blocks"]], msd=o["msd"], msd_collective=o["msd_collective"],
                  intercept=float(o["intercept"]), temperature=temperature, volume_A3=volume)
    if temperature is not None and volume is not None:
        r.sigma = float(nernst_einstein(r.D, n_mobile, volume, temperature, charge))
        r.sigma_err = float(nernst_einstein(r.D_err, n_mobile, volume, temperature, charge))
    return r


# ---------------------------------------------------------------------------------------------
# Arrhenius and Nernst-Einstein
# ---------------------------------------------------------------------------------------------
def nernst_einstein(D, n_ions, volume_A3, temperature, charge=1.0):
    """Eq. 4: sigma = (N / V) q^2 D / (kB T) in mS/cm; D in cm^2/s, V in A^3, T in K, q in e."""
    n_per_cm3 = n_ions / (volume_A3 * 1e-24)
    return 1e3 * n_per_cm3 * (charge * E_C) ** 2 * D / (KB_J * temperature)


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
    """Weighted least squares of ln D vs 1/T (weights (D / D_err)^2); jit/vmap-able.

    The covariance is scaled by max(1, chi2_red) (Birge ratio): scatter beyond the stated D
    errors inflates it, smaller scatter does not shrink it.  Hand-written (2-parameter normal
    equations in centred form) so that it is jit/vmap-able and stable in float32.
    """
    t = jnp.asarray(temperatures, jnp.float32)
    d = jnp.asarray(D, jnp.float32)
    x = 1000.0 / t  # 1000/K
    y = jnp.log(d)
    w = (d / jnp.asarray(D_err, jnp.float32)) ** 2
    sw = jnp.sum(w)
    xm, ym = jnp.sum(w * x) / sw, jnp.sum(w * y) / sw
    sxx = jnp.sum(w * (x - xm) ** 2)
    b = jnp.sum(w * (x - xm) * (y - ym)) / sxx
    chi2 = jnp.sum(w * (y - ym - b * (x - xm)) ** 2) / jnp.maximum(x.shape[0] - 2, 1)
    s = jnp.maximum(1.0, chi2)
    var_b, var_ym = s / sxx, s / sw
    ea = -b * KB_EV * 1000.0
    ln_d0 = ym - b * xm
    var_a = var_ym + xm**2 * var_b
    k = KB_EV * 1000.0
    cov = jnp.array([[var_a, xm * var_b * k], [xm * var_b * k, var_b * k**2]])
    d0 = jnp.exp(ln_d0)
    return Arrhenius(ea, jnp.sqrt(var_b) * k, d0, d0 * jnp.sqrt(var_a), cov, chi2, xm, ym, var_ym, var_b)


def extrapolate(fit, temperature=300.0):
    """ln-normal extrapolation of D (cm^2/s) to ``temperature`` (K) -> (D, D_err, ln_err)."""
    x = 1000.0 / temperature
    slope = -fit.Ea / (KB_EV * 1000.0)
    ln_d = fit.y_mean + slope * (x - fit.x_mean)
    ln_err = jnp.sqrt(fit.var_y_mean + (x - fit.x_mean) ** 2 * fit.var_slope)
    d = jnp.exp(ln_d)
    return d, d * ln_err, ln_err


def conductivity_at(fit, n_ions, volume_A3, temperature=300.0, charge=1.0):
    """Nernst-Einstein conductivity (mS/cm) at ``temperature`` from the Arrhenius fit, with its
    propagated 1-sigma error (from the fit covariance, linearised in ln sigma)."""
    d, d_err, _ = extrapolate(fit, temperature)
    f = nernst_einstein(1.0, n_ions, volume_A3, temperature, charge)
    return d * f, d_err * f


# ---------------------------------------------------------------------------------------------
# Input adapters
# ---------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """Unwrapped positions [T, N, 3] (A), element symbols [N], cell [3, 3] or [T, 3, 3] (A), dt (fs)."""

    positions: np.ndarray
    symbols: list
    cell: np.ndarray
    dt_fs: float

    def masks(self, species="Li"):
        """(mobile, framework) boolean masks; ValueError if ``species`` is absent."""
        sym = np.asarray(self.symbols)
        mobile = sym == species
        if not mobile.any():
            raise ValueError(f"species {species!r} not in trajectory (present: {sorted(set(sym.tolist()))})")
        return mobile, ~mobile

    @property
    def volume_A3(self):
        return float(np.mean(np.abs(np.linalg.det(np.asarray(self.cell)))))


def trajectory_from_arrays(positions, symbols, cell, dt_fs, wrapped="raise"):
    """Trajectory from raw arrays; ``wrapped`` = 'raise' (ValueError on wrapped coordinates) or 'unwrap'."""
    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[1] != len(symbols):
        raise ValueError(f"positions must be [T, N, 3] with N = len(symbols) = {len(symbols)}, got {pos.shape}")
    if wrapped == "unwrap":
        n = np.asarray(_image_shifts(pos, cell), np.float64)  # float64 kept for the positions
        pos = pos - _rowvec(n, cell, np)
    elif wrapped == "raise":
        check_unwrapped(pos, cell)
    else:
        raise ValueError("wrapped must be 'raise' or 'unwrap'")
    return Trajectory(pos, list(symbols), cell, float(dt_fs))


def trajectory_from_file(path, dt_fs, index=":", wrapped="raise", **read_kwargs):
    """Trajectory from any ASE-readable file (``ase.io.read(path, index=':')``); dt_fs between frames."""
    import ase.io

    frames = ase.io.read(path, index=index, **read_kwargs)
    if not isinstance(frames, list):
        frames = [frames]
    if len(frames) < 2:
        raise ValueError(f"{path}: need a trajectory (>= 2 frames), got {len(frames)}")
    pos = np.stack([a.get_positions(wrap=False) for a in frames])
    cell = np.stack([a.cell.array for a in frames])
    if np.allclose(cell, cell[0]):
        cell = cell[0]
    return trajectory_from_arrays(pos, frames[0].get_chemical_symbols(), cell, dt_fs, wrapped)


def analyze_trajectory(traj, temperature, species="Li", remove_drift=True, charge=1.0, **kwargs):
    """Diffusion + Nernst-Einstein conductivity of ``species`` in a ``Trajectory`` at ``temperature`` (K)."""
    mobile, framework = traj.masks(species)
    if remove_drift and not framework.any():
        framework = None
    return diffusion_coefficient(traj.positions, traj.dt_fs, mobile, framework if remove_drift else None,
                                 temperature=temperature, volume_A3=traj.volume_A3, charge=charge, **kwargs)


def summarize(results, t_extrapolate=300.0, charge=1.0):
    """Arrhenius fit and conductivity at ``t_extrapolate`` from ``Diffusion`` results (one per T).

    Needs temperature and volume_A3 set on each result.  Returns a JSON-able dict.
    """
    temps = np.array([r.temperature for r in results], float)
    fit = arrhenius_fit(temps, [r.D for r in results], [r.D_err for r in results])
    vol = float(np.mean([r.volume_A3 for r in results]))
    s, s_err = conductivity_at(fit, results[0].n_mobile, vol, t_extrapolate, charge)
    d_x, d_x_err, _ = extrapolate(fit, t_extrapolate)
    rows = [dict(T=r.temperature, D=r.D, D_err=r.D_err, D_collective=r.D_collective,
                 D_collective_err=r.D_collective_err, haven_ratio=r.haven_ratio, sigma=r.sigma,
                 sigma_err=r.sigma_err, t0_fs=r.window_fs[0], t1_fs=r.window_fs[1],
                 hops_per_ion=r.hops_per_ion, n_mobile=r.n_mobile, volume_A3=r.volume_A3) for r in results]
    return dict(units=dict(T="K", D="cm^2/s", sigma="mS/cm", Ea="eV", time="fs", volume="A^3"),
                per_temperature=rows, Ea=float(fit.Ea), Ea_err=float(fit.Ea_err), D0=float(fit.D0),
                D0_err=float(fit.D0_err), cov_lnD0_Ea=np.asarray(fit.cov).tolist(), chi2_red=float(fit.chi2_red),
                T_extrapolate=t_extrapolate, D_extrapolated=float(d_x), D_extrapolated_err=float(d_x_err),
                sigma_extrapolated=float(s), sigma_extrapolated_err=float(s_err))


# ---------------------------------------------------------------------------------------------
# Output: tables and plots
# ---------------------------------------------------------------------------------------------
def write_summary(summary, outdir, stem="transport"):
    """Write ``summary`` (from ``summarize``) as JSON and a per-temperature CSV; returns the paths.

    The CSV has one row per T with the global Ea, Ea_err and sigma at T_extrapolate repeated.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pj, pc = out / f"{stem}.json", out / f"{stem}.csv"
    pj.write_text(json.dumps(summary, indent=2, default=float))
    glob = {k: summary[k] for k in ("Ea", "Ea_err", "D0", "D0_err", "T_extrapolate",
                                    "sigma_extrapolated", "sigma_extrapolated_err")}
    rows = [{**r, **glob} for r in summary["per_temperature"]]
    with pc.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return pj, pc


def _save(fig, out, stem):
    paths = [Path(out) / f"{stem}.{ext}" for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def plot_msd(results, outdir, stem="msd"):
    """Tracer MSD vs time per temperature (log-log) with the fit window and line; PNG + SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(outdir).mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        t = r.time_fs[1:] / 1000.0
        (line,) = ax.loglog(t, r.msd[1:], lw=0.8, label=f"{r.temperature:g} K" if r.temperature else None)
        i0, i1 = (int(round(v / r.dt_fs)) for v in r.window_fs)
        ax.loglog(t[i0 - 1 : i1], r.msd[i0 : i1 + 1], lw=4, alpha=0.35, color=line.get_color())
        tw = np.geomspace(max(r.window_fs[0], r.dt_fs), r.window_fs[1], 50)
        ax.loglog(tw / 1000.0, 6 * r.D / A2_PER_FS_TO_CM2_PER_S * tw + r.intercept, "--", lw=1, color="k")
    ax.set_xlabel("t (ps)")
    ax.set_ylabel(r"MSD ($\AA^2$)")
    ax.set_title("MSD; thick: fit window, dashed: Einstein fit", fontsize=9)
    if any(r.temperature for r in results):
        ax.legend(fontsize=7)
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths


def plot_arrhenius(summary, outdir, stem="arrhenius"):
    """D vs 1000/T with errors, the Arrhenius fit and the extrapolation to T_extrapolate; PNG + SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(outdir).mkdir(parents=True, exist_ok=True)
    rows = summary["per_temperature"]
    x = np.array([1000.0 / r["T"] for r in rows])
    d, de = np.array([r["D"] for r in rows]), np.array([r["D_err"] for r in rows])
    tx = summary["T_extrapolate"]
    xs = np.linspace(min(x.min(), 1000.0 / tx), max(x.max(), 1000.0 / tx), 100)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(x, d, yerr=de, fmt="o", label="MD")
    ax.semilogy(xs, summary["D0"] * np.exp(-summary["Ea"] / (KB_EV * 1000.0) * xs), "--",
                label=f"Ea = {summary['Ea']:.3f} $\\pm$ {summary['Ea_err']:.3f} eV")
    ax.errorbar([1000.0 / tx], [summary["D_extrapolated"]], yerr=[summary["D_extrapolated_err"]], fmt="s",
                label=f"{tx:g} K: $\\sigma$ = {summary['sigma_extrapolated']:.3g} $\\pm$ "
                      f"{summary['sigma_extrapolated_err']:.2g} mS/cm")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel(r"D (cm$^2$/s)")
    ax.legend(fontsize=7)
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths
