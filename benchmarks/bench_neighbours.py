"""Neighbour-list build: brute force (lycb_jax.graph.build_edges, O(N^2 images)) against the O(N)
cell list (build_edges_binned) on LYC-like cells of 1k to 100k atoms, cutoff 6 + 1 A skin (the MD's
Verlet list). Per size: seconds per build (median of --repeat after a warm-up) and XLA's temporary
memory per atom (compiled.memory_analysis()); brute force only where its N^2 arrays fit.

    python benchmarks/bench_neighbours.py [--sizes 3 6 12 20 24] [--brute-max 3000] [--out FILE.json]
"""
import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import lyc_like

from lycb_jax.graph.capacity import round_up
from lycb_jax.graph import bin_grid, build_edges, build_edges_binned

p = argparse.ArgumentParser()
p.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 12, 20, 24], help="lyc_like supercell n (n^3 cubes)")
p.add_argument("--brute-max", type=int, default=3000, help="largest N for the brute-force build")
p.add_argument("--repeat", type=int, default=5)
p.add_argument("--out", default=None)
args = p.parse_args()
CUT = 7.0  # Angstrom: 6 A atom cutoff + 1 A skin


def bench(fn, *a):
    compiled = jax.jit(fn).lower(*a).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    out = compiled(*a)
    jax.block_until_ready(out)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*a))
        times.append(time.perf_counter() - t)
    return out, float(np.median(times)), temp


rows = []
print(f"device {jax.devices()[0].device_kind}; cutoff {CUT} A", flush=True)
for n in args.sizes:
    s = lyc_like(n)
    pos, cell = np.asarray(s.cart_coords, np.float32), np.asarray(s.lattice.matrix, np.float32)
    N = len(pos)
    half = N * (N / s.volume) * 4 / 3 * np.pi * CUT**3 / 2  # from the density; overflow would say if short
    size = round_up(half * 1.2)
    x, c, m = jnp.asarray(pos), jnp.asarray(cell), jnp.ones(N, bool)
    row = {"n_atoms": N, "edge_capacity": size}
    grid = bin_grid(cell, CUT)
    if grid is None:
        raise SystemExit(f"n={n}: cell too small for a 3x3x3 grid at {CUT} A; use n >= 4")
    per_bin = int(np.ceil(1.5 * N / np.prod(grid))) + 8
    e, t, mem = bench(lambda x, c, m: build_edges_binned(x, c, m, CUT, size, grid, per_bin), x, c, m)
    row.update(binned_s=t, binned_temp_bytes_per_atom=None if mem is None else mem / N,
               binned_edges=int(e.n_edges), binned_overflow=bool(e.overflow), grid=grid, per_bin=per_bin)
    if N <= args.brute_max:
        e2, t2, mem2 = bench(lambda x, c, m: build_edges(x, c, m, cutoff=CUT, size=size, images=(1, 1, 1)), x, c, m)
        row.update(brute_s=t2, brute_temp_bytes_per_atom=None if mem2 is None else mem2 / N, brute_edges=int(e2.n_edges))
        assert int(e2.n_edges) == int(e.n_edges), "brute force and cell list disagree"
    rows.append(row)
    print(json.dumps(row), flush=True)
if args.out:
    with open(args.out, "w") as fh:
        json.dump({"device": jax.devices()[0].device_kind, "cutoff_A": CUT, "rows": rows}, fh, indent=1)
