"""Periodic crystal graphs in JAX with fixed capacities (jit- and vmap-compatible).

A graph holds CHGNet's two neighbour structures of one periodic system (batches vmap it):

* the atom graph: every pair (i, j, image) with distance < 6 Angstrom, stored once per
  undirected bond as a *half edge* i -> j + shift; the directed edge list used by the model
  is ``concat(half, reversed half)``, so the reverse of directed edge d is ``d +- H``;
* the bond graph: ordered pairs of distinct directed edges with the same centre atom and
  both shorter than 3 Angstrom (the angles).

Every array has a static capacity. When the true count exceeds it, ``overflow`` is set and
the caller must rebuild with larger capacities (:mod:`lycb_jax.capacity`); nothing is dropped
silently. Candidate pairs are enumerated over all atom pairs and every periodic image that
can reach the cutoff, so cells thinner than twice the cutoff are handled exactly.
Brute force is used on purpose (O(N^2 * images)): it needs no cell list that breaks for
small or strongly skewed cells, and on a GPU it is cheap next to the model for N <~ 2000.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.capacity import ATOM_CUTOFF, BOND_CUTOFF, Capacity


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


def _images_needed(cell: jax.Array, cutoff: float) -> jax.Array:
    recip = jnp.linalg.inv(cell).T
    return jnp.floor(cutoff * jnp.linalg.norm(recip, axis=1)).astype(jnp.int32) + 1


def _shifts(images: tuple[int, int, int]) -> np.ndarray:
    rng = [np.arange(-n, n + 1) for n in images]
    grid = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    return grid.astype(np.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EdgeList:
    """Fixed-capacity list of half edges within a cutoff (a Verlet list when the cutoff has a skin).

    Attributes: ``src``, ``dst``, ``shift``, ``mask`` as in :class:`Graph`; ``n_edges`` the true
    count; ``images_needed`` [3]; ``overflow`` True if the capacity or image range was too small.
    """

    src: jax.Array
    dst: jax.Array
    shift: jax.Array
    mask: jax.Array
    n_edges: jax.Array
    images_needed: jax.Array
    overflow: jax.Array
    max_per_bin: jax.Array  # most atoms in one bin of a cell-list build (0 for brute force)


def build_edges(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, cutoff: float, size: int,
                images: tuple[int, int, int]) -> EdgeList:
    """All half edges shorter than ``cutoff`` (Angstrom), by brute force over atom pairs and images.

    Shifts refer to the input (unwrapped) positions: vector = x_j + shift @ cell - x_i.
    """
    positions = jax.lax.stop_gradient(positions)
    cell = jax.lax.stop_gradient(cell)
    n = positions.shape[0]
    shifts = jnp.asarray(_shifts(images))  # [M, 3]
    m = shifts.shape[0]
    # Wrap into the cell in fractional space so that the static image range suffices.
    frac = positions @ jnp.linalg.inv(cell)
    wrapped_shift = jnp.floor(frac)  # position = wrapped + wrapped_shift @ cell
    pos_w = (frac - wrapped_shift) @ cell
    needed = _images_needed(cell, cutoff)
    images_ok = jnp.all(needed <= jnp.asarray(images))

    i_idx, j_idx = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij")
    # half-edge rule: i < j with any image, or i == j with a lexicographically positive image
    s_pos = (shifts[:, 0] > 0) | ((shifts[:, 0] == 0) & (
        (shifts[:, 1] > 0) | ((shifts[:, 1] == 0) & (shifts[:, 2] > 0))))
    pair_ok = (i_idx < j_idx)[:, :, None] | ((i_idx == j_idx)[:, :, None] & s_pos[None, None, :])
    same = atom_mask[:, None] & atom_mask[None, :]
    img_vec = shifts @ cell  # [M, 3]
    vec = pos_w[None, :, None, :] + img_vec[None, None, :, :] - pos_w[:, None, None, :]  # [N, N, M, 3]
    d2 = jnp.sum(vec * vec, axis=-1)
    flat = (pair_ok & same[:, :, None] & (d2 < cutoff**2)).reshape(-1)
    n_edges = jnp.sum(flat, dtype=jnp.int32)
    (sel,) = jnp.nonzero(flat, size=size, fill_value=0)
    mask = jnp.arange(size) < n_edges
    src = (sel // (n * m)).astype(jnp.int32)
    dst = ((sel // m) % n).astype(jnp.int32)
    shift = shifts[sel % m] - wrapped_shift[dst] + wrapped_shift[src]
    return EdgeList(_spread(src, mask, n), _spread(dst, mask, n), jnp.where(mask[:, None], shift, 0.0), mask,
                    n_edges, needed, ~images_ok | (n_edges > size), jnp.zeros((), jnp.int32))


def bin_grid(cell, cutoff: float) -> tuple[int, int, int] | None:
    """Bins per cell axis for :func:`build_edges_binned` (host side): floor(perpendicular width /
    ``cutoff``) along each axis (Angstrom), or None if any axis has fewer than 3 (a thin or small cell:
    use :func:`build_edges`, which handles any cell)."""
    widths = 1.0 / np.linalg.norm(np.linalg.inv(np.asarray(cell, np.float64)), axis=0)  # 1 / |reciprocal row|
    grid = tuple(int(g) for g in np.floor(widths / cutoff))
    return grid if min(grid) >= 3 else None


_STENCIL = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)  # the 27 neighbour bins


def build_edges_binned(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, cutoff: float, size: int,
                       grid: tuple[int, int, int], per_bin: int) -> EdgeList:
    """The half edges of :func:`build_edges` (same set, other order) in O(N): atoms are sorted into a
    ``grid`` of bins in fractional space (:func:`bin_grid`), at most ``per_bin`` per bin, and each atom
    looks only at the 27 bins around its own. Bins at least ``cutoff`` wide (perpendicular) hold every
    partner of an atom in those 27, for any triclinic cell; with 3+ bins per axis each partner and
    image appears once. ``overflow`` is set if a bin holds more than ``per_bin`` atoms, the cell got
    too thin for ``grid`` (NpT), or there are more than ``size`` edges.

    Written here rather than taken from jax-md's ``partition`` because that returns neighbour indices
    without the periodic image of each pair, which the crystal graph needs."""
    positions = jax.lax.stop_gradient(positions)
    cell = jax.lax.stop_gradient(cell)
    n = positions.shape[0]
    g = jnp.asarray(grid, jnp.int32)
    n_bins = int(np.prod(grid))
    inv = jnp.linalg.inv(cell)
    frac = positions @ inv
    wrapped_shift = jnp.floor(frac)
    fw = frac - wrapped_shift  # in [0, 1)
    b3 = jnp.clip(jnp.floor(fw * g).astype(jnp.int32), 0, g - 1)  # [N, 3]
    bin_id = jnp.where(atom_mask, (b3[:, 0] * grid[1] + b3[:, 1]) * grid[2] + b3[:, 2], n_bins)
    order = jnp.argsort(bin_id)
    sorted_bins = bin_id[order]
    start = jnp.searchsorted(sorted_bins, jnp.arange(n_bins), side="left")
    count = jnp.searchsorted(sorted_bins, jnp.arange(n_bins), side="right") - start
    slot = jnp.arange(per_bin)
    table = jnp.where(slot[None, :] < count[:, None], order[jnp.clip(start[:, None] + slot, 0, n - 1)], -1)
    nb3 = b3[:, None, :] + jnp.asarray(_STENCIL, jnp.int32)[None]  # [N, 27, 3]
    image = jnp.floor_divide(nb3, g)
    nb3 = nb3 - image * g
    cand = table[(nb3[..., 0] * grid[1] + nb3[..., 1]) * grid[2] + nb3[..., 2]]  # [N, 27, K]
    j = jnp.maximum(cand, 0)
    dfrac = fw[j] + image[:, :, None, :].astype(fw.dtype) - fw[:, None, None, :]
    vec = dfrac @ cell
    d2 = jnp.sum(vec * vec, -1)
    i = jnp.arange(n)[:, None, None]
    ok = (cand >= 0) & (i < cand) & atom_mask[:, None, None] & (d2 < cutoff**2)
    flat = ok.reshape(-1)
    n_edges = jnp.sum(flat, dtype=jnp.int32)
    (sel,) = jnp.nonzero(flat, size=size, fill_value=0)
    mask = jnp.arange(size) < n_edges
    m = 27 * per_bin
    src = (sel // m).astype(jnp.int32)
    dst = j.reshape(-1)[sel].astype(jnp.int32)
    img = image.reshape(-1, 3)[sel // per_bin].astype(positions.dtype)
    shift = img - wrapped_shift[dst] + wrapped_shift[src]
    grid_ok = jnp.all(1.0 / jnp.linalg.norm(inv, axis=0) / g >= cutoff)  # perpendicular widths over bins
    return EdgeList(_spread(src, mask, n), _spread(dst, mask, n), jnp.where(mask[:, None], shift, 0.0), mask,
                    n_edges, _images_needed(cell, cutoff),
                    ~grid_ok | (jnp.max(count) > per_bin) | (n_edges > size), jnp.max(count).astype(jnp.int32))


def neighbour_edges(positions, cell, atom_mask, cutoff: float, size: int, capacity: Capacity) -> EdgeList:
    """Half edges within ``cutoff`` (Angstrom), at most ``size``: by the cell list of ``capacity.bins``
    (:func:`build_edges_binned`, large cells) or by brute force over ``capacity.images``."""
    if capacity.bins is not None:
        return build_edges_binned(positions, cell, atom_mask, cutoff, size, capacity.bins, capacity.per_bin)
    return build_edges(positions, cell, atom_mask, cutoff, size, capacity.images)


def _spread(index: jax.Array, mask: jax.Array, n: int) -> jax.Array:
    """``index`` where ``mask``; padding entry k points at k mod n instead. Padding contributes
    zero either way, but spread out it does not pile onto one row in the model's scatter-adds
    (segment sums, and the gradients of gathers), where GPU atomics on one address serialise."""
    return jnp.where(mask, index, jnp.arange(index.shape[0], dtype=index.dtype) % n)


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
    (asel,) = jnp.nonzero(pair_valid.reshape(-1), size=capacity.angles, fill_value=0)
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
        angle_e1=_spread(e1.astype(jnp.int32), angle_mask, n_dir),
        angle_e2=_spread(e2.astype(jnp.int32), angle_mask, n_dir),
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
    edges = neighbour_edges(positions, cell, atom_mask, capacity.cutoff + capacity.skin, capacity.edges, capacity)
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


def exact_sizes(edges: EdgeList, positions: jax.Array, cell: jax.Array, cutoffs: tuple[float, float | None] = (
        ATOM_CUTOFF, BOND_CUTOFF)) -> tuple[jax.Array, jax.Array, jax.Array]:
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
    (sel,) = jnp.nonzero(keep, size=capacity.edges, fill_value=0)
    mask = jnp.arange(capacity.edges) < n_edges
    n = positions.shape[0]
    return _with_angles(_spread(edges.src[sel], mask, n), _spread(edges.dst[sel], mask, n),
                        jnp.where(mask[:, None], edges.shift[sel], 0.0), mask, n_edges, d2[sel], positions.shape[0],
                        bond_cut, capacity, edges.images_needed, edges.overflow)
