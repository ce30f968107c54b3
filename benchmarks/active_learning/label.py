"""Label candidates files with GPAW into an ASE-database cache (resumable: labels already in the cache
are not recomputed), then write labelled_<name>.extxyz for each file whose labels are all done.

    OPENBLAS_NUM_THREADS=1 python label.py cand_LYC30_r0.extxyz [more.extxyz] [--ecut 400] [--kpoint-density 1.5]
        [--workers 1] [--db labels.db]
Converged settings (convergence.json, README): --ecut 700 --kpoint-density 2.5, or --ecut 400 --kpoint-density 2.5
with lycb_jax.active.BasisCorrection (basis_stress.py: the same stress to ~0.001 GPa at 0.43 of the plane waves).
"""
import argparse
from pathlib import Path

from ase.io import read, write

from lycb_jax.active.labellers import LabelCache, gpaw_labeller, label_structures

here = Path(__file__).parent
parser = argparse.ArgumentParser()
parser.add_argument("candidates", nargs="+")
parser.add_argument("--ecut", type=float, default=400.0, help="plane-wave cutoff, eV")
parser.add_argument("--kpoint-density", type=float, default=1.5, help="k-points per 2 pi/A (1.5: rounds 0-2)")
parser.add_argument("--workers", type=int, default=1, help="DFT processes in parallel")
parser.add_argument("--db", default=str(here / "labels.db"), help="label cache (ASE database)")
args = parser.parse_args()

lab = gpaw_labeller(ecut_eV=args.ecut, kpoint_density=args.kpoint_density)
frames = {name: read(name, index=":") for name in args.candidates}
label_structures([a for f in frames.values() for a in f], lab, args.db, workers=args.workers, progress=True)
cache = LabelCache(args.db)
for name, f in frames.items():
    out = [cache.get(a, lab.settings) for a in f]
    if all(a is not None for a in out):
        write(str(Path(name).parent / Path(name).name.replace("cand_", "labelled_")), out)
