"""Make the small labelled Li3YCl(6-x)Br(x) set used by tests/train/test_finetune.py (DFT labels from GPAW).

Structures: the ordered C2/m Li3YX6 model (Li3ScCl6 / Li3ErBr6 type; Y on 2a, Li on 4h + 2d,
X on 8j + 4i, idealised ccp positions), primitive cell of 10 atoms, lattice from Vegard's law
between Li3YCl6-like (a, b, c = 6.45, 11.17, 6.45 A) and Li3YBr6 (6.92, 11.97, 6.86 A; Schlem 2021),
beta 109.8 deg. Each sample: random Cl/Br on the 6 anion sites, a random symmetric strain
(|e| <= 3 %), Gaussian rattle (sigma 0.05-0.15 A); every 4th sample also moves one Li into the
empty 4g octahedral site (a hop intermediate).

Labels: GPAW PW(350 eV), PBE, 2x2x2 Monkhorst-Pack k-points, Fermi-Dirac 0.05 eV,
no spin. Written as extxyz with ASE's conventions: energy (eV, total), forces (eV/A),
stress (eV/A^3, ASE sign: positive = tensile), in the SinglePointCalculator results.

Run:  OPENBLAS_NUM_THREADS=1 python tests/data/make_lycb_gpaw.py --n 60 --workers 2
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

# conventional C2/m cell, fractional coordinates (idealised ccp)
Y_SITES = [(0, 0, 0)]
LI_SITES = [(0, 1 / 6, 0.5), (0, 5 / 6, 0.5), (0, 0.5, 0.5)]
X_SITES = [(0.25, 1 / 6, 0.25), (0.25, 5 / 6, 0.25), (0.75, 1 / 6, 0.75), (0.75, 5 / 6, 0.75),
           (0.75, 0, 0.25), (0.25, 0, 0.75)]
EMPTY_4G = (0, 1 / 3, 0)
CENTRING = np.array([0.5, 0.5, 0.0])
LAT_CL = np.array([6.45, 11.17, 6.45])
LAT_BR = np.array([6.92, 11.97, 6.86])
BETA = np.radians(109.8)


def conventional(a: float, b: float, c: float) -> np.ndarray:
    return np.array([[a, 0, 0], [0, b, 0], [c * np.cos(BETA), 0, c * np.sin(BETA)]])


def sample(seed: int) -> Atoms:
    """One rattled, strained primitive Li3YCl(6-x)Br(x) cell (10 atoms)."""
    rng = np.random.default_rng(seed)
    anions = rng.permutation(["Br"] * int(rng.integers(0, 7)) + ["Cl"] * 6)[:6]
    x = float(np.mean(anions == "Br"))
    conv = conventional(*((1 - x) * LAT_CL + x * LAT_BR))
    prim_frac = np.array([[0.5, -0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])  # C-centred -> primitive
    prim = prim_frac @ conv
    frac = np.array(Y_SITES + LI_SITES + X_SITES, float)
    symbols = ["Y"] + ["Li"] * 3 + list(anions)
    li_moved = seed % 4 == 3
    if li_moved:
        frac[1 + int(rng.integers(0, 3))] = EMPTY_4G
    cart = frac @ conv
    atoms = Atoms(symbols, positions=cart, cell=prim, pbc=True)
    atoms.wrap()
    eps = rng.uniform(-0.03, 0.03, (3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    atoms.rattle(stdev=float(rng.uniform(0.05, 0.15)), seed=seed)
    atoms.info.update(seed=seed, x_br=6 * x, li_moved=li_moved)
    return atoms


def label(atoms: Atoms) -> Atoms:
    """GPAW PBE single point; returns a copy with a SinglePointCalculator (ASE units)."""
    from gpaw import GPAW, PW, FermiDirac

    atoms = atoms.copy()
    atoms.calc = GPAW(mode=PW(350), xc="PBE", kpts=(2, 2, 2), occupations=FermiDirac(0.05),
                      txt=None, symmetry="off")
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=e, forces=f, stress=s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "lycb_gpaw.extxyz"))
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import ase.io

    structures = [sample(seed) for seed in range(args.n)]
    with ProcessPoolExecutor(args.workers) as pool:
        labelled = list(pool.map(label, structures))
    ase.io.write(args.out, labelled, format="extxyz")
    print(f"wrote {len(labelled)} structures to {args.out}")


if __name__ == "__main__":
    main()
