"""Several processes (issue 7 item 2) on the CPU: two processes with two forced host devices each
run 3 replicas through the ``study`` command (``--coordinator``); one process is killed, both
resume; the joined trajectory equals a single-process run to round-off."""

import json
import os
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from lycb_jax.runtime import distributed

HOST = '''
import os, sys
sys.path.insert(0, TESTS)
from lycb_jax import cli
cli._join_processes(sys.argv[1:])  # jax.distributed.initialize, before importing jax_md starts JAX
import jax, lycb_jax
from lycb_jax.md import Simulation
from potentials import lj_model
lycb_jax.load_model = lambda *a, **k: lj_model()
if os.environ.get("DIE_AT") and jax.process_index() == 1:  # killed just before writing its n-th checkpoint
    real, calls = Simulation._save_checkpoint, [0]
    def dying(self, *a):
        calls[0] += 1
        if calls[0] == int(os.environ["DIE_AT"]):
            os._exit(9)
        return real(self, *a)
    Simulation._save_checkpoint = dying
sys.exit(cli.main(sys.argv[1:]))
'''

CONFIG = """temperatures_K = [30.0, 50.0, 70.0]
dt_fs = 4.0
start_K = 20.0
heat_ps = 0.2
nvt_ps = 0.2
production_ps = 1.0
save_every_fs = 4.0
chunk_ps = 0.2
checkpoint_every_ps = 0.2
skin = 0.5
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(tmp, tag, extra=(), **env):
    """Both processes of one run of `lycb-jax study`, in the background (logs in tmp)."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(tmp / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               **env)
    script = HOST.replace("TESTS", repr(os.path.dirname(os.path.dirname(__file__))))
    args = ["study", "--structure", str(tmp / "ar.xyz"), "--config", str(tmp / "cfg.toml"), "--species", "Ar",
            "--out", str(tmp / "run"), "--coordinator", f"localhost:{port}", "--num-processes", "2", *extra]
    procs = []
    for k in range(2):
        log = open(tmp / f"{tag}.p{k}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-c", script, *args, "--process-id", str(k)], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def _logs(tmp, tag):
    return "\n".join(f"--- process {k}:\n" + (tmp / f"{tag}.p{k}.log").read_text() for k in range(2))


def _position(path):
    try:
        ck = np.load(path)
        return int(ck["stage"]), int(ck["step"])
    except FileNotFoundError:  # between the two renames of a checkpoint write
        return None


@pytest.mark.slow
def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
    from ase.io import write

    from lycb_jax.md import Protocol, Simulation
    from potentials import argon, lj_model

    write(tmp_path / "ar.xyz", argon(2), format="extxyz")
    (tmp_path / "cfg.toml").write_text(CONFIG)
    md = tmp_path / "run" / "md"
    first = _launch(tmp_path, "first", DIE_AT="3")  # process 1 dies before its 3rd checkpoint
    try:
        # meanwhile the reference: the same protocol in this (single-device) process
        Simulation(lj_model(), argon(2), Protocol.load(tmp_path / "cfg.toml"), tmp_path / "ref",
                   progress=False).run()
        assert first[1].wait(timeout=600) == 9, _logs(tmp_path, "first")
        t0 = time.time()  # process 0 still writes its 3rd checkpoint, then waits for process 1 forever
        while _position(md / "checkpoint.p0.npz") != (2, 50) and time.time() - t0 < 120:
            time.sleep(0.2)
    finally:
        for p in first:
            p.kill()
            p.wait()
    # process 0 is one checkpoint ahead of process 1: resuming must bring it back
    assert _position(md / "checkpoint.p0.npz") == (2, 50), _logs(tmp_path, "first")
    assert _position(md / "checkpoint.p1.npz") == (2, 0), _logs(tmp_path, "first")

    second = _launch(tmp_path, "second", ["--resume"])
    try:
        rcs = [p.wait(timeout=600) for p in second]
    finally:
        for p in second:
            p.kill()
    log = _logs(tmp_path, "second")
    assert rcs == [0, 0], log
    assert log.count("at stage 2 (production), step 0") == 2, log  # both from the common checkpoint:
    assert "checkpoint.p0.prev.npz at stage 2" in log, log  # process 0 went back one
    assert "process 1: MD done; process 0 writes the report" in log

    for k, replicas in enumerate(([0, 1], [2])):  # each process wrote its own replicas
        with h5py.File(md / f"trajectory.p{k}.h5") as f:
            assert f.attrs["replicas"].tolist() == replicas
            assert f["production"]["positions"].shape == (len(replicas), 250, 32, 3)
    with h5py.File(tmp_path / "ref" / "trajectory.h5") as a, h5py.File(md / "trajectory.h5") as b:
        assert sorted(a) == sorted(b) == ["heat", "nvt", "production"]
        for key in ("numbers", "masses_amu", "temperatures_K"):
            np.testing.assert_array_equal(a.attrs[key], b.attrs[key])
        assert b.attrs["replicas"].tolist() == [0, 1, 2]
        for stage in a:
            for name in a[stage]:
                np.testing.assert_allclose(b[stage][name][:], a[stage][name][:], rtol=1e-5, atol=1e-4,
                                           err_msg=f"{stage}/{name}")
    report = json.loads((tmp_path / "run" / "transport.json").read_text())  # process 0 analysed all replicas
    assert [r["T"] for r in report["per_temperature"]] == [30.0, 50.0, 70.0]


