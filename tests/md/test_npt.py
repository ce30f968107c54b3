"""Full-cell NpT (MTK barostat, modes iso / aniso / tri) against ASE's MTKNPT and physical checks;
resume at every stage boundary; the drift guard and the time-step refusal.

The cheap potential is tests/potentials.py's force-shifted Lennard-Jones argon (an ASE calculator
re-implementing it in numpy is in tests/npt_reference.py, checked against it here). The long
version of the ASE comparison is benchmarks/npt_vs_ase.py.
"""

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from npt_reference import (
    GPA,
    ForceShiftedLJ,
    RunSettings,
    block_mean,
    cell_parameters,
    hcp_argon,
    run_ase,
    run_lycb,
    summary,
)
from potentials import EPS, LennardJones, argon, lj_model

import lycb_jax.graph.capacity as caps
from lycb_jax.md import Protocol, Simulation
from lycb_jax.models import Model

ATOMS = hcp_argon()  # 36 atoms, hexagonal cell
SHORT = RunSettings(temperature_K=20.0, pressure_bar=100.0, equilibrate_ps=2.0, sample_ps=10.0)
P_GPA = SHORT.pressure_bar * 1e-4


@pytest.fixture(scope="module")
def tri_run():
    return run_lycb(ATOMS, SHORT, "tri", replicas=4)


def test_numpy_lj_equals_model():
    """The ASE calculator of the cross-check is the project's LJ model (energy, forces, stress)."""
    from lycb_jax import predict

    atoms = ATOMS.copy()
    atoms.calc = ForceShiftedLJ()
    ref = predict(lj_model(), [atoms])[0]
    assert abs(atoms.get_potential_energy() - ref.energy) < 1e-4
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=2e-5)
    np.testing.assert_allclose(atoms.get_stress(voigt=False) * GPA, ref.stress, atol=2e-5)


@pytest.mark.slow
def test_tri_matches_ase_mtknpt(tri_run):
    """Same average cell parameters, volume and stress as ASE's MTKNPT (hcp argon, 20 K, 100 bar),
    within 4 combined standard errors (block averages); the conserved quantity drifts < 0.1 meV/atom/ps.

    ASE's cell chain counts 9 degrees of freedom for 6 symmetric cell motions (its cell runs ~1.5x hotter):
    the fluctuations differ, the means must not. (Its particle chain counts 3N: corrected in run_ase.)"""
    n = len(ATOMS)
    ours = summary(tri_run, n)
    ref = summary(run_ase(ATOMS, SHORT), n)
    print("cell (a b c alpha beta gamma): ours", np.round(ours["cellpar"], 3), "+-", np.round(ours["cellpar_err"], 3))
    print("                               ASE ", np.round(ref["cellpar"], 3), "+-", np.round(ref["cellpar_err"], 3))
    print(f"V ours {ours['volume']:.1f} +- {ours['volume_err']:.1f}, ASE {ref['volume']:.1f} +- {ref['volume_err']:.1f}"
          f" A^3; drift ours {np.abs(ours['drift']).max():.2e}, ASE {np.abs(ref['drift']).max():.2e} meV/atom/ps; "
          f"T ours {ours['temperature']:.2f} K, ASE {ref['temperature']:.2f} K")
    err = np.sqrt(ours["cellpar_err"] ** 2 + ref["cellpar_err"] ** 2)
    assert np.all(np.abs(ours["cellpar"] - ref["cellpar"]) < 4 * err + np.array([0.01] * 3 + [0.2] * 3))
    assert abs(ours["volume"] - ref["volume"]) < 4 * np.hypot(ours["volume_err"], ref["volume_err"]) + 1.0
    for res in (ours, ref):  # mean stress = -P I (GPa) within 4 standard errors, off-diagonals zero
        assert np.all(np.abs(res["stress"] + P_GPA * np.eye(3)) < 4 * res["stress_err"] + 2e-3)
    assert np.abs(ours["drift"]).max() < 0.1
    assert ours["cellpar"][1] == pytest.approx(ours["cellpar"][0], abs=4 * ours["cellpar_err"][0] + 0.02)  # a = b
    assert ours["cellpar"][5] == pytest.approx(120.0, abs=4 * ours["cellpar_err"][5] + 0.3)  # still hexagonal


