"""Molecular dynamics: ensembles, batching, resume, bad input."""

import dataclasses

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units

from lycb_jax.md import (ChunkInputs, ChunkSpec, IntegratorSettings, Protocol, Simulation, default_capacity,
                         init_replica, masses_of, run_chunk)
from lycb_jax.md.integrators import init_batch, thermal_momenta
from potentials import argon, lj_model
from cells import lyc_trigonal


def _states(model, atoms_list, temps, integ, capacity, seed=0):
    species = jnp.asarray(np.stack([a.numbers for a in atoms_list]), jnp.int32)
    pos = jnp.asarray(np.stack([a.positions for a in atoms_list]), jnp.float32)
    cell = jnp.asarray(np.stack([a.cell[:] for a in atoms_list]), jnp.float32)
    masses = jnp.asarray(np.stack([masses_of(a.numbers) for a in atoms_list]))
    kT = jnp.asarray(np.asarray(temps) * units.kB, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(atoms_list))
    init = jax.vmap(lambda s, x, c, m, t, k: init_replica(model, s, x, cell=c, masses=m, kT=t, key=k, settings=integ,
                                                          capacity=capacity)[0])
    return species, cell, init(species, pos, cell, masses, kT, keys), kT


def _lj_capacity(atoms):
    """Generous fixed capacity for LJ argon tests (the Simulation driver grows it; run_chunk does not)."""
    cap = default_capacity(atoms.positions, atoms.cell[:], skin=0.5, cutoffs=lj_model().cutoffs)
    return dataclasses.replace(cap, edges=cap.edges * 2, angles=8192, short_per_atom=32, list_edges=cap.list_edges * 2)


def _run(model, species, cell, states, kT, integ, capacity, n_frames, stride):
    alive = jnp.ones(species.shape[0], bool)
    return run_chunk(model, ChunkInputs(species, cell, states, kT, kT, alive),
                     ChunkSpec(integ, capacity, n_frames, stride))[:4]


