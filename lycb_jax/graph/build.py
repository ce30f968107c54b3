"""Periodic crystal graphs in JAX with fixed capacities (jit- and vmap-compatible).

A graph holds CHGNet's two neighbour structures of one periodic system (batches vmap it):

* the atom graph: every pair (i, j, image) with distance < 6 Angstrom, stored once per
  undirected bond as a *half edge* i -> j + shift; the directed edge list used by the model
  is ``concat(half, reversed half)``, so the reverse of directed edge d is ``d +- H``;
* the bond graph: ordered pairs of distinct directed edges with the same centre atom and
  both shorter than 3 Angstrom (the angles).

Every array has a static capacity. When the true count exceeds it, ``overflow`` is set and
the caller must rebuild with larger capacities (:mod:`lycb_jax.graph.capacity`); nothing is dropped
silently. Neighbours come from :mod:`lycb_jax.graph.edges` (brute force, any cell) or
:mod:`lycb_jax.graph.cells` (cell list, large cells).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph.cells import build_edges_binned
from lycb_jax.graph.edges import EdgeList, build_edges, first_true, spread


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Graph:
    """Fixed-capacity graph of one periodic system (all arrays on device).

    Attributes:
      edge_src, edge_dst: [H] atom indices of half edges (i -> j).
      edge_shift: [H, 3] integer lattice image of j (float), vector = x_j + shift @ cell - x_i.
      edge_mask: [H] True for real edges.
      angle_e1, angle_e2: [A] directed edge indices (0..2H) sharing a centre atom.
      angle_mask: [A] True for real angles.
      n_edges, n_angles: true counts (may exceed capacity, then ``overflow`` is True).
      max_short_per_atom: largest number of < 3 A directed edges at one atom.
      images_needed: [3] periodic images each side needed for the current cell.
      overflow: True if any capacity was exceeded; the graph must then be rebuilt.
    """

    edge_src: jax.Array
    edge_dst: jax.Array
    edge_shift: jax.Array
    edge_mask: jax.Array
    angle_e1: jax.Array
    angle_e2: jax.Array
    angle_mask: jax.Array
    n_edges: jax.Array
    n_angles: jax.Array
    max_short_per_atom: jax.Array
    images_needed: jax.Array
    overflow: jax.Array


def neighbour_edges(positions, cell, atom_mask, *, cutoff: float, size: int, capacity: Capacity) -> EdgeList:
    """Half edges within ``cutoff`` (Angstrom), at most ``size``: by the cell list of ``capacity.bins``
    (:func:`build_edges_binned`, large cells) or by brute force over ``capacity.images``."""
    if capacity.bins is not None:
        return build_edges_binned(positions, cell, atom_mask, cutoff, size, capacity.bins, capacity.per_bin)
    return build_edges(positions, cell, atom_mask, cutoff=cutoff, size=size, images=capacity.images)


def _with_angles(src, dst, shift, mask, n_edges, d2, n_atoms: int, bond_cut: float | None, capacity: Capacity,
                 images_needed, overflow) -> Graph:
    """Graph from selected half edges (squared lengths ``d2``): adds the bond graph (angles), i.e.
    ordered pairs of distinct directed edges shorter than ``bond_cut`` at the same centre atom
    (``bond_cut`` None: a model without angles; the angle arrays are empty)."""
    if bond_cut is None:
        none = jnp.zeros((0,), jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        return Graph(edge_src=src, edge_dst=dst, edge_shift=shift, edge_mask=mask, angle_e1=none, angle_e2=none,
                     angle_mask=jnp.zeros((0,), bool), n_edges=n_edges, n_angles=zero, max_short_per_atom=zero,
                     images_needed=images_needed, overflow=overflow | (n_edges > src.shape[0]))
    short_half = mask & (d2 < bond_cut**2)
    centre = jnp.concatenate([src, dst])  # directed edge d -> centre atom
    short = jnp.concatenate([short_half, short_half])
    n_dir = 2 * src.shape[0]
    key = jnp.where(short, centre, n_atoms)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    sorted_key = key[order]
    atoms = jnp.arange(n_atoms)
    start = jnp.searchsorted(sorted_key, atoms, side="left")
    count = jnp.searchsorted(sorted_key, atoms, side="right") - start
    k = capacity.short_per_atom
    slot = jnp.arange(k)
    table = order[jnp.clip(start[:, None] + slot[None, :], 0, n_dir - 1)]  # [N, K]
    valid = slot[None, :] < count[:, None]
    pair_valid = valid[:, :, None] & valid[:, None, :] & (slot[:, None] != slot[None, :])[None]
    n_angles = jnp.sum(count * (count - 1), dtype=jnp.int32)
    asel = first_true(pair_valid, capacity.angles)
    angle_mask = jnp.arange(capacity.angles) < n_angles
    a_atom = asel // (k * k)
    e1 = table[a_atom, (asel // k) % k]
    e2 = table[a_atom, asel % k]
    max_short = jnp.max(count).astype(jnp.int32)
    overflow = overflow | (n_edges > src.shape[0]) | (n_angles > capacity.angles) | (max_short > k)
    return Graph(
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift,
        edge_mask=mask,
        angle_e1=spread(e1.astype(jnp.int32), angle_mask, n_dir),
        angle_e2=spread(e2.astype(jnp.int32), angle_mask, n_dir),
        angle_mask=angle_mask,
        n_edges=n_edges,
        n_angles=n_angles,
        max_short_per_atom=max_short,
        images_needed=images_needed,
        overflow=overflow,
    )


def build_graph(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, capacity: Capacity) -> Graph:
    """Build the atom and bond graphs of one periodic system (jit-able; vmap for batches).

    Args:
      positions: [N, 3] Cartesian positions, Angstrom (need not be wrapped into the cell).
      cell: [3, 3] lattice vectors as rows, Angstrom.
      atom_mask: [N] True for real atoms (padding atoms never get edges).
      capacity: static capacities (hashable; part of the jit cache key). Both cutoffs include
        ``capacity.skin``.
    """
    edges = neighbour_edges(positions, cell, atom_mask, cutoff=capacity.cutoff + capacity.skin, size=capacity.edges,
                            capacity=capacity)
    bond_cut = None if capacity.bond_cutoff is None else capacity.bond_cutoff + capacity.skin
    return _refined(edges, positions, cell, capacity.cutoff + capacity.skin, bond_cut, capacity, select=False)


def refine_graph(edges: EdgeList, positions: jax.Array, cell: jax.Array, capacity: Capacity) -> Graph:
    """CHGNet's exact graph (cutoffs without skin) at ``positions``, taken from a Verlet list.

    ``edges`` must have been built with cutoff ``capacity.cutoff + skin`` at positions from which no
    atom has moved more than skin/2 (and the cell strained accordingly little); the caller checks
    that. Costs O(list length), against O(N^2 images) for :func:`build_graph`. ``capacity.edges``,
    ``.angles`` and ``.short_per_atom`` size the exact graph; its ``overflow`` includes the list's.
    """
    return _refined(edges, positions, cell, capacity.cutoff, capacity.bond_cutoff, capacity, select=True)


def exact_sizes(edges: EdgeList, positions: jax.Array, cell: jax.Array,
                *, cutoffs: tuple[float, float | None]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(half edges, angles, largest number of short bonds at one atom) of the graph that
    :func:`refine_graph` would take from ``edges``, without building it (for capacity checks;
    ``cutoffs[1]`` None: no angles, so 0 and 0)."""
    d2 = _list_d2(edges, positions, cell)
    keep = edges.mask & (d2 < cutoffs[0]**2)
    if cutoffs[1] is None:
        zero = jnp.zeros((), jnp.int32)
        return jnp.sum(keep, dtype=jnp.int32), zero, zero
    short = (keep & (d2 < cutoffs[1]**2)).astype(jnp.int32)
    n = positions.shape[0]
    count = jax.ops.segment_sum(short, edges.src, n) + jax.ops.segment_sum(short, edges.dst, n)
    return (jnp.sum(keep, dtype=jnp.int32), jnp.sum(count * (count - 1), dtype=jnp.int32),
            jnp.max(count).astype(jnp.int32))


