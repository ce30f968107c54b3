"""NpT validation of a model on LYC and LYB (issue 17): 480-atom supercells of the training parents
(LYC30 x 2x2x4, LYB20 x 4x2x3), 1 bar, several temperatures, all in one batched simulation per model.
Reports the mean volume per atom and cell parameters over the second half of the NpT stage, the volume
drift over that half, and whether a replica ran away, next to experiment (Schlem 2021: LYC 21.93,
LYB 26.75 A^3/atom).

    python npt_validation.py OUT --model chgnet-0.3.0 [--model DIR ...] [-T 300 500 800] [--npt-ps 40] [--resume]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.io import read

from lycb_jax import md
from lycb_jax.md.trajectory import read_trajectory
from lycb_jax.models import load_model

here = Path(__file__).parent
EXPERIMENT = {"LYC": 21.93, "LYB": 26.75}  # A^3/atom, Schlem et al. 2021 (../shared/reference)

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--model", action="append", required=True)
p.add_argument("-T", "--temperatures", type=float, nargs="+", default=[300.0, 500.0, 800.0])
p.add_argument("--npt-ps", type=float, default=40.0)
p.add_argument("--dt-fs", type=float, default=2.0)
p.add_argument("--heat-ps", type=float, default=2.0)
p.add_argument("--nvt-ps", type=float, default=2.0)
p.add_argument("--save-every-fs", type=float, default=100.0, help="frame interval; 250+ keeps a 60 ps run small enough to carry")
p.add_argument("--small", action="store_true", help="60-atom cells (a quick check of the script)")
p.add_argument("--barostat", default=None, help="iso|aniso|tri where the MD supports it")
p.add_argument("--resume", action="store_true", help="continue OUT/<model> from its checkpoint (a run spanning calls)")
args = p.parse_args()

reps = ((2, 1, 1), (3, 1, 1)) if args.small else ((2, 2, 4), (4, 2, 3))
cells = {"LYC": read(here / "LYC30.cif") * reps[0], "LYB": read(here / "LYB20.cif") * reps[1]}
names = [n for n in cells for _ in args.temperatures]
temps = tuple(t for _ in cells for t in args.temperatures)
structures = [cells[n] for n in names]
report = {"temperatures_K": list(temps), "structures": names, "npt_ps": args.npt_ps, "dt_fs": args.dt_fs,
          "atoms": len(structures[0]), "experiment_A3_per_atom": EXPERIMENT, "models": {}}
for spec in args.model:
    model = load_model(spec)
    out = Path(args.out) / Path(spec).name
    extra = {"barostat": args.barostat} if args.barostat else {}
    proto = md.Protocol(temperatures_K=temps, dt_fs=args.dt_fs, heat_ps=args.heat_ps, nvt_ps=args.nvt_ps, npt_ps=args.npt_ps,
                        npt_average_ps=args.npt_ps / 2, production_ps=0.0, save_every_fs=args.save_every_fs, chunk_ps=min(2.0, args.npt_ps / 2),
                        checkpoint_every_ps=min(2.0, max(args.npt_ps / 4, 0.01)), **extra)
    t0 = time.time()
    md.Simulation(model, structures, proto, out, resume=args.resume).run()
    wall = time.time() - t0
    with read_trajectory(out / "trajectory.h5") as f:
        g = f["npt"]
        vol = np.asarray(g["volume"]) / len(structures[0])  # [replica, frame], A^3/atom
        cell = np.asarray(g["cell"])  # [replica, frame, 3, 3]
        pressure = np.asarray(g["pressure"])  # [replica, frame], bar
    half = vol.shape[1] // 2
    rows = []
    for r, (n, t) in enumerate(zip(names, temps)):
        v = vol[r, half:]
        slope = np.polyfit(np.arange(v.size) * args.save_every_fs / 1000, v, 1)[0]  # A^3/atom per ps
        lengths = np.linalg.norm(cell[r, half:], axis=-1).mean(0)
        rows.append({"structure": n, "T_K": t, "volume_A3_per_atom": float(v.mean()), "volume_std": float(v.std()),
                     "pressure_bar_mean": float(pressure[r, half:].mean()),
                     "vs_experiment_pct": 100 * (v.mean() / EXPERIMENT[n] - 1),
                     "drift_pct_per_10ps": 100 * slope * 10 / v.mean(),
                     "max_volume_A3_per_atom": float(vol[r].max()), "cell_lengths_A": lengths.tolist(),
                     "runaway": bool(abs(slope * 10 / v.mean()) > 0.02),  # still drifting > 2% per 10 ps
                     "above_130pct_of_experiment": bool(vol[r].max() > 1.3 * EXPERIMENT[n])})
    report["models"][spec] = {"wall_s": wall, "rows": rows}
    for row in rows:
        print(f"{Path(spec).name:24s} {row['structure']} {row['T_K']:6.0f} K  V {row['volume_A3_per_atom']:6.2f} "
              f"A^3/atom ({row['vs_experiment_pct']:+5.1f}% vs exp), drift {row['drift_pct_per_10ps']:+5.2f}%/10ps, "
              f"max {row['max_volume_A3_per_atom']:6.2f}{'  RUNAWAY' if row['runaway'] else ''}{'  >1.3 x exp' if row['above_130pct_of_experiment'] else ''}")
    print(f"{spec}: {wall:.0f} s")
    (Path(args.out) / "npt_validation.json").write_text(json.dumps(report, indent=1, default=float))  # after each model
