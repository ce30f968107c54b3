"""Periodic crystal graphs in JAX with fixed capacities (jit- and vmap-compatible).

A graph holds CHGNet's two neighbour structures of one periodic system (batches vmap it):

* the atom graph: every pair (i, j, image) with distance < 6 Angstrom, stored once per
  undirected bond as a *half edge* i -> j + shift; the directed edge list used by the model
  is ``concat(half, reversed half)``, so the reverse of directed edge d is ``d +- H``;
* the bond graph: ordered pairs of distinct directed edges with the same centre atom and
  both shorter than 3 Angstrom (the angles).

Every array has a static capacity. When the true count exceeds it, ``overflow`` is set and
the caller must rebuild with larger capacities (``Capacity.grown``); nothing is dropped
silently. Candidate pairs are enumerated over all atom pairs and every periodic image that
can reach the cutoff, so cells thinner than twice the cutoff are handled exactly.
Brute force is used on purpose (O(N^2 * images)): it needs no cell list that breaks for
small or strongly skewed cells, and on a GPU it is cheap next to the model for N <~ 2000.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

ATOM_CUTOFF = 6.0  # Angstrom, CHGNet atom graph
BOND_CUTOFF = 3.0  # Angstrom, CHGNet bond graph (angles)


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


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Static sizes of a graph: half edges, angles, short bonds per atom, image range, and a skin
    (Angstrom) added to both cutoffs so that the graph stays a superset while atoms move less than
    skin/2 (edges beyond the cutoffs contribute exactly zero to CHGNet)."""

    edges: int
    angles: int
    short_per_atom: int = 16
    images: tuple[int, int, int] = (1, 1, 1)
    skin: float = 0.0

    def grown(self, graph: Graph | None = None, factor: float = 1.25) -> "Capacity":
        """Capacities large enough for ``graph``'s true counts (host side), with headroom."""
        if graph is None:
            return Capacity(_round_up(self.edges * 2), _round_up(self.angles * 2),
                            self.short_per_atom * 2, self.images, self.skin)
        ne = int(np.max(np.asarray(graph.n_edges)))
        na = int(np.max(np.asarray(graph.n_angles)))
        ns = int(np.max(np.asarray(graph.max_short_per_atom)))
        need = np.asarray(graph.images_needed).reshape(-1, 3).max(0)
        return Capacity(
            edges=max(self.edges, _round_up(ne * factor)),
            angles=max(self.angles, _round_up(na * factor)),
            short_per_atom=max(self.short_per_atom, ns + 4),
            images=tuple(int(max(a, b)) for a, b in zip(self.images, need)),
            skin=self.skin,
        )


def _round_up(n: float, multiple: int = 64) -> int:
    return int(max(multiple, math.ceil(n / multiple) * multiple))


def image_range(cell: np.ndarray, cutoff: float = ATOM_CUTOFF + 0.5) -> tuple[int, int, int]:
    """Images needed along each lattice vector so that every pair within ``cutoff`` is found.

    Lattice planes k are 1/|b_k| apart (b: reciprocal vectors), and wrapped fractional
    differences lie in (-1, 1), so images |n_k| <= floor(cutoff |b_k|) + 1 suffice. The
    default cutoff has 0.5 A of slack so that a cell deforming under NpT keeps the range.
    """
    recip = np.linalg.inv(np.asarray(cell, dtype=np.float64)).T
    return tuple(int(math.floor(cutoff * np.linalg.norm(recip[k]))) + 1 for k in range(3))


def _images_needed(cell: jax.Array, cutoff: float) -> jax.Array:
    recip = jnp.linalg.inv(cell).T
    return jnp.floor(cutoff * jnp.linalg.norm(recip, axis=1)).astype(jnp.int32) + 1


def _shifts(images: tuple[int, int, int]) -> np.ndarray:
    rng = [np.arange(-n, n + 1) for n in images]
    grid = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    return grid.astype(np.float32)


