"""Graph edge sets against ASE's neighbour list (an independent implementation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list

from lycb_jax.graph.capacity import Capacity, count_edges, estimate_capacity
from lycb_jax.models.chgnet import CHGNetConfig
from lycb_jax.graph import build_graph
from cells import lyc_like, lyc_trigonal, parity_set, rattled

CUTOFFS = (CHGNetConfig.atom_cutoff, CHGNetConfig.bond_cutoff)  # Angstrom: the graphs CHGNet 0.3.0 takes

CASES = ["LYC_trig_30", "LYC_trig_skewed", "LYC_skewed", "LYB_skewed", "MgO", "NiAl_skewed", "LYC_rs_111",
         "LYC_strained_0.08", "LYCB_skewed_rattled", "Fe_bcc"]


def directed_edges(g, n_half):
    src, dst = np.asarray(g.edge_src), np.asarray(g.edge_dst)
    shift = np.rint(np.asarray(g.edge_shift)).astype(int)
    m = np.asarray(g.edge_mask)
    out = set()
    for i, j, s in zip(src[m], dst[m], shift[m]):
        out.add((int(i), int(j), *s))
        out.add((int(j), int(i), *(-s)))
    return out


def ase_edges(pos, cell, cutoff):
    i, j, d, S = primitive_neighbor_list("ijdS", (True,) * 3, cell, pos, cutoff)
    keep = d < cutoff
    return {(int(a), int(b), *s) for a, b, s in zip(i[keep], j[keep], S[keep])}


def assert_matches_ase(g, pos, cell):
    """Edge set (6 A) and angle set (pairs of 3 A bonds at one centre) of ``g`` equal ASE's."""
    ours = directed_edges(g, None)
    ref = ase_edges(pos, cell, CUTOFFS[0])
    assert ours == ref
    # angles: ordered pairs of distinct short directed edges with the same centre
    short_ref = ase_edges(pos, cell, CUTOFFS[1])
    by_centre = {}
    for e in short_ref:
        by_centre.setdefault(e[0], []).append(e)
    ref_angles = {(a, b) for es in by_centre.values() for a in es for b in es if a != b}
    src, dst = np.asarray(g.edge_src), np.asarray(g.edge_dst)
    shift = np.rint(np.asarray(g.edge_shift)).astype(int)
    dir_edges = [(int(i), int(j), *sh) for i, j, sh in zip(src, dst, shift)]
    dir_edges += [(int(j), int(i), *(-sh)) for i, j, sh in zip(src, dst, shift)]
    am = np.asarray(g.angle_mask)
    ours_angles = {(dir_edges[a], dir_edges[b]) for a, b in zip(np.asarray(g.angle_e1)[am], np.asarray(g.angle_e2)[am])}
    assert int(g.n_angles) == len(ref_angles)
    assert ours_angles == ref_angles


