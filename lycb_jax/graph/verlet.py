"""Verlet lists for MD: every pair within the model's atom cutoff + a skin (Angstrom), and the bound
on how far the pairs may have moved since the list was built.

A list built at some geometry holds every pair of the model's exact graph as long as no pair vector
changed by more than the skin: :func:`drift_bound` bounds half that change, so the list is valid
while the bound stays below skin/2. The exact graph is taken from the list at every force call
(:func:`lycb_jax.graph.build.refine_graph`). All cutoffs come from the :class:`~lycb_jax.graph.capacity.Capacity`,
which carries the model's (``capacity.cutoff``, ``capacity.bond_cutoff``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lycb_jax.graph.build import exact_sizes, neighbour_edges
from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph.edges import EdgeList


def verlet_list(positions, cell, atom_mask, capacity: Capacity) -> EdgeList:
    """Half edges within ``capacity.cutoff + capacity.skin`` (Angstrom), ``capacity.list_edges`` of them
    (a cell list when ``capacity.bins`` is set, else brute force)."""
    return neighbour_edges(positions, cell, atom_mask, cutoff=capacity.cutoff + capacity.skin,
                           size=capacity.list_edges, capacity=capacity)


def graph_sizes(edges: EdgeList, positions, cell, capacity: Capacity) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(half edges, angles, most short bonds at one atom) of the exact graph at the model's cutoffs
    that ``refine_graph`` takes from ``edges`` at these positions."""
    return exact_sizes(edges, positions, cell, cutoffs=(capacity.cutoff, capacity.bond_cutoff))


def drift_bound(positions, cell, ref_positions, ref_cell, capacity: Capacity) -> jax.Array:
    """Bound (Angstrom) on half the change of any pair vector since the reference geometry.

    positions [N, 3] Cartesian (Angstrom), cells [3, 3] rows. With largest atom displacement d
    measured in fractional coordinates and mapped by the current cell (an affine cell deformation
    moves no atom) and cell strain e = ||C_ref^-1 C - I||_F, a pair further than cutoff + skin at the
    reference is still further than the cutoff while d + (cutoff + skin) e / 2 < skin / 2.
    """
    ds = positions @ jnp.linalg.inv(cell) - ref_positions @ jnp.linalg.inv(ref_cell)
    strain = jnp.linalg.norm(jnp.linalg.solve(ref_cell, cell) - jnp.eye(3))
    return jnp.max(jnp.linalg.norm(ds @ cell, axis=-1)) + (capacity.cutoff + capacity.skin) * strain / 2
