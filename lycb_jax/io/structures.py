"""Structures in: reading files (ASE, else pymatgen), conversion of pymatgen/ASE objects to plain
arrays (:class:`System`), and validation with errors that name the problem.

Units: positions and cells in Angstrom.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

MIN_DISTANCE = 0.5  # Angstrom; closer atoms are refused as overlapping
N_ELEMENTS = 94  # H .. Pu: the elements the models know


@dataclasses.dataclass(frozen=True)
class System:
    """One periodic structure as plain arrays: atomic numbers, positions (A), cell rows (A)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)


def to_system(structure) -> System:
    """Convert a pymatgen Structure, ASE Atoms or System, and validate it (clear errors)."""
    if isinstance(structure, System):
        sys = structure
    elif hasattr(structure, "get_atomic_numbers"):  # ASE Atoms
        if not all(structure.pbc):
            raise ValueError("only fully periodic structures are supported (atoms.pbc must be all True)")
        sys = System(np.asarray(structure.get_atomic_numbers()), np.asarray(structure.positions, float),
                     np.asarray(structure.cell[:], float))
    elif hasattr(structure, "lattice") and hasattr(structure, "sites"):  # pymatgen Structure
        if not structure.is_ordered:
            raise ValueError("structure has partial occupancies; order it first (lycb_jax.structures)")
        sys = System(np.array([s.specie.Z for s in structure], int), np.asarray(structure.cart_coords, float),
                     np.asarray(structure.lattice.matrix, float))
    else:
        raise TypeError(f"expected a pymatgen Structure, ASE Atoms or System, got {type(structure).__name__}")
    validate(sys)
    return sys


def validate(sys: System) -> None:
    """Raise ValueError naming the problem for input the model cannot handle."""
    numbers, pos, cell = sys.numbers, sys.positions, sys.cell
    if len(numbers) == 0:
        raise ValueError("empty structure: no atoms")
    bad = [int(z) for z in numbers if not 1 <= z <= N_ELEMENTS]
    if bad:
        raise ValueError(f"unknown element(s) with atomic number {sorted(set(bad))}: CHGNet knows Z = 1..{N_ELEMENTS}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    if not np.all(np.isfinite(cell)):
        raise ValueError("cell contains NaN or inf")
    vol = abs(np.linalg.det(cell))
    if vol < 1e-3 * max(1.0, np.prod(np.linalg.norm(cell, axis=1))):
        raise ValueError(f"singular cell (volume {vol:.3g} A^3): lattice vectors are (nearly) linearly dependent")
    if vol / len(numbers) < 1.0:
        raise ValueError(f"volume per atom {vol / len(numbers):.3g} A^3 is unphysically small")
    dmin = min_distance(sys)
    if dmin < MIN_DISTANCE:
        raise ValueError(f"overlapping atoms: minimum interatomic distance {dmin:.3f} A < {MIN_DISTANCE} A")


def min_distance(sys: System) -> float:
    from ase.neighborlist import primitive_neighbor_list

    d = primitive_neighbor_list("d", (True, True, True), sys.cell, sys.positions, MIN_DISTANCE + 0.5)
    return float(d.min()) if len(d) else np.inf


def read_structures(paths) -> list:
    """(name, structure) of every frame of every file, read with ASE (any format it reads), else pymatgen.
    CIF files are read with pymatgen first, which keeps partial occupancies (ASE's reader fills partially
    occupied sites with whole atoms), so that disordered structures are refused instead of computed."""
    from ase.io import read

    out = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"cannot read structure file {str(path)!r}: no such file")
        frames = _read_cif(path) if str(path).lower().endswith(".cif") else None
        if frames is None:
            try:
                frames = read(path, index=":")
            except Exception as ase_error:  # fall back to pymatgen's readers (POSCAR variants, CIF quirks)
                try:
                    from pymatgen.core import Structure

                    frames = [Structure.from_file(path)]
                except Exception as pmg_error:
                    raise ValueError(f"cannot read structure file {path!r}: ASE: {ase_error}; pymatgen: {pmg_error}")
        for k, frame in enumerate(frames):
            name = f"{path}@{k}" if len(frames) > 1 else str(path)
            _check_ordered(frame, name)
            out.append((name, frame))
    return out


def _read_cif(path):
    """All structures of a CIF with pymatgen (occupancies kept), or None if pymatgen cannot read it."""
    import warnings

    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CifParser(path).parse_structures(primitive=False)
    except Exception:
        return None


def _check_ordered(frame, name: str) -> None:
    """Refuse partially occupied or dummy sites, naming the file and the fix."""
    fix = "make ordered models with `lycb-jax structures` (lycb_jax.structures)"
    if hasattr(frame, "is_ordered"):
        if not frame.is_ordered:
            partial = sorted({str(site.species) for site in frame if not site.is_ordered})
            raise ValueError(f"{name}: partially occupied sites ({', '.join(partial[:4])}); {fix}")
        bad = sorted({str(sp) for sp in frame.composition if getattr(sp, "Z", 0) not in range(1, N_ELEMENTS + 1)})
        if bad:
            raise ValueError(f"{name}: unknown or dummy species {bad}; the models know elements H..Pu")
    elif isinstance(getattr(frame, "info", None), dict) and "occupancy" in frame.info:
        occ = [v for site in frame.info["occupancy"].values() for v in site.values()]
        if any(v < 1 - 1e-6 for v in occ):
            raise ValueError(f"{name}: partially occupied sites; {fix}")


def read_structure(path):
    """The last frame of a structure file."""
    return read_structures([path])[-1][1]
