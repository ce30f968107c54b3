"""Shared helpers for benchmarks: the LYC-like cells of the PyTorch baseline, timing."""

import statistics
import time

import jax
import numpy as np
from pymatgen.core import Lattice, Structure


def lyc_like(n=3, seed=0):
    """Same cells as torch_chgnet_baseline.py: rocksalt Cl, 2/3 octahedral sites filled, Li:Y = 3:1."""
    rng = np.random.default_rng(seed)
    a = 5.35
    base = Structure(Lattice.cubic(a), ["Cl"] * 4 + ["Li"] * 4,
                     [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
    s = base * (n, n, n)
    cat = [i for i, site in enumerate(s) if site.specie.symbol == "Li"]
    rng.shuffle(cat)
    ncl = len(cat)
    ny, nrm = ncl // 6, ncl // 3
    for i in cat[:ny]:
        s.replace(i, "Y")
    s.remove_sites(sorted(cat[ny:ny + nrm]))
    s.perturb(0.05)
    return s


def time_call(fn, *args, repeat=20, warmup=3):
    """(first-call seconds incl. compilation, median seconds per call) of a jax function."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)
