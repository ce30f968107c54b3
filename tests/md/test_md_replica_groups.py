"""Replicas in groups (issue 31 item 3): a sweep that does not fit one program runs its replicas in groups, one
program after another, and gives the trajectory of one program over all of them; a killed group resumes; a
device out-of-memory error splits the replicas by XLA's memory plan. Reference: the same run in one program."""

import json

import h5py
import numpy as np
import pytest

import lycb_jax.md.groups as groups
import lycb_jax.md.simulation as simulation
from lycb_jax.md import IntegratorSettings, Protocol, Simulation, plan_replicas
from potentials import argon, lj_model

TEMPS = (40.0, 60.0, 80.0)
# "The same trajectory": a program over fewer replicas sums in another order, and 1.2 ps of chaotic dynamics
# amplify that float32 round-off (measured 2026-12-07: positions 4e-5 A, energies 5e-6 eV, T 1e-3 K,
# pressure 0.015 bar, volume 0.003 A^3). The bounds are 20-70x that and far below thermal motion (~0.1 A).
SAME = dict(positions=1e-3, cell=1e-3, conserved=1e-4, kinetic_energy=1e-4, potential_energy=1e-4, stress=1e-4,
            pressure=1.0, temperature=0.05, volume=0.1, time_fs=0.0)


def _protocol(temperatures_K=TEMPS):
    return Protocol(temperatures_K=temperatures_K, dt_fs=4.0, heat_ps=0.2, nvt_ps=0.2, npt_ps=0.4, npt_average_ps=0.2,
                    production_ps=0.4, save_every_fs=40.0, chunk_ps=0.2, checkpoint_every_ps=0.2, start_K=20.0,
                    skin=0.5)


def _structures():
    return [argon(2, seed=k) for k in range(len(TEMPS))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_program")
    Simulation(lj_model(), _structures(), _protocol(), out, progress=False).run()
    return out / "trajectory.h5"


def _same_trajectory(path, reference):
    with h5py.File(reference) as a, h5py.File(path) as b:
        assert sorted(a) == sorted(b) == ["heat", "npt", "nvt", "production"]
        assert b.attrs["replicas"].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(a.attrs["temperatures_K"], b.attrs["temperatures_K"])
        assert a.attrs["structure_names"].tolist() == b.attrs["structure_names"].tolist()
        for stage in a:
            for name in a[stage]:
                np.testing.assert_allclose(b[stage][name][:], a[stage][name][:], rtol=0, atol=SAME[name],
                                           err_msg=f"{stage}/{name}")
        np.testing.assert_allclose(b["npt"].attrs["average_volume_A3"], a["npt"].attrs["average_volume_A3"],
                                   rtol=1e-5)


@pytest.mark.slow
def test_groups_killed_and_resumed_equal_one_program(tmp_path, monkeypatch, reference):
    real_append, calls = Simulation._append, {"n": 0}

    def dying_append(self, *args):  # killed in the NpT stage of the second group, after its checkpoints
        if self.h5_path.name == "trajectory.g1.h5":
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt("killed")
        return real_append(self, *args)

    monkeypatch.setattr(Simulation, "_append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        Simulation(lj_model(), _structures(), _protocol(), tmp_path, progress=False, max_replicas=2).run()
    monkeypatch.setattr(Simulation, "_append", real_append)
    assert not (tmp_path / "trajectory.h5").exists()
    summary = Simulation(lj_model(), _structures(), _protocol(), tmp_path, resume=True, progress=False).run()
    assert summary["groups"] == [[0, 1], [2]] and summary["alive"] == [True] * 3  # the recorded groups were kept
    assert json.loads((tmp_path / "groups.json").read_text()) == {"size": 2, "groups": 2}
    with h5py.File(tmp_path / "trajectory.g0.h5") as f:
        assert f.attrs["replicas"].tolist() == [0, 1]
    _same_trajectory(tmp_path / "trajectory.h5", reference)
    with pytest.raises(ValueError, match="ran in groups of 2 replicas"):
        Simulation(lj_model(), _structures(), _protocol(), tmp_path, resume=True, max_replicas=1).run()


@pytest.mark.slow
def test_out_of_device_memory_splits_the_replicas_by_the_memory_plan(tmp_path, monkeypatch, capsys, reference):
    """A device whose memory holds 2.5 replicas' chunk program (by XLA's analysis): 3 replicas in one program
    fail with XLA's out-of-memory error, and the run goes on in groups of 2."""
    model = lj_model()
    plan = plan_replicas(model, argon(2), IntegratorSettings("npt", dt_fs=4.0), device_bytes=2**30)
    monkeypatch.setattr(groups, "device_bytes", lambda: int((plan.bytes_fixed + 2.5 * plan.bytes_per_replica) / 0.8))
    real = simulation.run_chunk_checked

    def small_device(model, inputs, spec, **kw):
        if inputs.species.shape[0] > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456 bytes.")
        return real(model, inputs, spec, **kw)

    monkeypatch.setattr(simulation, "run_chunk_checked", small_device)
    summary = Simulation(model, _structures(), _protocol(), tmp_path, progress=False).run()
    assert "out of device memory with 3 replicas in one program" in capsys.readouterr().out
    assert summary["groups"] == [[0, 1], [2]]
    _same_trajectory(tmp_path / "trajectory.h5", reference)


def test_group_size_without_a_memory_limit_and_bad_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(groups, "device_bytes", lambda: None)  # the CPU reports none: halve
    sim = Simulation(lj_model(), argon(1), _protocol(temperatures_K=(40.0,) * 5), tmp_path)
    assert groups.size_after_oom(sim, RuntimeError("RESOURCE_EXHAUSTED: Out of memory")) == 2
    with pytest.raises(ValueError, match="not memory"):
        groups.size_after_oom(sim, ValueError("not memory"))
    assert groups.planned_size(tmp_path, False, 8, 8) is None and groups.planned_size(tmp_path, False, 3, 8) == 3
    assert groups.out_of_memory(ValueError("x")) is False
    with pytest.raises(ValueError, match="max_replicas must be a positive integer"):
        Simulation(lj_model(), argon(1), _protocol(), tmp_path, max_replicas=0)
