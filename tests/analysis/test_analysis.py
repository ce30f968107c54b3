"""Tests of lycb_jax.analysis against independent references (numpy O(T^2) MSD, known random-walk D,
pymatgen-analysis-diffusion, analytic Arrhenius data, hand-computed Nernst-Einstein)."""

import importlib
import json
from functools import partial

import jax
import numpy as np
import pytest

from lycb_jax import analysis as A


def msd_direct(x):
    """O(T^2) float64 time-origin-averaged MSD of x [T, N, 3] at every lag."""
    t = x.shape[0]
    return np.array([np.mean(np.sum((x[m:] - x[: t - m]) ** 2, -1)) if m else 0.0 for m in range(t)])


def random_walk(rng, shape, step):
    return np.cumsum(rng.normal(0.0, step, shape), axis=-3)


# ------------------------------------------------------------------------------------------ MSD
def test_msd_fft_equals_direct_with_drift_and_collective():
    rng = np.random.default_rng(0)
    t, n_li, n_fw = 600, 6, 4
    li = random_walk(rng, (t, n_li, 3), 0.2) + rng.uniform(0, 10, (1, n_li, 3))
    drift = random_walk(rng, (t, 1, 3), 0.05)
    fw = rng.normal(0, 0.1, (t, n_fw, 3)) + rng.uniform(0, 10, (1, n_fw, 3)) + drift
    pos = np.concatenate([li + drift, fw], axis=1)
    mobile = np.array([True] * n_li + [False] * n_fw)
    masses = np.array([6.94] * n_li + [88.9, 35.45, 35.45, 79.9])
    tr, col = A.msd_fft(pos, mobile=mobile, framework=~mobile, masses=masses)
    com = np.einsum("tnk,n->tk", pos[:, ~mobile], masses[~mobile] / masses[~mobile].sum())
    x = pos[:, mobile] - com[:, None]
    ref_tr = msd_direct(x)
    ref_col = msd_direct(x.sum(1, keepdims=True)) / n_li
    np.testing.assert_allclose(tr, ref_tr, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(col, ref_col, rtol=2e-4, atol=1e-4)
    # no drift removal: plain MSD of the Li positions
    np.testing.assert_allclose(A.msd_fft(pos, mobile=mobile).tracer, msd_direct(pos[:, mobile]), rtol=2e-4, atol=1e-5)


def test_msd_fft_vmaps_over_replicas():
    rng = np.random.default_rng(1)
    pos = random_walk(rng, (3, 300, 5, 3), 0.3)
    out = jax.jit(jax.vmap(partial(A.msd_fft, mobile=np.ones(5, bool))))(pos)
    for r in range(3):
        np.testing.assert_allclose(out.tracer[r], msd_direct(pos[r]), rtol=2e-4, atol=1e-5)


def test_msd_fft_float32_accuracy_long_trajectory():
    # 50,000 frames, positions far from the origin (50 A offsets): centring keeps float32 accurate
    rng = np.random.default_rng(2)
    t = 50_000
    x = random_walk(rng, (t, 4, 3), 0.1) + 50.0
    tr = np.asarray(A.msd_fft(x).tracer)
    for m, rtol in [(1, 3e-3), (10, 1e-3), (100, 2e-4), (1000, 1e-4), (10_000, 1e-4)]:
        ref = np.mean(np.sum((x[m:] - x[:-m]) ** 2, -1))
        assert abs(tr[m] / ref - 1) < rtol, (m, tr[m], ref)


# ------------------------------------------------------------------------------------------ D
STEP, DT = 0.3, 1.0  # random walk: A per axis per frame, fs per frame
D_TRUE = STEP**2 / (2 * DT) * 0.1  # <dx^2> = 2 D dt per axis; A^2/fs -> cm^2/s


@pytest.fixture(scope="module")
def walks():
    """4 independent replicas of 16 random walkers x 2000 frames, analysed in one vmapped call."""
    rng = np.random.default_rng(4)
    return A.diffusion_coefficient(random_walk(rng, (4, 2000, 16, 3), STEP).astype(np.float32), DT)


def test_random_walk_recovers_known_D_within_stated_error(walks):
    # (the calibration of D_err over 64 replicas is in test_diffusion_window.py)
    for res in walks:
        assert res.converged and abs(res.D - D_TRUE) < 3 * res.D_err, (res.D, res.D_err, D_TRUE)
        assert 0.01 < res.D_err / D_TRUE < 0.15  # not absurdly large (nor zero)
        assert res.window_fs[1] == pytest.approx(2000 * DT / 3, rel=0.01)  # >= 3 independent origins
        assert res.collective_converged and 0.5 < res.haven_ratio < 2  # independent walkers: H_R = 1 within noise
        assert abs(res.haven_ratio - 1) < 3 * res.haven_ratio_err
        assert res.D_err_ols < 0.3 * res.D_err  # the naive error ignores the correlation of MSD points


def test_ballistic_then_diffusive_window():
    # Ornstein-Uhlenbeck velocities (correlation time tau frames): MSD ~ t^2 for t << tau, then 6 D t
    rng = np.random.default_rng(5)
    t, n, tau, sv, dt = 12_000, 32, 10.0, 0.1, 1.0  # sv: velocity std, A/frame
    a = np.exp(-1.0 / tau)
    noise = rng.normal(0, sv * np.sqrt(1 - a**2), (t, n, 3))
    v = np.empty_like(noise)
    v[0] = rng.normal(0, sv, (n, 3))
    for i in range(1, t):
        v[i] = a * v[i - 1] + noise[i]
    x = np.cumsum(v, axis=0)
    d_true = sv**2 * tau * 0.1 / dt  # D = <v^2> tau per axis (A^2/fs) -> cm^2/s
    res = A.diffusion_coefficient(x, dt)
    t0, t1 = res.window_fs
    # exact MSD ~ u - 1 + exp(-u), u = t/tau: its derivative ~ 1 - exp(-u) is within 5% of its final value
    # from u = 3; the slope test must exclude the ballistic part (u < 2) and start early
    assert res.converged and 2 * tau <= t0 <= 16 * tau and t0 < t1 / 4
    assert abs(res.D - d_true) < 2.5 * res.D_err, (res.D, res.D_err, d_true)
    # a window in the ballistic part would give a different (wrong) D
    bal, _, _ = A.fit_einstein(res.msd, dt, 1, i1=20)
    assert abs(float(bal) - d_true) > 5 * res.D_err


def test_agrees_with_pymatgen_diffusion_analyzer():
    da_mod = importlib.import_module("pymatgen.analysis.diffusion.analyzer")
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(6)
    t, n_li, n_fw, box, temp = 2000, 30, 10, 12.0, 600.0
    drift = random_walk(rng, (t, 1, 3), 0.02)
    li = random_walk(rng, (t, n_li, 3), 0.15) + rng.uniform(0, box, (1, n_li, 3)) + drift
    fw = rng.normal(0, 0.1, (t, n_fw, 3)) + rng.uniform(0, box, (1, n_fw, 3)) + drift
    pos = np.concatenate([li, fw], axis=1)
    species = ["Li"] * n_li + ["Cl"] * n_fw
    structure = Structure(Lattice.cubic(box), species, pos[0], coords_are_cartesian=True)
    time_step, step_skip = 2, 5  # 10 fs between frames
    da = da_mod.DiffusionAnalyzer(structure, np.transpose(pos - pos[0], (1, 0, 2)), "Li", temp,
                                  time_step, step_skip, smoothed="max")
    # Same quantity on the same time points: DA 'max' = all-time-origin MSD of drift-corrected
    # (plain framework mean) displacements at lags da.dt (from 1 ps, every 9th lag), fitted by
    # least squares with weights 1/dt.  We fit our FFT MSD at exactly those lags with those weights.
    dt_fs = time_step * step_skip
    lags = np.rint(da.dt / dt_fs).astype(int)
    tr, col = A.msd_fft(pos, mobile=np.array(species) == "Li", framework=np.array(species) != "Li")
    np.testing.assert_allclose(np.asarray(tr)[lags], da.msd, rtol=1e-3)
    w = np.zeros(t, np.float32)
    w[lags] = 1.0 / da.dt
    d, _, _ = A.fit_einstein(tr, dt_fs, lags[0], i1=lags[-1], weights=w)
    dc, _, _ = A.fit_einstein(col, dt_fs, lags[0], i1=lags[-1], weights=w)
    assert float(d) == pytest.approx(da.diffusivity, rel=0.01)
    assert float(dc) == pytest.approx(da.chg_diffusivity, rel=0.01)
    assert float(d / dc) == pytest.approx(da.haven_ratio, rel=0.01)
    sigma = A.nernst_einstein(float(d), n_li, structure.volume, temperature=temp)
    assert sigma == pytest.approx(da.conductivity, rel=0.01)
    # Error: DA's std dev is the residual-based least-squares slope error (meaningful, per its docs,
    # only for the unweighted fit).  Compare our unweighted OLS error on DA's MSD points with
    # DA's get_diffusivity_from_msd(..., smoothed=False) on the same points.  (Our reported D_err is
    # the block-averaging error instead, which accounts for correlated MSD points.)
    d_ref, d_err_ref = da_mod.get_diffusivity_from_msd(da.msd, da.dt, smoothed=False)
    w_eq = np.zeros(t, np.float32)
    w_eq[lags] = 1.0
    d2, _, d2_err = A.fit_einstein(tr, dt_fs, lags[0], i1=lags[-1], weights=w_eq)
    assert float(d2) == pytest.approx(d_ref, rel=0.01)
    assert float(d2_err) == pytest.approx(d_err_ref, rel=0.01)


def test_too_few_hops_is_not_converged():
    rng = np.random.default_rng(7)
    res = A.diffusion_coefficient(random_walk(rng, (1200, 8, 3), 0.01), 1.0, temperature=500.0, volume_A3=500.0)
    assert not res.converged and res.reason.startswith("too few hops") and np.isnan(res.D) and np.isnan(res.sigma)


# ------------------------------------------------------------------------------------------ Arrhenius / NE
KB = 8.617333262e-5  # eV/K (CODATA), written out here independently of the module


def test_arrhenius_recovers_known_Ea():
    rng = np.random.default_rng(8)
    ea, d0 = 0.30, 2e-3
    temps = np.array([450, 500, 550, 600, 700, 800, 900, 1100.0])
    rel = np.full(temps.size, 0.10)
    d = d0 * np.exp(-ea / (KB * temps)) * np.exp(rng.normal(0, rel))
    fit = A.arrhenius_fit(temps, d, rel * d)
    assert abs(float(fit.Ea) - ea) < 2 * float(fit.Ea_err)
    assert 0.005 < float(fit.Ea_err) < 0.03
    assert abs(np.log(float(fit.D0) / d0)) < 2 * float(fit.D0_err) / float(fit.D0)
    # calibration over 400 synthetic data sets (vmapped): ~68% within 1 sigma
    eps = rng.normal(0, 0.10, (400, temps.size))
    dd = d0 * np.exp(-ea / (KB * temps)) * np.exp(eps)
    fits = jax.vmap(A.arrhenius_fit, in_axes=(None, 0, 0))(temps, dd, 0.10 * dd)
    cover = np.mean(np.abs(np.asarray(fits.Ea) - ea) < np.asarray(fits.Ea_err))
    assert 0.6 < cover < 0.85, cover


def test_nernst_einstein_hand_calculation():
    # sigma = N q^2 D / (V kB T): N = 24 Li, V = 1000 A^3 = 1e-21 cm^3, D = 1e-6 cm^2/s, T = 300 K
    # n = 2.4e22 cm^-3; q^2 = (1.602176634e-19 C)^2; kB T = 1.380649e-23 J/K * 300 K = 4.141947e-21 J
    # sigma = 2.4e22 * 2.566970e-38 * 1e-6 / 4.141947e-21 = 0.148740 S/cm = 148.740 mS/cm
    assert A.nernst_einstein(1e-6, 24, 1000.0, temperature=300.0) == pytest.approx(148.740, rel=1e-5)
    assert A.nernst_einstein(1e-6, 24, 1000.0, temperature=300.0, charge=2) == pytest.approx(4 * 148.740, rel=1e-5)


def test_extrapolated_conductivity_and_error():
    ea, d0, temps = 0.25, 1e-3, np.array([500.0, 600, 700, 800])
    d = d0 * np.exp(-ea / (KB * temps))
    fit = A.arrhenius_fit(temps, d, 0.05 * d)  # exact data: chi2 = 0, errors from the D errors
    s, s_err = A.conductivity_at(fit, 24, 1000.0, temperature=300.0)
    d300 = d0 * np.exp(-ea / (KB * 300.0))
    assert float(s) == pytest.approx(148.740 * d300 / 1e-6, rel=1e-3)
    # hand propagation: var ln D(300) = 1/sum(w) + (x300 - xbar)^2 / Sxx, w = 1/0.05^2, x = 1/T
    x, w = 1 / temps, np.full(4, 400.0)
    xbar = np.sum(w * x) / w.sum()
    var = 1 / w.sum() + (1 / 300 - xbar) ** 2 / np.sum(w * (x - xbar) ** 2)
    assert float(s_err) == pytest.approx(float(s) * np.sqrt(var), rel=2e-3)


# ------------------------------------------------------------------------------------------ bad input / IO
def _wrapped_case():
    rng = np.random.default_rng(9)
    cell = np.diag([8.0, 9.0, 10.0])
    x = random_walk(rng, (400, 6, 3), 0.3) + 4.0
    return x, cell, x - np.floor(x / np.diag(cell)) * np.diag(cell)


def test_wrapped_trajectory_refused_or_unwrapped():
    x, cell, xw = _wrapped_case()
    symbols = ["Li"] * 4 + ["Cl"] * 2
    assert int(A.wrap_jumps(xw, cell)) > 0 and int(A.wrap_jumps(x, cell)) == 0
    with pytest.raises(ValueError, match="wrapped coordinates"):
        A.trajectory_from_arrays(xw, symbols, cell, dt_fs=1.0)
    traj = A.trajectory_from_arrays(xw, symbols, cell, dt_fs=1.0, wrapped="unwrap")
    np.testing.assert_allclose(traj.positions - traj.positions[0], x - x[0], atol=1e-9)
    np.testing.assert_allclose(np.asarray(A.unwrap(xw, np.broadcast_to(cell, (400, 3, 3)))) - xw[0],
                               x - x[0], atol=1e-3)  # per-frame cell (float32 in JAX)


def test_missing_species_and_short_trajectory():
    x, cell, _ = _wrapped_case()
    traj = A.trajectory_from_arrays(x, ["Li"] * 4 + ["Cl"] * 2, cell, dt_fs=1.0)
    with pytest.raises(ValueError, match="'Na' not in trajectory"):
        A.analyze_trajectory(traj, 500.0, species="Na")
    res = A.diffusion_coefficient(x[:40], 1.0)
    assert not res.converged and res.reason.startswith("too short")
    with pytest.raises(ValueError, match="too short for the requested window"):
        A.diffusion_coefficient(x, 1.0, window_fs=(10.0, 300.0))


def test_ase_file_pipeline_tables_and_plots(tmp_path):
    import ase
    import ase.io

    rng = np.random.default_rng(10)
    cell = np.diag([10.0, 10.0, 10.0])
    results = []
    for temp, step in [(500.0, 0.1), (700.0, 0.2), (900.0, 0.3)]:
        x = random_walk(rng, (1200, 12, 3), 0.02) + rng.uniform(0, 10, (1, 12, 3))
        x[:, :8] += random_walk(rng, (1200, 8, 3), step)  # 8 mobile Li, 4 Y framework
        frames = [ase.Atoms(["Li"] * 8 + ["Y"] * 4, positions=p, cell=cell, pbc=True) for p in x]
        path = tmp_path / f"md_{temp:g}.extxyz"
        ase.io.write(path, frames)
        traj = A.trajectory_from_file(path, dt_fs=5.0)
        np.testing.assert_allclose(traj.positions, x, atol=1e-6)
        assert traj.volume_A3 == pytest.approx(1000.0)
        results.append(A.analyze_trajectory(traj, temp))
    assert results[0].n_mobile == 8
    summary = A.summarize(results)
    pj, pc = A.write_summary(summary, tmp_path / "out")
    loaded = json.loads(pj.read_text())
    for key in ("Ea", "Ea_err", "D0", "sigma_extrapolated", "sigma_extrapolated_err", "per_temperature"):
        assert key in loaded
    assert [r["converged"] for r in loaded["per_temperature"]] == [r.converged for r in results]
    assert loaded["Ea"] is not None or loaded["arrhenius_refused"]
    header = pc.read_text().splitlines()[0].split(",")
    for key in ("T", "D", "D_err", "sigma", "sigma_err", "Ea", "Ea_err", "sigma_extrapolated"):
        assert key in header
    paths = A.plot_msd(results, tmp_path / "out") + A.plot_arrhenius(summary, tmp_path / "out")
    assert {p.suffix for p in paths} == {".png", ".svg"} and all(p.stat().st_size > 1000 for p in paths)
