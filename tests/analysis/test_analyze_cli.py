"""`lycb-jax analyze` on a trajectory.h5 in the project's format (a lattice-hopping model with known D
at three temperatures, one too slow to converge), with and without a forced window; NpT unwrapping."""

import json

import h5py
import numpy as np
import pytest

from lycb_jax import analysis as A
from lycb_jax.cli import main
from test_diffusion_window import hopping_model

KB = 8.617333262e-5  # eV/K, written out independently of the package


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    temps, rates = np.array([500.0, 700.0, 900.0]), [0.002, 1.0, 2.0]  # hops per ps
    n_li, n_fw, n_frames, box = 32, 8, 2000, 24.0
    pos = []
    for rate in rates:
        li, _ = hopping_model(rng, n_frames, n_li, rate_per_ps=rate, sigma_vib=0.3)
        li += rng.uniform(0, box, (1, n_li, 3))
        fw = rng.normal(0, 0.1, (n_frames, n_fw, 3)) + rng.uniform(0, box, (1, n_fw, 3))
        pos.append(np.concatenate([li, fw], 1))
    numbers = np.array([3] * n_li + [17] * n_fw)
    return write_production(tmp_path_factory.mktemp("md") / "trajectory.h5", np.array(pos), numbers,
                            np.where(numbers == 3, 6.94, 35.45), temps, box)


def write_production(path, positions, numbers, masses, temps, box, names=None, dt_fs=10.0):
    """A trajectory.h5 in the project's format with one stage, production: positions [R, F, N, 3] (A) in a
    cubic box (A) saved every ``dt_fs``; ``numbers``/``masses`` [N] or [R, N]; optional structure names."""
    n_rep, n_frames = positions.shape[:2]
    with h5py.File(path, "w") as f:
        f.attrs.update(numbers=numbers, masses_amu=masses, temperatures_K=temps, replicas=np.arange(n_rep))
        if names is not None:
            f.attrs["structure_names"] = np.array([n.encode() for n in names], dtype="S")
        g = f.create_group("production")
        g["positions"] = np.asarray(positions, np.float32)
        g["cell"] = np.broadcast_to(np.eye(3) * box, (n_rep, n_frames, 3, 3)).astype(np.float32)
        g["volume"] = np.full((n_rep, n_frames), box**3, np.float32)
        g["time_fs"] = dt_fs * np.arange(1, n_frames + 1)
    return path


def test_analyze_h5_reports_converged_and_not_converged(h5_path, tmp_path, capsys):
    assert main(["analyze", str(h5_path), "--out", str(tmp_path), "--hop-distance", "3.0"]) == 0
    text = capsys.readouterr().out
    assert "T = 500 K: NOT CONVERGED: too few hops" in text and "Ea = " in text
    summary = json.loads((tmp_path / "transport.json").read_text())
    rows = {r["T"]: r for r in summary["per_temperature"]}
    assert rows[500.0]["D"] is None and not rows[500.0]["converged"]
    d_true = {700.0: 1.0 * 9 / 6 * 1e-4, 900.0: 2.0 * 9 / 6 * 1e-4}  # rate a^2 / 6, A^2/ps -> cm^2/s
    for t, d in d_true.items():
        assert rows[t]["converged"] and abs(rows[t]["D"] - d) < 3 * rows[t]["D_err"], (t, rows[t]["D"], d)
        assert rows[t]["sigma_source"] in ("collective (charge) MSD", "tracer D, Nernst-Einstein with H_R = 1")
    ea_true = KB * np.log(2.0) / (1 / 700 - 1 / 900)
    assert summary["converged_T"] == [700.0, 900.0]
    assert abs(summary["Ea"] - ea_true) < 3 * summary["Ea_err"], (summary["Ea"], summary["Ea_err"], ea_true)
    assert summary["sigma_extrapolated"] > 0 and summary["sigma_extrapolated_err"] > 0
    for name in ("transport.csv", "msd.png", "msd.svg", "arrhenius.png", "arrhenius.svg"):
        assert (tmp_path / name).stat().st_size > 500


def test_analyze_forced_window_and_bad_input(h5_path, tmp_path, capsys):
    assert main(["analyze", str(h5_path), "--out", str(tmp_path), "--fit-start-ps", "2", "--fit-end-ps", "6"]) == 0
    summary = json.loads((tmp_path / "transport.json").read_text())
    assert all(r["window_source"] == "user" and (r["t0_fs"], r["t1_fs"]) == (2000.0, 6000.0)
               for r in summary["per_temperature"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["analyze", str(h5_path), "--fit-start-ps", "2"])
    assert "give both --fit-start-ps and --fit-end-ps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", str(h5_path), "--out", str(tmp_path), "--stage", "npt"])
    assert "no stage 'npt'" in capsys.readouterr().err


def test_npt_unwrapping_uses_each_frames_cell():
    # NpT-like run: steps dr taken in the current (breathing, sheared) box, s_{t+1} = s_t + dr h_{t+1}^-1,
    # stored wrapped into each frame's cell.  Reference: ASE's minimum-image step in the later frame's cell,
    # accumulated frame by frame (von Buelow et al. 2020's scheme written with an independent library).
    from ase.geometry import find_mic

    rng = np.random.default_rng(4)
    n_frames = 300
    scale = 1 + 0.05 * np.sin(np.arange(n_frames) / 7.0)
    cells = scale[:, None, None] * (np.diag([9.0, 10.0, 11.0]) + np.array([[0, 0, 0], [1.5, 0, 0], [0, 0, 0]]))
    dr = rng.normal(0, 0.8, (n_frames, 5, 3))
    dr[0] = rng.uniform(0, 9, (5, 3))
    s = np.cumsum(np.einsum("tni,tij->tnj", dr, np.linalg.inv(cells)), axis=0)
    wrapped = np.einsum("tni,tij->tnj", s - np.floor(s), cells)
    ref = [wrapped[0]]
    for t in range(1, n_frames):
        ref.append(ref[-1] + find_mic(wrapped[t] - wrapped[t - 1], cells[t], pbc=True)[0])
    tor = A.unwrap(wrapped, cells)  # per-frame cells -> unwrap_npt
    np.testing.assert_allclose(tor, np.array(ref), atol=1e-9)
    image = np.einsum("tni,tij->tnj", s, cells)  # what the NpT integrator writes: (s + n) h_t
    np.testing.assert_allclose(A.unwrap_npt(image, cells), tor, atol=1e-9)
    # each step is the physical step plus the bounded affine part of the in-box position
    steps = np.diff(tor, axis=0) - dr[1:]
    assert np.abs(steps).max() < np.abs(np.diff(cells, axis=0)).max() * 1.01
