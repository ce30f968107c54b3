"""A sweep's trajectory holds several structures: every reader groups replicas by structure and never
pools them into one Arrhenius set; tracer and collective lines are fitted each from their own converged
temperatures; a line through two points says so. References: Arrhenius energies written into the
synthetic data (lattice-hopping walkers with a known rate at each T) and the Nernst-Einstein formula
written out here."""

import json
import math

import numpy as np
import pytest

from lycb_jax import analysis as A
from lycb_jax.analysis.diffusion import Diffusion
from lycb_jax.cli import main
from test_analyze_cli import write_production
from test_diffusion_window import hopping_model

KB = 8.617333262e-5  # eV/K, written out independently of the package
TEMPS = np.array([600.0, 750.0, 900.0])


def _rates(ea, r900=2.0):
    """Hop rates (1/ps) at TEMPS for activation energy ``ea`` (eV), ``r900`` at 900 K."""
    return r900 * np.exp(-ea / KB * (1 / TEMPS - 1 / 900.0))


def _sweep_file(path, names=True):
    """Two structures x 3 temperatures: 'fast' (Ea 0.15 eV, Cl framework) and 'slow' (0.30 eV, Br)."""
    rng = np.random.default_rng(1)
    n_li, n_fw, n_frames, box = 32, 8, 2000, 24.0
    pos, numbers = [], []
    for ea, fw_z in ((0.15, 17), (0.30, 35)):
        for rate in _rates(ea):
            li, _ = hopping_model(rng, n_frames, n_li, rate_per_ps=rate, sigma_vib=0.3)
            li += rng.uniform(0, box, (1, n_li, 3))
            fw = rng.normal(0, 0.1, (n_frames, n_fw, 3)) + rng.uniform(0, box, (1, n_fw, 3))
            pos.append(np.concatenate([li, fw], 1))
            numbers.append([3] * n_li + [fw_z] * n_fw)
    numbers = np.array(numbers)
    return write_production(path, np.array(pos), numbers, np.where(numbers == 3, 6.94, 60.0), np.tile(TEMPS, 2), box,
                            names=["fast"] * 3 + ["slow"] * 3 if names else None)


@pytest.fixture(scope="module")
def sweep_h5(tmp_path_factory):
    return _sweep_file(tmp_path_factory.mktemp("sweep") / "trajectory.h5")


def test_groups_come_from_the_stored_names(sweep_h5):
    groups = A.replica_groups(sweep_h5)
    assert list(groups) == ["fast", "slow"]
    assert groups["fast"].tolist() == [0, 1, 2] and groups["slow"].tolist() == [3, 4, 5]


def test_files_without_names_group_by_composition(tmp_path):
    path = _sweep_file(tmp_path / "old.h5", names=False)
    with pytest.warns(UserWarning, match="no structure names"):
        groups = A.replica_groups(path)
    assert {k: v.tolist() for k, v in groups.items()} == {"Cl8Li32": [0, 1, 2], "Br8Li32": [3, 4, 5]}


def test_analyse_md_refuses_to_pool_two_structures(sweep_h5, tmp_path):
    with pytest.raises(ValueError, match="belong to 2 structures"):
        A.analyse_md(sweep_h5, tmp_path, hop_distance=3.0)
    with pytest.raises(ValueError, match="fast, slow"):
        A.analyse_md(sweep_h5, tmp_path, replicas=[2, 3], hop_distance=3.0)


