"""Fine-tuning labels checked before any training: shapes per structure, and a data set that has labels
at all (one without energies or forces would train at loss 0 and write a "fine-tuned" checkpoint).

Units as in :mod:`lycb_jax.train.data`: energy eV (total), forces eV/A, stress eV/A^3 (ASE), magmoms muB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lycb_jax.io.errors import InputError

LABEL_FIX = (
    "give each structure a total energy (eV) and forces (eV/A), e.g. extxyz with energy=... in the "
    "comment line and a forces column, or files with a calculator's results (vasprun.xml, OUTCAR)"
)


def check_label_shapes(name: str, n_atoms: int, energy, *, forces, stress, magmoms) -> None:
    """InputError naming the structure ``name`` if a label that is present has the wrong shape or is
    not a number: energy a scalar, forces [n_atoms, 3], stress Voigt [6] or [3, 3], magmoms [n_atoms]."""

    def arr(x, what):
        try:
            return np.asarray(x, float)
        except (TypeError, ValueError):
            raise InputError(f"{name}: {what} label {x!r} is not numeric") from None

    if energy is not None and arr(energy, "energy").shape != ():
        raise InputError(f"{name}: energy label has shape {np.shape(energy)}, expected one number (eV, total)")
    if forces is not None and arr(forces, "forces").shape != (n_atoms, 3):
        raise InputError(
            f"{name}: forces label has shape {np.shape(forces)}, expected ({n_atoms}, 3) for {n_atoms} atoms (eV/A)"
        )
    if stress is not None and arr(stress, "stress").shape not in ((6,), (3, 3)):
        raise InputError(
            f"{name}: stress label has shape {np.shape(stress)}, expected Voigt (6,) or (3, 3) (eV/A^3, ASE sign)"
        )
    if magmoms is not None and arr(magmoms, "magmoms").shape != (n_atoms,):
        raise InputError(f"{name}: magmoms label has shape {np.shape(magmoms)}, expected ({n_atoms},) (muB)")


def check_has_labels(names: Sequence[str], energy: np.ndarray, forces: Sequence[np.ndarray]) -> None:
    """InputError unless every structure has an energy or forces label (NaN = missing)."""
    if not len(names):
        raise InputError(f"the fine-tuning data set is empty; {LABEL_FIX}")
    bare = [n for n, e, f in zip(names, energy, forces) if not np.isfinite(e) and not np.isfinite(f).any()]
    if len(bare) == len(names):
        raise InputError(f"no energy or force labels in {_short(names)}: nothing to fit; {LABEL_FIX}")
    if bare:
        raise InputError(
            f"{len(bare)} of {len(names)} structures have neither energy nor forces "
            f"({', '.join(bare[:3])}{' ...' if len(bare) > 3 else ''}); "
            f"{LABEL_FIX}"
        )


def _short(names: Sequence[str]) -> str:
    files = list(dict.fromkeys(str(n).rsplit("@", 1)[0] for n in names))
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
