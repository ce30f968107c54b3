"""Label a candidates file with GPAW into the cache labels.db next to this script (resumable: labels
already in the cache are not recomputed), then write labelled_<name>.extxyz once all are done.

    OPENBLAS_NUM_THREADS=1 python label.py cand_LYC30_r0.extxyz [ecut_eV=400]
"""
import sys
from pathlib import Path

from ase.io import read, write

from lycb_jax.active.labellers import gpaw_labeller, label_structures

here = Path(__file__).parent
lab = gpaw_labeller(ecut_eV=float(sys.argv[2]) if len(sys.argv) > 2 else 400.0, kpoint_density=1.5)
frames = read(sys.argv[1], index=":")
out = label_structures(frames, lab, here / "labels.db", workers=1, progress=True)
write(sys.argv[1].replace("cand_", "labelled_"), out)
