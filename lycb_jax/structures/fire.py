"""FIRE, the fast inertial relaxation engine (Bitzek et al., PRL 97 (2006) 170201), with the update
rule and defaults of ASE's ``ase.optimize.FIRE``, as pure functions on one system's degrees of
freedom (vmap them for many), in the style of jax-md's optimisers: ``fire_init`` builds the state
and ``fire_apply`` takes one step.

The degrees of freedom ``x`` are an [M, 3] array (for a relaxation with the cell, atom positions in
Angstrom and three cell rows, see :mod:`lycb_jax.structures.relaxation`) and ``g`` the forces on them
(-dE/dx: eV/Angstrom for atoms). ``maxstep`` (Angstrom) caps the norm of a move over all of x, as ASE does.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class FireParams(NamedTuple):
    """FIRE parameters: start and largest time step, largest move (norm over all DOFs, Angstrom),
    downhill steps before dt grows, dt growth and cut factors, start mixing and its decay."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


FIRE = FireParams()  # ASE's defaults (ase/optimize/fire.py; maxstep from Optimizer.defaults)


class FireState(NamedTuple):
    """FIRE state of one system (or of many, with a leading axis): DOFs x [M, 3], velocity v [M, 3]
    (ASE's units: Angstrom per unit of dt), forces g at x [M, 3], energy e at x (eV), time step dt,
    mixing a, downhill steps since the last uphill one n_pos, and ``first`` (no step taken yet)."""

    x: jax.Array
    v: jax.Array
    g: jax.Array
    e: jax.Array
    dt: jax.Array
    a: jax.Array
    n_pos: jax.Array
    first: jax.Array


def fire_init(x: jax.Array, e: jax.Array, g: jax.Array, *, params: FireParams = FIRE) -> FireState:
    """State before the first step at DOFs ``x`` with energy ``e`` (eV) and forces ``g``: zero
    velocity, the start time step and mixing. With batched e [B] (x [B, M, 3]) the state is batched."""
    shape = jnp.shape(e)
    return FireState(x, jnp.zeros_like(x), g, e, jnp.full(shape, params.dt, jnp.float32),
                     jnp.full(shape, params.astart, jnp.float32), jnp.zeros(shape, jnp.int32),
                     jnp.ones(shape, bool))


def fire_apply(state: FireState, force_fn: Callable, params: FireParams = FIRE) -> tuple[FireState, object]:
    """One FIRE step of one system: velocity mixing and time-step control from the forces at
    ``state.x``, the move, then ``force_fn(x) -> (energy, forces, aux)`` at the new DOFs.
    Returns (new state, aux)."""
    x, v, dt, a, n_pos = _move(state, params)
    e, g, aux = force_fn(x)
    return FireState(x, v, g, e, dt, a, n_pos, jnp.zeros_like(state.first)), aux


def _move(s: FireState, p: FireParams):
    """ASE's FIRE.step without the force call: new (x, v, dt, a, n_pos)."""
    vf, g2, v2 = jnp.vdot(s.g, s.v), jnp.vdot(s.g, s.g), jnp.vdot(s.v, s.v)
    up = vf > 0.0
    grow = up & (s.n_pos > p.nmin)
    mixed = (1.0 - s.a) * s.v + s.a * s.g / jnp.sqrt(jnp.maximum(g2, 1e-30)) * jnp.sqrt(v2)
    v = jnp.where(up, mixed, 0.0)
    dt = jnp.where(up, jnp.where(grow, jnp.minimum(s.dt * p.finc, p.dtmax), s.dt), s.dt * p.fdec)
    a = jnp.where(up, jnp.where(grow, s.a * p.fa, s.a), p.astart)
    n_pos = jnp.where(up, s.n_pos + 1, 0)
    # ASE's first step starts from zero velocity without the mixing branch
    v, dt, a, n_pos = (jnp.where(s.first, old, new) for old, new in ((s.v, v), (s.dt, dt), (s.a, a), (s.n_pos, n_pos)))
    v = v + dt * s.g
    dr = dt * v
    norm = jnp.sqrt(jnp.vdot(dr, dr))
    dr = jnp.where(norm > p.maxstep, dr * p.maxstep / jnp.maximum(norm, 1e-30), dr)
    return s.x + dr, v, dt, a, n_pos
