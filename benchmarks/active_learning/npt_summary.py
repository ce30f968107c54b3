"""Summary of an NpT stage in a trajectory.h5 (also of a run stopped mid-stage): per replica the mean
volume per atom over the second half of the frames written, the drift over that half, cell lengths,
pressure, and a runaway flag. Replica order: LYC at each temperature, then LYB (npt_validation.py).

    python npt_summary.py TRAJ.h5 [-T 300 500 800]
"""
import argparse
import json

import numpy as np

from lycb_jax.md.trajectory import read_trajectory

EXPERIMENT = {"LYC": 21.93, "LYB": 26.75}  # A^3/atom, Schlem et al. 2021 (../shared/reference)


def summarize(path, names, temps):
    with read_trajectory(path) as f:
        g = f["npt"]
        n_atoms = g["positions"].shape[2]
        vol = np.asarray(g["volume"]) / n_atoms  # [replica, frame], A^3/atom
        cell = np.asarray(g["cell"])
        pressure = np.asarray(g["pressure"])  # bar
        temperature = np.asarray(g["temperature"])
        t_ps = np.asarray(g["time_fs"]) / 1000
    half = vol.shape[1] // 2
    rows = []
    for r, (n, t) in enumerate(zip(names, temps)):
        v = vol[r, half:]
        slope = np.polyfit(t_ps[half:], v, 1)[0]  # A^3/atom per ps
        rows.append({"structure": n, "T_K": t, "npt_ps_written": float(t_ps[-1]),
                     "volume_A3_per_atom": float(v.mean()), "volume_std": float(v.std()),
                     "vs_experiment_pct": 100 * (v.mean() / EXPERIMENT[n] - 1),
                     "drift_pct_per_10ps": 100 * slope * 10 / v.mean(),
                     "max_volume_A3_per_atom": float(vol[r].max()),
                     "cell_lengths_A": np.linalg.norm(cell[r, half:], axis=-1).mean(0).tolist(),
                     "pressure_bar_mean": float(pressure[r, half:].mean()),
                     "temperature_K_mean": float(temperature[r, half:].mean()),
                     "runaway": bool(abs(slope * 10 / v.mean()) > 0.02),  # still drifting > 2% per 10 ps
                     "above_130pct_of_experiment": bool(vol[r].max() > 1.3 * EXPERIMENT[n])})
    return rows


def print_rows(label, rows):
    for row in rows:
        print(f"{label:24s} {row['structure']} {row['T_K']:6.0f} K  V {row['volume_A3_per_atom']:6.2f} A^3/atom "
              f"({row['vs_experiment_pct']:+5.1f}% vs exp), drift {row['drift_pct_per_10ps']:+5.2f}%/10ps, "
              f"max {row['max_volume_A3_per_atom']:6.2f}, P {row['pressure_bar_mean']:+7.0f} bar, "
              f"T {row['temperature_K_mean']:5.0f} K, {row['npt_ps_written']:.1f} ps{'  RUNAWAY' if row['runaway'] else ''}{'  >1.3 x exp' if row['above_130pct_of_experiment'] else ''}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("trajectory")
    p.add_argument("-T", "--temperatures", type=float, nargs="+", default=[300.0, 500.0, 800.0])
    args = p.parse_args()
    names = [n for n in EXPERIMENT for _ in args.temperatures]
    temps = [t for _ in EXPERIMENT for t in args.temperatures]
    rows = summarize(args.trajectory, names, temps)
    print_rows(args.trajectory, rows)
    print(json.dumps(rows, default=float))