@pytest.mark.slow
def test_nve_energy_drift_with_chgnet(model):
    """NVE with the CHGNet model at 1 fs: |drift| < 2 meV/atom/ps and fluctuations < 5 meV/atom.

    Bound: velocity Verlet's energy error is O(dt^2) and bounded (symplectic); what remains is
    float32 round-off of E (~1e-7 x 140 eV per step, a random walk: ~1e-4 eV after 1000 steps,
    ~3e-6 eV/atom for 30 atoms). 2 meV/atom/ps leaves room for the O(dt^2) fluctuation at 600 K
    and is 100x below what a wrong force (a missing neighbour, a force/energy mismatch) gives.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(lyc_trigonal(0))
    integ = IntegratorSettings("nve", dt_fs=1.0)
    cap = default_capacity(atoms.positions, atoms.cell[:], cutoffs=model.cutoffs)
    species, cell, states, kT = _states(model, [atoms], [600.0], integ, cap)
    st, frames, alive, ok = _run(model, species, cell, states, kT, integ, cap, n_frames=30, stride=10)
    assert bool(ok.all()) and bool(alive.all())
    e = np.asarray(frames.conserved[0], np.float64) / len(atoms)
    t = np.arange(len(e)) * 10e-3  # ps
    slope = np.polyfit(t, e, 1)[0]
    print(f"NVE drift {slope * 1e3:.3f} meV/atom/ps, spread {np.ptp(e) * 1e3:.3f} meV/atom, "
          f"T {np.asarray(frames.temperature).mean():.0f} K")
    assert abs(slope) < 2e-3
    assert np.ptp(e) < 5e-3
    assert np.asarray(frames.temperature).mean() > 100  # it really moved


@pytest.mark.slow
def test_nvt_kinetic_energy_is_canonical():
    """Mean and variance of KE under the NH chain match <K> = ((3N-3)/2) kT, var = ((3N-3)/2) kT^2
    (canonical, with the total momentum fixed at zero: 3N - 3 degrees of freedom); the reported
    temperature averages to the target.

    The 8 replicas start from differently rattled cells: from one shared cell their thermostats ring in phase for
    tens of ps, and the spread over replicas then understates the error of a 20-ps window ~2.5x (measured: var/ref
    0.870 +- 0.019 from one cell; 1.014 +- 0.053, 0.954 +- 0.045, 0.965 +- 0.063 from distinct cells for three
    seeds, and 1.03 +- 0.015 over 80 ps; ASE's NoseHooverChainNVT on the same system 0.96-1.00)."""
    model = lj_model()
    replicas = [argon(2, seed=r) for r in range(8)]
    atoms = replicas[0]
    integ = IntegratorSettings("nvt", dt_fs=4.0, tau_t_fs=200.0)
    cap = _lj_capacity(atoms)
    temps = [60.0] * 8
    species, cell, states, kT = _states(model, replicas, temps, integ, cap, seed=1)
    st, fr, alive, ok = _run(model, species, cell, states, kT, integ, cap, n_frames=100, stride=10)  # 4 ps equilibrate
    st, fr, alive, ok = _run(model, species, cell, st, kT, integ, cap, n_frames=1000, stride=5)  # 20 ps sample
    assert bool(ok.all())
    ke = np.asarray(fr.kinetic_energy, np.float64)  # [8 replicas, 1000 frames]
    dof = 3 * len(atoms) - 3
    kt = 60.0 * units.kB
    momentum = np.asarray(st.momentum).sum(axis=1)  # [R, 3]: zero total momentum, kept zero
    assert np.abs(momentum).max() < 1e-4 * np.abs(np.asarray(st.momentum)).max() * len(atoms)
    mean_ref, var_ref = dof / 2 * kt, dof / 2 * kt**2
    # 8 independent replicas give the statistical error of the mean and of the variance
    means, vars_ = ke.mean(1), ke.var(1)
    print(f"<K>/ref = {means.mean() / mean_ref:.4f} +- {means.std(ddof=1) / np.sqrt(8) / mean_ref:.4f}; "
          f"var/ref = {vars_.mean() / var_ref:.3f} +- {vars_.std(ddof=1) / np.sqrt(8) / var_ref:.3f}")
    assert abs(means.mean() - mean_ref) < 4 * means.std(ddof=1) / np.sqrt(8) + 0.01 * mean_ref
    assert abs(vars_.mean() - var_ref) < 4 * vars_.std(ddof=1) / np.sqrt(8) + 0.05 * var_ref
    temps = np.asarray(fr.temperature, np.float64)
    assert abs(temps.mean() / 60.0 - 1) < 4 * temps.mean(1).std(ddof=1) / np.sqrt(8) / 60.0 + 0.005
    # 3N would be 3.2% low for these 32 atoms: the bound above is tighter than that
    assert abs(means.mean() / (3 * len(atoms) / 2 * kt) - 1) > 4 * means.std(ddof=1) / np.sqrt(8) / mean_ref


@pytest.mark.slow
def test_npt_holds_target_pressure():
    model = lj_model()
    atoms = argon(2, a=5.45)
    target_bar = 500.0
    integ = IntegratorSettings("npt", dt_fs=4.0, tau_t_fs=200.0, tau_p_fs=1000.0, pressure_bar=target_bar)
    cap = _lj_capacity(atoms)
    species, cell, states, kT = _states(model, [atoms] * 4, [60.0] * 4, integ, cap, seed=2)
    st, fr, alive, ok = _run(model, species, cell, states, kT, integ, cap, n_frames=200, stride=10)  # 8 ps
    st, fr, alive, ok = _run(model, species, cell, st, kT, integ, cap, n_frames=500, stride=10)  # 20 ps
    assert bool(ok.all())
    p = np.asarray(fr.pressure, np.float64)
    v = np.asarray(fr.volume, np.float64)
    blocks = p.reshape(4, 5, -1).mean(-1).ravel()  # 20 block means of 4 ps
    err = blocks.std(ddof=1) / np.sqrt(blocks.size)
    print(f"<P> = {p.mean():.0f} +- {err:.0f} bar (target {target_bar}); V from {atoms.get_volume():.0f} to {v.mean():.0f}")
    assert abs(p.mean() - target_bar) < max(4 * err, 100.0)
    assert v.std() > 0  # the cell really fluctuates


@pytest.mark.slow
def test_vmapped_temperatures_equal_separate_runs():
    model = lj_model()
    atoms = argon(2)
    integ = IntegratorSettings("nvt", dt_fs=2.0)
    cap = _lj_capacity(atoms)
    temps = [40.0, 80.0, 120.0]
    species, cell, states, kT = _states(model, [atoms] * 3, temps, integ, cap, seed=3)
    _, batched, _, _ = _run(model, species, cell, states, kT, integ, cap, n_frames=5, stride=10)
    for r in range(3):
        one = jax.tree.map(lambda x: x[r:r + 1], (species, cell, states, kT))
        _, single, _, _ = _run(model, *one, integ, cap, n_frames=5, stride=10)
        np.testing.assert_allclose(np.asarray(single.positions[0]), np.asarray(batched.positions[r]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(single.temperature[0]), np.asarray(batched.temperature[r]), rtol=1e-5)
    assert np.asarray(batched.temperature)[:, -1].std() > 5  # the replicas really differ


@pytest.mark.slow
def test_a_fine_tuned_model_reuses_the_compiled_chunk():
    """run_chunk takes the Model as a pytree (parameters as leaves) and run_chunk_checked passes it bare (no name or
    manifest): a model that differs only in its parameter values (another epsilon), name and manifest, as a
    fine-tuned one does, reuses the compiled chunk, and its frames follow the new parameters (potential energy of
    the last frame = the eager energy there)."""
    from lycb_jax.graph import build_graph
    from lycb_jax.md import run_chunk_checked
    from lycb_jax.models import Model, potential

    model = lj_model()
    atoms = argon(2)
    integ = IntegratorSettings("nvt", dt_fs=2.0)
    cap = _lj_capacity(atoms)
    species, cell, states, kT = _states(model, [atoms], [40.0], integ, cap)
    inputs, spec = ChunkInputs(species, cell, states, kT, kT, jnp.ones(1, bool)), ChunkSpec(integ, cap, 2, 3)
    run_chunk_checked(model, inputs, spec, mesh=None)
    compiled = run_chunk._cache_size()
    stronger = Model(model.module, {"epsilon": 2 * model.params["epsilon"]}, "lj-argon-ft", {"parent_model": model.name})
    (_, fr, alive, ok, _), _ = run_chunk_checked(stronger, inputs, spec, mesh=None)
    assert run_chunk._cache_size() == compiled  # no new program
    assert bool(ok.all()) and bool(alive.all())
    x, c, mask = fr.positions[0, -1], fr.cell[0, -1], species[0] > 0
    eager, _ = potential(stronger.module, stronger.params, species[0], x, c, mask, build_graph(x, c, mask, cap))
    assert float(fr.potential_energy[0, -1]) == pytest.approx(float(eager), rel=1e-5)


def _protocol(**kw):
    base = dict(temperatures_K=(50.0, 80.0), dt_fs=4.0, heat_ps=0.4, nvt_ps=0.4, npt_ps=0.8, npt_average_ps=0.4,
                production_ps=0.8, save_every_fs=40.0, chunk_ps=0.2, checkpoint_every_ps=0.2, start_K=20.0, skin=0.5)
    base.update(kw)
    return Protocol(**base)


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    model = lj_model()
    atoms = argon(2)
    Simulation(model, atoms, _protocol(), tmp_path / "full", progress=False).run()

    calls = {"n": 0}
    real_append = Simulation._append

    def dying_append(self, *args):
        calls["n"] += 1
        if calls["n"] == 9:  # killed in the middle of the NpT stage, after some checkpoints
            raise KeyboardInterrupt("killed")
        return real_append(self, *args)

    monkeypatch.setattr(Simulation, "_append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        Simulation(model, atoms, _protocol(), tmp_path / "cut", progress=False).run()
    monkeypatch.setattr(Simulation, "_append", real_append)
    Simulation(model, atoms, _protocol(), tmp_path / "cut", resume=True, progress=False).run()
    with h5py.File(tmp_path / "full" / "trajectory.h5") as a, h5py.File(tmp_path / "cut" / "trajectory.h5") as b:
        assert sorted(a) == sorted(b) == ["heat", "npt", "nvt", "production"]
        for stage in a:
            for name in a[stage]:
                np.testing.assert_allclose(a[stage][name][:], b[stage][name][:], rtol=1e-6, atol=1e-5,
                                           err_msg=f"{stage}/{name}")
        assert a["production"]["positions"].shape == (2, 20, len(atoms), 3)
        np.testing.assert_allclose(a["npt"].attrs["average_volume_A3"], b["npt"].attrs["average_volume_A3"], rtol=1e-6)


@pytest.mark.parametrize("temps", [(0.0,), (-300.0,), (300.0, float("nan"))])
def test_bad_temperatures_are_refused(temps, tmp_path):
    with pytest.raises(ValueError, match="temperatures must be positive"):
        Simulation(lj_model(), argon(1), _protocol(temperatures_K=temps), tmp_path)


def test_exploding_time_step_stops_with_message_and_keeps_data(tmp_path):
    atoms = argon(2, a=3.3)  # strongly compressed: huge forces; 10 fs steps blow it up
    proto = _protocol(dt_fs=10.0, heat_ps=2.0, save_every_fs=20.0, chunk_ps=0.2, temperatures_K=(300.0,),
                      start_K=300.0, npt_ps=0.0)
    with pytest.raises(RuntimeError, match="all replicas failed|could not be kept valid"):
        Simulation(lj_model(), atoms, proto, tmp_path, progress=False).run()
    with h5py.File(tmp_path / "trajectory.h5") as f:
        assert "heat" in f and f["heat"]["positions"].shape[1] >= 1  # what was computed is kept


def test_cli_md_unreadable_file(tmp_path, capsys):
    from lycb_jax.cli import main

    bad = tmp_path / "x.xyz"
    bad.write_text("garbage\n")
    with pytest.raises(SystemExit) as exc:
        main(["md", str(bad), "-T", "600"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and str(bad) in err, err


@pytest.mark.slow
def test_cell_list_run_equals_brute_force_run(tmp_path, monkeypatch):
    """A 500-atom LJ crystal through heat, NVT, NpT (tri) and production: neighbours from the O(N) cell
    list (forced on below its usual size) give the trajectory of the brute-force list (edge order, and so
    float32 round-off, differs); the checkpoint records the grid."""
    import lycb_jax.graph.capacity as caps

    model, atoms = lj_model(), argon(5, a=5.45)
    proto = _protocol(heat_ps=0.2, nvt_ps=0.2, npt_ps=0.4, npt_average_ps=0.2, production_ps=0.4)
    Simulation(model, atoms, proto, tmp_path / "brute", progress=False).run()
    monkeypatch.setattr(caps, "BINNED_MIN_ATOMS", 100)
    Simulation(model, atoms, proto, tmp_path / "binned", progress=False).run()
    brute, binned = (np.load(tmp_path / k / "checkpoint.npz")["capacity"] for k in ("brute", "binned"))
    assert len(binned) == 11 and min(binned[8:]) >= 3 and tuple(brute[8:]) == (0, 0, 0)
    with h5py.File(tmp_path / "brute" / "trajectory.h5") as a, h5py.File(tmp_path / "binned" / "trajectory.h5") as b:
        for stage in a:
            for name, atol in (("positions", 2e-4), ("cell", 2e-4), ("potential_energy", 2e-4), ("pressure", 1.0)):
                # pressure (bar) is a small difference of kbar-sized kinetic and virial terms: 1 bar is round-off
                np.testing.assert_allclose(a[stage][name][:], b[stage][name][:], rtol=1e-4, atol=atol,
                                           err_msg=f"{stage}/{name}")


@pytest.mark.slow
def test_memory_plan_predicts_larger_batches_from_two_probes():
    """The replica planner's straight line through XLA's memory analysis at 1 and 4 replicas predicts
    what XLA reports for the compiled 12-replica program within 1%; its per-replica bytes exceed the
    frames the chunk must hold (positions, F x N x 3 float32); the replicas that fit follow."""
    from lycb_jax.md.memory import chunk_bytes, plan_replicas

    model, atoms = lj_model(), argon(3)
    settings = IntegratorSettings("nvt", dt_fs=4.0)
    plan = plan_replicas(model, atoms, settings, device_bytes=2**30, probe=(1, 4), n_frames=10)
    actual = chunk_bytes(model, atoms, 12, settings=settings, n_frames=10)
    predicted = plan.bytes_fixed + 12 * plan.bytes_per_replica
    assert abs(predicted - actual) < 0.01 * actual
    assert plan.bytes_per_replica > 10 * len(atoms) * 3 * 4
    assert plan.max_replicas == int((0.8 * 2**30 - plan.bytes_fixed) // plan.bytes_per_replica)
    with pytest.raises(ValueError, match="no memory limit"):
        plan_replicas(model, atoms, settings)  # the CPU reports no limit: the caller must give one


def test_heat_nvt_and_production_share_one_compiled_program(tmp_path):
    """A run through heat, NVT, NpT and production (with the streaming MSD) compiles two MD programs, one per
    ensemble: chunks of any length up to a chunk run one program (``n_active``), and the streaming MSD is
    switched by an input (``msd_on``). The older code compiled one per stage (4 here)."""
    from lycb_jax.md.chunk import run_chunk

    proto = _protocol(dt_fs=3.5, heat_ps=0.14, nvt_ps=0.28, npt_ps=0.56, npt_average_ps=0.28, production_ps=0.84,
                      save_every_fs=35.0, chunk_ps=0.28, streaming_msd_every_fs=35.0, streaming_msd_species="Ar")
    before, before_init = run_chunk._cache_size(), init_batch._cache_size()
    Simulation(lj_model(), argon(2), proto, tmp_path, progress=False).run()
    assert run_chunk._cache_size() - before == 2
    # and two start-up programs, NVT and NpT: the first start draws its momenta outside (thermal_momenta)
    assert init_batch._cache_size() - before_init == 2


def test_thermal_momenta_are_jax_mds_draw():
    """The momenta drawn outside the start-up program equal those jax-md's own NVT init draws from the same key,
    bit for bit (so a run's trajectory did not change when the draw moved), with zero total momentum."""
    atoms = [argon(2, seed=r) for r in range(3)]
    integ = IntegratorSettings("nvt")
    cap = _lj_capacity(atoms[0])
    species, cell, drawn, kT = _states(lj_model(), atoms, [100.0, 300.0, 600.0], integ, cap, seed=3)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    masses = jnp.asarray(np.stack([masses_of(a.numbers) for a in atoms]))
    p = thermal_momenta(keys, masses, kT)
    np.testing.assert_array_equal(np.asarray(p), np.asarray(drawn.momentum))
    assert np.abs(np.asarray(p).sum(axis=1)).max() < 1e-5 * np.abs(np.asarray(p)).max() * len(atoms[0])
