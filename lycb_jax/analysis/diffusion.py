"""Diffusion coefficients from the MSD (Einstein relation, paper Eq. 2) and Nernst-Einstein (Eq. 4).

Units: time in fs, MSD in Angstrom^2, D in cm^2/s, volume in Angstrom^3, T in K, sigma in mS/cm.

* Window: ``lycb_jax.analysis.window`` (diffusive regime or a not-converged verdict with its
  reason); ``window_fs=(t0, t1)`` forces one.
* Estimator: generalised least squares of MSD = 6 D t + c over up to ``n_points`` evenly spaced
  lags of the window, with the MSD covariance of a random walk (``msd.msd_covariance_model``:
  kinisi's approximately optimal estimator, McCluskey et al., JCTC 2025) at the fitted D, its
  variances rescaled to the measured variance of the squared displacements (non-Gaussian hops).
  The plain least-squares error, which ignores the correlation of MSD points and is far too small,
  is kept as ``D_err_ols`` for reference only.
* Collective (charge) MSD: the same estimator over the tracer's window with one walker (the sum
  of all mobile displacements); converged when its relative error is <= ``collective_max_rel_err``.
  Haven ratio D / D_collective with the two errors added in quadrature (their positive correlation
  is ignored, so the stated error is an upper bound).
* Conductivity: Nernst-Einstein from the tracer D with H_R = 1 (``sigma``), and separately from
  D_collective where that converged (``sigma_collective``); never mixed.

MSDs are computed on the device (vmapped over replicas, sharded over local devices); the window
and the GLS are float64 numpy on <= ``n_points`` numbers per replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import jax
import numpy as np

from lycb_jax.analysis.msd import _msd_core, _select, displacement_moments, msd_covariance_model
from lycb_jax.analysis.stats import gls_line, wls_line
from lycb_jax.analysis.window import DEFAULT_HOP_DISTANCE, MIN_WINDOW_FRAMES, find_window, slope_test, window_end
from lycb_jax.runtime.devices import replica_mesh, shard_replicas
from lycb_jax.units import E_CHARGE, KB_J

A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 A^2/fs = 1e-16 cm^2 / 1e-15 s


def fit_einstein(msd, dt_fs, i0, *, i1, weights=None, dim=3):
    """Ordinary (weighted) least squares D (cm^2/s) of MSD = 2 dim D t + c over lags i0..i1 (frames).

    msd [T] (A^2) at lags spaced by dt_fs (fs); ``weights`` [T] optional.  Returns (D, intercept
    (A^2), D_err_ols); D_err_ols ignores the correlation of MSD points (reference only).
    jit/vmap-able.
    """
    import jax.numpy as jnp

    msd = jnp.asarray(msd, jnp.result_type(float))  # float32 unless x64 is enabled
    lag = jnp.arange(msd.shape[-1])
    w = ((lag >= i0) & (lag <= i1)).astype(msd.dtype)
    if weights is not None:
        w = w * weights
    fit = wls_line(lag * jnp.asarray(dt_fs, msd.dtype), msd, w)
    f = A2_PER_FS_TO_CM2_PER_S / (2 * dim)
    return fit.slope * f, fit.intercept, jnp.sqrt(fit.chi2_red / fit.sxx) * f


@dataclass
class Diffusion:
    """Einstein-relation result for one trajectory.  D in cm^2/s, times in fs, MSD in A^2.

    Not converged: D, D_err, sigma ... are NaN (null in transport.json) and ``reason`` says why.
    """

    D: float
    D_err: float  # GLS with the MSD covariance (accounts for correlated MSD points)
    converged: bool
    reason: str | None  # why not converged
    window_fs: tuple | None  # (t0, t1) of the fit, None when not converged
    window_source: str  # "auto" (diffusive regime found) or "user" (forced window)
    n_mobile: int
    n_frames: int
    dt_fs: float
    hop_distance: float  # A
    hops_per_ion: float  # MSD(t1) / hop_distance^2, t1 = longest usable lag
    msd: np.ndarray = field(repr=False)  # tracer MSD [T]
    msd_collective: np.ndarray = field(repr=False)
    slope_grid_fs: np.ndarray = field(repr=False)  # local log-log slope test (window module)
    slope: np.ndarray = field(repr=False)
    slope_err: np.ndarray = field(repr=False)
    intercept: float = math.nan  # A^2
    D_err_ols: float = math.nan  # naive least-squares error (ignores correlation), reference only
    chi2_red: float = math.nan  # GLS residuals vs the covariance model (~1 expected)
    variance_scale: float = math.nan  # measured / Gaussian variance of squared displacements in the window
    note: str | None = None  # e.g. a forced window that fails the slope test
    D_collective: float = math.nan
    D_collective_err: float = math.nan
    collective_converged: bool = False
    haven_ratio: float = math.nan
    haven_ratio_err: float = math.nan
    temperature: float | None = None  # K
    volume_A3: float | None = None
    sigma: float | None = None  # mS/cm
    sigma_err: float | None = None
    sigma_source: str | None = None
    sigma_collective: float = math.nan  # mS/cm, from D_collective where it converged
    sigma_collective_err: float = math.nan
    framework_msd_A2: float = math.nan  # non-mobile atoms, first to last frame (melting check)

    @property
    def time_fs(self):
        return np.arange(self.n_frames) * self.dt_fs


def _gls_msd(msd, lags, n_frames, n_atoms, scale=1.0):
    """GLS of MSD = slope * lag + c at ``lags`` (frames) with the random-walk covariance times
    ``scale`` at D = slope / 6.  The weights do not depend on D or scale (they only set the errors),
    so one GLS solve, then the covariance at the fitted D."""
    y = np.asarray(msd, np.float64)[lags]
    shape = msd_covariance_model(lags, n_frames, n_atoms)
    fit = gls_line(lags, y, shape)
    d = max(fit.slope / 6.0, 0.0)  # A^2/frame
    return fit._replace(cov=fit.cov * d**2 * scale, chi2_red=fit.chi2_red / max(d**2 * scale, 1e-300))


def _variance_scale(x, lags):
    """Measured / Gaussian variance of squared displacements, (3/2) (<d^4> / <d^2>^2 - 1), averaged
    over <= 6 lags of ``lags`` (frames) on the device.  One number per window: a per-lag factor taken
    from the data would down-weight the lags whose MSD fluctuated high and bias D low."""
    pick = np.unique(lags[np.linspace(0, lags.size - 1, min(6, lags.size)).round().astype(int)])
    m2, m4 = (np.asarray(v, np.float64) for v in displacement_moments(x, pick))
    return float(np.mean(1.5 * (m4 / m2**2 - 1.0)))


def _fit_lags(i0, i1, n_points):
    return np.unique(np.linspace(i0, i1, min(n_points, i1 - i0 + 1)).round().astype(int))


def _user_window(window_fs, dt_fs, n_frames):
    i0, i1 = int(round(window_fs[0] / dt_fs)), int(round(window_fs[1] / dt_fs))
    if not 1 <= i0 < i1 - 2:
        raise ValueError(f"bad fit window {window_fs} fs: need dt = {dt_fs:g} fs <= t0 < t1 with >= 3 frames")
    if 2 * i1 > n_frames:
        raise ValueError(f"trajectory too short for the requested window: t1 = {window_fs[1]:g} fs must be at most "
                         f"half the run ({n_frames * dt_fs / 2:g} fs, {n_frames} frames)")
    return i0, i1


def _analyse_one(x, msd, msd_c, dt_fs, n_atoms, hop, window_fs, opts):
    """``Diffusion`` of one replica: x [T, N, 3] mobile positions (device), MSDs [T] (numpy)."""
    n_frames = msd.size
    f = A2_PER_FS_TO_CM2_PER_S / (6.0 * dt_fs)  # A^2/frame slope -> D in cm^2/s
    if window_fs is None:
        win = find_window(msd, n_atoms, dt_fs, hop_distance=hop, min_origins=opts["min_origins"],
                          slope_tol=opts["slope_tol"], z=opts["z"], max_alpha_err=opts["max_alpha_err"])
        grid, alpha, alpha_err, i0, i1 = win.grid, win.alpha, win.alpha_err, win.i0, win.i1
        converged, reason, note, source = win.converged, win.reason, None, "auto"
    else:
        i0, i1 = _user_window(window_fs, dt_fs, n_frames)
        grid, alpha, alpha_err = slope_test(msd, n_atoms, i1)
        inside = (grid >= i0) & (2 * grid <= i1)
        bad = inside & (np.abs(alpha - 1) > opts["slope_tol"] + opts["z"] * alpha_err)
        converged, reason, source = True, None, "user"
        note = (f"forced window: log-log slope {alpha[bad][0]:.2f} +- {alpha_err[bad][0]:.2f} at "
                f"{grid[bad][0] * dt_fs:g} fs is not 1" if bad.any() else None)
        if msd[i0] < hop**2:
            note = (note + "; " if note else "forced window: ") + f"MSD at t0 {msd[i0]:.3g} A^2 < hop^2 {hop**2:.3g} A^2"
    end = min(i1, n_frames - 1)
    r = Diffusion(D=math.nan, D_err=math.nan, converged=converged, reason=reason, window_fs=None,
                  window_source=source, n_mobile=int(n_atoms), n_frames=int(n_frames), dt_fs=float(dt_fs),
                  hop_distance=float(hop), hops_per_ion=float(msd[end] / hop**2), msd=msd, msd_collective=msd_c,
                  slope_grid_fs=grid * dt_fs, slope=alpha, slope_err=alpha_err, note=note)
    if not converged:
        return r
    lags = _fit_lags(i0, i1, opts["n_points"])
    scale = _variance_scale(x, lags) if x is not None else 1.0  # no frames (streaming MSD): Gaussian
    fit = _gls_msd(msd, lags, n_frames, n_atoms, scale)
    r.window_fs = (i0 * dt_fs, i1 * dt_fs)
    r.D, r.D_err, r.intercept = fit.slope * f, math.sqrt(fit.cov[0, 0]) * f, fit.intercept
    r.chi2_red, r.variance_scale = fit.chi2_red, scale
    every = np.arange(i0, i1 + 1)  # naive OLS error over every lag of the window, for reference
    _, res, *_ = np.polyfit(every, msd[every], 1, full=True)
    r.D_err_ols = math.sqrt(res[0] / max(every.size - 2, 1) / np.sum((every - every.mean()) ** 2)) * f
    if r.D <= 0:
        r.converged, r.reason = False, f"non-positive D = {r.D:.3g} cm^2/s fitted in the window"
        r.D = r.D_err = math.nan
        return r
    fc = _gls_msd(msd_c, lags, n_frames, 1)
    r.D_collective, r.D_collective_err = fc.slope * f, math.sqrt(fc.cov[0, 0]) * f
    r.collective_converged = bool(r.D_collective > 0 and r.D_collective_err <= opts["collective_max_rel_err"]
                                  * r.D_collective)
    if r.collective_converged:
        r.haven_ratio = r.D / r.D_collective
        r.haven_ratio_err = r.haven_ratio * math.hypot(r.D_err / r.D, r.D_collective_err / r.D_collective)
    return r


FRAMEWORK_MSD_LIMIT_A2 = 2.0  # above this the framework has moved (melted / amorphised): not solid-state transport


def framework_msd(positions, framework, masses=None) -> np.ndarray:
    """Mean squared displacement (A^2) of the ``framework`` atoms from the first to the last frame of
    unwrapped positions [T, N, 3] or [R, T, N, 3], their mass-weighted drift removed: about twice the
    thermal <u^2> (< 1 A^2) for an intact lattice, a few A^2 and growing once framework atoms hop."""
    pos = np.asarray(positions, np.float64)
    d = pos[..., -1, framework, :] - pos[..., 0, framework, :]
    w = np.ones(d.shape[-2]) if masses is None else np.asarray(masses, np.float64)[framework]
    d = d - np.einsum("m,...mk->...k", w / w.sum(), d)[..., None, :]
    return np.mean(np.sum(d**2, -1), -1)


def diffusion_coefficient(positions, dt_fs, mobile=None, *, framework=None, masses=None, hop_distance=None,
                          min_origins=3, slope_tol=0.05, z=3.0, max_alpha_err=0.3, window_fs=None, n_points=40,
                          collective_max_rel_err=0.3, temperature=None, volume_A3=None, charge=1.0, mesh="auto"):
    """Tracer/collective D (cm^2/s) of unwrapped positions [T, N, 3] or [R, T, N, 3] (A).

    dt_fs: time between frames (fs).  ``mobile``/``framework`` masks [N] and ``masses`` [N] (amu):
    the drift rule of ``lycb_jax.analysis.msd``.  ``hop_distance`` (A, default 2.5; the trajectory
    readers pass the nearest mobile-ion distance of the structure), ``min_origins``, ``slope_tol``,
    ``z``, ``max_alpha_err``: the window rule (``lycb_jax.analysis.window``); ``window_fs`` = (t0, t1)
    forces the window.  With ``temperature`` (K) and ``volume_A3`` the conductivity (mS/cm) is added
    (scalars, or one value per replica).  Returns a ``Diffusion`` (a list for a leading replica
    axis R).  With several local devices (``mesh="auto"`` or a ``runtime.devices.replica_mesh``) the MSDs
    of the replicas are computed sharded over them.
    """
    pos = np.asarray(positions)
    if pos.ndim not in (3, 4) or pos.shape[-1] != 3:
        raise ValueError(f"positions must be [T, N, 3] or [R, T, N, 3], got shape {pos.shape}")
    if not dt_fs > 0:
        raise ValueError(f"dt_fs must be positive, got {dt_fs}")
    hop = DEFAULT_HOP_DISTANCE if hop_distance is None else float(hop_distance)
    if not hop > 0:
        raise ValueError(f"hop_distance must be positive (A), got {hop_distance}")
    x = _select(pos, mobile, framework, masses)
    xs = x if x.ndim == 4 else x[None]
    msds = _run_replicas(_msd_core, xs, mesh) if xs.shape[0] > 1 else [np.asarray(_msd_core(xs[0]))]
    opts = dict(min_origins=min_origins, slope_tol=slope_tol, z=z, max_alpha_err=max_alpha_err, n_points=n_points,
                collective_max_rel_err=collective_max_rel_err)
    per = lambda v, r: v[r] if np.ndim(v) else v  # noqa: E731  (per-replica T / volume allowed)
    fw_msd = np.atleast_1d(framework_msd(pos, framework, masses)) if framework is not None and np.any(framework) \
        else np.full(len(msds), np.nan)
    res = []
    for k, m in enumerate(msds):
        m = np.asarray(m, np.float64)
        r = _analyse_one(xs[k], m[0], m[1], float(dt_fs), xs.shape[-2], hop, window_fs, opts)
        _check_framework(r, float(fw_msd[k]))
        r.temperature, r.volume_A3 = per(temperature, k), per(volume_A3, k)
        if r.temperature is not None and r.volume_A3 is not None:
            _add_conductivity(r, charge)
        res.append(r)
    return res if x.ndim == 4 else res[0]


def diffusion_from_streaming(lag_fs, msd_tracer, msd_collective, *, run_fs, n_mobile, hop_distance=None,
                             min_origins=3, slope_tol=0.05, z=3.0, max_alpha_err=0.3, window_fs=None, n_points=40,
                             collective_max_rel_err=0.3, temperature=None, volume_A3=None, charge=1.0,
                             framework_msd_A2=None) -> Diffusion:
    """``Diffusion`` of one replica from its streaming (order-n) MSD curve: lags ``lag_fs`` [M] (fs, the first
    is the time between accumulator updates), tracer and collective MSD [M] (A^2 per mobile atom, NaN where
    no origin pair), ``run_fs`` the length of the stage (fs), ``n_mobile`` atoms.

    The curve is interpolated linearly onto the uniform grid of its first lag (the window rule and the GLS of
    :func:`diffusion_coefficient` need one); the random-walk covariance uses every update as a time origin
    (the order-n accumulator thins origins at long lags to <= the lag itself, which loses little) and
    Gaussian displacements (no frames to measure the non-Gaussian factor: ``variance_scale`` 1, the error is
    a lower bound where hops are non-Gaussian), and, if the curve ends before a third of the run, the run is
    treated as 3x the last lag (longer errors, never shorter). ``framework_msd_A2`` (from stored frames, if any)
    applies the melting check of :func:`diffusion_coefficient`."""
    lag = np.asarray(lag_fs, np.float64)
    tr, col = np.asarray(msd_tracer, np.float64), np.asarray(msd_collective, np.float64)
    ok = np.isfinite(tr) & np.isfinite(col)
    if lag.ndim != 1 or lag.shape != tr.shape or not ok.any() or not np.all(np.diff(lag) > 0):
        raise ValueError("streaming MSD: lags must be increasing [M] with finite MSD values of the same shape")
    dt = float(lag[0])
    n_frames = int(min(np.floor(run_fs / dt) + 1, min_origins * round(lag[ok][-1] / dt) + 1))
    grid = np.arange(n_frames) * dt
    xp = np.concatenate([[0.0], lag[ok]])
    msd = np.interp(grid, xp, np.concatenate([[0.0], tr[ok]]))
    msd_c = np.interp(grid, xp, np.concatenate([[0.0], col[ok]]))
    opts = dict(min_origins=min_origins, slope_tol=slope_tol, z=z, max_alpha_err=max_alpha_err, n_points=n_points,
                collective_max_rel_err=collective_max_rel_err)
    hop = DEFAULT_HOP_DISTANCE if hop_distance is None else float(hop_distance)
    r = _analyse_one(None, msd, msd_c, dt, int(n_mobile), hop, window_fs, opts)
    r.note = ((r.note + "; ") if r.note else "") + "from the streaming MSD (Gaussian covariance)"
    if framework_msd_A2 is not None:
        _check_framework(r, framework_msd_A2)
    r.temperature, r.volume_A3 = temperature, volume_A3
    if temperature is not None and volume_A3 is not None:
        _add_conductivity(r, charge)
    return r


def _check_framework(r: Diffusion, framework_msd_A2: float) -> None:
    """Record the framework MSD; above the limit the replica is not converged (melted), whatever its fit."""
    r.framework_msd_A2 = framework_msd_A2
    if framework_msd_A2 > FRAMEWORK_MSD_LIMIT_A2:
        r.converged, r.D, r.D_err, r.collective_converged = False, math.nan, math.nan, False
        r.reason = (f"framework mobile: its atoms moved {framework_msd_A2:.2g} A^2 (first to last frame, > "
                    f"{FRAMEWORK_MSD_LIMIT_A2:g}): the lattice melted or amorphised, not solid-state transport")


def _add_conductivity(r: Diffusion, charge: float) -> None:
    """Nernst-Einstein sigma (mS/cm) from the tracer D with H_R = 1, and separately ``sigma_collective``
    from D_collective where that converged; the two are never mixed (NaN where not converged)."""
    ne = partial(nernst_einstein, n_ions=r.n_mobile, volume_A3=r.volume_A3, temperature=r.temperature,
                 charge=charge)
    r.sigma, r.sigma_err = float(ne(r.D)), float(ne(r.D_err))
    r.sigma_source = "tracer D, Nernst-Einstein with H_R = 1" if r.converged else None
    if r.collective_converged:
        r.sigma_collective, r.sigma_collective_err = float(ne(r.D_collective)), float(ne(r.D_collective_err))


def _run_replicas(run, x, mesh):
    """``run`` vmapped over the replica axis of x [R, T, N, 3], sharded over ``mesh`` (padded to a
    multiple of its devices, padding dropped) -> one numpy array per replica."""
    mesh = replica_mesh() if mesh == "auto" else mesh
    n_rep = x.shape[0]
    if mesh is not None:
        (x,) = shard_replicas(mesh, -(-n_rep // mesh.devices.size) * mesh.devices.size, x)
    out = np.asarray(jax.vmap(run)(x))[:n_rep]
    return list(out)


def nernst_einstein(D, n_ions, volume_A3, *, temperature, charge=1.0):
    """Eq. 4: sigma = (N / V) q^2 D / (kB T) in mS/cm; D in cm^2/s, V in A^3, T in K, q in e."""
    n_per_cm3 = n_ions / (volume_A3 * 1e-24)
    return 1e3 * n_per_cm3 * (charge * E_CHARGE) ** 2 * D / (KB_J * temperature)


__all__ = ["A2_PER_FS_TO_CM2_PER_S", "DEFAULT_HOP_DISTANCE", "Diffusion", "MIN_WINDOW_FRAMES", "diffusion_coefficient",
           "fit_einstein", "nernst_einstein", "window_end"]