def build_graph(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, capacity: Capacity) -> Graph:
    """Build the atom and bond graphs of one periodic system (jit-able; vmap for batches).

    Args:
      positions: [N, 3] Cartesian positions, Angstrom (need not be wrapped into the cell).
      cell: [3, 3] lattice vectors as rows, Angstrom.
      atom_mask: [N] True for real atoms (padding atoms never get edges).
      capacity: static capacities (hashable; part of the jit cache key).
    """
    positions = jax.lax.stop_gradient(positions)
    cell = jax.lax.stop_gradient(cell)
    n = positions.shape[0]
    shifts = jnp.asarray(_shifts(capacity.images))  # [M, 3]
    m = shifts.shape[0]
    # Wrap into the cell in fractional space so that the static image range suffices.
    frac = positions @ jnp.linalg.inv(cell)
    wrapped_shift = jnp.floor(frac)  # position = wrapped + wrapped_shift @ cell
    pos_w = (frac - wrapped_shift) @ cell
    atom_cut, bond_cut = ATOM_CUTOFF + capacity.skin, BOND_CUTOFF + capacity.skin
    needed = _images_needed(cell, atom_cut)
    images_ok = jnp.all(needed <= jnp.asarray(capacity.images))

    i_idx, j_idx = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij")
    # half-edge rule: i < j with any image, or i == j with a lexicographically positive image
    s_pos = (shifts[:, 0] > 0) | ((shifts[:, 0] == 0) & (
        (shifts[:, 1] > 0) | ((shifts[:, 1] == 0) & (shifts[:, 2] > 0))))
    pair_ok = (i_idx < j_idx)[:, :, None] | ((i_idx == j_idx)[:, :, None] & s_pos[None, None, :])
    same = atom_mask[:, None] & atom_mask[None, :]
    img_vec = shifts @ cell  # [M, 3]
    vec = pos_w[None, :, None, :] + img_vec[None, None, :, :] - pos_w[:, None, None, :]  # [N, N, M, 3]
    d2 = jnp.sum(vec * vec, axis=-1)
    cand = pair_ok & same[:, :, None] & (d2 < atom_cut**2)
    flat = cand.reshape(-1)
    n_edges = jnp.sum(flat, dtype=jnp.int32)
    (sel,) = jnp.nonzero(flat, size=capacity.edges, fill_value=0)
    edge_mask = jnp.arange(capacity.edges) < n_edges
    src = (sel // (n * m)).astype(jnp.int32)
    dst = ((sel // m) % n).astype(jnp.int32)
    img = shifts[sel % m]
    # shift relative to the unwrapped input positions
    edge_shift = img - wrapped_shift[dst] + wrapped_shift[src]
    edge_shift = jnp.where(edge_mask[:, None], edge_shift, 0.0)
    src = jnp.where(edge_mask, src, 0)
    dst = jnp.where(edge_mask, dst, 0)

    # ---- bond graph: ordered pairs of short directed edges at the same centre
    d2_sel = d2.reshape(-1)[sel]
    short_half = edge_mask & (d2_sel < bond_cut**2)
    centre = jnp.concatenate([src, dst])  # directed edge d -> centre atom
    short = jnp.concatenate([short_half, short_half])
    n_dir = 2 * capacity.edges
    key = jnp.where(short, centre, n)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    sorted_key = key[order]
    atoms = jnp.arange(n)
    start = jnp.searchsorted(sorted_key, atoms, side="left")
    count = jnp.searchsorted(sorted_key, atoms, side="right") - start
    k = capacity.short_per_atom
    slot = jnp.arange(k)
    table = order[jnp.clip(start[:, None] + slot[None, :], 0, n_dir - 1)]  # [N, K]
    valid = slot[None, :] < count[:, None]
    pair_valid = valid[:, :, None] & valid[:, None, :] & (slot[:, None] != slot[None, :])[None]
    n_angles = jnp.sum(count * (count - 1), dtype=jnp.int32)
    (asel,) = jnp.nonzero(pair_valid.reshape(-1), size=capacity.angles, fill_value=0)
    angle_mask = jnp.arange(capacity.angles) < n_angles
    a_atom = asel // (k * k)
    e1 = table[a_atom, (asel // k) % k]
    e2 = table[a_atom, asel % k]
    max_short = jnp.max(count).astype(jnp.int32)
    overflow = ~images_ok | (n_edges > capacity.edges) | (n_angles > capacity.angles) | (max_short > k)
    return Graph(
        edge_src=src,
        edge_dst=dst,
        edge_shift=edge_shift,
        edge_mask=edge_mask,
        angle_e1=jnp.where(angle_mask, e1, 0).astype(jnp.int32),
        angle_e2=jnp.where(angle_mask, e2, 0).astype(jnp.int32),
        angle_mask=angle_mask,
        n_edges=n_edges,
        n_angles=n_angles,
        max_short_per_atom=max_short,
        images_needed=needed,
        overflow=overflow,
    )


def estimate_capacity(positions: np.ndarray, cell: np.ndarray, headroom: float = 1.3, skin: float = 0.0) -> Capacity:
    """Host-side capacity for one system: exact counts from ASE's neighbour list, plus headroom."""
    ne, na, ns = count_edges(positions, cell, skin)
    return Capacity(_round_up(ne * headroom), _round_up(na * headroom), max(8, ns + 4),
                    image_range(cell, ATOM_CUTOFF + skin + 0.5), skin)


def count_edges(positions: np.ndarray, cell: np.ndarray, skin: float = 0.0) -> tuple[int, int, int]:
    """(half edges, angles, max short bonds per atom) of one system from ASE's neighbour list."""
    from ase.neighborlist import primitive_neighbor_list

    cut, bond_cut = ATOM_CUTOFF + skin, BOND_CUTOFF + skin
    i, d = primitive_neighbor_list("id", (True, True, True), np.asarray(cell, float),
                                   np.asarray(positions, float), cut)
    keep = d < cut
    short = np.bincount(i[keep & (d < bond_cut)], minlength=len(positions))
    return int(keep.sum()) // 2, int(np.sum(short * (short - 1))), int(short.max(initial=0))
