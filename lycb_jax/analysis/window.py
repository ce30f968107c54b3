"""Where the MSD is diffusive: the fit window and the convergence verdict (one rule, used by every path).

Units: lags in frames (times in fs where named), MSD in Angstrom^2, hop distance in Angstrom.

The window [i0, i1] (frames):

* end ``i1 = floor((T - 1) / min_origins)``: at least ``min_origins`` (default 3) independent,
  non-overlapping time origins remain at every fitted lag.
* start ``i0``: the first lag of a quarter-octave grid from which (a) the tracer MSD is at least
  ``hop_distance**2`` (the ions have left their cages: ballistic and cage-rattling regimes are
  over) and (b) the local log-log slope of the MSD with its constant cage offset removed
  (``slope_test``: 2 ballistic, ~0 caged, gamma for MSD ~ t^gamma) stays at 1 within its own
  statistical error at this and every later grid lag up to ``i1 / 2``:
  ``|slope - 1| <= slope_tol + z * err`` (defaults 0.05 and 3), ``err`` from the random-walk MSD
  covariance (``msd.msd_covariance_model``) at the local D, and ``err <= max_alpha_err`` (0.3) at
  the start (the slope is measured there, not just noisy).  Later lags whose error exceeds
  ``max_alpha_err / 2`` are too noisy to reject anything and are not tested.  The plain log-log slope of the MSD,
  log2(MSD(2t) / MSD(t)), is not used: with a cage offset c it reaches 1 only when 6 D t >> c,
  which costs run length without making the intercept fit any better.

No such lag -> not converged, with the reason: "too short" (fewer lags than an octave of slope
test), "too few hops" (the MSD never reaches one hop distance squared within ``i1``) or
"slope not 1" (it does, but the log-log slope has not settled at 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lycb_jax.analysis.msd import msd_covariance_model

MIN_WINDOW_FRAMES = 16  # a window end below this many stored frames cannot hold a slope test


class Window(NamedTuple):
    """Fit window and verdict.  i0/i1 in frames (None when not converged); alpha on ``grid``."""

    i0: int | None
    i1: int
    converged: bool
    reason: str | None  # why not converged (None when converged)
    grid: np.ndarray  # lags t (frames) of the slope test
    alpha: np.ndarray  # local log-log slope of the offset-free MSD (slope_test)
    alpha_err: np.ndarray  # its 1-sigma statistical error


def min_frames(min_origins: int = 3) -> int:
    """Fewest stored frames for which any window can exist (before knowing D)."""
    return MIN_WINDOW_FRAMES * min_origins + 1


def window_end(n_frames: int, min_origins: int = 3) -> int:
    """Last lag (frames) with at least ``min_origins`` independent time origins."""
    return int((n_frames - 1) // min_origins)


def slope_test(msd, n_atoms: int, i1: int):
    """(grid, slope, slope_err): local log-log slope of the MSD with its cage offset removed, on a
    quarter-octave lag grid t with 2t <= i1 (frames).

    slope(t) = 1 + d ln(dMSD/dt) / d ln t from the secant slopes of the MSD over (t, sqrt2 t) and
    (sqrt2 t, 2t): 2 for ballistic motion, ~0 on a cage plateau, gamma for MSD ~ t^gamma, and exactly
    1 for MSD = 6 D t + c whatever the offset c (which the Einstein fit takes as its intercept).  The
    error is propagated from the random-walk covariance of the three MSD points at the local D
    (secant over t..2t) and ``n_atoms`` independent walkers; increments are floored at their own noise
    level (so a flat or decreasing MSD reads as slope <= 1 with a small error, noise as a large one).
    msd [T] in A^2."""
    m = np.asarray(msd, np.float64)
    grid = np.unique(np.round(2.0 ** np.arange(1.0, np.log2(max(i1, 2)) + 1e-9, 0.25)).astype(int))
    grid = grid[(grid >= 2) & (2 * grid <= i1)]
    slope, err = np.full(grid.size, np.nan), np.full(grid.size, np.inf)
    for k, t in enumerate(grid):
        lags = np.array([t, int(round(np.sqrt(2.0) * t)), 2 * t])
        dl = np.diff(lags).astype(float)
        c = msd_covariance_model(lags, m.size, n_atoms) * (max(m[lags[2]] - m[lags[0]], 0.0) / (6.0 * (2 * t - t))) ** 2
        sd = np.sqrt(np.maximum([c[0, 0] + c[1, 1] - 2 * c[0, 1], c[1, 1] + c[2, 2] - 2 * c[1, 2]], 0.0))
        dm = np.maximum(np.diff(m[lags]), np.maximum(sd, 1e-12))  # increments floored at their own noise
        tm = np.sqrt(lags[1:] * lags[:-1])
        span = np.log(tm[1] / tm[0])
        slope[k] = 1.0 + np.log((dm[1] / dl[1]) / (dm[0] / dl[0])) / span
        grad = np.array([1 / dm[0], -1 / dm[0] - 1 / dm[1], 1 / dm[1]]) / span
        err[k] = np.sqrt(max(grad @ c @ grad, 0.0))
    return grid, slope, err


def find_window(msd, n_atoms: int, dt_fs: float, *, hop_distance: float, min_origins: int = 3,
                slope_tol: float = 0.05, z: float = 3.0, max_alpha_err: float = 0.3) -> Window:
    """Diffusive fit window of the tracer MSD [T] (A^2) of ``n_atoms`` ions (module docstring)."""
    m = np.asarray(msd, np.float64)
    n_frames = m.size
    i1 = window_end(n_frames, min_origins)
    hop2 = hop_distance**2
    if i1 < MIN_WINDOW_FRAMES:
        return Window(None, i1, False,
                      f"too short: {n_frames} frames leave {i1} lags with >= {min_origins} independent time "
                      f"origins; need >= {MIN_WINDOW_FRAMES} (>= {min_frames(min_origins)} frames)",
                      np.zeros(0, int), np.zeros(0), np.zeros(0))
    grid, alpha, err = slope_test(m, n_atoms, i1)
    consistent = np.abs(alpha - 1.0) <= slope_tol + z * err
    ok = consistent | (err > max_alpha_err / 2)  # later lags this noisy cannot reject anything
    settled = np.flip(np.cumprod(np.flip(ok))).astype(bool) & consistent  # here and at every later grid lag
    start = settled & (m[grid] >= hop2) & (err <= max_alpha_err)
    if start.any():
        return Window(int(grid[np.argmax(start)]), i1, True, None, grid, alpha, err)
    noisy = settled & (m[grid] >= hop2)
    if noisy.any():
        k = np.argmax(noisy)
        reason = (f"slope not measured: the local log-log slope {alpha[k]:.2f} +- {err[k]:.2f} at t = "
                  f"{grid[k] * dt_fs / 1000:.3g} ps is consistent with 1 only because its error exceeds "
                  f"{max_alpha_err}; run longer or with more ions")
    elif grid.size == 0 or m[grid[-1]] < hop2:
        t_last = grid[-1] if grid.size else i1 // 2
        reason = (f"too few hops: the MSD reaches only {m[t_last]:.3g} A^2 = {m[t_last] / hop2:.2g} x (hop distance "
                  f"{hop_distance:.3g} A)^2 by {t_last * dt_fs / 1000:.3g} ps, the latest possible window start "
                  f"(1/{2 * min_origins} of the run); run longer or hotter")
    else:
        k = np.flatnonzero(m[grid] >= hop2)
        k = k[0] if k.size else grid.size - 1
        reason = (f"slope not 1: after the MSD passes one hop ({hop_distance:.3g} A)^2 its log-log slope is still "
                  f"{alpha[k]:.2f} +- {err[k]:.2f} at t = {grid[k] * dt_fs / 1000:.3g} ps"
                  + ("" if ok[k:].all() else f" (not 1 within its error up to {grid[-1] * dt_fs / 1000:.3g} ps)")
                  + "; run longer")
    return Window(None, i1, False, reason, grid, alpha, err)


DEFAULT_HOP_DISTANCE = 2.5  # A, when no structure is at hand to take the nearest mobile-ion distance from
D_MAX_CM2_S = 1e-3  # above any Li diffusivity in a solid or a molten salt (~1e-4 cm^2/s at 1000 K)


def min_converging_D(production_ps: float, hop_distance: float = DEFAULT_HOP_DISTANCE, min_origins: int = 3) -> float:
    """Smallest D (cm^2/s) whose MSD reaches hop_distance^2 (A) early enough for a window in a
    production run of ``production_ps``: by t = production / (2 min_origins) (6 D t = hop^2)."""
    t_ps = production_ps / (2 * min_origins)
    return hop_distance**2 / (6.0 * t_ps) * 1e-4  # A^2/ps -> cm^2/s


def check_production(temperatures_K, production_ps: float, save_every_fs: float, *,
                     hop_distance: float = DEFAULT_HOP_DISTANCE, min_origins: int = 3) -> str:
    """Refuse (ValueError) a transport study that cannot give an Arrhenius fit or any diffusive window,
    before its MD runs: fewer than two temperatures, fewer stored production frames than any window
    needs, or a production so short that even D = 1e-3 cm^2/s could not pass the shortest plausible hop
    (``DEFAULT_HOP_DISTANCE``).  Returns a line for the log with the smallest D that can converge at these
    settings with ``hop_distance`` (the structure's, as the analysis uses)."""
    temps = list(temperatures_K)
    if len(set(temps)) < 2:
        raise ValueError(f"a transport study needs at least two distinct temperatures for the Arrhenius fit; got "
                         f"{temps} K (use `lycb-jax md` for a single temperature)")
    n_frames = int(round(production_ps * 1000.0 / save_every_fs)) + 1
    need = min_frames(min_origins)
    if n_frames < need:
        raise ValueError(f"production of {production_ps:g} ps saved every {save_every_fs:g} fs gives {n_frames} "
                         f"frames; a diffusive window needs >= {need} ({MIN_WINDOW_FRAMES} lags with >= {min_origins} "
                         "independent time origins): save more often or run longer")
    d_min = min_converging_D(production_ps, hop_distance, min_origins)
    shortest = min(hop_distance, DEFAULT_HOP_DISTANCE)
    d_floor = min_converging_D(production_ps, shortest, min_origins)
    if d_floor > D_MAX_CM2_S:
        raise ValueError(f"production of {production_ps:g} ps is too short for any diffusive window: the MSD must pass "
                         f"one hop ({shortest:g} A)^2 by {production_ps / (2 * min_origins):.3g} ps, which needs "
                         f"D >= {d_floor:.2g} cm^2/s (> {D_MAX_CM2_S:g}, beyond any ion in a solid); run longer")
    return (f"production {production_ps:g} ps ({n_frames} frames): a temperature converges only if its Li D >= "
            f"{d_min:.2g} cm^2/s (MSD past one hop of {hop_distance:.3g} A by {production_ps / (2 * min_origins):.3g} ps)")
