"""A small differentiable Langevin integrator (BAOAB, Leimkuhler and Matthews 2013) as a ``lax.scan``
with ``jax.checkpoint`` per step, for gradients of short-time dynamics w.r.t. model parameters,
and for cheap fixed-cell sampling in tests.

Hand-written rather than lycb_jax.md because gradients must flow from the parameters through every
force call, with the random numbers fixed by the key (common random numbers for finite differences).
A Verlet list (cutoff + ``capacity.skin``, ``capacity.list_edges`` long) is rebuilt, without gradient, at the
start of every block of ``save_every`` steps, and every force call takes the model's exact graph from it (as
:mod:`lycb_jax.md` does: at a 2 A skin the graph itself would carry ~28x CHGNet's angles); the largest
displacement within a block is returned and must stay below skin / 2 for the forces to be exact (checked by
:func:`langevin_checked`). Size ``capacity`` with ``capacity.estimate(..., skin=..., with_list=True)``.
Units: Angstrom, eV, amu, K, fs; velocities in Angstrom per jax-md time unit (:data:`lycb_jax.units.FS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lycb_jax.graph.build import refine_graph
from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph.verlet import verlet_list
from lycb_jax.models.base import potential
from lycb_jax.units import FS, KB


def forces(module, params, species, positions, cell, atom_mask, graph):
    """(energy eV, forces [N, 3] eV/A) on ``graph``."""
    def e(x):
        return potential(module, params, species, x, cell, atom_mask, graph)[0]

    energy, g = jax.value_and_grad(e)(positions)
    return energy, -g * atom_mask[:, None]


@functools.partial(jax.jit, static_argnames=("module", "capacity", "n_saves", "save_every"))
def langevin(params, module, species, *, positions, velocities, cell, atom_mask, masses, temperature_K, dt_fs,
             gamma_per_ps, key, capacity: Capacity, n_saves: int, save_every: int):
    """BAOAB Langevin dynamics at fixed cell: ``n_saves`` frames, one every ``save_every`` steps of
    ``dt_fs`` (fs), friction ``gamma_per_ps`` (1/ps; 0 gives velocity Verlet, NVE), at ``temperature_K`` (K).

    Returns (positions [n_saves, N, 3] Angstrom, unwrapped; potential energies [n_saves] eV;
    final (positions, velocities); largest displacement within a graph block (Angstrom), which must be
    below capacity.skin / 2; graph overflow flag). Differentiable in ``params`` (and positions/velocities); each step is
    ``jax.checkpoint``-ed, so reverse mode stores only one state per step."""
    if capacity.list_edges <= 0:
        raise ValueError(f"capacity {capacity} has no Verlet list (list_edges = 0): size it with "
                         "lycb_jax.graph.capacity.estimate(..., skin=..., with_list=True)")
    dt = dt_fs * FS
    inv_m = (1.0 / masses)[:, None] * atom_mask[:, None]
    kT = KB * temperature_K
    c1 = jnp.exp(-gamma_per_ps * 1e-3 * dt_fs)
    c2 = jnp.sqrt((1.0 - c1**2) * kT) * jnp.sqrt(inv_m)

    def list_at(x):
        return verlet_list(jax.lax.stop_gradient(x), cell, atom_mask, capacity)

    def forces_on_list(x, edges):
        graph = refine_graph(edges, x, cell, capacity)
        return (*forces(module, params, species, x, cell, atom_mask, graph), graph.overflow)

    f0 = forces_on_list(positions, list_at(positions))[1]

    @jax.checkpoint
    def step(carry, k, edges):
        x, v, f = carry
        v = v + 0.5 * dt * f * inv_m
        x = x + 0.5 * dt * v
        v = c1 * v + c2 * jax.random.normal(k, v.shape, v.dtype)
        x = x + 0.5 * dt * v
        e, f, overflow = forces_on_list(x, edges)
        v = v + 0.5 * dt * f * inv_m
        return (x, v, f), (e, x, overflow)

    def block(carry, k):
        edges = list_at(carry[0])
        new, (e, x, overflow) = jax.lax.scan(lambda c, kk: step(c, kk, edges), carry, jax.random.split(k, save_every))
        moved = jnp.max(jnp.sqrt(jnp.sum(jax.lax.stop_gradient(x - carry[0]) ** 2, -1)))
        return new, (new[0], e[-1], moved, jnp.any(overflow))

    (x, v, _), (xs, es, moved, overflow) = jax.lax.scan(block, (positions, velocities, f0),
                                                        jax.random.split(key, n_saves))
    return xs, es, (x, v), jnp.max(moved), jnp.any(overflow)


def langevin_checked(*args, **kwargs):
    """:func:`langevin` (same arguments), raising RuntimeError if the graph overflowed or an atom moved more
    than skin / 2 within a graph block (then the forces were not exact: shorten ``save_every`` or grow the
    skin). Not for use under ``jax.grad``; check the returned values there instead."""
    out = langevin(*args, **kwargs)
    capacity = kwargs["capacity"]
    if bool(out[4]):
        raise RuntimeError(f"graph capacity {capacity} overflowed")
    if float(out[3]) >= capacity.skin / 2:
        raise RuntimeError(f"an atom moved {float(out[3]):.2f} A within a graph block, more than skin/2 = "
                           f"{capacity.skin / 2} A: shorten save_every or grow the skin")
    return out


def maxwell_boltzmann(key, masses, atom_mask, *, temperature_K):
    """Velocities [N, 3] (Angstrom per jax-md time unit) from Maxwell-Boltzmann at ``temperature_K`` (K),
    total momentum removed."""
    v = jax.random.normal(key, (masses.shape[0], 3)) * jnp.sqrt(KB * temperature_K / masses)[:, None]
    v = v * atom_mask[:, None]
    p = jnp.sum(v * masses[:, None], 0) / jnp.sum(masses * atom_mask)
    return (v - p) * atom_mask[:, None]


def msd(positions, reference):
    """Mean squared displacement over atoms, Angstrom^2: positions [..., N, 3] vs reference [N, 3]."""
    return jnp.mean(jnp.sum((positions - reference) ** 2, -1), -1)


def msd_and_grad(params, module, species, *, positions, velocities, cell, atom_mask, masses, temperature_K, dt_fs,
                 gamma_per_ps, key, capacity: Capacity, n_steps: int):
    """(MSD after ``n_steps`` steps in Angstrom^2, d MSD / d params, largest displacement in Angstrom, graph
    overflow) of one window started at (positions, velocities), by reverse mode through the checkpointed scan.
    The graph is built once at the start: the displacement must stay below capacity.skin / 2."""
    def f(p):
        xs, _, _, moved, overflow = langevin(p, module, species, positions=positions, velocities=velocities, cell=cell,
                                             atom_mask=atom_mask, masses=masses, temperature_K=temperature_K,
                                             dt_fs=dt_fs, gamma_per_ps=gamma_per_ps, key=key, capacity=capacity,
                                             n_saves=1, save_every=n_steps)
        return msd(xs[-1], positions), (moved, overflow)

    (value, (moved, overflow)), grad = jax.value_and_grad(f, has_aux=True)(params)
    return value, grad, moved, overflow
