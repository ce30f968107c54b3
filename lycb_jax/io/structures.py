"""Structures in: reading files (pymatgen for CIF, else ASE, else pymatgen), conversion of pymatgen/ASE
objects to plain arrays (:class:`System`), and validation. Every refusal is an :class:`InputError`
of one line naming the file (when there is one), the problem and the fix.

Units: positions and cells in Angstrom.
"""

from __future__ import annotations

import dataclasses
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from lycb_jax.io.errors import InputError

MIN_DISTANCE = 0.5  # Angstrom; closer atoms are refused as overlapping
N_ELEMENTS = 94  # H .. Pu: the elements the models know
DEFAULT_STRUCTURE = "Li3YCl6_P-3m1_ordered30.cif"  # the shipped demo structure (lycb_jax/data)
LARGE_STRUCTURE = "LYC0_P-3c1_60.cif"  # the enumerated LYC0 cell; x (2,2,2) = the 480-atom cell of the GPU runs
EXPERIMENTAL_STRUCTURES = ("Li3YCl6_P-3m1_Schlem2021.cif", "Li3YBr6_C2m_Schlem2021.cif")  # measured (lycb_jax/data)
ORDER_FIX = "make ordered models with `lycb-jax structures` (lycb_jax.structures)"


@dataclasses.dataclass(frozen=True)
class System:
    """One periodic structure as plain arrays: atomic numbers, positions (A), cell rows (A)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)


def to_system(structure, name: str | None = None) -> System:
    """Convert a pymatgen Structure, ASE Atoms or System, and validate it; InputError naming the
    problem (and ``name``, e.g. the file, when given)."""
    prefix = f"{name}: " if name else ""
    if isinstance(structure, System):
        sys = structure
    elif hasattr(structure, "get_atomic_numbers"):  # ASE Atoms
        _check_ase_occupancy(structure, prefix)
        if not all(structure.pbc):
            raise InputError(f"{prefix}not periodic (pbc = {list(map(bool, structure.pbc))}): the models need a "
                             "periodic crystal; give a cell and set pbc = True in all three directions")
        sys = System(np.asarray(structure.get_atomic_numbers()), np.asarray(structure.positions, float),
                     np.asarray(structure.cell[:], float))
    elif hasattr(structure, "lattice") and hasattr(structure, "sites"):  # pymatgen Structure
        _check_pymatgen_species(structure, prefix)
        sys = System(np.array([s.specie.Z for s in structure], int), np.asarray(structure.cart_coords, float),
                     np.asarray(structure.lattice.matrix, float))
    else:
        raise TypeError(f"expected a pymatgen Structure, ASE Atoms or System, got {type(structure).__name__}")
    try:
        validate(sys)
    except InputError as err:
        raise InputError(f"{prefix}{err}") from None
    return sys


def validate(sys: System) -> None:
    """Raise InputError naming the problem for input the model cannot handle."""
    numbers, pos, cell = np.asarray(sys.numbers), np.asarray(sys.positions), np.asarray(sys.cell)
    if len(numbers) == 0:
        raise InputError("empty structure: no atoms")
    if pos.shape != (len(numbers), 3) or cell.shape != (3, 3):
        raise InputError(f"positions {pos.shape} / cell {cell.shape}: expected ({len(numbers)}, 3) / (3, 3)")
    bad = sorted({int(z) for z in numbers if not 1 <= z <= N_ELEMENTS})
    if bad:
        raise InputError(f"unknown or dummy species {', '.join(_symbol(z) for z in bad)}: the models know the "
                         f"elements H..Pu (Z = 1..{N_ELEMENTS}); replace or remove those atoms")
    if not np.all(np.isfinite(pos)):
        bad_atoms = np.where(~np.isfinite(pos).all(1))[0]
        raise InputError(f"positions of atom(s) {bad_atoms[:5].tolist()} are NaN or inf; fix the coordinates")
    if not np.all(np.isfinite(cell)):
        raise InputError("cell contains NaN or inf; give three finite lattice vectors (Angstrom)")
    vol = abs(np.linalg.det(cell))
    if vol < 1e-3 * max(1.0, np.prod(np.linalg.norm(cell, axis=1))):
        raise InputError(f"singular cell (volume {vol:.3g} A^3): the lattice vectors are zero or (nearly) linearly "
                         "dependent; give a periodic cell with three independent lattice vectors")
    if vol / len(numbers) < 1.0:
        raise InputError(f"volume per atom {vol / len(numbers):.3g} A^3 is unphysically small; check the cell "
                         "units (Angstrom) and the atom count")
    close = closest_pair(sys)
    if close is not None:
        i, j, d = close
        from ase.data import chemical_symbols

        raise InputError(f"overlapping atoms: atom {i} ({chemical_symbols[numbers[i]]}) and atom {j} "
                         f"({chemical_symbols[numbers[j]]}) are {d:.3f} A apart (< {MIN_DISTANCE} A, periodic images "
                         "included); remove duplicates or fix the coordinates")


def closest_pair(sys: System) -> tuple[int, int, float] | None:
    """(i, j, distance in A) of the closest pair of atoms (periodic images included) if closer than
    :data:`MIN_DISTANCE`, else None."""
    from ase.neighborlist import primitive_neighbor_list

    i, j, d = primitive_neighbor_list("ijd", (True, True, True), sys.cell, sys.positions, MIN_DISTANCE)
    if not len(d):
        return None
    k = int(np.argmin(d))
    return int(min(i[k], j[k])), int(max(i[k], j[k])), float(d[k])


def min_distance(sys: System) -> float:
    """Smallest interatomic distance (A) if below :data:`MIN_DISTANCE` + 0.5, else inf."""
    from ase.neighborlist import primitive_neighbor_list

    d = primitive_neighbor_list("d", (True, True, True), sys.cell, sys.positions, MIN_DISTANCE + 0.5)
    return float(d.min()) if len(d) else np.inf


def _symbol(z) -> str:
    from ase.data import chemical_symbols

    z = int(z)
    return f"{chemical_symbols[z]!r} (Z = {z})" if 0 <= z < len(chemical_symbols) else f"Z = {z}"


def read_structures(paths) -> list:
    """(name, structure) of every frame of every file, each validated (:func:`to_system`).

    CIF files are read with pymatgen first, which keeps partial occupancies (ASE's reader fills
    partially occupied sites with whole atoms), so that disordered structures are refused instead of
    computed; other formats with ASE (any format it reads), else pymatgen."""
    from ase.io import read

    out = []
    for path in paths:
        path = str(path)
        if not Path(path).is_file():
            problem = "no such file" if not Path(path).exists() else "not a file"
            raise InputError(f"cannot read structure file {path!r}: {problem}")
        if Path(path).stat().st_size == 0:
            raise InputError(f"cannot read structure file {path!r}: the file is empty")
        frames = _read_cif(path) if path.lower().endswith(".cif") else None
        if frames is None:
            try:
                frames = read(path, index=":")
            except Exception:  # fall back to pymatgen's readers (POSCAR variants, CIF quirks)
                try:
                    from pymatgen.core import Structure

                    frames = [Structure.from_file(path)]
                except Exception:  # the readers' own exceptions name their internals, not the problem
                    raise InputError(f"cannot read structure file {path!r}: {_what_was_expected(path)}") from None
        if not frames:
            raise InputError(f"structure file {path!r} holds no structure")
        for k, frame in enumerate(frames):
            name = f"{path}@{k}" if len(frames) > 1 else path
            to_system(frame, name)  # refuse here, naming the file, rather than later
            out.append((name, frame))
    return out


def _what_was_expected(path: str) -> str:
    """What a structure file of this name should hold, for the message that refuses it."""
    suffix = Path(path).suffix.lower()
    if suffix == ".cif":
        return ("no crystal structure found: a CIF needs a data_ block with _cell_length_a/b/c, _cell_angle_* and an "
                "_atom_site_ loop (fractional x, y, z and a type symbol)")
    return ("no crystal structure found in any format ASE or pymatgen reads; give a CIF, POSCAR/CONTCAR, extxyz or "
            "another ASE format, with the suffix that names it")


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


def _check_pymatgen_species(structure, prefix: str) -> None:
    """Refuse partially occupied sites and dummy species of a pymatgen Structure (before asking for Z,
    which a dummy species answers with a meaningless number)."""
    if not structure.is_ordered:
        partial = sorted({str(site.species) for site in structure if not site.is_ordered})
        raise InputError(f"{prefix}partially occupied sites ({', '.join(partial[:4])}); {ORDER_FIX}")
    bad = sorted({str(sp) for sp in structure.composition
                  if not hasattr(sp, "Z") or type(sp).__name__ == "DummySpecies" or not 1 <= sp.Z <= N_ELEMENTS})
    if bad:
        raise InputError(f"{prefix}unknown or dummy species {', '.join(map(repr, bad))}: the models know the "
                         f"elements H..Pu (Z = 1..{N_ELEMENTS}); replace them with real elements")


def _check_ase_occupancy(atoms, prefix: str) -> None:
    """Refuse ASE Atoms read from a CIF with partial occupancies (``info["occupancy"]``: ASE fills
    each partially occupied site with a whole atom)."""
    occupancy = atoms.info.get("occupancy") if isinstance(getattr(atoms, "info", None), dict) else None
    if isinstance(occupancy, dict):
        partial = sorted({f"{el}:{v:g}" for site in occupancy.values() if isinstance(site, dict)
                          for el, v in site.items() if v < 1 - 1e-6})
        if partial:
            raise InputError(f"{prefix}partially occupied sites ({', '.join(partial[:4])}); ASE fills them with "
                             f"whole atoms; {ORDER_FIX}")


def read_structure(path):
    """The last frame of a structure file."""
    return read_structures([path])[-1][1]


def formula(numbers) -> str:
    """Chemical formula (Hill order, e.g. 'Cl18Li9Y3') of atomic numbers: the default structure name."""
    from ase.symbols import Symbols

    return Symbols(np.asarray(numbers)).get_chemical_formula()


def _shipped(name: str):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(resources.files("lycb_jax") / "data" / name))


def default_structure(large: bool = False):
    """The shipped 30-atom Li3YCl6 demo structure (P-3m1 framework), or with ``large`` the 480-atom LYC0
    (the P-3c1 ordering of the enumeration, 2x2x2; the input of the GPU runs); a pymatgen Structure."""
    return _shipped(LARGE_STRUCTURE) * (2, 2, 2) if large else _shipped(DEFAULT_STRUCTURE)


def experimental_volume(numbers) -> tuple[float, str] | None:
    """(volume, A^3 per atom, and its source) of the measured structure with the reduced composition of
    ``numbers`` among the shipped ones (Li3YCl6, Li3YBr6: Schlem et al., Chem. Mater. 33 (2021) 327;
    partial occupancies counted), or None."""
    from pymatgen.core import Composition

    wanted = Composition(formula(numbers)).fractional_composition
    for name in EXPERIMENTAL_STRUCTURES:
        s = _shipped(name)
        if s.composition.fractional_composition.almost_equals(wanted, atol=1e-4):
            return s.volume / s.composition.num_atoms, "Schlem 2021"
    return None


def nearest_distance(positions, cell, mask):
    """Median over the selected atoms of the distance (A) to their nearest selected neighbour (minimum
    image in ``cell`` [3, 3], rows A); the default hop length of the window rule.  ValueError for < 2 atoms."""
    from ase.geometry import get_distances

    p = np.asarray(positions, np.float64)[np.asarray(mask, bool)]
    if len(p) < 2:
        raise ValueError("need >= 2 mobile ions for a nearest-neighbour hop distance; pass hop_distance")
    _, d = get_distances(p, cell=np.asarray(cell, np.float64), pbc=True)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def hop_distances(systems, species: str) -> list[float]:
    """:func:`nearest_distance` (A) between the ``species`` atoms of each system (NaN with fewer than two):
    the hop the diffusion analysis uses."""
    from ase.data import atomic_numbers

    z = atomic_numbers[species]
    return [nearest_distance(s.positions, s.cell, s.numbers == z) if (s.numbers == z).sum() >= 2 else float("nan")
            for s in systems]
