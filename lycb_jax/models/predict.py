"""Batched single-point prediction for lists of structures of different sizes.

Structures are packed into one padded array set (:mod:`lycb_jax.graph.batch`: one graph, many
systems). Sizes are rounded up to a few buckets so that ``jit`` compiles rarely.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.graph import capacity as cap
from lycb_jax.graph.batch import Batch, pack
from lycb_jax.graph.build import build_graph
from lycb_jax.io.structures import to_system
from lycb_jax.models.base import Model, energy_forces_stress
from lycb_jax.runtime.precision import with_precision


@dataclasses.dataclass
class Prediction:
    """Result for one structure: energy (eV), energy_per_atom (eV/atom), forces (eV/A) [N, 3],
    stress (GPa, 3x3, ASE sign: positive = tensile), magmoms (muB) [N]."""

    energy: float
    energy_per_atom: float
    forces: np.ndarray
    stress: np.ndarray
    magmoms: np.ndarray


def single_point(module, params, species, positions, cell, atom_mask, capacity):
    """Graph + energy (eV), forces (eV/A), stress (GPa), magmoms (muB), overflow flag of one system."""
    graph = build_graph(positions, cell, atom_mask, capacity)
    e, f, s, m = energy_forces_stress(module, params, species, positions, cell, atom_mask, graph)
    return e, f, s, m, graph.overflow


@functools.partial(jax.jit, static_argnames=("module", "capacity"))
@with_precision
def _predict_batched(module, params, species, positions, cells, atom_mask, capacity):
    return jax.vmap(single_point, in_axes=(None, None, 0, 0, 0, 0, None))(
        module, params, species, positions, cells, atom_mask, capacity)


def predict(model: Model, structures: Iterable, max_atoms_per_batch: int = 8192) -> list[Prediction]:
    """Energies, forces, stresses and magmoms of structures (pymatgen Structure or ASE Atoms).

    Structures are validated, grouped by padded size (at most ``max_atoms_per_batch`` padded
    atoms per call) and evaluated with one jit-compiled, vmapped call per group.
    """
    systems = [to_system(s) for s in structures]
    for s in systems:
        model.check_elements(s.numbers)
    results: list[Prediction | None] = [None] * len(systems)
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(systems):
        by_size.setdefault(cap.bucket_size(len(s)), []).append(i)
    for n_pad, idx in sorted(by_size.items()):
        per_call = max(1, max_atoms_per_batch // n_pad)
        for start in range(0, len(idx), per_call):
            group = idx[start:start + per_call]
            batch = pack([systems[i] for i in group], n_atoms=n_pad, cutoffs=model.cutoffs)
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
