"""Cell lists: the half edges of :func:`lycb_jax.graph.edges.build_edges` in O(N) for large cells."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.graph.edges import EdgeList, first_true, images_needed, spread

_STENCIL = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)  # the 27 neighbour bins


def build_edges_binned(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, cutoff: float, size: int,
                       grid: tuple[int, int, int], per_bin: int) -> EdgeList:
    """The half edges of :func:`lycb_jax.graph.edges.build_edges` (same set, other order) in O(N): atoms are sorted into a
    ``grid`` of bins in fractional space (:func:`lycb_jax.graph.capacity.bin_grid`), at most ``per_bin`` per bin, and each atom
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
    sel = first_true(flat, size)
    mask = jnp.arange(size) < n_edges
    m = 27 * per_bin
    src = (sel // m).astype(jnp.int32)
    dst = j.reshape(-1)[sel].astype(jnp.int32)
    img = image.reshape(-1, 3)[sel // per_bin].astype(positions.dtype)
    shift = img - wrapped_shift[dst] + wrapped_shift[src]
    grid_ok = jnp.all(1.0 / jnp.linalg.norm(inv, axis=0) / g >= cutoff)  # perpendicular widths over bins
    return EdgeList(spread(src, mask, n), spread(dst, mask, n), jnp.where(mask[:, None], shift, 0.0), mask,
                    n_edges, images_needed(cell, cutoff),
                    ~grid_ok | (jnp.max(count) > per_bin) | (n_edges > size), jnp.max(count).astype(jnp.int32))
