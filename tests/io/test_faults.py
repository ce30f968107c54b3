"""Kill -9 anywhere loses nothing: checkpoint files (lycb_jax.io.durable) are atomic, checksummed and
fall back to the previous generation; `lycb-jax md` and `finetune` killed by SIGKILL at named points
inside checkpoint writes (lycb_jax.io.faults) resume to results bit-identical with an uninterrupted
run; a damaged checkpoint is detected; a read-only folder or a full disk stops the run with one
message naming the folder and leaves the last checkpoint intact. (The full harness, every command
and >= 20 kills each, is benchmarks/fault_injection.py.)

The subprocess runs use the tests' Lennard-Jones argon (tests/potentials.py), cheap to compile."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lycb_jax.io import durable
from lycb_jax.io.faults import maybe_fail

HERE = Path(__file__).parents[1]  # tests/: potentials.py
CLI = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import potentials
potentials.register()
from lycb_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""
MD_TOML = """temperatures_K = [60.0]
dt_fs = 5.0
start_K = 30.0
heat_ps = 0.05
nvt_ps = 0.0
production_ps = 0.2
save_every_fs = 25.0
chunk_ps = 0.05
checkpoint_every_ps = 0.05
"""


# -- the checkpoint files themselves (in process) -------------------------------------------------------------

def test_npz_checksum_detects_damage_and_falls_back_to_the_previous_generation(tmp_path, capsys):
    path = tmp_path / "checkpoint.npz"
    durable.save_npz(path, {"x": np.arange(4.0), "step": np.array(1)}, "t")
    durable.save_npz(path, {"x": np.arange(5.0), "step": np.array(2)}, "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "checkpoint.prev.npz"]
    assert int(durable.load_npz(path)["step"]) == 2
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(durable.CorruptCheckpointError, match="checkpoint.npz"):
        durable.load_npz(path)
    got, used = durable.load_npz_or_previous(path)
    assert used.name == "checkpoint.prev.npz" and int(got["step"]) == 1
    assert "checkpoint.npz" in capsys.readouterr().err
    durable.previous(path).write_bytes(durable.previous(path).read_bytes()[:200])  # truncated
    with pytest.raises(durable.CorruptCheckpointError, match="no good checkpoint"):
        durable.load_npz_or_previous(path)


def test_checksum_inside_the_npz_is_checked(tmp_path):
    """A file whose arrays were changed consistently (valid zip, valid CRC) but not its digest."""
    path = tmp_path / "c.npz"
    durable.save_npz(path, {"x": np.arange(3.0)}, "t", keep_previous=False)
    with np.load(path) as z:
        stored = str(z["sha256"])
    np.savez(path, x=np.arange(3.0) + 1, sha256=np.array(stored))
    with pytest.raises(durable.CorruptCheckpointError, match="checksum"):
        durable.load_npz(path)


def test_full_disk_raises_one_error_naming_the_folder_and_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "train_state.npz"
    durable.save_npz(path, {"x": np.arange(3.0)}, "t")
    before = path.read_bytes()
    os.symlink("/dev/full", tmp_path / ".train_state.npz.tmp")  # the kernel answers ENOSPC
    with pytest.raises(durable.CheckpointWriteError, match=f"in {tmp_path}: the disk is full"):
        durable.save_npz(path, {"x": np.arange(9.0)}, "t")
    assert path.read_bytes() == before and not durable.previous(path).exists()


def test_maybe_fail_kills_at_the_nth_time_a_point_is_reached(tmp_path):
    log = tmp_path / "points.log"
    code = ("from lycb_jax.io.faults import maybe_fail\nfor i in range(5):\n    maybe_fail('a.b')\n"
            "    print(i, flush=True)\n")
    env = dict(os.environ, LYCB_JAX_FAULT="x:1,a.b:3", LYCB_JAX_FAULT_LOG=str(log))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.split() == ["0", "1"]
    assert log.read_text().split("\n")[:3] == ["a.b 1", "a.b 2", "a.b 3"]
    maybe_fail("a.b")  # without the variables: nothing


# -- killed and resumed commands (subprocesses) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    import potentials
    from ase.io import write

    from lycb_jax.models import save_checkpoint

    potentials.register()
    d = tmp_path_factory.mktemp("inputs")
    save_checkpoint(d / "lj", potentials.lj_model())
    write(d / "argon.extxyz", potentials.argon(2, 5.30, 0))
    frames = []
    for seed in range(8):
        a = potentials.argon(2, 5.30 + 0.03 * (seed % 4), seed)
        a.calc = potentials._ase_lj(a)
        a.get_potential_energy()
        frames.append(a)
    write(d / "labelled.extxyz", frames)
    (d / "md.toml").write_text(MD_TOML)
    return d


def cli(inputs, args, fault=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", LYCB_JAX_CACHE=str(inputs / "xla"))
    env.pop("LYCB_JAX_FAULT", None)
    if fault:
        env["LYCB_JAX_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def md_args(inputs, out):
    return ["md", str(inputs / "argon.extxyz"), "--model", str(inputs / "lj"), "--config", str(inputs / "md.toml"),
            "--out", str(out)]


def ft_args(inputs, out):
    return ["finetune", str(inputs / "labelled.extxyz"), "--model", str(inputs / "lj"), "--out", str(out),
            "--epochs", "6", "--batch-size", "2", "--learning-rate", "1e-3", "--val-fraction", "0.25",
            "--test-fraction", "0.25", "--no-refit-composition", "--quiet"]


def trajectory(path):
    import h5py

    with h5py.File(path) as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g]}


def killed(proc):
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_md_killed_at_named_points_resumes_bit_identical(inputs, tmp_path):
    ref = cli(inputs, md_args(inputs, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    killed(cli(inputs, md_args(inputs, out), "md_checkpoint.rotated:2"))  # between the two renames
    assert not (out / "checkpoint.npz").exists() and (out / "checkpoint.prev.npz").exists()
    killed(cli(inputs, md_args(inputs, out) + ["--resume"], "md_trajectory.half_appended:2"))  # frames half written
    killed(cli(inputs, md_args(inputs, out) + ["--resume"], "md_checkpoint.written:2"))  # temporary file written
    damaged = out / "checkpoint.npz"  # the newest checkpoint damaged: the previous one is used
    damaged.write_bytes(damaged.read_bytes()[:-100])
    done = cli(inputs, md_args(inputs, out) + ["--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" in done.stderr and "checkpoint.npz is truncated or damaged" in done.stderr
    a, b = trajectory(tmp_path / "ref" / "trajectory.h5"), trajectory(out / "trajectory.h5")
    assert a.keys() == b.keys() and len(a["production/positions"][0]) == 8
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_finetune_killed_at_named_points_resumes_bit_identical_and_stops_on_a_read_only_folder(inputs, tmp_path):
    ref = cli(inputs, ft_args(inputs, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    killed(cli(inputs, ft_args(inputs, out), "train_state.renamed:2"))
    killed(cli(inputs, ft_args(inputs, out) + ["--resume"], "train_state.rotated:1"))
    # a read-only folder: one message naming it, the checkpoint untouched
    state = out / "train_state.prev.npz"
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    undo, fault = _read_only(out)
    try:
        failed = cli(inputs, ft_args(inputs, out) + ["--resume"], fault)
    finally:
        undo()
    assert failed.returncode != 0
    assert f"cannot write train_state.npz in {out}: the folder is not writable" in failed.stderr
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before
    killed(cli(inputs, ft_args(inputs, out) + ["--resume"], "model_params.written:1"))
    done = cli(inputs, ft_args(inputs, out) + ["--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "params.msgpack").read_bytes() == (tmp_path / "ref" / "params.msgpack").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params_sha256"] == hashlib.sha256((out / "params.msgpack").read_bytes()).hexdigest()
    assert not any(out.glob("train_state*")) and not any(out.glob(".*.tmp"))


def _read_only(folder: Path):
    """Make ``folder`` unwritable, also for root (chattr +i); returns (undo, fault spec). Where root cannot
    (no chattr +i on this file system) the first write there fails with EACCES by fault injection instead."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode != 0:
            return (lambda: None), "train_state.written:1:EACCES"
        return (lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)), None
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    return (lambda: folder.chmod(mode)), None


def test_fault_log_alone_counts_points_without_killing(tmp_path, monkeypatch):
    """With only $LYCB_JAX_FAULT_LOG set (the harness's reference run), every point is logged with its
    count and nothing is killed or raised."""
    from lycb_jax.io import faults

    log = tmp_path / "points.log"
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.setenv(faults.LOG_ENV, str(log))
    monkeypatch.setattr(faults, "_reached", {})
    for _ in range(2):
        faults.maybe_fail("checkpoint_write")
    faults.maybe_fail("labels_write")
    assert log.read_text().splitlines() == ["checkpoint_write 1", "checkpoint_write 2", "labels_write 1"]
