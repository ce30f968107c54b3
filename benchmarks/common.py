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


def nvt_replicas(model, s, n_rep: int, capacity):
    """R NVT replicas of structure ``s`` at 500 ... 1200 K (dt 1 fs), the batch every MD benchmark times:
    (species [R, N], cell [R, 3, 3], states, kT [R] eV, integrator settings)."""
    import jax.numpy as jnp
    from ase import units

    from lycb_jax.md import IntegratorSettings, init_replica, masses_of

    integ = IntegratorSettings("nvt", dt_fs=1.0)
    species = jnp.asarray(np.tile([x.specie.Z for x in s], (n_rep, 1)), jnp.int32)
    pos = jnp.asarray(np.tile(s.cart_coords, (n_rep, 1, 1)), jnp.float32)
    cell = jnp.asarray(np.tile(s.lattice.matrix, (n_rep, 1, 1)), jnp.float32)
    masses = jnp.asarray(np.tile(masses_of(species[0]), (n_rep, 1)))
    kT = jnp.asarray(np.linspace(500, 1200, n_rep) * units.kB, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), n_rep)
    states = jax.vmap(lambda sp, x, c, m, t, key: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=key,
                                                               settings=integ, capacity=capacity)[0])(
        species, pos, cell, masses, kT, keys)
    return species, cell, states, kT, integ