def _list_d2(edges: EdgeList, positions, cell) -> jax.Array:
    """Squared lengths (A^2) of the listed half edges at these positions (no gradient)."""
    positions = jax.lax.stop_gradient(positions)
    vec = positions[edges.dst] + edges.shift @ jax.lax.stop_gradient(cell) - positions[edges.src]
    return jnp.sum(vec * vec, axis=-1)


def _refined(edges: EdgeList, positions, cell, atom_cut: float, bond_cut: float | None, capacity: Capacity,
             select: bool) -> Graph:
    d2 = _list_d2(edges, positions, cell)
    if not select:
        return _with_angles(edges.src, edges.dst, edges.shift, edges.mask, edges.n_edges, d2, positions.shape[0],
                            bond_cut, capacity, edges.images_needed, edges.overflow)
    keep = edges.mask & (d2 < atom_cut**2)
    n_edges = jnp.sum(keep, dtype=jnp.int32)
    sel = first_true(keep, capacity.edges)
    mask = jnp.arange(capacity.edges) < n_edges
    n = positions.shape[0]
    return _with_angles(spread(edges.src[sel], mask, n), spread(edges.dst[sel], mask, n),
                        jnp.where(mask[:, None], edges.shift[sel], 0.0), mask, n_edges, d2[sel], positions.shape[0],
                        bond_cut, capacity, edges.images_needed, edges.overflow)
