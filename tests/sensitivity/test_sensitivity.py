"""Sensitivity studies (lycb_jax.sensitivity): reweighting (DiffTRe) against direct MD, the analytic
fluctuation formula and finite differences; fluctuation formulas against synthetic data with known answers
and the harmonic limit of an LJ crystal; trajectory gradients against finite differences. LJ argon, float64."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from potentials import EPS, argon, lj_model

import lycb_jax.graph.capacity as caps
from lycb_jax.md import masses_of
from lycb_jax.sensitivity import (
    Frames,
    block_jackknife,
    frame_graphs,
    frame_map,
    frames_from_trajectory,
    heat_capacity_nvt,
    langevin_checked,
    maxwell_boltzmann,
    msd_and_grad,
    npt_response,
    potential_energy,
    rdf,
    refine_stress,
    reweight,
    stress_target,
    virial_pressure,
    virial_stress,
    volume,
)
from lycb_jax.units import BAR, EV_A3_TO_GPA, KB

T_K = 40.0  # K: LJ argon fcc crystal (epsilon = 121 K)
EPS1 = 1.08 * EPS  # eV: the reweighting target


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _system(n=2, seed=1):
    atoms = argon(n, seed=seed)
    species = jnp.asarray(atoms.numbers)
    cap = caps.estimate_capacity(atoms.positions, atoms.cell[:], headroom=1.5, skin=1.0, cutoffs=(6.0, None),
                                 with_list=True)
    return (species, jnp.asarray(atoms.positions), jnp.asarray(atoms.cell[:]), species > 0,
            jnp.asarray(masses_of(atoms.numbers), jnp.float64), cap)


def _sample(eps, temperature_K, n_saves, seed, save_every=5, dt_fs=10.0, gamma=5.0, burn=100):
    """Frames, their potential energies (eV) and the lattice sites of a Langevin run of the LJ crystal."""
    species, x0, cell, mask, masses, cap = _system()
    v0 = maxwell_boltzmann(jax.random.PRNGKey(seed), masses, mask, temperature_K=temperature_K)
    xs, es, *_ = langevin_checked({"epsilon": jnp.float64(eps)}, lj_model().module, species, positions=x0,
                                  velocities=v0, cell=cell, atom_mask=mask, masses=masses, temperature_K=temperature_K,
                                  dt_fs=dt_fs, gamma_per_ps=gamma, key=jax.random.PRNGKey(seed + 1000), capacity=cap,
                                  n_saves=n_saves + burn, save_every=save_every)
    xs = xs[burn:]
    return Frames(species, xs, jnp.broadcast_to(cell, (len(xs), 3, 3)), mask), np.asarray(es[burn:]), x0


@pytest.fixture(scope="module")
def runs():
    with jax.enable_x64(True):
        return {"eps0": _sample(EPS, T_K, 2000, seed=1), "eps1": _sample(EPS1, T_K, 2000, seed=2)}


def _lattice_msd(x0):
    """Observable: mean squared displacement from the lattice sites (Angstrom^2), centre of mass removed
    (Langevin noise moves it); configurational only, so it depends on epsilon only through the weights."""
    def a(module, params, species, positions, cell, atom_mask, graph):
        d = positions - x0
        return jnp.mean(jnp.sum((d - jnp.mean(d, 0)) ** 2, -1))
    return a


def _first(frames, n):
    return Frames(frames.species, frames.positions[:n], frames.cells[:n], frames.atom_mask)


def _sem(x):
    return block_jackknife(np.mean, x, n_blocks=20)[1]


def test_reweighted_averages_match_direct_md_at_new_epsilon(runs):
    frames0, _, x0 = runs["eps0"]
    frames1, u1, _ = runs["eps1"]
    model = lj_model()
    p0, p1 = {"epsilon": jnp.float64(EPS)}, {"epsilon": jnp.float64(EPS1)}
    graphs, _ = frame_graphs(frames0, model.cutoffs)
    obs = _lattice_msd(x0)
    per_frame = jax.vmap(lambda x: obs(None, None, None, x, None, None, None))
    u0 = runs["eps0"][1]
    for name, fn, direct, sampled in [("U", potential_energy, u1, u0 * EPS1 / EPS),
                                      ("lattice msd", obs, np.asarray(per_frame(frames1.positions)),
                                       np.asarray(per_frame(frames0.positions)))]:
        rw = reweight(model, p1, frames0, temperature_K=T_K, observable=fn, ref_params=p0, graphs=graphs,
                      with_grad=False)
        plain = reweight(model, p0, frames0, temperature_K=T_K, observable=fn, ref_params=p0, graphs=graphs,
                         with_grad=False)
        err0 = _sem(sampled)  # error of the reweighted mean: that of the plain mean, inflated by sqrt(n / n_eff)
        err = np.hypot(err0 * np.sqrt(len(rw.weights) / rw.ess), _sem(direct))
        print(f"{name}: reweighted {float(rw.mean):.6g}, direct {direct.mean():.6g} +- {err:.2g}, "
              f"at eps0 {float(plain.mean):.6g}, n_eff/n {rw.ess_fraction:.3f}")
        assert rw.ess_fraction > 0.5
        assert abs(float(rw.mean) - direct.mean()) < 3 * err
        # the test resolves the change: the direct value differs from the unreweighted one by > 3 sigma
        assert abs(float(plain.mean) - direct.mean()) > 3 * err


def test_reweighting_gradient_equals_fluctuation_formula_and_finite_differences(runs):
    frames = _first(runs["eps0"][0], 300)
    model = lj_model()
    p0 = {"epsilon": jnp.float64(EPS)}
    graphs, _ = frame_graphs(frames, model.cutoffs)
    beta = 1.0 / (KB * T_K)
    for fn in (potential_energy, virial_pressure):
        # per-frame U (eV) and A, numpy; the LJ energy and virial are linear in epsilon: dX/deps = X / eps
        u0 = np.asarray(frame_map(potential_energy, model.module, p0, frames=frames, graphs=graphs))
        a0 = np.asarray(frame_map(fn, model.module, p0, frames=frames, graphs=graphs))
        for eps in (EPS, EPS1):
            u, a = u0 * eps / EPS, a0 * eps / EPS
            du, da = u / eps, a / eps
            w = np.exp(-beta * (u - u0) - np.max(-beta * (u - u0)))
            w /= w.sum()
            analytic = np.sum(w * da) - beta * (np.sum(w * a * du) - np.sum(w * a) * np.sum(w * du))
            res = reweight(model, {"epsilon": jnp.float64(eps)}, frames, temperature_K=T_K, observable=fn,
                           ref_params=p0, graphs=graphs)
            g = float(res.grad["epsilon"])
            h = 1e-4 * EPS
            fd = (float(reweight(model, {"epsilon": jnp.float64(eps + h)}, frames, temperature_K=T_K, observable=fn,
                                 ref_params=p0, graphs=graphs, with_grad=False).mean)
                  - float(reweight(model, {"epsilon": jnp.float64(eps - h)}, frames, temperature_K=T_K, observable=fn,
                                   ref_params=p0, graphs=graphs, with_grad=False).mean)) / (2 * h)
            print(f"{fn.__name__} eps={eps:.5f}: grad {g:.10g}, fluctuation formula {analytic:.10g}, FD {fd:.10g}")
            np.testing.assert_allclose(float(res.mean), np.sum(w * a), rtol=1e-10)
            np.testing.assert_allclose(g, analytic, rtol=1e-8)
            np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_volume_gradient_with_varying_cells_equals_fluctuation_formula(runs):
    """NpT-like frames (cells scaled by ~1 %): d<V>/deps = -beta (<V dU/de> - <V><dU/de>), V independent of eps."""
    frames = _first(runs["eps0"][0], 100)
    scale = 1.0 + 0.01 * np.random.default_rng(3).normal(size=100)
    frames = Frames(frames.species, frames.positions * scale[:, None, None], frames.cells * scale[:, None, None],
                    frames.atom_mask)
    model = lj_model()
    p0 = {"epsilon": jnp.float64(EPS)}
    graphs, _ = frame_graphs(frames, model.cutoffs)
    u0 = np.asarray(frame_map(potential_energy, model.module, p0, frames=frames, graphs=graphs))
    v = np.abs(np.linalg.det(np.asarray(frames.cells)))
    beta = 1.0 / (KB * T_K)
    eps = 1.02 * EPS  # the strained frames spread U widely: a small step keeps n_eff > n / 2
    u = u0 * eps / EPS
    w = np.exp(-beta * (u - u0) - np.max(-beta * (u - u0)))
    w /= w.sum()
    du = u / eps
    analytic = -beta * (np.sum(w * v * du) - np.sum(w * v) * np.sum(w * du))
    res = reweight(model, {"epsilon": jnp.float64(eps)}, frames, temperature_K=T_K, observable=volume, ref_params=p0,
                   graphs=graphs)
    print(f"<V> {float(res.mean):.6f} A^3, d<V>/deps {float(res.grad['epsilon']):.8g}, formula {analytic:.8g}")
    np.testing.assert_allclose(float(res.mean), np.sum(w * v), rtol=1e-12)
    np.testing.assert_allclose(float(res.grad["epsilon"]), analytic, rtol=1e-8)


def test_weights_uniform_at_reference_and_warning_far_away(runs):
    frames = _first(runs["eps0"][0], 300)
    model = lj_model()
    p0 = {"epsilon": jnp.float64(EPS)}
    res = reweight(model, p0, frames, temperature_K=T_K, observable=potential_energy, ref_params=p0, with_grad=False)
    assert np.all(res.weights == 1.0 / 300) and res.ess == pytest.approx(300, rel=1e-12)
    with pytest.warns(RuntimeWarning, match="effective sample size"):
        far = reweight(model, {"epsilon": jnp.float64(2 * EPS)}, frames, temperature_K=T_K, observable=potential_energy,
                       ref_params=p0, with_grad=False)
    assert far.ess_fraction < 0.5


def test_parameter_selection_by_group_and_by_key(runs):
    frames = _first(runs["eps0"][0], 300)
    model = lj_model()
    p1 = {"epsilon": jnp.float64(EPS1)}
    by_group = reweight(model, p1, frames, temperature_K=T_K, observable=potential_energy, ref_params=model.params,
                        select=["pair"])
    by_key = reweight(model, p1, frames, temperature_K=T_K, observable=potential_energy, ref_params=model.params,
                      select=["epsilon"], by_layer_group=False)
    whole = reweight(model, p1, frames, temperature_K=T_K, observable=potential_energy, ref_params=model.params)
    assert float(by_group.grad["epsilon"]) == float(by_key.grad["epsilon"]) == float(whole.grad["epsilon"])
    with pytest.raises(ValueError, match="unknown layer group"):
        reweight(model, p1, frames, temperature_K=T_K, observable=potential_energy, select=["readout"])
    with pytest.raises(ValueError, match="unknown parameter keys"):
        reweight(model, p1, frames, temperature_K=T_K, observable=potential_energy, select=["sigma"],
                 by_layer_group=False)
    with pytest.raises(ValueError, match=r"positions must be \[F, N, 3\]"):
        reweight(model, p1, Frames(frames.species[:-1], *frames[1:]), temperature_K=T_K, observable=potential_energy)
    with pytest.raises(ValueError, match="temperature must be positive"):
        reweight(model, p1, frames, temperature_K=-1.0, observable=potential_energy)


def test_smooth_rdf_counts_neighbours_and_is_differentiable(runs):
    from ase.neighborlist import neighbor_list

    frames = _first(runs["eps0"][0], 50)
    model = lj_model()
    r = np.linspace(0.5, 5.8, 266)
    g = rdf(r, width=0.05, species_pair=(18, 18))
    res = reweight(model, {"epsilon": jnp.float64(EPS1)}, frames, temperature_K=T_K, observable=g,
                   ref_params=model.params)
    # coordination within 4.5 A (between the fcc shells at 3.75 and 5.3 A): integral of rho g 4 pi r^2 vs ASE
    atoms = argon(2)
    rho = len(atoms) / atoms.get_volume()
    inside = r <= 4.5
    n_rdf = np.trapezoid(rho * res.mean[inside] * 4 * np.pi * r[inside] ** 2, r[inside])
    counts = []
    for x in np.asarray(frames.positions):
        atoms.positions = x
        counts.append(len(neighbor_list("i", atoms, 4.5)) / len(atoms))
    w = res.weights
    print(f"coordination within 4.5 A: rdf {n_rdf:.4f}, ASE {np.sum(w * counts):.4f}")
    assert n_rdf == pytest.approx(np.sum(w * np.asarray(counts)), rel=2e-3)
    assert res.grad["epsilon"].shape == r.shape and np.all(np.isfinite(res.grad["epsilon"]))
    bad = rdf([1.0, 7.0])
    with pytest.raises(ValueError, match="exceed the graph cutoff"):
        reweight(model, model.params, frames, temperature_K=T_K, observable=bad, with_grad=False)


def test_frames_from_trajectory_reads_simulation_layout(tmp_path, runs):
    import h5py

    frames, _, _ = runs["eps0"]
    with h5py.File(tmp_path / "trajectory.h5", "w") as f:
        f.attrs["numbers"] = np.asarray(frames.species)[None]
        f.create_dataset("production/positions", data=np.asarray(frames.positions[None, :10], np.float32))
        f.create_dataset("production/cell", data=np.asarray(frames.cells[None, :10], np.float32))
    back = frames_from_trajectory(tmp_path / "trajectory.h5", every=2, skip=1)
    np.testing.assert_allclose(back.positions, frames.positions[1:10:2], atol=1e-5)
    assert back.cells.shape == (5, 3, 3) and bool(back.atom_mask.all())
    with pytest.raises(ValueError, match="no stage 'npt'"):
        frames_from_trajectory(tmp_path / "trajectory.h5", stage="npt")


# ---------------------------------------------------------------- fluctuation formulas

def test_npt_response_on_gaussian_samples_with_known_answer():
    rng = np.random.default_rng(0)
    t, p_bar, v0 = 300.0, 1e4, 1000.0
    kT = KB * t
    cov = np.array([[4.0, 1.5], [1.5, 2.0]])  # Var V (A^6), Cov(V, H) (A^3 eV), Var H (eV^2)
    estimates, errors = [], []
    for _ in range(200):
        v, dh = rng.multivariate_normal([0, 0], cov, size=2000).T
        v = v + v0
        energy = dh - p_bar * BAR * v  # so that H = E + P V = dh
        out = npt_response(v, energy, t, pressure_bar=p_bar)
        estimates.append([out["compressibility_per_GPa"][0], out["thermal_expansion_per_K"][0]])
        errors.append([out["compressibility_per_GPa"][1], out["thermal_expansion_per_K"][1]])
    estimates, errors = np.array(estimates), np.array(errors)
    exact = [cov[0, 0] / (kT * v0) / EV_A3_TO_GPA, cov[0, 1] / (kT * t * v0)]
    print("exact", exact, "mean estimate", estimates.mean(0), "spread", estimates.std(0), "mean error",
          errors.mean(0))
    np.testing.assert_allclose(estimates.mean(0), exact, rtol=0.01)
    # the block-jackknife error is the spread of the estimate over independent data sets
    np.testing.assert_allclose(errors.mean(0), estimates.std(0), rtol=0.15)


def test_heat_capacity_error_accounts_for_correlation():
    rng = np.random.default_rng(1)
    t, phi, n = 500.0, 0.9, 20000
    exact = 1.0 / (KB * t**2)  # unit variance of E
    estimates, errors = [], []
    for _ in range(100):
        noise = rng.normal(size=n) * np.sqrt(1 - phi**2)
        e = np.empty(n)
        e[0] = rng.normal()
        for i in range(1, n):  # AR(1), unit variance, correlation time ~ 10 frames
            e[i] = phi * e[i - 1] + noise[i]
        c, err = heat_capacity_nvt(e, t)
        estimates.append(c)
        errors.append(err)
    print("C exact", exact, "mean", np.mean(estimates), "spread", np.std(estimates), "mean error", np.mean(errors))
    assert np.mean(estimates) == pytest.approx(exact, rel=0.01)
    assert np.mean(errors) == pytest.approx(np.std(estimates), rel=0.2)
    with pytest.raises(ValueError, match="temperature must be positive"):
        heat_capacity_nvt(e, 0.0)
    with pytest.raises(ValueError, match="frames per block"):
        heat_capacity_nvt(e[:10], t)


def test_heat_capacity_of_lj_crystal_is_harmonic_at_low_temperature():
    t = 5.0  # K; classical harmonic crystal: C_v = (3N - 3) k with the centre of mass fixed
    frames, u, _ = _sample(EPS, t, 6000, seed=7, gamma=5.0)
    n = len(frames.species)
    c, err = heat_capacity_nvt(u, t, kinetic_dof=3 * n - 3)
    print(f"C_v = {c / KB:.2f} +- {err / KB:.2f} k, harmonic {3 * n - 3} k")
    assert err / c < 0.03
    assert abs(c / KB - (3 * n - 3)) < 3 * err / KB


# ---------------------------------------------------------------- gradients through the trajectory

@pytest.mark.parametrize("gamma", [0.0, 1.0])  # 1/ps: velocity Verlet (NVE) and Langevin
def test_short_time_msd_gradient_matches_finite_differences(gamma):
    species, x0, cell, mask, masses, cap = _system()
    v0 = maxwell_boltzmann(jax.random.PRNGKey(0), masses, mask, temperature_K=T_K)
    key = jax.random.PRNGKey(3)  # the same random numbers at eps +- h

    def run(eps):
        return msd_and_grad({"epsilon": jnp.float64(eps)}, lj_model().module, species, positions=x0, velocities=v0,
                            cell=cell, atom_mask=mask, masses=masses, temperature_K=T_K, dt_fs=5.0,
                            gamma_per_ps=gamma, key=key, capacity=cap, n_steps=50)  # 0.25 ps

    value, grad, moved, overflow = run(EPS)
    h = 1e-5 * EPS
    fd = (float(run(EPS + h)[0]) - float(run(EPS - h)[0])) / (2 * h)
    print(f"gamma {gamma}/ps: MSD(0.25 ps) {float(value):.5f} A^2, dMSD/deps {float(grad['epsilon']):.8g}, FD {fd:.8g}")
    assert not bool(overflow) and float(moved) < cap.skin / 2
    assert float(value) > 0
    np.testing.assert_allclose(float(grad["epsilon"]), fd, rtol=1e-6)


# ---------------------------------------------------------------- the study behind `lycb-jax sensitivity`

def test_group_scale_sensitivity_is_the_analytic_fluctuation_formula(runs):
    """Scaling the LJ group (epsilon) by (1 + s): U is linear in epsilon, so d<U>/ds = <U> - beta var(U)
    (numpy on the same frames), and d<V>/ds = 0 at fixed cell."""
    from lycb_jax.sensitivity.study import static_sensitivity

    frames, energies, _ = runs["eps0"]
    frames = Frames(*(f[::20] if i in (1, 2) else f for i, f in enumerate(frames)))
    res = static_sensitivity(lj_model(), frames, T_K, npt=True, batch_size=None)
    n = len(frames.species)
    u = np.asarray(energies[::20], np.float64)
    expected = (u.mean() - np.var(u) / (KB * T_K)) / n  # eV/atom
    assert res["potential_energy_eV_per_atom"]["d_ds"]["pair"] == pytest.approx(expected, rel=1e-6)
    assert res["potential_energy_eV_per_atom"]["value"] == pytest.approx(u.mean() / n, rel=1e-7)
    assert abs(res["volume_A3_per_atom"]["d_ds"]["pair"]) < 1e-9


@pytest.mark.slow
def test_msd_group_and_strain_sensitivity_equal_central_differences():
    """d MSD / ds and d ln MSD / d strain of the study (reverse mode through the checkpointed scan) against
    central differences with the same random numbers (the study's own windows re-run at s, strain +- h)."""
    from lycb_jax.sensitivity import study

    species, x0, cell, mask, masses, _ = _system()
    frames = Frames(species, x0[None], cell[None], mask)
    kw = dict(window_fs=200.0, dt_fs=5.0, gamma_per_ps=1.0, n_windows=1, seed=5, skin=2.0)
    base = lj_model()
    model64 = type(base)(base.module, {"epsilon": jnp.float64(EPS)}, base.name)  # float64: h = 1e-5 below
    res = study.msd_sensitivity(model64, frames, 300.0, mobile=np.ones(len(species), bool), **kw)

    def msd_at(eps_scale=0.0, strain=0.0, direction="hydrostatic"):
        m = jnp.eye(3) + strain * jnp.asarray(study.STRAINS[direction])
        model = type(base)(base.module, {"epsilon": jnp.float64(EPS) * (1 + eps_scale)}, base.name)
        f = Frames(species, (x0 @ m)[None], (cell @ m)[None], mask)
        return study.msd_sensitivity(model, f, 300.0, mobile=np.ones(len(species), bool), **kw)["msd_A2"]

    h = 1e-5
    fd = (msd_at(eps_scale=h) - msd_at(eps_scale=-h)) / (2 * h)
    assert res["d_ds"]["pair"][0] == pytest.approx(fd, rel=1e-4)
    for direction in study.STRAINS:
        fd = (np.log(msd_at(strain=h, direction=direction)) - np.log(msd_at(strain=-h, direction=direction))) / (2 * h)
        assert res["dlnmsd_dstrain"][direction][0] == pytest.approx(fd, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_stress_refinement_recovers_the_parameter_of_a_direct_run(runs):
    """Inverse use: from frames at eps0, refine epsilon so that the reweighted mean stress equals the mean
    stress measured in an independent run at eps1; the answer must be eps1 within the statistical error
    (propagated from both runs' pressure errors through d<P>/d eps). With a tight n_eff bound the
    refinement stops early and says "resample"."""
    frames0, _, _ = runs["eps0"]
    frames1, _, _ = runs["eps1"]
    model = lj_model()
    p0 = {"epsilon": jnp.float64(EPS)}
    graphs1, _ = frame_graphs(frames1, model.cutoffs)
    direct = np.asarray(frame_map(virial_stress, model.module, {"epsilon": jnp.float64(EPS1)}, frames=frames1,
                                  graphs=graphs1))
    probe = stress_target(model, _first(frames0, 2), T_K, params=p0)
    wanted = direct.mean(0) + np.asarray(probe.kinetic_stress)  # the same kinetic convention on both sides
    target = stress_target(model, frames0, T_K, params=p0, stress_gpa=wanted)
    res = refine_stress(model, [target], select=["pair"], params=p0, steps=120, learning_rate=2e-4,
                        stress_scale_gpa=0.001, tolerance_gpa=1e-5, min_ess_fraction=0.05, log=None)
    eps = float(res.params["epsilon"])
    # statistical error of eps: pressure errors of both runs over the slope d<P>/d eps at the answer
    graphs0, _ = frame_graphs(frames0, model.cutoffs)
    sampled = np.asarray(frame_map(virial_pressure, model.module, p0, frames=frames0, graphs=graphs0))
    slope = float(reweight(model, res.params, frames0, temperature_K=T_K, observable=virial_pressure, ref_params=p0,
                           graphs=graphs0, select=["pair"]).grad["epsilon"])
    direct_p = -np.trace(direct, axis1=1, axis2=2) / 3
    err = np.hypot(_sem(sampled) / np.sqrt(res.history[-1]["ess_fraction"][0]), _sem(direct_p)) / abs(slope)
    print(f"refined eps {eps:.6g} eV vs eps1 {EPS1:.6g} +- {err:.2g} (start {EPS:.6g}), {res.reason}, "
          f"{len(res.history)} steps, residual P {res.history[-1]['pressure_gpa'][0]:.2g} GPa")
    # one parameter cannot zero all nine components (their noise differs): the pressure is what it can match
    assert res.reason in ("converged", "steps") and abs(res.history[-1]["pressure_gpa"][0]) < 0.1 * err * abs(slope)
    assert abs(eps - EPS1) < 3 * err and abs(EPS - EPS1) > 10 * err
    tight = refine_stress(model, [target], select=["pair"], params=p0, steps=300, learning_rate=2e-4,
                          stress_scale_gpa=0.001, tolerance_gpa=1e-5, min_ess_fraction=0.98, log=None)
    assert tight.reason == "resample" and all(r["ess_fraction"][0] >= 0.98 for r in tight.history)
    assert EPS < float(tight.params["epsilon"]) < eps


def test_cell_parameters_and_site_occupancy_observables():
    """Lattice parameters against ASE's cellpar on a skewed cell; site occupancy counts an atom on its
    site across the periodic boundary, drops it when it leaves the radius, ignores other species."""
    from ase import Atoms

    from lycb_jax.sensitivity import cell_parameters, site_occupancy

    atoms = Atoms("LiLiAr", scaled_positions=[[0.999, 0.5, 0.5], [0.5, 0.25, 0.5], [0.25, 0.25, 0.25]],
                  cell=[[5.0, 0.0, 0.0], [1.2, 6.0, 0.0], [0.7, -0.4, 7.0]], pbc=True)
    args = (None, None, jnp.asarray(atoms.numbers), jnp.asarray(atoms.positions), jnp.asarray(atoms.cell[:]),
            jnp.ones(3, bool), None)
    np.testing.assert_allclose(np.asarray(cell_parameters(*args)), atoms.cell.cellpar(), rtol=1e-10)
    sites = [[0.0, 0.5, 0.5], [0.5, 0.25, 0.55], [0.25, 0.25, 0.25], [0.5, 0.75, 0.5]]
    occ = site_occupancy(sites, radius=0.5, species_z=3)
    # site 0: Li 0.005*5 A away across the boundary; site 1: Li 0.35 A away; site 2: only Ar; site 3: empty
    np.testing.assert_array_equal(np.asarray(occ(*args)), [1, 1, 0, 0])
    moved = atoms.copy()
    moved.positions[1] -= [0.0, 0.0, 0.6]  # now 0.95 A from site 1
    args_moved = args[:3] + (jnp.asarray(moved.positions),) + args[4:]
    np.testing.assert_array_equal(np.asarray(occ(*args_moved)), [1, 0, 0, 0])
    with pytest.raises(ValueError, match="fractional coordinates"):
        site_occupancy([0.1, 0.2, 0.3], 0.5, 3)
