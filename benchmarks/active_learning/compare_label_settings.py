"""How much the DFT settings move the labels of the same frames (issue 32): settings A (default: rounds 0-2,
400 eV, k 1.5 per 2 pi/A, in labels.db) against settings B (default: 400 eV, k 2.5, corrected to the converged
cut-off with basis_stress.json's fit), per frame and as means. Energies in meV/atom (mean shift removed), forces
meV/A, stress and pressure GPa (pressure = -trace/3 of the ASE stress; positive pushes outward).

    python compare_label_settings.py cand_LYC30_r1.extxyz --db-b /tmp/k25.db --out results/settings_LYC30_r1.json
"""
import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from ase.io import read

from lycb_jax.active.labellers import BasisCorrection, LabelCache, gpaw_labeller
from lycb_jax.units import EV_A3_TO_GPA

here = Path(__file__).parent
parser = argparse.ArgumentParser()
parser.add_argument("candidates")
parser.add_argument("--db-a", default=str(here / "labels.db"))
parser.add_argument("--ecut-a", type=float, default=400.0)
parser.add_argument("--k-a", type=float, default=1.5)
parser.add_argument("--db-b", default=str(here / "labels.db"))
parser.add_argument("--ecut-b", type=float, default=400.0)
parser.add_argument("--k-b", type=float, default=2.5)
parser.add_argument("--basis-correction-b", default=str(here / "basis_stress.json"), help="'' for none")
parser.add_argument("--out", required=True)
args = parser.parse_args()

sa = gpaw_labeller(ecut_eV=args.ecut_a, kpoint_density=args.k_a).settings
sb = gpaw_labeller(ecut_eV=args.ecut_b, kpoint_density=args.k_b).settings
ca, cb = LabelCache(args.db_a), LabelCache(args.db_b)
corr = (BasisCorrection(**json.loads(Path(args.basis_correction_b).read_text())["correction"])
        if args.basis_correction_b else None)
rows = []
for k, c in enumerate(read(args.candidates, index=":")):
    a, b = ca.get(c, sa), cb.get(c, sb)
    if a is None or b is None:
        continue
    b = corr.apply(b) if corr else b
    sa_, sb_ = (x.get_stress(voigt=True) * EV_A3_TO_GPA for x in (a, b))
    df = b.get_forces() - a.get_forces()
    rows.append(dict(frame=k, dE_meV_atom=1e3 * (b.get_potential_energy() - a.get_potential_energy()) / len(a),
                     dF_max_meV_A=1e3 * float(np.abs(df).max()), dF_mae_meV_A=1e3 * float(np.abs(df).mean()),
                     dstress_max_GPa=float(np.abs(sb_ - sa_).max()), dP_GPa=float(-(sb_[:3] - sa_[:3]).mean()),
                     P_a_GPa=float(-sa_[:3].mean()), P_b_GPa=float(-sb_[:3].mean())))
if not rows:
    raise SystemExit(f"no frame of {args.candidates} has labels with both settings")
de = np.array([r["dE_meV_atom"] for r in rows])
dp = np.array([r["dP_GPa"] for r in rows])
out = dict(candidates=args.candidates, settings_a=dict(sa), settings_b=dict(sb), basis_correction_b=args.basis_correction_b,
           date=datetime.date.today().isoformat(), frames=len(rows),
           dE_shift_meV_atom=float(de.mean()), dE_spread_meV_atom=float(de.std()),
           dF_mae_meV_A=float(np.mean([r["dF_mae_meV_A"] for r in rows])),
           dF_max_meV_A=float(max(r["dF_max_meV_A"] for r in rows)),
           dstress_max_GPa=float(max(r["dstress_max_GPa"] for r in rows)),
           dP_mean_GPa=float(dp.mean()), dP_std_GPa=float(dp.std()), per_frame=rows)
print(f"{args.candidates}: {len(rows)} frames; B - A: E {out['dE_shift_meV_atom']:+.1f} +- {out['dE_spread_meV_atom']:.1f} "
      f"meV/atom, F MAE {out['dF_mae_meV_A']:.1f} (max {out['dF_max_meV_A']:.0f}) meV/A, stress max "
      f"{out['dstress_max_GPa']:.3f} GPa, P {out['dP_mean_GPa']:+.3f} +- {out['dP_std_GPa']:.3f} GPa")
Path(args.out).write_text(json.dumps(out, indent=1))