def test_npt_kinetic_energy_has_3n_minus_3_degrees_of_freedom(tri_run):
    """<K> = ((3N-3)/2) kT and var K = ((3N-3)/2) kT^2 under the MTK thermostat (4 replicas x 10 ps)."""
    dof, kt = 3 * len(ATOMS) - 3, SHORT.temperature_K * units.kB
    k = tri_run["kinetic_energy"]
    mean, mean_err = block_mean(k)
    var = k.var(axis=1)
    print(f"<K>/ref {mean / (dof / 2 * kt):.4f} +- {mean_err / (dof / 2 * kt):.4f}, "
          f"var/ref {var.mean() / (dof / 2 * kt ** 2):.3f} +- {var.std(ddof=1) / 2 / (dof / 2 * kt ** 2):.3f}")
    assert abs(mean / (dof / 2 * kt) - 1) < 4 * mean_err / (dof / 2 * kt) + 0.005
    assert abs(var.mean() / (dof / 2 * kt ** 2) - 1) < 4 * var.std(ddof=1) / 2 / (dof / 2 * kt ** 2) + 0.05


@pytest.mark.slow
def test_uniaxial_stress_in_aniso_compresses_that_axis(tri_run):
    """aniso with 0.05 GPa extra compression along z: the mean stress tensor equals the target
    (diagonal; off-diagonals zero), c shrinks by more than 1% against the hydrostatic run while a
    and b do not shrink, and the conserved quantity (with the deviatoric work) stays conserved."""
    applied = -0.05  # GPa, ASE sign: compressive
    res = run_lycb(ATOMS, SHORT, "aniso", replicas=4, seed=1, stress_GPa=(0, 0, applied, 0, 0, 0))
    uni, hyd = summary(res, len(ATOMS)), summary(tri_run, len(ATOMS))
    target = -P_GPA * np.eye(3) + np.diag([0, 0, applied])
    print("stress (GPa)", np.round(uni["stress"], 4).tolist(), "target", target.diagonal().tolist())
    print("a b c uniaxial", np.round(uni["cellpar"][:3], 3), "hydrostatic", np.round(hyd["cellpar"][:3], 3),
          f"drift {np.abs(uni['drift']).max():.2e} meV/atom/ps")
    assert np.all(np.abs(uni["stress"] - target) < 4 * uni["stress_err"] + 2e-3)
    assert uni["cellpar"][2] < 0.99 * hyd["cellpar"][2]
    assert np.all(uni["cellpar"][:2] > hyd["cellpar"][:2] - 4 * np.hypot(uni["cellpar_err"][:2],
                                                                         hyd["cellpar_err"][:2]))
    assert np.allclose(uni["cellpar"][3:], cell_parameters(ATOMS.cell[:])[3:], atol=0.5)  # aniso keeps the angles
    assert np.abs(uni["drift"]).max() < 0.1


@pytest.mark.slow
def test_ideal_gas_volume_iso():
    """An ideal gas (LJ with epsilon = 0) under iso MTK: <V> = N kT / P. (Momentum fixed: the centre
    of mass sits at fixed fractional coordinates, so positions contribute V^(N-1) and, with the MTK
    measure, P(V) ~ V^(N-1) exp(-PV/kT); N + 1 would be 3% more.) 8 replicas x 16 ps of 32 atoms at
    300 K, 100 bar (no forces: 10 fs steps)."""
    n, temp, p_bar = 32, 300.0, 100.0
    rng = np.random.default_rng(0)
    v0 = n * temp * units.kB / (p_bar * units.bar)
    atoms = argon(2)
    atoms.set_cell(np.eye(3) * v0 ** (1 / 3), scale_atoms=False)
    atoms.positions = rng.uniform(0, v0 ** (1 / 3), (n, 3))
    gas = Model(LennardJones(), {"epsilon": jnp.float32(0.0)}, "ideal-gas")
    s = RunSettings(temperature_K=temp, pressure_bar=p_bar, dt_fs=10.0, tau_t_fs=100.0, tau_p_fs=250.0,
                    equilibrate_ps=2.0, sample_ps=16.0, every_fs=100.0, chunk_ps=2.0)
    res = run_lycb(atoms, s, "iso", replicas=8, model=gas)
    mean, err = block_mean(res["volume"], blocks=6)
    print(f"<V> / (N kT / P) = {mean / v0:.4f} +- {err / v0:.4f}")
    assert abs(mean / v0 - 1) < 4 * err / v0


# -- the protocol: resume at every stage boundary after a large volume change, drift guard, time step

