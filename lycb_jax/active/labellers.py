"""Labellers: structures in, energy (eV), forces (eV/A) and stress (eV/A^3, ASE sign) out, with the
settings recorded; and a label cache (an ASE database keyed by structure and settings) so that a
killed labelling run loses at most the structure in progress.

Any ASE calculator becomes a labeller with :class:`ASELabeller`; :func:`gpaw_labeller` is the
embedded open DFT default (GPAW, PBE, plane waves); :func:`vasp_labeller` wraps ASE's VASP
calculator for users who have VASP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress


@dataclasses.dataclass(frozen=True)
class ASELabeller:
    """Labels with the ASE calculator that ``make_calculator(atoms)`` returns (a new one per structure).

    ``settings`` is what identifies the level of theory (code, functional, cutoff, k-points, ...):
    it is stored with every label and is part of the cache key, so labels of different settings never mix."""

    make_calculator: Callable[[Atoms], object]
    settings: dict

    def label(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` with energy, forces and stress from the calculator (a SinglePointCalculator)."""
        work = atoms.copy()
        work.calc = self.make_calculator(work)
        energy = work.get_potential_energy()
        forces = work.get_forces()
        stress = work.get_stress()  # Voigt xx yy zz yz xz xy, eV/A^3 (how ASE stores it in files and databases)
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, energy=energy, free_energy=energy, forces=forces, stress=stress)
        out.info["labeller"] = json.dumps(self.settings, sort_keys=True)
        return out


def kpoint_grid(cell: np.ndarray, density: float) -> tuple[int, int, int]:
    """Gamma-centred grid with at least ``density`` points per reciprocal-length unit (2 pi / A, i.e.
    n_i = ceil(density * |b_i|) with |b_i| including 2 pi), as ASE's ``kpts={"density": ...}``."""
    recip = 2 * np.pi * np.linalg.inv(np.asarray(cell, float)).T
    return tuple(int(max(1, np.ceil(density * np.linalg.norm(b) - 1e-9))) for b in recip)


def gpaw_labeller(ecut_eV: float = 400.0, kpoint_density: float = 1.5, smearing_eV: float = 0.05,
                  *, xc: str = "PBE", txt: str | None = None) -> ASELabeller:
    """GPAW plane-wave DFT (PAW setups of gpaw-data), Gamma-centred k-points from ``kpoint_density``
    (points per 2 pi / A), Fermi-Dirac smearing, no spin, no symmetry (forces and stress of distorted cells)."""
    settings = {"code": "gpaw", "mode": "pw", "ecut_eV": ecut_eV, "xc": xc, "kpoint_density_per_2pi_A": kpoint_density,
                "smearing": "fermi-dirac", "width_eV": smearing_eV, "spin": False}
    return ASELabeller(_GpawFactory(ecut_eV, kpoint_density, smearing_eV, xc, txt), settings)


@dataclasses.dataclass(frozen=True)
class _GpawFactory:  # a picklable factory, for worker processes
    ecut_eV: float
    kpoint_density: float
    smearing_eV: float
    xc: str
    txt: str | None

    def __call__(self, atoms: Atoms):
        from gpaw import GPAW, PW

        return GPAW(mode=PW(self.ecut_eV), xc=self.xc, kpts={"size": kpoint_grid(atoms.cell[:], self.kpoint_density),
                                                             "gamma": True},
                    occupations={"name": "fermi-dirac", "width": self.smearing_eV}, symmetry="off",
                    txt=self.txt)


def vasp_labeller(**vasp_kwargs) -> ASELabeller:
    """ASE's VASP calculator (needs VASP: $ASE_VASP_COMMAND or $VASP_COMMAND, and $VASP_PP_PATH);
    ``vasp_kwargs`` (e.g. encut=350, xc="PBE", kspacing=0.2) are the recorded settings."""
    settings = {"code": "vasp", **vasp_kwargs}
    return ASELabeller(_VaspFactory(tuple(sorted(vasp_kwargs.items()))), settings)


@dataclasses.dataclass(frozen=True)
class _VaspFactory:
    kwargs: tuple

    def __call__(self, atoms: Atoms):
        from ase.calculators.vasp import Vasp

        return Vasp(**dict(self.kwargs), directory=f"vasp_{structure_key(atoms)[:12]}")


