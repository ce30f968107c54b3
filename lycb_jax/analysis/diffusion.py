"""Diffusion coefficients from the MSD (Einstein relation, paper Eq. 2) and Nernst-Einstein (Eq. 4).

Units: time in fs, MSD in Angstrom^2, D in cm^2/s, volume in Angstrom^3, T in K, sigma in mS/cm.

Fit window (in frames):

* end ``i1 = floor(end_fraction * (L - 1))`` with ``L = T // n_blocks`` the block length, so the
  same window fits in every block used for the error bar (defaults: ``end_fraction=0.5``,
  ``n_blocks=5``, i.e. the window ends at T/10; the MSD at longer lags is noisier).
* start ``i0``: the local log-log slope ``alpha(t) = log2(MSD(2t) / MSD(t))`` is evaluated on a
  quarter-octave lag grid; ``i0`` is the first grid lag from which alpha stays within
  ``1 +/- tol`` (``tol=0.1``) for one octave (t .. 2t), which excludes the ballistic (alpha=2)
  and caging (alpha<1) regimes.  If no such lag exists below ``i1 / 4`` the fallback
  ``i0 = fallback_start * i1`` is used and a warning is issued.

Uncertainty of D: block averaging over ``n_blocks`` contiguous time blocks, each block's MSD
fitted over the same window; ``D_err = std(D_blocks, ddof=1) / sqrt(n_blocks)`` (includes the
correlation of MSD points without a model; slightly conservative).  The naive least-squares slope
error (ignores the correlation, underestimates) is returned as ``D_err_ols`` for reference only.

Too few hops: a warning when the tracer MSD at the window end is below
``min_hops * hop_distance**2`` (defaults 3 x (2.5 A)^2 = 18.75 A^2).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.analysis.msd import _msd_core, _select
from lycb_jax.analysis.stats import wls_line
from lycb_jax.distributed import replica_mesh, shard_replicas
from lycb_jax.units import E_CHARGE, KB_J

A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 A^2/fs = 1e-16 cm^2 / 1e-15 s


# ---------------------------------------------------------------------------------------------
# Fit window and Einstein fit
# ---------------------------------------------------------------------------------------------
def window_end(n_frames, n_blocks=5, end_fraction=0.5):
    """Last lag (frames) of the fit window: end_fraction of the block length T // n_blocks."""
    return int(end_fraction * (n_frames // n_blocks - 1))


def diffusive_window(msd, i1, tol=0.1, fallback_start=0.2):
    """Start lag i0 (frames) of the diffusive window ending at lag ``i1`` (module docstring).

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


def _fit_window(n_frames, dt_fs, n_blocks, end_fraction, window_fs):
    """(i0, i1) in frames: fixed from ``window_fs`` (t0, t1 in fs), else i0 = 0 (searched later) and
    i1 = window_end.  ValueError when the trajectory is too short for the window."""
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
        return i0, i1
    i1 = window_end(n_frames, n_blocks, end_fraction)
    if i1 < 20:
        raise ValueError(
            f"trajectory too short: {n_frames} frames gives a fit window of {i1} lags "
            f"(end_fraction={end_fraction} of blocks of {length} frames); need >= 20, i.e. >= "
            f"{math.ceil(20 / end_fraction + 1) * n_blocks} frames"
        )
    return 0, i1


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
    fit = wls_line(lag * jnp.asarray(dt_fs, msd.dtype), msd, w)
    f = A2_PER_FS_TO_CM2_PER_S / (2 * dim)
    return fit.slope * f, fit.intercept, jnp.sqrt(fit.chi2_red / fit.sxx) * f


@partial(jax.jit, static_argnames=("n_blocks", "i1", "tol", "fallback_start", "fixed"))
def _analyze(x, dt_fs, i0_fixed, *, n_blocks, i1, tol, fallback_start, fixed):
    """x [T, N, 3] drift-corrected mobile positions (A) -> dict of arrays (one trajectory)."""
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


# ---------------------------------------------------------------------------------------------
# Result and driver
# ---------------------------------------------------------------------------------------------
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

    dt_fs: time between frames (fs).  ``mobile``/``framework`` masks [N] and ``masses`` [N] (amu):
    the drift rule of ``lycb_jax.analysis.msd``.  Window and error rules: module docstring.
    ``window_fs`` = (t0, t1) fixes the window (ValueError if it does not fit in a block of
    T // n_blocks frames).  With ``temperature`` (K) and ``volume_A3`` the Nernst-Einstein
    conductivity (mS/cm) is added (scalars, or one value per replica).  Warns when fewer than
    ``min_hops`` hops of ``hop_distance`` (A) per ion happened in the window.
    Returns a ``Diffusion`` (or a list of them for a leading replica axis R, vmapped). With several
    local devices (``mesh="auto"``, or a ``distributed.replica_mesh``) the replica axis is padded
    and sharded over them; each device analyses its own replicas.
    """
    pos = np.asarray(positions)
    if pos.ndim not in (3, 4) or pos.shape[-1] != 3:
        raise ValueError(f"positions must be [T, N, 3] or [R, T, N, 3], got shape {pos.shape}")
    n_frames = pos.shape[-3]
    i0, i1 = _fit_window(n_frames, dt_fs, n_blocks, end_fraction, window_fs)
    x = _select(pos, mobile, framework, masses)
    run = partial(_analyze, dt_fs=float(dt_fs), i0_fixed=i0, n_blocks=n_blocks, i1=i1, tol=tol,
                  fallback_start=fallback_start, fixed=window_fs is not None)
    rows = _run_replicas(run, x, mesh) if x.ndim == 4 else [jax.tree_util.tree_map(np.asarray, run(x))]
    per = lambda v, r: v[r] if np.ndim(v) else v  # noqa: E731  (per-replica T / volume allowed)
    res = [_result(o, i1, dt_fs, x.shape[-2], n_frames, hop_distance, min_hops, per(temperature, r),
                   per(volume_A3, r), charge) for r, o in enumerate(rows)]
    return res if x.ndim == 4 else res[0]


def _run_replicas(run, x, mesh):
    """``run`` vmapped over the replica axis of x [R, T, N, 3], sharded over ``mesh`` (padded to a
    multiple of its devices, padding dropped) -> one dict of numpy arrays per replica."""
    mesh = replica_mesh() if mesh == "auto" else mesh
    n_rep = x.shape[0]
    if mesh is not None:
        (x,) = shard_replicas(mesh, -(-n_rep // mesh.devices.size) * mesh.devices.size, x)
    out = jax.tree_util.tree_map(lambda v: np.asarray(v)[:n_rep], jax.vmap(run)(x))
    return [jax.tree_util.tree_map(lambda v, r=r: v[r], out) for r in range(n_rep)]


def _result(o, i1, dt_fs, n_mobile, n_frames, hop, min_hops, temperature, volume, charge):
    """``Diffusion`` from one replica's ``_analyze`` output, with the window and hop warnings."""
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


def nernst_einstein(D, n_ions, volume_A3, temperature, charge=1.0):
    """Eq. 4: sigma = (N / V) q^2 D / (kB T) in mS/cm; D in cm^2/s, V in A^3, T in K, q in e."""
    n_per_cm3 = n_ions / (volume_A3 * 1e-24)
    return 1e3 * n_per_cm3 * (charge * E_CHARGE) ** 2 * D / (KB_J * temperature)
