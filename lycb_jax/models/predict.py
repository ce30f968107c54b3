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
from lycb_jax.graph.batch import PACK_HEADROOM, Batch, pack
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


@functools.partial(jax.jit, static_argnames="capacity")
@with_precision
def _predict_batched(model: Model, species, positions, cells, atom_mask, capacity):
    return jax.vmap(single_point, in_axes=(None, None, 0, 0, 0, 0, None))(
        model.module, model.params, species, positions, cells, atom_mask, capacity)


def predict(model: Model, structures: Iterable, *, max_atoms_per_batch: int = 8192,
            max_edges_per_batch: int = 32768, max_angles_per_batch: int = 32768) -> list[Prediction]:
    """Energies, forces, stresses and magmoms of structures (pymatgen Structure or ASE Atoms).

    Structures are validated, grouped by padded size and, within a size, by their graph sizes (a dense metal
    among halides would otherwise pad every halide to its ~200 angles per atom), and evaluated with one
    jit-compiled, vmapped call per group of at most ``max_atoms_per_batch`` padded atoms, ``max_edges_per_batch``
    padded edges and ``max_angles_per_batch`` padded angles. XLA's temporaries on the CPU, float32: CHGNet
    ~80 kB per edge and 30-70 kB per angle, SevenNet-0 ~200 kB per edge (float64 twice that).
    """
    systems = [to_system(s) for s in structures]
    for s in systems:
        model.check_elements(s.numbers)
    results: list[Prediction | None] = [None] * len(systems)
    budget = {"atoms": max_atoms_per_batch, "edges": max_edges_per_batch, "angles": max_angles_per_batch}
    for group in _groups(systems, model.cutoffs, budget):
        batch = pack([systems[i] for i in group], n_atoms=cap.bucket_size(max(len(systems[i]) for i in group)),
                     cutoffs=model.cutoffs)
        for i, pred in zip(group, predict_batch(model, batch)):
            results[i] = pred
    return results  # type: ignore[return-value]


def _groups(systems, cutoffs, budget: dict[str, int]) -> list[list[int]]:
    """Indices of the systems per call: one padded size per call; within a size, systems sorted by graph size
    and cut greedily so that (count rounded up to a power of two, as ``pack`` pads) x (the call's largest
    atoms, edges, angles) stays within ``budget``. Few calls, so few compiles."""
    by_size: dict[int, list[tuple[tuple[int, int], int]]] = {}
    for i, s in enumerate(systems):
        c = cap.estimate([s], tuple(cutoffs), PACK_HEADROOM, bucketed=True)  # as pack() will size it
        by_size.setdefault(cap.bucket_size(len(s)), []).append(((c.angles, c.edges), i))
    groups: list[list[int]] = []
    for n_pad, members in sorted(by_size.items()):
        group: list[int] = []
        largest = {"atoms": n_pad, "edges": 0, "angles": 0}
        for (angles, edges), i in sorted(members):
            count = 1 << len(group).bit_length()  # the padded count with this system added
            need = {"atoms": n_pad, "edges": max(largest["edges"], edges), "angles": max(largest["angles"], angles)}
            if group and any(count * need[k] > budget[k] for k in budget):
                groups.append(group)
                group, need = [], {"atoms": n_pad, "edges": edges, "angles": angles}
            group.append(i)
            largest = need
        groups.append(group)
    return groups


def predict_batch(model: Model, batch: Batch) -> list[Prediction]:
    """Evaluate one padded batch; raises if a graph capacity was exceeded (never truncates)."""
    dtype = jax.tree.leaves(model.params)[0].dtype  # float32, or float64 for x64 checks
    e, f, s, m, overflow = _predict_batched(
        model.bare(), jnp.asarray(batch.species), jnp.asarray(batch.positions, dtype),
        jnp.asarray(batch.cells, dtype), jnp.asarray(batch.atom_mask), batch.capacity)
    if bool(np.any(np.asarray(overflow)[:len(batch.counts)])):
        raise RuntimeError(f"neighbour-list overflow with capacity {batch.capacity}: the host-side count "
                           "disagrees with the device graph; please report this structure")
    e, f, s, m = (np.asarray(x, np.float64) for x in (e, f, s, m))
    return [Prediction(float(e[k]), float(e[k] / n), f[k, :n], s[k], m[k, :n]) for k, n in enumerate(batch.counts)]
