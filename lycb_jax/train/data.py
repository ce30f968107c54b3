"""Labelled structures for fine-tuning: :class:`Dataset` and :func:`read_dataset`.

Conventions (everything is read through ``ase.io``, so one set of rules covers extxyz, ASE
databases, vasprun.xml and OUTCAR):

* energy: the structure's **total** energy in eV (ASE's ``energy``; pick ``free_energy`` with
  ``energy_key``); the loss and metrics divide it by the atom count and use eV/atom
  (reported as meV/atom), like CHGNet's trainer.
* forces: eV/A.
* stress: ASE gives eV/A^3 with ASE's sign (positive = tensile); it is multiplied by
  :data:`lycb_jax.units.EV_A3_TO_GPA` to GPa and keeps that sign, which is the sign of
  :func:`lycb_jax.predict` and of CHGNet's stress output. (CHGNet's own ``StructureData`` takes
  VASP kBar and multiplies by -0.1; ASE already did the sign flip and unit change when it read
  the VASP file.)
* magmoms: muB, absolute values (CHGNet predicts |m|).

Missing labels (no stress, no magmoms, NaN) are NaN / None here and masked out of the loss and
metrics, as in CHGNet's ``CombinedLoss``. A structure with neither energy nor forces, and labels of
the wrong shape, are refused (:mod:`lycb_jax.io.labels`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from lycb_jax.io.errors import InputError
from lycb_jax.io.labels import check_has_labels, check_label_shapes
from lycb_jax.io.structures import System, to_system
from lycb_jax.units import EV_A3_TO_GPA


@dataclasses.dataclass
class Dataset:
    """Labelled structures. energy: eV total [S]; forces: eV/A list of [n, 3]; stress: GPa [S, 3, 3]
    ASE sign; magmoms: muB list of [n] (|m|) or None. Missing labels are NaN / None."""

    systems: list[System]
    energy: np.ndarray
    forces: list[np.ndarray]
    stress: np.ndarray
    magmoms: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.systems)

    @classmethod
    def from_atoms(cls, images: Sequence, energy_key: str = "energy", names: Sequence[str] | None = None
                   ) -> "Dataset":
        """From ASE Atoms carrying results (a calculator, or ``info``/``arrays`` keys). Structures and
        label shapes are validated, and a set without energy or force labels is refused (InputError
        naming the structure, ``names[i]`` or "structure i")."""
        systems, energy, forces, stress, magmoms = [], [], [], [], []
        names = list(names) if names is not None else [f"structure {i}" for i in range(len(images))]
        for atoms, name in zip(images, names):
            res = dict(atoms.calc.results) if atoms.calc is not None else {}
            get = lambda k: res.get(k, atoms.info.get(k, atoms.arrays.get(k)))  # noqa: E731
            n = len(atoms)
            systems.append(to_system(atoms, name))
            e, f, s, m = get(energy_key), get("forces"), get("stress"), get("magmoms")
            check_label_shapes(name, n, e, forces=f, stress=s, magmoms=m)
            energy.append(np.nan if e is None else float(e))
            forces.append(np.full((n, 3), np.nan) if f is None else np.asarray(f, float).reshape(n, 3))
            stress.append(_stress_gpa(s))
            magmoms.append(None if m is None else np.abs(np.asarray(m, float).reshape(n)))
        check_has_labels(names[:len(systems)], np.asarray(energy, float), forces)
        return cls(systems, np.asarray(energy, float), forces, np.asarray(stress, float).reshape(-1, 3, 3), magmoms)

    def subset(self, idx: Sequence[int]) -> "Dataset":
        idx = [int(i) for i in idx]
        return Dataset([self.systems[i] for i in idx], self.energy[idx], [self.forces[i] for i in idx],
                       self.stress[idx], [self.magmoms[i] for i in idx])

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0):
        """(train, val, test) by a seeded permutation; also returns the index lists."""
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        n_val, n_test = round(val_fraction * n), round(test_fraction * n)
        if n - n_val - n_test < 1:
            raise ValueError(f"{n} structures are too few for val {val_fraction} / test {test_fraction}")
        idx = {"val": sorted(perm[:n_val]), "test": sorted(perm[n_val:n_val + n_test]),
               "train": sorted(perm[n_val + n_test:])}
        return self.subset(idx["train"]), self.subset(idx["val"]), self.subset(idx["test"]), idx

    def sha256(self) -> str:
        """Hash of structures and labels (float64 bytes), independent of the file format."""
        h = hashlib.sha256()
        for i, s in enumerate(self.systems):
            m = self.magmoms[i]
            for a in (np.asarray(s.numbers, np.int64), s.positions, s.cell, self.energy[i], self.forces[i],
                      self.stress[i], np.zeros(0) if m is None else m):
                h.update(np.ascontiguousarray(a, np.int64 if a.dtype.kind in "iu" else np.float64).tobytes())
        return h.hexdigest()


def _stress_gpa(stress) -> np.ndarray:
    """ASE stress (Voigt [6] or [3, 3], eV/A^3, ASE sign) as [3, 3] GPa, same sign; NaN if absent."""
    from ase.stress import voigt_6_to_full_3x3_stress

    if stress is None:
        return np.full((3, 3), np.nan)
    s = np.asarray(stress, float)
    return (voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)) * EV_A3_TO_GPA


def read_dataset(paths: str | Path | Sequence[str | Path], index: str = ":", format: str | None = None,
                 *, energy_key: str = "energy") -> Dataset:
    """Read labelled structures from extxyz, ASE db, vasprun.xml, OUTCAR, ... with ``ase.io.read``."""
    import ase.io

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    images, names = [], []
    for p in paths:
        if not Path(p).is_file():
            problem = "no such file" if not Path(p).exists() else "not a file"
            raise InputError(f"cannot read data file {str(p)!r}: {problem}")
        try:
            got = ase.io.read(str(p), index=index, format=format)
        except Exception as err:  # any reader error means the same to the user: this file cannot be read
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise InputError(f"cannot read data file {str(p)!r} with ase.io ({first}); use extxyz, an ASE "
                             "database, vasprun.xml or OUTCAR") from None
        got = got if isinstance(got, list) else [got]
        images.extend(got)
        names.extend(f"{p}@{k}" if len(got) > 1 else str(p) for k in range(len(got)))
    return Dataset.from_atoms(images, energy_key, names)


def as_dataset(data: Dataset | str | Path | Sequence, energy_key: str = "energy") -> Dataset:
    """``data`` as a :class:`Dataset`: itself, read from file path(s), or from a list of ASE Atoms."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (list, tuple)) and not data:
        raise InputError("no fine-tuning data given: pass labelled structure files or ASE Atoms")
    if isinstance(data, (str, Path)) or (isinstance(data, (list, tuple)) and isinstance(data[0], (str, Path))):
        return read_dataset(data, energy_key=energy_key)
    return Dataset.from_atoms(list(data), energy_key)
