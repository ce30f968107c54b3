"""What happens at and between the protocol's stages, on the host: the drift check of the conserved
quantity (:func:`judge_drift`; :func:`stage_drift` over a trajectory stage) and the switch to the average
cell after NpT (:func:`to_average_cell`: :func:`average_cell` in LAMMPS' orientation,
:func:`lower_triangular`, with :func:`warn_cell_jump` when the switch strains the cell).

Units: time in fs (ps for drifts), energy in eV (meV/atom for drifts), cells in Angstrom (rows).
"""

from __future__ import annotations

import warnings

import numpy as np


DRIFT_SIGNIFICANCE = 3.0  # a flagged drift changes the conserved quantity by > this x its fluctuation
DRIFT_MIN_SPAN_PS = 1.0  # ... and by more than the bound allows over this time (the NH conserved quantity
# wanders by ~0.5 meV/atom over a few hundred fs at 1100-1300 K, dt 2 fs: not a drift)


def conserved_drift(conserved, time_fs, n_atoms: int) -> np.ndarray:
    """Least-squares slope (meV/atom/ps) of each replica's conserved quantity ``conserved`` [R, F]
    (eV) against ``time_fs`` [F] (fs)."""
    return _drift_and_noise(conserved, time_fs, n_atoms)[0]


def stage_drift(group, n_atoms: int, bound_meV: float, *, alive) -> tuple[np.ndarray, np.ndarray]:
    """:func:`judge_drift` of the conserved quantity written so far to the trajectory stage ``group``, the
    flags kept for the ``alive`` [R] replicas only; both stored as attributes of the stage
    (``conserved_drift_meV_per_atom_ps``, ``drift_flagged``)."""
    drift, flagged = judge_drift(group["conserved"][:], group["time_fs"][:], n_atoms, bound_meV=bound_meV)
    flagged &= np.asarray(alive)
    group.attrs["conserved_drift_meV_per_atom_ps"] = drift
    group.attrs["drift_flagged"] = flagged
    return drift, flagged


def _drift_and_noise(conserved, time_fs, n_atoms: int):
    t_ps = (np.asarray(time_fs, np.float64) - time_fs[0]) / 1000
    c = np.asarray(conserved, np.float64) / n_atoms * 1000  # meV/atom
    t_c = t_ps - t_ps.mean()
    c_c = c - c.mean(axis=1, keepdims=True)
    slope = c_c @ t_c / np.sum(t_c ** 2)
    return slope, slope * (t_ps[-1] - t_ps[0]), (c_c - slope[:, None] * t_c).std(axis=1)


def judge_drift(conserved, time_fs, n_atoms: int, *, bound_meV: float) -> tuple[np.ndarray, np.ndarray]:
    """(drift [R] meV/atom/ps, flagged [R]): a replica is flagged when its drift exceeds ``bound_meV``
    AND its change over the span exceeds both :data:`DRIFT_SIGNIFICANCE` x the fluctuation of the
    conserved quantity about the fitted line and ``bound_meV`` x :data:`DRIFT_MIN_SPAN_PS`: over a short
    stage a large slope can be a slow wander of the conserved quantity, a broken integration changes
    it far beyond that (dt = 10 fs at 1500 K: 67 meV/atom/ps)."""
    slope, change, noise = _drift_and_noise(conserved, time_fs, n_atoms)
    floor = np.maximum(DRIFT_SIGNIFICANCE * noise, bound_meV * DRIFT_MIN_SPAN_PS)
    return slope, (np.abs(slope) > bound_meV) & (np.abs(change) > floor)


def lower_triangular(cells) -> tuple[np.ndarray, np.ndarray]:
    """Cells [..., 3, 3] (rows) turned into LAMMPS' orientation (a along x, b in the xy plane:
    lower-triangular rows, positive diagonal) and the rotations Q [..., 3, 3] with cells @ Q = that.
    The MTK cell update (h <- h exp(D dt)) lets the cell rotate slowly; averaging needs one orientation."""
    cells = np.asarray(cells, np.float64)
    q, r = np.linalg.qr(np.swapaxes(cells, -1, -2))  # cells^T = Q R -> cells Q = R^T
    sign = np.where(np.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    q = q * sign[..., None, :]
    return np.swapaxes(r * sign[..., :, None], -1, -2), q


AVERAGE_CELL_STRAIN_LIMIT = 0.03  # largest principal strain from the last NpT cell to the average one


def cell_jump_strain(last: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """Largest principal Green-Lagrange strain [R] taking each replica's ``last`` cell [R, 3, 3] (rows,
    same orientation) to ``avg``: how hard the switch to the average cell squeezes the atoms."""
    deform = np.linalg.solve(last, avg)  # rows: avg = last @ deform
    green = 0.5 * (deform @ np.swapaxes(deform, -1, -2) - np.eye(3))
    return np.abs(np.linalg.eigvalsh(green)).max(axis=-1)


def warn_cell_jump(last: np.ndarray, avg: np.ndarray, temperatures, *, stage: str) -> None:
    """Warn, naming the replicas, where the average cell is more than
    :data:`AVERAGE_CELL_STRAIN_LIMIT` away from the last cell of ``stage`` (the production start would
    then be strained: a cell too small for its shape fluctuations, or a cell still drifting)."""
    strain = cell_jump_strain(last, avg)
    bad = np.flatnonzero(strain > AVERAGE_CELL_STRAIN_LIMIT)
    if bad.size:
        which = ", ".join(f"replica {r} ({temperatures[r]:.0f} K): {100 * strain[r]:.1f}%" for r in bad)
        warnings.warn(f"after '{stage}' the average cell differs from the last cell by more than "
                      f"{100 * AVERAGE_CELL_STRAIN_LIMIT:.0f}% strain ({which}): the cell's shape fluctuates or drifts "
                      "too much (a cell this small, or a model that is soft here); the next stage starts strained. "
                      "Use a larger supercell, a longer NpT stage or barostat='aniso'/'iso'", stacklevel=3)


def average_cell(f, stage: str, last_fs: float) -> np.ndarray:
    """Each replica's average cell [R, 3, 3] (rows, Angstrom, LAMMPS' orientation: every frame's
    cell rotated by :func:`lower_triangular` first) over the last ``last_fs`` fs of ``stage``; also
    stored with its volume (A^3) as attributes of the stage."""
    t = f[stage]["time_fs"][:]
    sel = t > t[-1] - last_fs
    avg = lower_triangular(f[stage]["cell"][:, sel])[0].mean(axis=1)
    f[stage].attrs["average_cell"] = avg
    f[stage].attrs["average_volume_A3"] = np.abs(np.linalg.det(avg))
    return avg


def to_average_cell(f, stage: str, last_fs: float, *, positions, momenta, cells, temperatures):
    """(positions, momenta, cells) for the stage after NpT ``stage``: each replica's cell set to its
    :func:`average_cell` over the last ``last_fs`` fs, positions [R, N, 3] mapped affinely from ``cells``
    [R, 3, 3] (same fractional coordinates) and momenta [R, N, 3] rotated into its orientation;
    :func:`warn_cell_jump` where that switch strains a replica."""
    avg = average_cell(f, stage, last_fs)
    last, rotation = lower_triangular(cells)
    warn_cell_jump(last, avg, temperatures, stage=stage)
    positions = np.einsum("rni,rij->rnj", np.einsum("rni,rij->rnj", positions, np.linalg.inv(cells)), avg)
    return positions, np.einsum("rni,rij->rnj", momenta, rotation), avg
