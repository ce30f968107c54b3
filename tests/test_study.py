"""The study/sweep pipeline end to end on a cheap potential: MD -> HDF5 -> transport report."""

import csv
import json

import numpy as np

from lycb_jax.md import Protocol
from lycb_jax.study import sweep
from potentials import argon, lj_model


def test_sweep_structures_x_temperatures_writes_reports(tmp_path):
    proto = Protocol(temperatures_K=(150.0, 250.0), dt_fs=4.0, start_K=50.0, heat_ps=0.2, nvt_ps=0.2,
                     production_ps=1.2, save_every_fs=4.0, chunk_ps=0.4, checkpoint_every_ps=0.4, skin=0.5)
    structures = {"dense": argon(2, a=5.3, seed=1), "open": argon(2, a=5.6, seed=2)}
    rows = sweep(lj_model(), structures, proto, tmp_path, species="Ar")
    assert [r["structure"] for r in rows] == ["dense", "open"]
    for name in structures:
        summary = json.loads((tmp_path / name / "transport.json").read_text())
        temps = [r["T"] for r in summary["per_temperature"]]
        assert temps == [150.0, 250.0]
        assert all(r["D"] > 0 for r in summary["per_temperature"])
        assert (tmp_path / name / "arrhenius.png").stat().st_size > 1000
        assert (tmp_path / name / "msd.svg").exists()
    with open(tmp_path / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and np.isfinite(float(table[0]["Ea"]))
    assert (tmp_path / "thermo.png").exists()