def _protocol(**kw):
    base = dict(temperatures_K=(50.0, 80.0), dt_fs=4.0, heat_ps=0.2, nvt_ps=0.2, npt_ps=0.8, npt_average_ps=0.4,
                production_ps=0.2, save_every_fs=40.0, chunk_ps=0.2, checkpoint_every_ps=0.2, start_K=20.0, skin=0.5,
                tau_p_fs=400.0, barostat="tri")
    base.update(kw)
    return Protocol(**base)


COMPRESSED = dict(n=2, a=4.75)  # fcc argon far below its volume at 1 bar: NpT expands it by ~40%


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, Simulation(lj_model(), argon(**COMPRESSED), _protocol(), out, progress=False).run()


def _compare(a_dir, b_dir):
    with h5py.File(a_dir / "trajectory.h5") as a, h5py.File(b_dir / "trajectory.h5") as b:
        assert sorted(a) == sorted(b) == ["heat", "npt", "nvt", "production"]
        for stage in a:
            for name in a[stage]:
                np.testing.assert_allclose(a[stage][name][:], b[stage][name][:], rtol=1e-6, atol=1e-5,
                                           err_msg=f"{stage}/{name}")
        np.testing.assert_allclose(a["npt"].attrs["average_cell"], b["npt"].attrs["average_cell"], rtol=1e-6)


@pytest.mark.parametrize("boundary", [0, 1, 2], ids=["heat-nvt", "nvt-npt", "npt-production"])
@pytest.mark.slow
def test_stopped_at_stage_boundary_and_resumed_equals_uninterrupted(boundary, uninterrupted, tmp_path, monkeypatch):
    """Stopped right after the checkpoint at the end of stage ``boundary``, resumed: the trajectory
    equals the uninterrupted run's. After NpT the cell grew ~40% and the capacity shrank with it: the
    saved capacity is too small for the initial structure, which the resume must not rebuild."""
    real = Simulation._checkpoint

    def stop_after_stage(self, f, stages, run, n_steps):
        real(self, f, stages, run, n_steps)
        if run.step >= n_steps and run.stage == boundary:
            raise KeyboardInterrupt("stopped at a stage boundary")

    monkeypatch.setattr(Simulation, "_checkpoint", stop_after_stage)
    with pytest.raises(KeyboardInterrupt):
        Simulation(lj_model(), argon(**COMPRESSED), _protocol(), tmp_path, progress=False).run()
    monkeypatch.setattr(Simulation, "_checkpoint", real)
    ck = np.load(tmp_path / "checkpoint.npz")
    assert int(ck["stage"]) == boundary + 1 and int(ck["step"]) == 0
    if boundary == 2:  # the regression: a capacity fitted to the expanded cell, too small for the initial one
        need = caps.measure([argon(**COMPRESSED)], (6.0, 3.0), float(ck["skin"]), with_list=True)
        assert need.edges > int(ck["capacity"][0]) or need.list_edges > int(ck["capacity"][6])
    Simulation(lj_model(), argon(**COMPRESSED), _protocol(), tmp_path, resume=True, progress=False).run()
    _compare(uninterrupted[0], tmp_path)
    with h5py.File(tmp_path / "trajectory.h5") as f:
        assert np.all(f["npt"].attrs["average_volume_A3"] > 1.3 * argon(**COMPRESSED).get_volume())  # it expanded
        cell = f["production"]["cell"][0, 0]
        assert np.allclose(np.triu(cell, 1), 0, atol=1e-5)  # the average cell in LAMMPS' orientation


