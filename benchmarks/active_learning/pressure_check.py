"""Virial pressure (GPa; from the stress, no kinetic term) of the DFT labels against the models', per
labelled file: is a model's large NpT volume the model's error or what the DFT labels say?

    python pressure_check.py [labelled_*.extxyz ...] [--models chgnet-0.3.0 models/r0_default models/r1_int]

At temperature T the NpT cell is in balance when virial + kinetic (N k T / V) pressure = the target.
"""
import argparse
from pathlib import Path

import numpy as np
from ase.io import read

from lycb_jax import load_model, predict
from lycb_jax.units import EV_A3_TO_GPA, KB

here = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument("files", nargs="*", default=sorted(str(f) for f in here.glob("labelled_*_r*.extxyz")))
p.add_argument("--models", nargs="+", default=["chgnet-0.3.0", "models/r0_default", "models/r1_int"])
args = p.parse_args()
models = {m: load_model(m if not m.startswith("models/") else str(here / m)) for m in args.models}
for f in args.files:
    frames = read(f, ":")
    dft = np.array([-np.trace(a.get_stress(voigt=False)) / 3 * EV_A3_TO_GPA for a in frames])
    vol = np.array([a.get_volume() / len(a) for a in frames])  # A^3/atom
    temps = np.array([a.info.get("T_K", np.nan) for a in frames])
    kinetic = KB * temps / vol * EV_A3_TO_GPA  # GPa, N k T / V per atom
    line = (f"{Path(f).name:28s} V {vol.mean():5.1f} A^3/atom, T {np.nanmean(temps):4.0f} K: DFT virial P {dft.mean():+.2f} GPa "
            f"(+ kinetic {np.nanmean(kinetic):.2f})")
    for name, m in models.items():
        mp = np.array([-np.trace(np.asarray(r.stress)) / 3 for r in predict(m, frames)])
        line += f" | {Path(name).name} {mp.mean():+.2f} (MAE {np.abs(mp - dft).mean():.3f})"
    print(line, flush=True)
