"""The study/sweep pipeline end to end on a cheap potential: MD -> HDF5 -> transport report, and the
refusals that happen before any MD runs."""

import csv
import json

import h5py
import numpy as np
import pytest

from lycb_jax.md import Protocol
from lycb_jax import analysis as A
from lycb_jax.workflows.study import study, sweep
from potentials import argon, lj_model

PROTO = dict(dt_fs=4.0, start_K=50.0, heat_ps=0.2, nvt_ps=0.2, production_ps=1.2, save_every_fs=4.0, chunk_ps=0.4,
             checkpoint_every_ps=0.4, skin=0.5)


@pytest.mark.slow
def test_sweep_structures_x_temperatures_writes_reports(tmp_path):
    proto = Protocol(temperatures_K=(150.0, 250.0), **PROTO)
    structures = {"dense": argon(2, a=5.3, seed=1), "open": argon(2, a=5.6, seed=2)}
    rows = sweep(lj_model(), structures, proto, out=tmp_path, species="Ar", window_fs=(100.0, 400.0))
    assert [r["structure"] for r in rows] == ["dense", "open"]
    for name in structures:
        text = (tmp_path / name / "transport.json").read_text()
        summary = json.loads(text)
        assert "NaN" not in text
        assert [r["T"] for r in summary["per_temperature"]] == [150.0, 250.0]
        for r in summary["per_temperature"]:  # a forced window: converged by decree, flagged as "user"
            assert r["converged"] and r["window_source"] == "user" and r["D"] > 0
            assert (r["t0_fs"], r["t1_fs"]) == (100.0, 400.0)
        assert (tmp_path / name / "arrhenius.png").stat().st_size > 1000
        assert (tmp_path / name / "msd.svg").exists()
    with open(tmp_path / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and np.isfinite(float(table[0]["Ea"])) and table[0]["converged_T"] == "150 250"
    assert (tmp_path / "thermo.png").exists()
    groups = A.replica_groups(tmp_path / "md" / "trajectory.h5")  # the names are stored, same composition
    assert {k: v.tolist() for k, v in groups.items()} == {"dense": [0, 1], "open": [2, 3]}
    with h5py.File(tmp_path / "md" / "trajectory.h5", "r") as f:  # the model is recorded, here without dispersion
        assert f.attrs["model_name"] == lj_model().name and json.loads(f.attrs["model_dispersion"]) is None


def test_study_refused_before_md(tmp_path):
    # one temperature, or a production with too few frames / too short for any window: refused with a
    # message before the MD (the model is never called: None would fail at once)
    with pytest.raises(ValueError, match="at least two distinct temperatures"):
        study(None, argon(2), Protocol(temperatures_K=(200.0,), **PROTO), out=tmp_path)
    with pytest.raises(ValueError, match="at least two distinct temperatures"):
        sweep(None, {"a": argon(2)}, Protocol(temperatures_K=(200.0, 200.0), **PROTO), out=tmp_path)
    few = dict(PROTO, save_every_fs=40.0)  # 1.2 ps every 40 fs: 31 frames
    with pytest.raises(ValueError, match="31 frames; a diffusive window needs >= 49"):
        study(None, argon(2), Protocol(temperatures_K=(150.0, 250.0), **few), out=tmp_path)
    short = dict(PROTO, production_ps=0.2, save_every_fs=2.0, dt_fs=2.0)  # 101 frames but 0.2 ps
    with pytest.raises(ValueError, match="too short for any diffusive window"):
        study(None, argon(2), Protocol(temperatures_K=(150.0, 250.0), **short), out=tmp_path)
    assert not (tmp_path / "md").exists()


def test_precheck_uses_the_structures_li_hop():
    """The line printed before the MD names the hop the analysis uses: the median nearest Li-Li distance of the
    input (here from pymatgen's distance matrix), not a fixed 2.5 A; refusal still needs a hopeless production."""
    from pathlib import Path

    from pymatgen.core import Structure

    from lycb_jax.workflows.study import check_before_md

    cif = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lycb_series_cpu" / "LYC0_x0.0.cif"
    s = Structure.from_file(cif)
    li = [i for i, site in enumerate(s) if site.specie.symbol == "Li"]
    d = s.distance_matrix[np.ix_(li, li)]
    np.fill_diagonal(d, np.inf)
    hop = float(np.median(d.min(axis=1)))
    assert 3.0 < hop < 4.0
    line = check_before_md(Protocol(temperatures_K=(700.0, 800.0), production_ps=2.0, save_every_fs=20.0), [s])
    assert f"one hop of {hop:.3g} A" in line
    d_min = hop**2 / (6 * 2.0 / 6) * 1e-4  # cm^2/s: 6 D t = hop^2 at t = production / 6
    assert f"D >= {d_min:.2g} cm^2/s" in line


@pytest.mark.slow
def test_analysis_uses_the_hop_of_the_input_structure(tmp_path):
    """One hop everywhere: the MD stores the median nearest-neighbour distance of each input structure
    (here of Ar, the streaming-MSD species), and the analysis uses it, not the thermally disordered first
    production frame. Reference: ASE's neighbour list on the input."""
    from ase.neighborlist import neighbor_list

    from lycb_jax.md import Simulation

    atoms = argon(2, seed=3)
    i, d = neighbor_list("id", atoms, 5.0)
    hop = float(np.median([d[i == k].min() for k in range(len(atoms))]))
    proto = Protocol(temperatures_K=(250.0,), streaming_msd_species="Ar", **PROTO)
    Simulation(lj_model(), atoms, proto, tmp_path / "md", progress=False).run()
    with h5py.File(tmp_path / "md" / "trajectory.h5", "r") as f:
        assert f.attrs["hop_species"] == "Ar" and f.attrs["hop_distance_A"][0] == pytest.approx(hop, rel=1e-9)
        first = f["production"]["positions"][0, 0]
    summary = A.analyse_md(tmp_path / "md" / "trajectory.h5", tmp_path / "report", species="Ar")
    assert summary["per_temperature"][0]["hop_distance_A"] == pytest.approx(hop, rel=1e-9)
    i, d = neighbor_list("id", atoms.__class__(atoms.numbers, first, cell=atoms.cell, pbc=True), 5.0)
    assert abs(float(np.median([d[i == k].min() for k in range(len(atoms))])) - hop) > 1e-3  # a different number
