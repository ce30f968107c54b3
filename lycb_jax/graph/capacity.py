"""Graph capacities: the static sizes of a fixed-shape crystal graph, how to estimate them from
structures on the host, and how to grow or shrink them from what a program reported it needed.

Every jit-compiled program (prediction, MD, relaxation, training) takes a :class:`Capacity`
as a static argument; a new capacity is a new compilation, so sizes are rounded (to multiples of
64, or to :func:`bucket_size`) and only grown when exceeded, never silently truncated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np

IMAGE_SLACK = 0.5  # Angstrom added to the cutoff when choosing the image range, for cells that deform
BINNED_MIN_ATOMS = 2000  # from this size on, neighbours come from a cell list (O(N)) instead of brute force (O(N^2))
BIN_SLACK = 1.05  # bins are chosen this much wider than the cutoff, so that a cell may shrink 5% before regridding


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Static shape of a graph: half edges, angles, short bonds per atom, image range, skin
    (Angstrom), Verlet-list length, and the cutoffs (Angstrom) of the model it is built for
    (``bond_cutoff`` None: the model uses no angles, and the graph has none).

    :func:`lycb_jax.graph.build.build_graph` adds the skin to both cutoffs, so that the graph stays a
    superset while atoms move less than skin/2 (edges beyond the cutoffs contribute exactly zero).
    MD instead keeps a Verlet list of ``list_edges`` half edges within ``cutoff + skin`` and takes
    the exact graph (``edges``, ``angles``) from it each step (:func:`lycb_jax.graph.build.refine_graph`)."""

    edges: int
    angles: int
    short_per_atom: int = 16
    images: tuple[int, int, int] = (1, 1, 1)
    skin: float = 0.0
    list_edges: int = 0
    cutoff: float = 0.0  # required: the model's (``model.cutoffs``); 0 is refused below
    bond_cutoff: float | None = None
    bins: tuple[int, int, int] | None = None  # cell-list grid (bin_grid); None: brute force
    per_bin: int = 0  # atoms one bin can hold

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError("Capacity needs the model's cutoffs (Angstrom): pass cutoff=model.cutoffs.atom, "
                             "bond_cutoff=model.cutoffs.bond, or build it with estimate(..., model.cutoffs)")

    def grown(self, graph=None, factor: float = 1.25) -> "Capacity":
        """Large enough for ``graph``'s true counts (a :class:`lycb_jax.graph.build.Graph`, host side),
        with headroom; without a graph, every size doubled."""
        if graph is None:
            return dataclasses.replace(self, edges=round_up(self.edges * 2), angles=round_up(self.angles * 2),
                                       short_per_atom=self.short_per_atom * 2,
                                       list_edges=self.list_edges and round_up(self.list_edges * 2))
        images = np.asarray(graph.images_needed).reshape(-1, 3).max(0)
        need = Need(int(np.max(np.asarray(graph.n_edges))), int(np.max(np.asarray(graph.n_angles))),
                    int(np.max(np.asarray(graph.max_short_per_atom))), tuple(int(i) for i in images),
                    per_bin=2 * self.per_bin)  # a graph does not say how full its bins were: grow them too
        return grow(self, need, factor=factor)


class Need(NamedTuple):
    """Sizes a graph needed (host integers): half edges, angles, largest number of short bonds at one
    atom, images each side, Verlet-list edges, and whether an atom moved beyond skin/2 before a rebuild."""

    edges: int
    angles: int
    short_per_atom: int
    images: tuple[int, int, int] = (1, 1, 1)
    list_edges: int = 0
    moved_far: bool = False
    per_bin: int = 0

    SIZE = 9  # length of the flat int vector form (edges, angles, short, images x3, moved_far, list_edges, per_bin)

    @classmethod
    def from_vector(cls, v) -> "Need":
        """From one or many flat vectors [..., 8] (maximum over the leading axes)."""
        v = np.asarray(v).reshape(-1, cls.SIZE).max(axis=0)
        return cls(int(v[0]), int(v[1]), int(v[2]), tuple(int(x) for x in v[3:6]), int(v[7]), bool(v[6]), int(v[8]))


