"""Convergence of the round-0 labels: the first LYC30 and the first LYB20 candidate at 400 eV / 1.5 per 2 pi/A
(the production settings) against 550 eV and against k-point density 2.5 per 2 pi/A; energies eV/atom,
forces eV/A, stress GPa (ASE sign). Results into convergence.json (cached in labels.db like every label).

    OPENBLAS_NUM_THREADS=1 python convergence.py [LYC30|LYB20] [--round r0] [--index 0] [--only k2.5]
    python convergence.py LYC30 --round r1 --only k2.5 k3.5   # also each setting against the previous one
    python convergence.py LYC30 --round r1 --only k2.5 ecut550_k2.5 ecut700_k2.5   # the cut-off at k 2x2x3
"""
import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read

from lycb_jax.active.labellers import gpaw_labeller, label_structures
from lycb_jax.units import EV_A3_TO_GPA

here = Path(__file__).parent
parser = argparse.ArgumentParser()
parser.add_argument("parent", nargs="?", default="LYC30")
parser.add_argument("--round", default="r0", help="candidates file cand_<parent>_<round>.extxyz")
parser.add_argument("--index", type=int, default=0, help="frame in the candidates file")
parser.add_argument("--only", nargs="*", default=["ecut550", "k2.5"], help="settings compared to production")
args = parser.parse_args()
atoms = read(here / f"cand_{args.parent}_{args.round}.extxyz", index=args.index)
settings = {"production": (400.0, 1.5), "ecut550": (550.0, 1.5), "k2.5": (400.0, 2.5), "k3.5": (400.0, 3.5),
            "ecut550_k2.5": (550.0, 2.5), "ecut700_k2.5": (700.0, 2.5),
            "ecut850_k2.5": (850.0, 2.5), "ecut1000_k2.5": (1000.0, 2.5)}
settings = {k: v for k, v in settings.items() if k == "production" or k in args.only}
res = {}
for key, (ecut, kd) in settings.items():
    (lab,) = label_structures([atoms], gpaw_labeller(ecut_eV=ecut, kpoint_density=kd), here / "labels.db",
                              progress=False)
    res[key] = {"e_per_atom": lab.get_potential_energy() / len(lab), "forces": lab.get_forces(),
                "stress_GPa": lab.get_stress() * EV_A3_TO_GPA}
ref = res["production"]
out = {}
for key in args.only:
    r = res[key]
    out[key] = {"dE_meV_atom": 1000 * (r["e_per_atom"] - ref["e_per_atom"]),
                "dF_max_eV_A": float(np.abs(r["forces"] - ref["forces"]).max()),
                "dF_mae_eV_A": float(np.abs(r["forces"] - ref["forces"]).mean()),
                "dS_max_GPa": float(np.abs(r["stress_GPa"] - ref["stress_GPa"]).max()),
                "dP_GPa": float(-(r["stress_GPa"][:3].mean() - ref["stress_GPa"][:3].mean()))}
for a, b in zip(args.only, args.only[1:]):  # successive settings: how much the last step still moves
    ra, rb = res[a], res[b]
    out[f"{b}_vs_{a}"] = {"dE_meV_atom": 1000 * (rb["e_per_atom"] - ra["e_per_atom"]),
                          "dF_max_eV_A": float(np.abs(rb["forces"] - ra["forces"]).max()),
                          "dS_max_GPa": float(np.abs(rb["stress_GPa"] - ra["stress_GPa"]).max()),
                          "dP_GPa": float(-(rb["stress_GPa"][:3].mean() - ra["stress_GPa"][:3].mean()))}
out["production_pressure_GPa"] = float(-ref["stress_GPa"][:3].mean())
path = here / "convergence.json"
allres = json.loads(path.read_text()) if path.exists() else {}
name = args.parent if (args.round, args.index) == ("r0", 0) else f"{args.parent}_{args.round}_{args.index}"
allres[name] = out
path.write_text(json.dumps(allres, indent=1))
print(name, json.dumps(out, indent=1))