@pytest.mark.parametrize("skin", [0.0, 1.0])
def test_host_counts_match_ase(skin):
    """count_edges (pymatgen's neighbour search, for capacities) gives ASE's edge, angle and short-bond counts."""
    for name in CASES:
        s = parity_set()[name]
        pos, cell = np.asarray(s.cart_coords), np.asarray(s.lattice.matrix)
        edges = ase_edges(pos, cell, CUTOFFS[0] + skin)
        short = np.bincount([e[0] for e in ase_edges(pos, cell, CUTOFFS[1] + skin)], minlength=len(pos))
        assert count_edges(pos, cell, skin, cutoff=6.0, bond_cutoff=3.0) == (len(edges) // 2, int(np.sum(short * (short - 1))), int(short.max())), name


@pytest.mark.parametrize("name", CASES)
@pytest.mark.slow
def test_edges_and_angles_match_ase(name):
    s = parity_set()[name]
    pos, cell = np.asarray(s.cart_coords), np.asarray(s.lattice.matrix)
    # unwrap some atoms by whole cells: the graph must not depend on wrapping
    pos = pos + np.outer(np.arange(len(pos)) % 3 - 1, cell[0] + cell[2])
    cap = estimate_capacity(pos, cell, cutoffs=CUTOFFS)
    g = jax.jit(build_graph, static_argnums=3)(jnp.asarray(pos, jnp.float32), jnp.asarray(cell, jnp.float32),
                                               jnp.ones(len(pos), bool), cap)
    assert not bool(g.overflow)
    assert_matches_ase(g, pos, cell)


@pytest.mark.parametrize("name", ["LYC_trig_skewed", "LYCB_skewed_rattled", "MgO"])
@pytest.mark.parametrize("strain", [0.0, 0.01])
@pytest.mark.slow
def test_exact_graph_from_verlet_list(name, strain):
    """A Verlet list (cutoff + 1 A skin) built at x0, refined at x1 (atoms moved <= 0.3 A, cell
    strained): the refined graph is CHGNet's exact graph at x1, by ASE."""
    from lycb_jax.graph import build_edges, exact_sizes, refine_graph

    s = parity_set()[name]
    pos0, cell0 = np.asarray(s.cart_coords), np.asarray(s.lattice.matrix)
    rng = np.random.default_rng(3)
    step = rng.normal(size=pos0.shape)
    step *= 0.3 * rng.uniform(size=(len(pos0), 1)) / np.linalg.norm(step, axis=1, keepdims=True)
    deform = np.eye(3) + strain * np.diag([1.0, -0.5, 0.7])
    pos1, cell1 = pos0 @ deform + step, cell0 @ deform
    skin = 1.0
    cap0 = estimate_capacity(pos0, cell0, skin=skin, cutoffs=CUTOFFS)
    cap1 = estimate_capacity(pos1, cell1, cutoffs=CUTOFFS)
    cap = Capacity(cap1.edges, cap1.angles, cap1.short_per_atom, cap0.images, skin, cap0.edges, *CUTOFFS)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    edges = build_edges(f32(pos0), f32(cell0), jnp.ones(len(pos0), bool), cutoff=CUTOFFS[0] + skin, size=cap.list_edges,
                        images=cap.images)
    g = jax.jit(refine_graph, static_argnums=3)(edges, f32(pos1), f32(cell1), cap)
    assert not bool(g.overflow)
    assert int(edges.n_edges) > int(g.n_edges)  # the list really is a superset
    sizes = [int(x) for x in exact_sizes(edges, f32(pos1), f32(cell1), cutoffs=CUTOFFS)]  # what MD checks with
    assert sizes == [int(g.n_edges), int(g.n_angles), int(g.max_short_per_atom)]
    assert_matches_ase(g, pos1, cell1)


def test_overflow_is_flagged_not_silent():
    s = lyc_trigonal(0)
    pos, cell = jnp.asarray(s.cart_coords, jnp.float32), jnp.asarray(s.lattice.matrix, jnp.float32)
    cap = estimate_capacity(s.cart_coords, s.lattice.matrix, cutoffs=CUTOFFS)
    mask = jnp.ones(len(s), bool)
    for small in (Capacity(64, cap.angles, cap.short_per_atom, cap.images, cutoff=6.0, bond_cutoff=3.0),
                  Capacity(cap.edges, 64, cap.short_per_atom, cap.images, cutoff=6.0, bond_cutoff=3.0),
                  Capacity(cap.edges, cap.angles, 2, cap.images, cutoff=6.0, bond_cutoff=3.0),
                  Capacity(cap.edges, cap.angles, cap.short_per_atom, (1, 1, 0), cutoff=6.0, bond_cutoff=3.0)):
        g = build_graph(pos, cell, mask, small)
        assert bool(g.overflow), small
        grown = small.grown(g)
        g2 = build_graph(pos, cell, mask, grown)
        assert not bool(g2.overflow)
        assert int(g2.n_edges) == int(build_graph(pos, cell, mask, cap).n_edges)


def test_shrinking_cell_beyond_image_range_overflows():
    s = lyc_trigonal(0)
    cap = estimate_capacity(s.cart_coords, s.lattice.matrix, cutoffs=CUTOFFS)
    cell = np.asarray(s.lattice.matrix) * np.array([[1.0], [1.0], [0.55]])  # c: 6.05 -> 3.3 A
    pos = s.frac_coords @ cell
    g = build_graph(jnp.asarray(pos, jnp.float32), jnp.asarray(cell, jnp.float32), jnp.ones(len(s), bool), cap)
    assert bool(g.overflow)


@pytest.mark.slow
def test_vmap_over_systems_equals_single():
    a, b = rattled(lyc_like((2, 1, 1), seed=1), 0.2, 1), rattled(lyc_like((2, 1, 1), seed=2), 0.2, 2)
    cap = estimate_capacity(a.cart_coords, a.lattice.matrix, cutoffs=CUTOFFS)
    cap = Capacity(cap.edges + 128, cap.angles + 256, cap.short_per_atom + 4, cap.images, cutoff=6.0, bond_cutoff=3.0)
    pos = jnp.asarray(np.stack([a.cart_coords, b.cart_coords]), jnp.float32)
    cell = jnp.asarray(np.stack([a.lattice.matrix, b.lattice.matrix]), jnp.float32)
    mask = jnp.ones((2, len(a)), bool)
    gv = jax.vmap(build_graph, in_axes=(0, 0, 0, None))(pos, cell, mask, cap)
    for k in range(2):
        g1 = build_graph(pos[k], cell[k], mask[k], cap)
        assert int(gv.n_edges[k]) == int(g1.n_edges)
        np.testing.assert_array_equal(np.asarray(gv.edge_src[k]), np.asarray(g1.edge_src))
        np.testing.assert_array_equal(np.asarray(gv.angle_e2[k]), np.asarray(g1.angle_e2))


def test_padding_atoms_get_no_edges():
    s = lyc_like((1, 1, 1), seed=3)
    n = len(s)
    pos = np.concatenate([s.cart_coords, np.repeat(s.cart_coords[:1], 5, 0)])
    mask = np.arange(n + 5) < n
    cap = estimate_capacity(s.cart_coords, s.lattice.matrix, cutoffs=CUTOFFS)
    g = build_graph(jnp.asarray(pos, jnp.float32), jnp.asarray(s.lattice.matrix, jnp.float32), jnp.asarray(mask), cap)
    m = np.asarray(g.edge_mask)
    assert np.asarray(g.edge_src)[m].max() < n and np.asarray(g.edge_dst)[m].max() < n
    assert directed_edges(g, cap.edges) == ase_edges(s.cart_coords, s.lattice.matrix, CUTOFFS[0])


def _edge_set(e):
    m = np.asarray(e.mask)
    shift = np.rint(np.asarray(e.shift)).astype(int)
    out = set()
    for i, j, s in zip(np.asarray(e.src)[m], np.asarray(e.dst)[m], shift[m]):
        out |= {(int(i), int(j), *s), (int(j), int(i), *(-s))}
    return out


@pytest.mark.parametrize("name", ["LYC_skewed", "LYB_skewed"])
@pytest.mark.slow
def test_binned_edges_equal_ase_in_large_skewed_cells(name):
    """The O(N) cell-list build gives ASE's neighbour set on triclinic supercells of 1-2.5k atoms with
    unwrapped atoms and padding; a bin over capacity, a cell squeezed below the grid, and too small an
    edge capacity each set ``overflow``."""
    from lycb_jax.graph import bin_grid, build_edges_binned

    s = parity_set()[name]
    lat = np.asarray(s.lattice.matrix)
    widths = abs(np.linalg.det(lat)) / np.linalg.norm(np.cross(lat[[1, 2, 0]], lat[[2, 0, 1]]), axis=1)
    s = s * np.ceil(3 * (CUTOFFS[0] + 1.0) / widths).astype(int)
    pos, cell = np.asarray(s.cart_coords), np.asarray(s.lattice.matrix)
    pos = pos + np.outer(np.arange(len(pos)) % 3 - 1, cell[0] - cell[2])  # unwrapped by whole cells
    cut = CUTOFFS[0] + 1.0
    grid = bin_grid(cell, cut)
    assert grid is not None
    n = len(pos)
    pos_p = np.concatenate([pos, np.zeros((5, 3))])  # 5 padding atoms at the origin
    mask = np.arange(n + 5) < n
    ref = ase_edges(pos, cell, cut)
    per_bin = int(np.ceil(2 * n / np.prod(grid))) + 8
    build = jax.jit(build_edges_binned, static_argnums=(3, 4, 5, 6))
    e = build(jnp.asarray(pos_p, jnp.float32), jnp.asarray(cell, jnp.float32), jnp.asarray(mask), cut,
              len(ref) // 2 + 64, grid, per_bin)
    print(f"{name}: {n} atoms, grid {grid}, {len(ref) // 2} half edges")
    assert not bool(e.overflow) and int(e.n_edges) == len(ref) // 2
    assert _edge_set(e) == ref
    args = (jnp.asarray(pos_p, jnp.float32), jnp.asarray(cell, jnp.float32), jnp.asarray(mask), cut)
    assert bool(build(*args, len(ref) // 2 + 64, grid, 2).overflow)  # bins over capacity
    assert bool(build(*args, len(ref) // 2 - 1, grid, per_bin).overflow)  # edges over capacity
    widths = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    f = 0.99 * cut / np.min(widths / np.asarray(grid))  # squeezed: the narrowest bins now 1% below the cutoff
    assert bool(build(args[0] * f, args[1] * f, args[2], cut, 4 * len(ref), grid, 4 * per_bin).overflow)


@pytest.mark.parametrize("n_true, size", [(0, 7), (5, 7), (7, 7), (40, 7), (13, 50)])
def test_first_true_is_numpys_flatnonzero_cut_and_padded(n_true, size):
    """The compaction behind every list and graph build equals numpy's flatnonzero, cut to ``size`` and padded
    with 0, for none, some, exactly ``size`` and more True entries than ``size``, also under vmap."""
    from lycb_jax.graph.edges import first_true
    rng = np.random.default_rng(n_true)
    masks = np.zeros((3, 6, 11), bool)
    for m in masks:
        m.reshape(-1)[rng.choice(m.size, n_true, replace=False)] = True

    def ref(m):
        idx = np.flatnonzero(m)[:size]
        return np.concatenate([idx, np.zeros(size - idx.size, int)])

    for m in masks:
        np.testing.assert_array_equal(np.asarray(jax.jit(first_true, static_argnums=1)(m, size)), ref(m))
    batched = jax.vmap(lambda m: first_true(m, size))(masks)
    np.testing.assert_array_equal(np.asarray(batched), np.stack([ref(m) for m in masks]))


def test_list_rebuild_compiles_without_a_scatter_add():
    """The brute-force rebuild's compaction is a plain scatter: jnp.nonzero's bincount (a scatter-add where runs of
    False entries pile onto one slot, 0.3% of HBM bandwidth on an H100, docs/performance.md) must not come back."""
    from lycb_jax.graph.edges import build_edges
    n = 40
    pos = jnp.asarray(np.random.default_rng(0).uniform(0, 9, (n, 3)), jnp.float32)
    fn = jax.jit(lambda p, c, m: build_edges(p, c, m, cutoff=5.0, size=2000, images=(1, 1, 1)))
    hlo = fn.lower(pos, jnp.eye(3) * 9.0, jnp.ones(n, bool)).compile().as_text()
    assert " scatter(" in hlo and "scatter-add" not in hlo  # the code before first_true had a %scatter-add here