def test_cli_writes_one_report_per_structure_with_its_own_ea(sweep_h5, tmp_path, capsys):
    assert main(["analyze", str(sweep_h5), "--out", str(tmp_path), "--hop-distance", "3.0"]) == 0
    text = capsys.readouterr().out
    assert "== fast ==" in text and "== slow ==" in text
    for name, ea_true in (("fast", 0.15), ("slow", 0.30)):
        s = json.loads((tmp_path / name / "transport.json").read_text())
        assert [r["T"] for r in s["per_temperature"]] == TEMPS.tolist()
        assert s["converged_T"] == TEMPS.tolist(), s["not_converged"]
        assert abs(s["Ea"] - ea_true) < 3 * s["Ea_err"] + 0.01, (name, s["Ea"], s["Ea_err"])
        assert s["arrhenius_note"] is None  # three points
        for r in s["per_temperature"]:  # per T: tracer sigma always, collective sigma only beside it
            assert r["sigma_source"].startswith("tracer") and abs(r["sigma"] / _ne(r["D"], r["T"], 32, 24.0**3) - 1) < 1e-5
            if r["collective_converged"]:
                assert abs(r["sigma_collective"] / _ne(r["D_collective"], r["T"], 32, 24.0**3) - 1) < 1e-5
            else:
                assert r["sigma_collective"] is None
        assert (tmp_path / name / "arrhenius.png").stat().st_size > 500


def _result(T, D, D_err, Dc=math.nan, Dc_err=math.nan, volume=1000.0, n=10):
    ok = bool(Dc > 0 and Dc_err <= 0.3 * Dc)
    return Diffusion(D=D, D_err=D_err, converged=True, reason=None, window_fs=(1.0, 2.0), window_source="auto",
                     n_mobile=n, n_frames=10, dt_fs=1.0, hop_distance=3.0, hops_per_ion=5.0, msd=np.zeros(10),
                     msd_collective=np.zeros(10), slope_grid_fs=np.zeros(1), slope=np.zeros(1), slope_err=np.zeros(1),
                     D_collective=Dc, D_collective_err=Dc_err, collective_converged=ok,
                     haven_ratio=D / Dc if ok else math.nan, haven_ratio_err=0.05 if ok else math.nan,
                     temperature=T, volume_A3=volume)


def _ne(D, T, n=10, volume=1000.0):
    """Nernst-Einstein (mS/cm) written out: n/V e^2 D / kB T."""
    e, kb = 1.602176634e-19, 1.380649e-23
    return n / (volume * 1e-24) * e**2 * D / (kb * T) * 1e3


def test_tracer_and_collective_lines_are_fitted_separately():
    # tracer D with Ea_t = 0.2 eV at 4 T; collective D with Ea_c = 0.35 eV, converged only at the top 2 T
    temps = np.array([500.0, 600.0, 700.0, 800.0])
    d_t = 1e-3 * np.exp(-0.2 / (KB * temps))
    d_c = 5e-3 * np.exp(-0.35 / (KB * temps))
    res = [_result(t, d, 0.01 * d, dc if t >= 700 else dc, 0.05 * dc if t >= 700 else dc)  # low T: 100% error
           for t, d, dc in zip(temps, d_t, d_c)]
    s = A.summarize(res)
    assert abs(s["Ea"] - 0.2) < 1e-3 and s["converged_T"] == temps.tolist() and s["arrhenius_note"] is None
    c = s["collective"]
    assert c["converged_T"] == [700.0, 800.0] and abs(c["Ea"] - 0.35) < 1e-3
    assert "2 temperatures" in c["note"]
    d300 = 5e-3 * np.exp(-0.35 / (KB * 300.0))
    assert abs(c["sigma_extrapolated"] / _ne(d300, 300.0) - 1) < 1e-3
    assert abs(s["sigma_extrapolated"] / _ne(1e-3 * np.exp(-0.2 / (KB * 300.0)), 300.0) - 1) < 1e-3
    assert "sigma_extrapolated_haven_corrected" not in s  # no conductivity mixes the two


def test_a_line_through_two_points_says_so(tmp_path):
    temps = np.array([650.0, 750.0])
    d = 1e-3 * np.exp(-0.25 / (KB * temps))
    s = A.summarize([_result(t, x, 0.02 * x) for t, x in zip(temps, d)])
    assert "2 temperatures" in s["arrhenius_note"]
    assert s["collective"]["refused"].startswith("fewer than two temperatures with a converged collective")
    A.plot_arrhenius(s, tmp_path)
    assert "2 points" in (tmp_path / "arrhenius.svg").read_text()
