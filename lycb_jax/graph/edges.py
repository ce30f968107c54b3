"""Fixed-capacity lists of half edges within a cutoff, by brute force over atom pairs and periodic images.

Candidate pairs are enumerated over all atom pairs and every periodic image that can reach the
cutoff, so cells thinner than twice the cutoff are handled exactly. Brute force is used on purpose
(O(N^2 * images)): it needs no cell list that breaks for small or strongly skewed cells, and on a
GPU it is cheap next to the model for N <~ 2000 (larger cells: :mod:`lycb_jax.graph.cells`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def images_needed(cell: jax.Array, cutoff: float) -> jax.Array:
    """[3] periodic images each side, per cell axis, that pairs within ``cutoff`` (Angstrom) can reach."""
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


def build_edges(positions: jax.Array, cell: jax.Array, atom_mask: jax.Array, *, cutoff: float, size: int,
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
    needed = images_needed(cell, cutoff)
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
    sel = first_true(flat, size)
    mask = jnp.arange(size) < n_edges
    src = (sel // (n * m)).astype(jnp.int32)
    dst = ((sel // m) % n).astype(jnp.int32)
    shift = shifts[sel % m] - wrapped_shift[dst] + wrapped_shift[src]
    return EdgeList(spread(src, mask, n), spread(dst, mask, n), jnp.where(mask[:, None], shift, 0.0), mask,
                    n_edges, needed, ~images_ok | (n_edges > size), jnp.zeros((), jnp.int32))


def first_true(mask: jax.Array, size: int) -> jax.Array:
    """Flat indices (int32) of the first ``size`` True entries of ``mask``, in order, padded with 0:
    ``jnp.nonzero(mask.ravel(), size=size, fill_value=0)[0]``. Written here because jnp.nonzero counts
    with a bincount: a scatter-add that sends every False entry after a True one to the same slot, which
    serialises on GPU atomics (the list rebuild ran at 0.3% of HBM bandwidth, docs/performance.md).
    Here each True entry is written once to its own slot and the rest are dropped."""
    flat = mask.reshape(-1)
    slot = jnp.where(flat, jnp.cumsum(flat, dtype=jnp.int32) - 1, size)  # slot >= size: dropped
    return jnp.zeros((size,), jnp.int32).at[slot].set(jnp.arange(flat.shape[0], dtype=jnp.int32), mode="drop")


def spread(index: jax.Array, mask: jax.Array, n: int) -> jax.Array:
    """``index`` where ``mask``; padding entry k points at k mod n instead. Padding contributes
    zero either way, but spread out it does not pile onto one row in the model's scatter-adds
    (segment sums, and the gradients of gathers), where GPU atomics on one address serialise."""
    return jnp.where(mask, index, jnp.arange(index.shape[0], dtype=index.dtype) % n)
