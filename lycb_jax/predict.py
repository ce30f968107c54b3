"""Batched single-point prediction for lists of structures of different sizes.

Structures are packed into one padded array set (one graph, many systems). Sizes are
rounded up to a few buckets so that ``jit`` compiles rarely.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.graph import Capacity, build_graph, count_edges, image_range
from lycb_jax.model import N_ELEMENTS, Model, energy_forces_stress

MIN_DISTANCE = 0.5  # Angstrom; closer atoms are refused as overlapping


@dataclasses.dataclass(frozen=True)
class System:
    """One periodic structure as plain arrays: atomic numbers, positions (A), cell rows (A)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)


@dataclasses.dataclass
class Prediction:
    """Result for one structure: energy (eV), energy_per_atom (eV/atom), forces (eV/A) [N, 3],
    stress (GPa, 3x3, ASE sign: positive = tensile), magmoms (muB) [N]."""

    energy: float
    energy_per_atom: float
    forces: np.ndarray
    stress: np.ndarray
    magmoms: np.ndarray


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


def _bucket(n: int) -> int:
    """Round a size up to 1, 1.25, 1.5 or 1.75 times a power of two (at most ~25% padding)."""
    if n <= 16:
        return 16
    p = 2 ** math.floor(math.log2(n))
    for f in (1.0, 1.25, 1.5, 1.75, 2.0):
        if n <= f * p:
            return int(f * p)
    return 2 * p


@dataclasses.dataclass(frozen=True)
class Batch:
    """Systems padded to one atom count, stacked for vmap (host numpy)."""

    species: np.ndarray  # [B, N] atomic numbers, 0 = padding
    positions: np.ndarray  # [B, N, 3] Angstrom
    cells: np.ndarray  # [B, 3, 3] Angstrom
    atom_mask: np.ndarray  # [B, N]
    counts: tuple[int, ...]
    capacity: Capacity


def pack(systems: Sequence[System], headroom: float = 1.15, n_atoms: int | None = None,
         n_systems: int | None = None) -> Batch:
    """Pad systems to a bucketed atom count (and batch size) with graph capacities from exact counts.

    Padding systems are copies of the first one with every atom masked out.
    """
    n_pad = n_atoms or _bucket(max(len(s) for s in systems))
    b_pad = n_systems or 1 << (len(systems) - 1).bit_length()  # batch sizes 1, 2, 4, 8, ...
    species = np.zeros((b_pad, n_pad), np.int32)
    positions = np.zeros((b_pad, n_pad, 3), np.float64)
    cells = np.tile(np.asarray(systems[0].cell, np.float64), (b_pad, 1, 1))
    edges = angles = short = 0
    images = [1, 1, 1]
    for k, s in enumerate(systems):
        n = len(s)
        species[k, :n] = s.numbers
        positions[k, :n] = s.positions
        positions[k, n:] = s.positions[0]
        cells[k] = s.cell
        ne, na, ns = count_edges(s.positions, s.cell)
        edges, angles, short = max(edges, ne), max(angles, na), max(short, ns)
        images = [max(a, b) for a, b in zip(images, image_range(s.cell))]
    cap = Capacity(_bucket(int(edges * headroom) + 16), _bucket(int(angles * headroom) + 16),
                   max(8, 4 * math.ceil((short + 2) / 4)), tuple(images))
    return Batch(species, positions, cells, species > 0, tuple(len(s) for s in systems), cap)


def single_point(module, params, species, positions, cell, atom_mask, capacity):
    """Graph + energy (eV), forces (eV/A), stress (GPa), magmoms (muB), overflow flag of one system."""
    graph = build_graph(positions, cell, atom_mask, capacity)
    e, f, s, m = energy_forces_stress(module, params, species, positions, cell, atom_mask, graph)
    return e, f, s, m, graph.overflow


@functools.partial(jax.jit, static_argnames=("module", "capacity"))
def _predict_batched(module, params, species, positions, cells, atom_mask, capacity):
    return jax.vmap(single_point, in_axes=(None, None, 0, 0, 0, 0, None))(
        module, params, species, positions, cells, atom_mask, capacity)


def predict(model: Model, structures: Iterable, max_atoms_per_batch: int = 8192) -> list[Prediction]:
    """Energies, forces, stresses and magmoms of structures (pymatgen Structure or ASE Atoms).

    Structures are validated, grouped by padded size (at most ``max_atoms_per_batch`` padded
    atoms per call) and evaluated with one jit-compiled, vmapped call per group.
    """
    systems = [to_system(s) for s in structures]
    results: list[Prediction | None] = [None] * len(systems)
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(systems):
        by_size.setdefault(_bucket(len(s)), []).append(i)
    for n_pad, idx in sorted(by_size.items()):
        per_call = max(1, max_atoms_per_batch // n_pad)
        for start in range(0, len(idx), per_call):
            group = idx[start:start + per_call]
            batch = pack([systems[i] for i in group], n_atoms=n_pad)
            for i, pred in zip(group, predict_batch(model, batch)):
                results[i] = pred
    return results  # type: ignore[return-value]


def predict_batch(model: Model, batch: Batch) -> list[Prediction]:
    """Evaluate one padded batch; raises if a graph capacity was exceeded (never truncates)."""
    dtype = jax.tree.leaves(model.params)[0].dtype  # float32, or float64 for x64 checks
    e, f, s, m, overflow = _predict_batched(
        model.module, model.params, jnp.asarray(batch.species), jnp.asarray(batch.positions, dtype),
        jnp.asarray(batch.cells, dtype), jnp.asarray(batch.atom_mask), batch.capacity)
    if bool(np.any(np.asarray(overflow)[:len(batch.counts)])):
        raise RuntimeError(f"neighbour-list overflow with capacity {batch.capacity}: the host-side count "
                           "disagrees with the device graph; please report this structure")
    e, f, s, m = (np.asarray(x, np.float64) for x in (e, f, s, m))
    return [Prediction(float(e[k]), float(e[k] / n), f[k, :n], s[k], m[k, :n]) for k, n in enumerate(batch.counts)]