def round_up(n: float, multiple: int = 64) -> int:
    return int(max(multiple, math.ceil(n / multiple) * multiple))


def bucket_size(n: int) -> int:
    """Round a size up to 1, 1.25, 1.5 or 1.75 times a power of two (at most ~25% padding), at least 16."""
    if n <= 16:
        return 16
    p = 2 ** math.floor(math.log2(n))
    for f in (1.0, 1.25, 1.5, 1.75, 2.0):
        if n <= f * p:
            return int(f * p)
    return 2 * p


def image_range(cell: np.ndarray, cutoff: float) -> tuple[int, int, int]:
    """Images needed along each lattice vector so that every pair within ``cutoff`` is found.

    Lattice planes k are 1/|b_k| apart (b: reciprocal vectors), and wrapped fractional
    differences lie in (-1, 1), so images |n_k| <= floor(cutoff |b_k|) + 1 suffice. The
    default cutoff has 0.5 A of slack so that a cell deforming under NpT keeps the range.
    """
    recip = np.linalg.inv(np.asarray(cell, dtype=np.float64)).T
    return tuple(int(math.floor(cutoff * np.linalg.norm(recip[k]))) + 1 for k in range(3))


def count_edges(positions: np.ndarray, cell: np.ndarray, skin: float = 0.0, *, cutoff: float,
                bond_cutoff: float | None) -> tuple[int, int, int]:
    """(half edges, angles, max short bonds per atom) of one system, on the host (``bond_cutoff``
    None: no angles, so 0 and 0).

    pymatgen's compiled neighbour search: the same counts as ASE's ``neighbor_list`` (checked in
    tests/graph/test_graph.py), about 150x faster, which matters when a data set of hundreds of
    structures is packed for fine-tuning."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    cut = cutoff + skin
    pos = np.ascontiguousarray(positions, np.float64)
    i, _, _, d = find_points_in_spheres(pos, pos, cut, np.ones(3, np.int64), np.ascontiguousarray(cell, np.float64),
                                        tol=1e-8)
    keep = (d < cut) & (d > 1e-8)  # not the atom itself
    if bond_cutoff is None:
        return int(keep.sum()) // 2, 0, 0
    short = np.bincount(i[keep & (d < bond_cutoff + skin)], minlength=len(positions))
    return int(keep.sum()) // 2, int(np.sum(short * (short - 1))), int(short.max(initial=0))


def measure(systems: Sequence, cutoffs: tuple[float, float | None], skin: float = 0.0,
            *, with_list: bool = False) -> Need:
    """What the graphs of ``systems`` (objects with ``positions`` [N, 3] and ``cell`` [3, 3], Angstrom)
    need at their current geometry: maxima over the systems. With ``with_list`` also the length of
    a Verlet list within cutoff + ``skin`` (the graph itself at the cutoffs); without, the graph is
    counted at cutoffs + ``skin`` (as :func:`lycb_jax.graph.build.build_graph` builds it)."""
    cut, bond = cutoffs
    need = Need(0, 0, 0, (1, 1, 1))
    for s in systems:
        pos, cell = np.asarray(s.positions, np.float64), np.asarray(s.cell, np.float64)
        ne, na, ns = count_edges(pos, cell, 0.0 if with_list else skin, cutoff=cut, bond_cutoff=bond)  # no list: the
        nl = count_edges(pos, cell, skin, cutoff=cut, bond_cutoff=bond)[0] if with_list else 0  # graph has the skin
        img = image_range(cell, cut + skin + IMAGE_SLACK)
        need = Need(max(need.edges, ne), max(need.angles, na), max(need.short_per_atom, ns),
                    tuple(max(a, b) for a, b in zip(need.images, img)), max(need.list_edges, nl))
    return need


def estimate(systems: Sequence, cutoffs: tuple[float, float | None], headroom: float = 1.3,
             *, angle_headroom: float | None = None, skin: float = 0.0, with_list: bool = False,
             bucketed: bool = False) -> Capacity:
    """Capacity for ``systems`` from exact host counts plus headroom (angles fluctuate more: their
    own headroom, default the same). ``bucketed`` rounds edges and angles with :func:`bucket_size`
    (few distinct shapes across data sets) instead of to multiples of 64."""
    need = measure(systems, cutoffs, skin, with_list=with_list)
    rnd = (lambda n: bucket_size(int(n) + 16)) if bucketed else round_up
    angles = 0 if cutoffs[1] is None else rnd(need.angles * (angle_headroom or headroom))
    bins, per_bin = binning(systems, cutoffs[0] + skin, headroom)
    return Capacity(rnd(need.edges * headroom), angles,
                    max(8, need.short_per_atom + 4), need.images, skin,
                    round_up(need.list_edges * headroom) if with_list else 0, *cutoffs, bins, per_bin)


def bin_grid(cell, cutoff: float) -> tuple[int, int, int] | None:
    """Bins per cell axis for :func:`lycb_jax.graph.cells.build_edges_binned` (host side): floor(perpendicular width /
    ``cutoff``) along each axis (Angstrom), or None if any axis has fewer than 3 (a thin or small cell:
    use :func:`lycb_jax.graph.edges.build_edges`, which handles any cell)."""
    widths = 1.0 / np.linalg.norm(np.linalg.inv(np.asarray(cell, np.float64)), axis=0)  # 1 / |reciprocal row|
    grid = tuple(int(g) for g in np.floor(widths / cutoff))
    return grid if min(grid) >= 3 else None


def binning(systems: Sequence, cutoff: float, headroom: float = 1.3) -> tuple[tuple[int, int, int] | None, int]:
    """(bins, per_bin) of a cell list for ``systems`` (``positions`` [N, 3], ``cell`` [3, 3], Angstrom) at
    ``cutoff`` (Angstrom): (None, 0), i.e. brute force, below ``BINNED_MIN_ATOMS`` atoms or for a cell
    with fewer than 3 bins along an axis; else the grid all cells allow (bins ``BIN_SLACK`` x the
    cutoff wide) and the most atoms in one bin x ``headroom`` (at least + 8)."""
    if not systems or min(len(s.positions) for s in systems) < BINNED_MIN_ATOMS:
        return None, 0
    grids = [bin_grid(np.asarray(s.cell), cutoff * BIN_SLACK) for s in systems]
    if any(g is None for g in grids):
        return None, 0
    grid = tuple(int(x) for x in np.min(grids, axis=0))
    most = 0
    for s in systems:
        frac = np.asarray(s.positions, np.float64) @ np.linalg.inv(np.asarray(s.cell, np.float64))
        b = np.minimum(np.floor((frac - np.floor(frac)) * grid).astype(int), np.asarray(grid) - 1)
        most = max(most, int(np.bincount((b[:, 0] * grid[1] + b[:, 1]) * grid[2] + b[:, 2]).max()))
    return grid, bucket_size(max(most * headroom, most + 8))


def estimate_capacity(positions: np.ndarray, cell: np.ndarray, *, cutoffs: tuple[float, float | None],
                      headroom: float = 1.3, skin: float = 0.0, with_list: bool = False) -> Capacity:
    """:func:`estimate` for one system given as arrays (positions [N, 3], cell [3, 3], Angstrom)."""
    return estimate([_Geometry(np.asarray(positions), np.asarray(cell))], cutoffs, headroom, skin=skin,
                    with_list=with_list)


class _Geometry(NamedTuple):
    positions: np.ndarray
    cell: np.ndarray


def grow(capacity: Capacity, need: Need, factor: float = 1.25, *, min_factor: float = 1.0, cells=None) -> Capacity:
    """Capacity at least ``need`` x ``factor`` (and ``min_factor`` x the old sizes), never smaller.

    Edges, angles and the list are rounded up with :func:`bucket_size` (steps of 1.25 to 1.5x): a
    run that keeps outgrowing its capacity recompiles a few times on a geometric ladder, and a size
    it had before (a fluctuation, a shrink by :func:`fit` undone) is one jit already compiled.
    If ``need.moved_far`` (an atom moved beyond skin/2 before the Verlet list was rebuilt) the skin
    grows 1.5x (at most 2 A), the image range is recomputed for ``cells`` and the list grows with
    the volume of its cutoff sphere."""
    skin = min(2.0, capacity.skin * 1.5) if need.moved_far else capacity.skin
    images = np.maximum(need.images, capacity.images)
    if cells is not None:
        images = np.maximum(images, np.max([image_range(c, capacity.cutoff + skin + IMAGE_SLACK)
                                            for c in np.asarray(cells).reshape(-1, 3, 3)], axis=0))
    list_grow = ((capacity.cutoff + skin) / (capacity.cutoff + capacity.skin)) ** 3
    bins, per_bin = capacity.bins, capacity.per_bin
    if bins is not None:
        if need.per_bin > per_bin:
            per_bin = bucket_size(math.ceil(need.per_bin * factor))
        if cells is not None:  # a cell that shrank or sheared below the grid: regrid, or brute force if too small
            grids = [bin_grid(c, (capacity.cutoff + skin) * BIN_SLACK) for c in np.asarray(cells).reshape(-1, 3, 3)]
            bins = None if any(g is None for g in grids) else tuple(int(x) for x in np.min(grids, axis=0))
            per_bin = per_bin if bins is not None else 0
            if bins is not None and bins != capacity.bins:  # other bin volume: scale the per-bin capacity with it
                per_bin = bucket_size(math.ceil(per_bin * np.prod(capacity.bins) / np.prod(bins)))

    def grown(current, n, scale=1.0):
        target = max(n * factor, min_factor * current) * scale
        return current if target <= current else bucket_size(math.ceil(target))

    return dataclasses.replace(
        capacity, edges=grown(capacity.edges, need.edges), angles=grown(capacity.angles, need.angles),
        short_per_atom=max(capacity.short_per_atom, need.short_per_atom + 4),
        images=tuple(int(x) for x in images), skin=skin,
        list_edges=capacity.list_edges and grown(capacity.list_edges, need.list_edges, list_grow), bins=bins,
        per_bin=per_bin)


def fit(capacity: Capacity, need: Need, shrink_below: float = 0.7) -> Capacity:
    """Shrink a capacity that is far larger than ``need`` (a recompile, worth it for long runs).

    A size is cut to :func:`bucket_size` of need x headroom (edges and list 25%, angles 40%: they
    fluctuate more, and a shrink that the next fluctuation undoes is a wasted compile) when that is
    below ``shrink_below`` x the current size; growth is :func:`grow`'s job."""
    def fitted(current, n, headroom):
        target = max(64, bucket_size(math.ceil(n * headroom)))  # below 64 a shrink saves nothing worth a compile
        return target if target < shrink_below * current else current

    return dataclasses.replace(capacity, edges=fitted(capacity.edges, need.edges, 1.25),
                               angles=fitted(capacity.angles, need.angles, 1.4),
                               list_edges=capacity.list_edges and fitted(capacity.list_edges, need.list_edges, 1.25))


def merged(a: Capacity, b: Capacity) -> Capacity:
    """The elementwise larger of two capacities (same skin and cutoffs as ``a``)."""
    return dataclasses.replace(a, edges=max(a.edges, b.edges), angles=max(a.angles, b.angles),
                               short_per_atom=max(a.short_per_atom, b.short_per_atom),
                               images=tuple(max(x, y) for x, y in zip(a.images, b.images)),
                               list_edges=max(a.list_edges, b.list_edges),
                               **_merged_bins(a, b))


def _merged_bins(a: Capacity, b: Capacity) -> dict:
    """The coarser grid of two cell-list capacities, each one's per-bin capacity scaled to its bin volume
    (brute force if either has no grid)."""
    if a.bins is None or b.bins is None:
        return {"bins": None, "per_bin": 0}
    bins = tuple(map(min, a.bins, b.bins))
    scaled = max(c.per_bin * np.prod(c.bins) / np.prod(bins) for c in (a, b))
    return {"bins": bins, "per_bin": max(a.per_bin, b.per_bin, bucket_size(math.ceil(scaled)))}
