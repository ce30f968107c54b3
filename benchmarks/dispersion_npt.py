"""Issue 28: short NpT (tri, 1 bar, 300 K) of the shipped model with and without D3(BJ), on the CPU; mean volume
per atom over the second half of the NpT stage against experiment. Adds "npt" to
benchmarks/results/dispersion/d3_check.json.

    .venv/bin/python benchmarks/dispersion_npt.py [npt_ps]
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.io import read

import lycb_jax
from lycb_jax.md import Protocol, Simulation
from lycb_jax.md.trajectory import read_trajectory

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "dispersion" / "d3_check.json"
MODEL = "chgnet-0.3.0-lycb-pbe"
CELLS = {"LYC0_x0.0.cif": ((11.209, 11.209, 2 * 6.047, 90, 90, 120), 21.93),  # experimental lattices (Schlem 2021)
         "LYB0_x6.0.cif": ((6.919, 11.974, 2 * 6.864, 90, 109.78, 90), 26.75)}


def main(npt_ps: float = 6.0) -> dict:
    protocol = Protocol(temperatures_K=[300.0], dt_fs=1.0, start_K=300.0, heat_ps=0.0, nvt_ps=0.5, npt_ps=npt_ps,
                        npt_average_ps=npt_ps / 2, production_ps=0.0, save_every_fs=20.0, chunk_ps=1.0,
                        checkpoint_every_ps=100.0, barostat="tri", pressure_bar=1.0)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": "CPU, 2 cores", "model": MODEL,
           "protocol": {"T_K": 300.0, "pressure_bar": 1.0, "barostat": "tri", "dt_fs": 1.0, "nvt_ps": 0.5,
                        "npt_ps": npt_ps, "start": "experimental lattice"}, "runs": {}}
    for name, (cellpar, v_exp) in CELLS.items():
        atoms = read(ROOT / "benchmarks" / "results" / "lycb_series_cpu" / name)
        atoms.set_cell(cellpar, scale_atoms=True)
        for dispersion in (None, "d3bj"):
            model = lycb_jax.load_model(MODEL, dispersion=dispersion)
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                Simulation(model, atoms, protocol, tmp, progress=False).run()
                with read_trajectory(Path(tmp) / "trajectory.h5") as f:
                    vol = np.asarray(f["npt"]["volume"])[0] / len(atoms)
                    cells = np.asarray(f["npt"]["cell"])[0]
            half = vol[len(vol) // 2:]
            lengths = np.linalg.norm(cells[len(cells) // 2:], axis=-1).mean(0)
            key = f"{name}:{dispersion or 'no_dispersion'}"
            out["runs"][key] = {"atoms": len(atoms), "mean_volume_A3_per_atom": float(half.mean()),
                                "std_volume_A3_per_atom": float(half.std()), "experiment_A3_per_atom": v_exp,
                                "deviation_percent": float(100 * (half.mean() / v_exp - 1)),
                                "mean_cell_lengths_A": lengths.round(3).tolist(),
                                "experimental_cell_lengths_A": list(cellpar[:3]), "frames_averaged": len(half),
                                "wall_s": round(time.perf_counter() - t, 1)}
            print(key, out["runs"][key], flush=True)
    prev = json.loads(OUT.read_text()) if OUT.exists() else {}
    prev["npt"] = out
    OUT.write_text(json.dumps(prev, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(*(float(a) for a in sys.argv[1:]))
