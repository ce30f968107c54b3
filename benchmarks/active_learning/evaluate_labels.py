"""Errors of shipped models on the labels a candidates file has so far (issue 32), per frame and as means.

    python benchmarks/active_learning/evaluate_labels.py cand_LYCB40_x4.5_r3.extxyz --ecut 700 --kpoint-density 2.5 \
        --models chgnet-0.3.0-lycb-pbe sevennet-0-lycb-pbe --out results/lycb_r3_labels.json

Reads the GPAW labels from the label cache (``labels.db``; frames not yet labelled are skipped and counted),
predicts them with each model (lycb_jax.predict, float32) and writes energy (meV/atom, after removing the
mean offset over the frames, the DFT reference shift), force MAE (meV/A), stress MAE (GPa, 6 components) and
pressure (GPa) per frame and per model. The mean energy offset is reported separately: the models were
trained on 400 eV / k 1.5 labels, which sit ~25 meV/atom higher than these (convergence.json).
"""
import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from ase.io import read
from ase.stress import full_3x3_to_voigt_6_stress

import lycb_jax
from lycb_jax.active.labellers import BasisCorrection, LabelCache, gpaw_labeller
from lycb_jax.units import EV_A3_TO_GPA

here = Path(__file__).parent
parser = argparse.ArgumentParser()
parser.add_argument("candidates")
parser.add_argument("--ecut", type=float, default=700.0, help="plane-wave cutoff of the labels, eV")
parser.add_argument("--kpoint-density", type=float, default=2.5, help="k-points per 2 pi/A of the labels")
parser.add_argument("--db", default=str(here / "labels.db"))
parser.add_argument("--basis-correction", metavar="JSON", help="shift the labels to the converged cut-off with the "
                    "fit of basis_stress.py (its JSON), e.g. for 400 eV labels: basis_stress.json")
parser.add_argument("--models", nargs="+", default=["chgnet-0.3.0-lycb-pbe", "sevennet-0-lycb-pbe"])
parser.add_argument("--out", required=True)
args = parser.parse_args()

settings = gpaw_labeller(ecut_eV=args.ecut, kpoint_density=args.kpoint_density).settings
cache = LabelCache(args.db)
candidates = read(args.candidates, index=":")
labelled = [(k, a) for k, a in enumerate(cache.get(c, settings) for c in candidates) if a is not None]
if not labelled:
    raise SystemExit(f"no frame of {args.candidates} is labelled yet with {settings}")
frames = [a for _, a in labelled]
if args.basis_correction:
    corr = BasisCorrection(**json.loads(Path(args.basis_correction).read_text())["correction"])
    frames = [corr.apply(a) for a in frames]
n = np.array([len(a) for a in frames])
e_dft = np.array([a.get_potential_energy() for a in frames]) / n
f_dft = [a.get_forces() for a in frames]
s_dft = [a.get_stress(voigt=True) * EV_A3_TO_GPA for a in frames]  # ASE sign, 6 components

out = {"candidates": args.candidates, "frames_labelled": [k for k, _ in labelled], "frames_total": len(candidates),
       "label_settings": {"ecut_eV": args.ecut, "kpoint_density": args.kpoint_density,
                          "basis_correction": args.basis_correction},
       "date": datetime.date.today().isoformat(), "dft_pressure_GPa": [float(-s[:3].mean()) for s in s_dft],
       "models": {}}
for name in args.models:
    preds = lycb_jax.predict(lycb_jax.load_model(name), frames)
    de = np.array([p.energy_per_atom for p in preds]) - e_dft
    voigt = [full_3x3_to_voigt_6_stress(np.asarray(p.stress)) for p in preds]  # ASE's order, as s_dft
    per = [{"frame": k, "dE_meV_atom": 1e3 * float(d - de.mean()), "force_mae_meV_A": 1e3 * float(np.abs(p.forces - f).mean()),
            "stress_mae_GPa": float(np.abs(v - s).mean()), "pressure_GPa": float(-v[:3].mean())}
           for (k, _), d, p, f, v, s in zip(labelled, de, preds, f_dft, voigt, s_dft)]
    out["models"][name] = {"energy_offset_meV_atom": 1e3 * float(de.mean()),
                           "energy_rmse_meV_atom_after_offset": 1e3 * float(np.sqrt(np.mean((de - de.mean()) ** 2))),
                           "force_mae_meV_A": float(np.mean([r["force_mae_meV_A"] for r in per])),
                           "stress_mae_GPa": float(np.mean([r["stress_mae_GPa"] for r in per])), "per_frame": per}
    m = out["models"][name]
    print(f"{name}: {len(frames)} frames, E offset {m['energy_offset_meV_atom']:+.1f} meV/atom, E RMSE after offset "
          f"{m['energy_rmse_meV_atom_after_offset']:.1f} meV/atom, F MAE {m['force_mae_meV_A']:.0f} meV/A, "
          f"S MAE {m['stress_mae_GPa']:.3f} GPa")
Path(args.out).write_text(json.dumps(out, indent=1))
