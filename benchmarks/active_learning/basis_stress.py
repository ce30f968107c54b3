"""Issue 32: can labels computed at a lower plane-wave cut-off be brought to the converged stress by a constant,
isotropic, composition-linear correction? (A finite plane-wave basis adds a Pulay stress that depends on the PAW
setups present, hardly on the geometry.) For every structure in labels.db with labels at LOW and HIGH cut-off
(same k-point density), the stress difference HIGH - LOW: its isotropic part as a pressure shift dP (GPa) and its
largest deviatoric component (GPa). Model: dP * V = sum over halide atoms of b_X (eV, per Cl or Br atom; Li and Y
come in the fixed ratio Li3YX6, so their share is folded into b_X). b_Cl and b_Br are fitted on the pure
structures (least squares) and the model is tested on every mixed Cl/Br structure (residual, GPa); the same for
the energy shift (meV per halide atom; a composition-linear energy shift is absorbed by the composition refit).

    python basis_stress.py [--low 400] [--high 700] [--k 2.5]   # writes basis_stress.json beside it
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from ase.db import connect

from lycb_jax.active import BasisCorrection
from lycb_jax.units import EV_A3_TO_GPA

here = Path(__file__).parent


def labels_at(db, ecut: float, k: float) -> dict:
    """structure key -> row, for GPAW labels at (ecut eV, k points per 2 pi/A)."""
    out = {}
    for row in db.select():
        s = row.data.get("settings", {})
        if s.get("code") == "gpaw" and s.get("ecut_eV") == ecut and s.get("kpoint_density_per_2pi_A") == k:
            out[row.structure] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", type=float, default=400.0, help="cut-off of the cheap labels, eV")
    ap.add_argument("--high", type=float, default=700.0, help="converged cut-off, eV")
    ap.add_argument("--k", type=float, default=2.5, help="k-point density of both, per 2 pi/A")
    ap.add_argument("--db", default=str(here / "labels.db"))
    args = ap.parse_args()
    db = connect(args.db)
    low, high = labels_at(db, args.low, args.k), labels_at(db, args.high, args.k)
    rows, pairs = [], []
    for key in sorted(set(low) & set(high)):
        a, b = low[key], high[key]
        pairs.append((a.toatoms(), b.toatoms()))
        d = (np.asarray(b.stress) - np.asarray(a.stress)) * EV_A3_TO_GPA  # Voigt, ASE sign (positive = tensile)
        dp = -d[:3].mean()
        dev = np.concatenate([d[:3] + dp, d[3:]])
        z = np.asarray(a.numbers)
        rows.append(dict(formula=a.formula, natoms=int(a.natoms), volume_A3=float(a.volume), n_Cl=int((z == 17).sum()),
                         n_Br=int((z == 35).sum()), dP_GPa=float(dp), dev_max_GPa=float(np.abs(dev).max()),
                         dF_max_eV_A=float(np.abs(b.forces - a.forces).max()),
                         dE_meV_atom=float(1000 * (b.energy - a.energy) / a.natoms)))
    if not rows:
        raise SystemExit(f"no structure with labels at both {args.low} and {args.high} eV (k {args.k}) in {args.db}")
    pure = [i for i, r in enumerate(rows) if r["n_Cl"] == 0 or r["n_Br"] == 0]
    mixed = [r for r in rows if r["n_Cl"] and r["n_Br"]]
    fit = correction = None
    if len({(rows[i]["n_Cl"] > 0, rows[i]["n_Br"] > 0) for i in pure}) == 2:  # both pure halides present
        corr = BasisCorrection.fit([pairs[i][0] for i in pure], [pairs[i][1] for i in pure], elements=("Cl", "Br"))
        fit = dict(b_Cl_eV=corr.pv_eV["Cl"], b_Br_eV=corr.pv_eV["Br"], e_Cl_meV=1000 * corr.energy_eV["Cl"],
                   e_Br_meV=1000 * corr.energy_eV["Br"])
        correction = dataclasses.asdict(corr)  # BasisCorrection(**correction) applies it (evaluate_labels.py)
        for r, (a, b) in zip(rows, pairs):
            got = corr.apply(a)
            r["dP_model_GPa"] = float(-(got.get_stress()[:3] - a.get_stress()[:3]).mean() * EV_A3_TO_GPA)
            r["residual_GPa"] = r["dP_GPa"] - r["dP_model_GPa"]
            r["dE_residual_meV_atom"] = float(1000 * (b.get_potential_energy() - got.get_potential_energy()) / len(a))
    pure = [rows[i] for i in pure]
    res = dict(low_eV=args.low, high_eV=args.high, k_density=args.k, fit_on=[r["formula"] for r in pure],
               tested_on=[r["formula"] for r in mixed], fit=fit, correction=correction, structures=rows)
    (here / "basis_stress.json").write_text(json.dumps(res, indent=1))
    print(f"{args.low:g} -> {args.high:g} eV at k {args.k}: {len(rows)} structures ({len(pure)} pure, {len(mixed)} mixed)")
    if fit:
        print(f"fit on the pure ones: b_Cl {fit['b_Cl_eV']:.4f} eV, b_Br {fit['b_Br_eV']:.4f} eV per halide atom")
    for r in rows:
        model = (f"  model {r['dP_model_GPa']:+.3f}  residual {r['residual_GPa']:+.4f} GPa, dE residual "
                 f"{r['dE_residual_meV_atom']:+.2f} meV/atom") if fit else ""
        print(f"{r['formula']:>16s} V {r['volume_A3']:7.1f}  dP {r['dP_GPa']:+.3f} GPa  deviatoric max "
              f"{r['dev_max_GPa']:.4f}  dF max {1000 * r['dF_max_eV_A']:.1f} meV/A{model}")


if __name__ == "__main__":
    main()
