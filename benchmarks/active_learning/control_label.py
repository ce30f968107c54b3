"""Recompute the first labelled LYC30 structure of labels.db into another cache and compare (same settings):
checks that a GPAW built elsewhere (the device machine) gives the same labels."""
import sys
from pathlib import Path

import numpy as np

from lycb_jax.active.labellers import LabelCache, gpaw_labeller, label_structures
from ase.io import read

here = Path(__file__).parent
lab = gpaw_labeller(ecut_eV=400.0, kpoint_density=1.5)
ref_cache = LabelCache(here / "labels.db")
for atoms in read(here / "cand_LYC30_r0.extxyz", index=":"):
    ref = ref_cache.get(atoms, lab.settings)
    if ref is not None:
        break
new = label_structures([atoms], lab, sys.argv[1], workers=1, progress=False)[0]
n = len(atoms)
print(f"energy difference {abs(new.get_potential_energy() - ref.get_potential_energy()) / n * 1e3:.4f} meV/atom, "
      f"forces max {np.abs(new.get_forces() - ref.get_forces()).max() * 1e3:.4f} meV/A, "
      f"stress max {np.abs(new.get_stress() - ref.get_stress()).max() * 160.21766:.5f} GPa")