def structure_key(atoms: Atoms) -> str:
    """sha256 of atomic numbers, positions and cell (rounded to 1e-6 A) and pbc."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, float), 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell[:], float), 6).tobytes())
    h.update(np.asarray(atoms.pbc, bool).tobytes())
    return h.hexdigest()


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class LabelCache:
    """Labels in an ASE database (sqlite): one row per (structure, settings), written when it is done."""

    def __init__(self, path: str | Path):
        from ase.db import connect

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect(str(self.path))

    def get(self, atoms: Atoms, settings: dict) -> Atoms | None:
        rows = list(self.db.select(structure=structure_key(atoms), settings_hash=settings_key(settings)))
        if not rows:
            return None
        row = rows[-1]
        out = row.toatoms()
        stress = row.get("stress")
        if np.size(stress) == 9:  # a 3x3 matrix (stored flat) from an early version: ASE wants Voigt
            stress = full_3x3_to_voigt_6_stress(np.reshape(stress, (3, 3)))
        # the calculator as ASELabeller.label makes it (same results in the same order): a cached label is
        # written to extxyz byte for byte as a fresh one (a resumed active-learning run equals an uninterrupted one)
        out.calc = SinglePointCalculator(out, energy=row.energy, free_energy=row.energy, forces=row.forces, stress=stress)
        out.info.update(row.data.get("info", {}))
        return out

    def put(self, labelled: Atoms, settings: dict) -> None:
        # plain values, numpy scalars as Python ones (extxyz reads integers such as md_frame as numpy.int64)
        info = {k: v.item() if isinstance(v, np.generic) else v for k, v in labelled.info.items()
                if isinstance(v, (int, float, str, bool, np.integer, np.floating, np.bool_))}
        self.db.write(labelled, structure=structure_key(labelled), settings_hash=settings_key(settings),
                      data={"info": info, "settings": settings})


def _label_one(labeller: ASELabeller, atoms: Atoms) -> Atoms:
    return labeller.label(atoms)


def label_structures(structures: Sequence[Atoms], labeller: ASELabeller, cache: str | Path, *, workers: int = 1,
                     progress: bool = True) -> list[Atoms]:
    """Labels of ``structures`` (in order), computing only those not in the ``cache`` database;
    ``workers`` processes in parallel (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS to 1 for DFT)."""
    from tqdm.auto import tqdm

    db = LabelCache(cache)
    out: list[Atoms | None] = [db.get(a, labeller.settings) for a in structures]
    todo = [i for i, a in enumerate(out) if a is None]
    bar = tqdm(total=len(structures), initial=len(structures) - len(todo), desc="label", unit="struct",
               disable=not progress)
    if workers <= 1:
        for i in todo:
            out[i] = labeller.label(structures[i])
            db.put(out[i], labeller.settings)
            bar.update(1)
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_label_one, labeller, structures[i]): i for i in todo}
            for fut in as_completed(futures):
                i = futures[fut]
                out[i] = fut.result()
                db.put(out[i], labeller.settings)
                bar.update(1)
    bar.close()
    return out  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class BasisCorrection:
    """Labels at a low plane-wave cut-off shifted to a converged one: the energy and an isotropic (Pulay)
    stress, each linear in the element counts; forces unchanged. Both are per-atom additive to 1e-4 GPa and
    0.01 meV/atom on LYC, LYB and mixed LYCB between 400 and 700 eV (benchmarks/active_learning/basis_stress.py),
    which makes 400 eV labels (2.3x cheaper) as good as 700 eV ones for the stress.

    ``energy_eV``: element -> energy shift per atom (eV); ``pv_eV``: element -> pressure shift times volume per
    atom (eV; the stress shift is -sum(n * pv) / V on the diagonal). ``folded``: elements of the fitted
    structures without a coefficient of their own (their share is in the others'); any other element raises."""

    energy_eV: dict
    pv_eV: dict
    folded: tuple = ()
    note: str = ""

    @classmethod
    def fit(cls, low: Sequence[Atoms], high: Sequence[Atoms], *, elements: Sequence[str],
            note: str = "") -> BasisCorrection:
        """Least squares over pairs of labels of the same structures at the low and the high cut-off
        (energies eV, stresses eV/A^3 in ASE's Voigt order). With a fixed cation ratio (Li3YX6) fit only the
        anions: the cations' share is folded into them."""
        counts = np.array([[a.get_chemical_symbols().count(e) for e in elements] for a in low], float)
        if np.linalg.matrix_rank(counts) < len(elements):
            raise ValueError(f"BasisCorrection.fit: the {len(low)} structures do not separate the elements "
                             f"{list(elements)}; add structures of other compositions or fit fewer elements")
        d_e = [b.get_potential_energy() - a.get_potential_energy() for a, b in zip(low, high, strict=True)]
        d_pv = [-np.mean(b.get_stress()[:3] - a.get_stress()[:3]) * a.get_volume() for a, b in zip(low, high)]
        e = np.linalg.lstsq(counts, d_e, rcond=None)[0]
        pv = np.linalg.lstsq(counts, d_pv, rcond=None)[0]
        folded = tuple(sorted({s for a in low for s in a.get_chemical_symbols()} - set(elements)))
        return cls(dict(zip(elements, map(float, e))), dict(zip(elements, map(float, pv))), folded, note)

    def apply(self, atoms: Atoms) -> Atoms:
        """A copy of the labelled ``atoms`` with the shifted energy and stress (the correction noted in ``info``)."""
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self.pv_eV) - set(self.folded))
        if unknown:
            raise ValueError(f"BasisCorrection.apply: no coefficient for {unknown}; fit with these elements")
        de = sum(self.energy_eV.get(s, 0.0) for s in symbols)
        dp = sum(self.pv_eV.get(s, 0.0) for s in symbols) / atoms.get_volume()  # eV/A^3, positive = compressive
        stress = np.array(atoms.get_stress(), float)
        stress[:3] -= dp
        out = atoms.copy()
        energy = atoms.get_potential_energy() + de
        out.calc = SinglePointCalculator(out, energy=energy, free_energy=energy, forces=atoms.get_forces(),
                                         stress=stress)
        out.info["basis_correction"] = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return out