@pytest.mark.slow
def test_drift_guard(uninterrupted, tmp_path, capsys):
    """Each stage's conserved-quantity drift (meV/atom/ps) is numpy's least-squares slope, stored per
    replica in the trajectory; below the default bound (1) nothing is flagged; with a bound below the
    drift every replica is flagged in the output, the stage attributes and the summary."""
    out, summary = uninterrupted
    with h5py.File(out / "trajectory.h5") as f:
        assert "conserved_drift_meV_per_atom_ps" not in f["heat"].attrs  # the target T moves while heating
        for stage in ("nvt", "npt", "production"):
            drift = f[stage].attrs["conserved_drift_meV_per_atom_ps"]
            t, c = f[stage]["time_fs"][:] / 1000, f[stage]["conserved"][:].astype(np.float64) / 32 * 1000
            np.testing.assert_allclose(drift, [np.polyfit(t, ci, 1)[0] for ci in c], rtol=1e-6, atol=1e-9)
            print(stage, "drift", drift, "meV/atom/ps")
            assert np.all(np.abs(drift) < 1.0) and not f[stage].attrs["drift_flagged"].any()
    assert not summary.get("drift_flagged")
    # a broken integration: argon 10x stiffer (vibrations ~3x faster) at 10x the temperature, 10 fs steps
    stiff = Model(LennardJones(), {"epsilon": jnp.float32(10 * EPS)}, "lj-stiff")
    flagged = Simulation(stiff, argon(**COMPRESSED), _protocol(dt_fs=10.0, temperatures_K=(500.0, 800.0), start_K=200.0,
                                                              nvt_ps=0.4), tmp_path, progress=False).run()["drift_flagged"]
    assert sorted(flagged) == [0, 1] and "nvt" in flagged[0] and "nvt" in flagged[1]
    assert all(abs(flagged[r]["nvt"]) > 5 for r in (0, 1))  # meV/atom/ps (measured: 18-20)
    assert "conserved quantity drifts" in capsys.readouterr().out
    with h5py.File(tmp_path / "trajectory.h5") as f:
        assert f["nvt"].attrs["drift_flagged"].all() and f.attrs["drift_bound_meV_per_atom_ps"] == 1.0


def test_drift_judged_against_the_fluctuation():
    """A short stage whose slope exceeds the bound only by the thermostat's fluctuation (an oscillation
    of 1 meV/atom over 0.6 ps: least-squares slope -1.5 meV/atom/ps) is not flagged; a steady 5
    meV/atom/ps drift under the same fluctuation is."""
    from lycb_jax.md.stages import judge_drift

    t_fs = np.arange(0, 600, 20.0)
    wiggle = 1e-3 * np.sin(2 * np.pi * t_fs / 500.0)  # eV/atom
    n_atoms = 30
    conserved = n_atoms * np.stack([wiggle, wiggle + 5e-3 * t_fs / 1000])  # eV
    drift, flagged = judge_drift(conserved, t_fs, n_atoms, bound_meV=1.0)
    assert abs(drift[0]) > 1.0 and not flagged[0]
    assert abs(drift[1] - 5.0) < 4.0 and flagged[1]
    # a smooth 1.5 meV/atom/ps rise over 0.3 ps (0.45 meV/atom in all, below the bound x 1 ps): not a drift
    t_short = np.arange(0, 300, 20.0)
    smooth = n_atoms * 1.5e-3 * t_short[None] / 1000
    drift, flagged = judge_drift(smooth, t_short, n_atoms, bound_meV=1.0)
    assert abs(drift[0] - 1.5) < 1e-9 and not flagged[0]
    assert judge_drift(smooth * 4, t_short, n_atoms, bound_meV=1.0)[1][0]  # 6 meV/atom/ps: 1.8 meV/atom, flagged


def test_long_time_step_with_li_is_refused(tmp_path):
    atoms = argon(1)
    atoms.numbers[0] = 3
    with pytest.raises(ValueError, match="too long for Li"):
        Simulation(lj_model(), atoms, _protocol(dt_fs=6.0), tmp_path)


def test_unknown_barostat_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown barostat"):
        Simulation(lj_model(), argon(1), _protocol(barostat="full"), tmp_path)


def test_cell_jump_strain_is_the_green_strain_and_warns_above_the_limit():
    """Against the analytic Green-Lagrange strain: a 5% stretch along x gives (1.05^2 - 1) / 2, a rigid
    rotation none; above the limit the switch to the average cell warns and names the replica."""
    from lycb_jax.md.stages import AVERAGE_CELL_STRAIN_LIMIT, cell_jump_strain, warn_cell_jump

    last = np.array([[[6.0, 0.0, 0.0], [-3.0, 5.2, 0.0], [0.3, 0.4, 7.0]]] * 2)
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    avg = np.stack([last[0] @ rotation, last[1] @ np.diag([1.05, 1.0, 1.0])])
    strain = cell_jump_strain(last, avg)
    np.testing.assert_allclose(strain, [0.0, (1.05**2 - 1) / 2], atol=1e-12)
    assert strain[1] > AVERAGE_CELL_STRAIN_LIMIT
    with pytest.warns(UserWarning, match=r"replica 1 \(700 K\): 5.1%"):
        warn_cell_jump(last, avg, (600.0, 700.0), stage="npt")
