"""Collect every reproduction run (benchmarks/results/reproduction/<run>/) into one table:
summary.json and summary.csv beside the runs. Per run and structure: model, pressure (bar), the tracer
Arrhenius line (converged T, Ea eV, sigma(300 K) mS/cm with 1-sigma errors, its note), the collective line
or its refusal, the not-converged temperatures with reasons, and per T the production volume (the NpT
average cell, A^3/atom) and the NpT cell lengths (mean of the last 40% of the NpT stage, A; from the
independent check xcheck.json). Run: python benchmarks/reproduction/collect.py"""

import csv
import json
import sys
from pathlib import Path

from lycb_jax.analysis.report import TWO_POINT_NOTE

ROOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "reproduction"


def collect(root: Path = ROOT) -> list[dict]:
    rows = []
    for run_dir in sorted(p for p in root.iterdir() if (p / "run.json").exists()):
        run = json.loads((run_dir / "run.json").read_text())
        xcheck = json.loads((run_dir / "xcheck.json").read_text()) if (run_dir / "xcheck.json").exists() else {}
        for name in run["structures"]:
            s = json.loads((run_dir / name / "transport.json").read_text())
            n_atoms = 480
            coll = s.get("collective") or {}
            xrows = {r["T"]: r for r in xcheck.get("rows", []) if r["structure"] == name}
            per_t = [dict(T=r["T"], converged=r["converged"], reason=r["reason"], D=r["D"], D_err=r["D_err"],
                          volume_A3_per_atom=r["volume_A3"] / n_atoms,
                          npt_abc_A=xrows.get(r["T"], {}).get("npt_abc"),
                          xcheck_D=xrows.get(r["T"], {}).get("D_cm2s"))
                     for r in s["per_temperature"]]
            rows.append(dict(run=run["run"], model=run["model"], dispersion=run.get("dispersion"),
                             pressure_bar=run["pressure_bar"], structure=name, device=run["device"], date=run["date"],
                             wall_s=run["wall_s"], converged_T=s["converged_T"], Ea=s["Ea"], Ea_err=s["Ea_err"],
                             sigma300=s["sigma_extrapolated"], sigma300_err=s["sigma_extrapolated_err"],
                             n_points=len(s["converged_T"]),
                             note=s.get("arrhenius_note") or (TWO_POINT_NOTE if len(s["converged_T"]) == 2 else None),
                             refused=s.get("arrhenius_refused"),
                             collective=dict(converged_T=coll.get("converged_T"), Ea=coll.get("Ea"),
                                             sigma300=coll.get("sigma_extrapolated"), refused=coll.get("refused")),
                             not_converged=s["not_converged"], per_temperature=per_t))
    return rows


def main(root: Path = ROOT) -> None:
    rows = collect(root)
    (root / "summary.json").write_text(json.dumps(rows, indent=1))
    fields = ["run", "model", "dispersion", "pressure_bar", "structure", "converged_T", "Ea", "Ea_err", "sigma300",
              "sigma300_err", "note", "volumes_A3_per_atom", "device", "date", "wall_s"]
    with (root / "summary.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "converged_T": " ".join(f"{t:g}" for t in r["converged_T"]),
                        "volumes_A3_per_atom": " ".join(f"{p['T']:g}:{p['volume_A3_per_atom']:.2f}"
                                                        for p in r["per_temperature"])})
    for r in rows:
        ea = "refused" if r["Ea"] is None else f"{r['Ea']:.3f} +- {r['Ea_err']:.3f} eV"
        sig = "" if r["sigma300"] is None else f", sigma300 {r['sigma300']:.3g} +- {r['sigma300_err']:.2g} mS/cm"
        print(f"{r['run']:20s} {r['structure']:5s} Ea {ea}{sig} from {r['converged_T']} K")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