def _fake_process_file(path, replicas, n_frames=4):
    with h5py.File(path, "w") as f:
        r = np.asarray(replicas)
        f.attrs.update(numbers=np.tile([18, 18], (len(r), 1)), masses_amu=np.full((len(r), 2), 39.9),
                       temperatures_K=100.0 * (r + 1), replicas=r, format="test")
        g = f.create_group("npt")
        g.create_dataset("positions", data=r[:, None, None, None] + np.zeros((len(r), n_frames, 2, 3)),
                         maxshape=(len(r), None, 2, 3))
        g["positions"].attrs["units"] = "Angstrom"
        g.create_dataset("time_fs", data=np.arange(n_frames) * 10.0)
        g.attrs.update(average_cell=np.tile(np.eye(3), (len(r), 1, 1)) * (r[:, None, None] + 5),
                       average_volume_A3=(r + 5.0) ** 3)


def test_merge_trajectories_joins_replicas_without_copying(tmp_path):
    from lycb_jax.md.trajectory import merge_trajectories

    _fake_process_file(tmp_path / "trajectory.p0.h5", [0, 1])
    _fake_process_file(tmp_path / "trajectory.p1.h5", [2])
    path = merge_trajectories(tmp_path)
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)  # the virtual datasets refer to the files next to them
    with h5py.File(moved / path.name) as f:
        assert f["npt"]["positions"].is_virtual
        np.testing.assert_array_equal(f["npt"]["positions"][:, 0, 0, 0], [0, 1, 2])
        np.testing.assert_array_equal(f["npt"]["positions"][[0, 2], -1, 1, 2], [0, 2])  # fancy index, as analyse does
        assert f["npt"]["positions"].attrs["units"] == "Angstrom"
        np.testing.assert_array_equal(f.attrs["temperatures_K"], [100, 200, 300])
        assert f.attrs["numbers"].shape == (3, 2) and f.attrs["replicas"].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(f["npt"].attrs["average_volume_A3"], [125, 216, 343])
        assert f["npt"].attrs["average_cell"].shape == (3, 3, 3)
        np.testing.assert_array_equal(f["npt"]["time_fs"][:], np.arange(4) * 10.0)
    (moved / "trajectory.p1.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"trajectory\.p1\.h5"):
        merge_trajectories(moved, n_processes=2)


def test_single_process_and_launcher_detection(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NUM_TASKS", "OMPI_MCA_orte_hnp_uri",
                "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.requested()
    assert distributed.requested("localhost:1234")
    monkeypatch.setenv("SLURM_JOB_ID", "17")  # an sbatch script: one process
    assert not distributed.requested()
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # srun -n 4
    assert distributed.requested()
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1;tcp://10.0.0.1:1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.requested()
    monkeypatch.delenv("OMPI_MCA_orte_hnp_uri")
    assert not distributed.initialize()  # one process: nothing to join
    with pytest.raises(ValueError, match="need --coordinator"):
        distributed.initialize(num_processes=2, process_id=1)
    np.testing.assert_array_equal(distributed.local_replicas(3), [0, 1, 2])
    np.testing.assert_array_equal(distributed.gather_replicas(np.array([1.0, 2.0, 3.0]), 3), [1, 2, 3])
    assert distributed.latest_common([]) == 0 and distributed.latest_common([300, 250]) == 300
    assert distributed.file_tag() == ""
