"""Batch packing: structures of different sizes padded to one atom count (bucketed, so that ``jit``
compiles rarely) and stacked for vmap, with graph capacities from exact counts."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lycb_jax.graph import capacity as cap
from lycb_jax.graph.capacity import Capacity
from lycb_jax.io.structures import System


@dataclasses.dataclass(frozen=True)
class Batch:
    """Systems padded to one atom count, stacked for vmap (host numpy)."""

    species: np.ndarray  # [B, N] atomic numbers, 0 = padding
    positions: np.ndarray  # [B, N, 3] Angstrom
    cells: np.ndarray  # [B, 3, 3] Angstrom
    atom_mask: np.ndarray  # [B, N]
    counts: tuple[int, ...]
    capacity: Capacity


PACK_HEADROOM = 1.15  # capacity over the exact counts of a packed batch (single points: nothing moves)


def pack(systems: Sequence[System], headroom: float = PACK_HEADROOM, n_atoms: int | None = None, *,
         n_systems: int | None = None, cutoffs: tuple[float, float | None]) -> Batch:
    """Pad systems to a bucketed atom count (and batch size) with graph capacities from exact counts
    at the model's ``cutoffs`` (Angstrom). Padding systems are copies of the first one with every
    atom masked out."""
    n_pad = n_atoms or cap.bucket_size(max(len(s) for s in systems))
    b_pad = n_systems or 1 << (len(systems) - 1).bit_length()  # batch sizes 1, 2, 4, 8, ...
    species = np.zeros((b_pad, n_pad), np.int32)
    positions = np.zeros((b_pad, n_pad, 3), np.float64)
    cells = np.tile(np.asarray(systems[0].cell, np.float64), (b_pad, 1, 1))
    for k, s in enumerate(systems):
        n = len(s)
        species[k, :n] = s.numbers
        positions[k, :n] = s.positions
        positions[k, n:] = s.positions[0]
        cells[k] = s.cell
    capacity = cap.estimate(systems, tuple(cutoffs), headroom, bucketed=True)
    return Batch(species, positions, cells, species > 0, tuple(len(s) for s in systems), capacity)
