"""The volume table of issue 28 from the GPU NpT check (npt_check.sh): per model, structure and temperature the
NpT volume and a, b, c against experiment (Schlem 2021), whether the cell settled, and each model's volumetric
thermal expansion coefficient over the temperatures run.

    python benchmarks/dispersion/collect_npt.py RESULTS_DIR   (holds npt_d3bj/ and npt_none/ with npt_sweep.json)

Writes RESULTS_DIR/volume_table.{json,csv} and npt_volume.png (the NpT volume traces with the averaging window, and
V(T) against experiment) and prints a markdown table. Units: A, A^3/atom, K, ps, 1/K."""

import csv
import json
import sys
from pathlib import Path

import numpy as np

# Schlem et al. 2021 (../shared/reference/README.md; lycb_jax/data/*Schlem2021.cif): room temperature
EXPERIMENT = {"LYC0": dict(volume=21.93, abc=(11.2093, 11.2093, 6.0469)),   # P-3m1
              "LYB0": dict(volume=26.75, abc=(6.9188, 11.9742, 6.8635))}  # C2/m
ORDERED_C = {"LYC0": 2, "LYB0": 2}  # the ordered 60/40-atom cells double the experimental c (P-3c1, C2/c)
LABELS = {"npt_none": "fine-tuned", "npt_d3bj": "fine-tuned + D3(BJ)"}


def rows_of(folder: Path, label: str) -> list[dict]:
    res = json.loads((folder / "npt_sweep.json").read_text())
    mult = {name: [int(x) for x in m.split(",")] for name, m in zip(("LYC0", "LYB0"), res["protocol"]["supercells"])}
    rows = []
    for r in res["per_replica"]:
        name, exp = r["structure"], EXPERIMENT[r["structure"]]
        per_cell = [x / m for x, m in zip(r["cell_abc_A"], mult[name])]
        per_cell[2] /= ORDERED_C[name]
        rows.append(dict(model=label, structure=name, T_K=r["T_K"], alive=r["alive"],
                         volume_A3_per_atom=round(r["npt_volume_A3_per_atom"], 3),
                         volume_vs_exp_pct=round(100 * (r["npt_volume_A3_per_atom"] / exp["volume"] - 1), 2),
                         **{f"{ax}_A": round(v, 4) for ax, v in zip("abc", per_cell)},
                         **{f"{ax}_vs_exp_pct": round(100 * (v / e - 1), 2) for ax, v, e in zip("abc", per_cell, exp["abc"])},
                         angles_deg=r["cell_angles_deg"],
                         window_halves_A3_per_atom=r.get("npt_window_halves_A3_per_atom"),
                         window_slope_A3_per_atom_per_ps=r.get("npt_window_slope_A3_per_atom_per_ps"),
                         drift_npt_meV_atom_ps=r.get("drift_npt_meV_atom_ps")))
    return rows


def expansion(rows: list[dict]) -> list[dict]:
    """alpha_V = (dV/dT) / V(lowest T), 1/K, from a straight line through each model's and structure's volumes."""
    out = []
    for key in sorted({(r["model"], r["structure"]) for r in rows}):
        sel = sorted((r for r in rows if (r["model"], r["structure"]) == key and r["alive"]), key=lambda r: r["T_K"])
        if len(sel) < 2:
            continue
        t = np.array([r["T_K"] for r in sel])
        v = np.array([r["volume_A3_per_atom"] for r in sel])
        slope = np.polyfit(t, v, 1)[0]
        out.append(dict(model=key[0], structure=key[1], T_range_K=[float(t[0]), float(t[-1])],
                        alpha_V_per_K=float(slope / v[0])))
    return out


def plot(folder: Path, rows: list[dict], out: Path) -> None:
    """Left: each replica's NpT volume trace (the averaging window shaded); right: V(T) against experiment."""
    import matplotlib

    from lycb_jax.md.trajectory import read_trajectory

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), gridspec_kw=dict(width_ratios=[2, 1]))
    styles = {"npt_none": "-", "npt_d3bj": "--"}
    colours = {300.0: "tab:blue", 500.0: "tab:orange", 700.0: "tab:red"}
    for i, name in enumerate(("LYC0", "LYB0")):
        trace, vt = axes[i]
        for sub, label in LABELS.items():
            res = json.loads((folder / sub / "npt_sweep.json").read_text())
            with read_trajectory(folder / sub / "thermo.h5") as f:  # extract.py's trajectory.h5 less positions
                t_ps = f["npt/time_fs"][:] / 1000
                for r, rep in enumerate(res["per_replica"]):
                    if rep["structure"] == name:
                        trace.plot(t_ps, f["npt/volume"][r] / res["atoms"], styles[sub], lw=0.8,
                                   color=colours.get(rep["T_K"], "k"), label=f"{label}, {rep['T_K']:.0f} K")
            avg = res["protocol"]["npt_average_ps"]
            trace.axvspan(t_ps[-1] - avg, t_ps[-1], color="0.93", zorder=0)
            sel = sorted((r for r in rows if r["model"] == label and r["structure"] == name), key=lambda r: r["T_K"])
            vt.plot([r["T_K"] for r in sel], [r["volume_A3_per_atom"] for r in sel], styles[sub] + "o", label=label)
        for ax in (trace, vt):
            ax.axhline(EXPERIMENT[name]["volume"], color="k", lw=1, ls=":")
        vt.plot([295], [EXPERIMENT[name]["volume"]], "k*", ms=10, label="experiment (room T)")
        vt.fill_between([250, 750], 0.97 * EXPERIMENT[name]["volume"], 1.03 * EXPERIMENT[name]["volume"],
                        color="0.9", zorder=0, label="experiment +-3%")
        trace.set(title=f"{name}: NpT 1 bar (tri), 480 atoms; shaded: averaging window", xlabel="NpT time (ps)",
                  ylabel="volume (A^3/atom)")
        vt.set(title=f"{name}: NpT volume", xlabel="T (K)", ylabel="volume (A^3/atom)", xlim=(250, 750))
        trace.legend(fontsize=7, ncol=2)
        vt.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(folder: str):
    folder = Path(folder)
    rows = [row for sub, label in LABELS.items() if (folder / sub / "npt_sweep.json").exists()
            for row in rows_of(folder / sub, label)]
    result = dict(experiment=EXPERIMENT, rows=rows, expansion=expansion(rows))
    (folder / "volume_table.json").write_text(json.dumps(result, indent=1))
    plot(folder, rows, folder / "npt_volume.png")
    keys = [k for k in rows[0] if k not in ("angles_deg", "window_halves_A3_per_atom")]
    with open(folder / "volume_table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print("| model | structure | T (K) | V (A^3/atom) | vs exp | a | b | c | window halves | slope (A^3/atom/ps) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['structure']} | {r['T_K']:.0f} | {r['volume_A3_per_atom']:.2f} | "
              f"{r['volume_vs_exp_pct']:+.1f}% | {r['a_vs_exp_pct']:+.1f}% | {r['b_vs_exp_pct']:+.1f}% | "
              f"{r['c_vs_exp_pct']:+.1f}% | {r['window_halves_A3_per_atom']} | {r['window_slope_A3_per_atom_per_ps']:+.3f} |")
    for e in result["expansion"]:
        print(f"{e['model']} {e['structure']}: alpha_V = {e['alpha_V_per_K'] * 1e6:.0f}e-6 /K over {e['T_range_K']} K")


if __name__ == "__main__":
    main(sys.argv[1])
