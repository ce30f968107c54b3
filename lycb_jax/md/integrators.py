"""Integrators: NVT Nose-Hoover, NpT Martyna-Tobias-Klein (full cell: iso, aniso, tri) and NVE as
functional ``init`` / ``apply`` pairs in the style of ``jax_md.simulate``, built from a model.

Every pair takes a replica's real geometry the same way, whatever the ensemble::

    init(key, positions, cell, mass, kT, edges, momenta=None) -> state
    apply(state, kT, edges, cell) -> state

positions [N, 3] Cartesian (Angstrom, unwrapped), cell [3, 3] lattice vectors as rows (Angstrom),
mass [N] (amu), kT (eV), edges the replica's Verlet list (:mod:`lycb_jax.graph.verlet`). Every
state holds Cartesian positions; an NpT state also holds its cell: :func:`real_positions` and
:func:`state_cell` give both for every ensemble.

Degrees of freedom: the momenta are drawn with zero total momentum and every integrator here keeps
it zero, so the particles have ``3N - 3`` degrees of freedom (:func:`degrees_of_freedom`): the
thermostats, the MTK barostat and the reported temperature use that number.

:data:`ENSEMBLES` is the one switch over ensemble names ("nvt", "npt", "nve"): each entry holds the
pair's constructor, the conserved quantity and whether the state carries the cell. A new
integrator is a new entry; the chunk and the protocol take it by name.

NpT: :mod:`lycb_jax.md.npt` (the MTK barostat); the settings of every integrator:
:mod:`lycb_jax.md.settings`.

Units: Angstrom, fs, eV, K, amu; pressure in bar, target stress in GPa (ASE sign: positive =
tensile). jax-md is unit-free: with eV, Angstrom and amu its time unit is Angstrom sqrt(amu/eV) =
10.18 fs (:data:`lycb_jax.units.FS` is 1 fs in it) and its pressure unit eV/A^3
(:data:`lycb_jax.units.BAR` is 1 bar in it).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses
from jax_md import simulate, space

from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph import EdgeList, refine_graph
from lycb_jax.graph.verlet import verlet_list
from lycb_jax.models import Model, energy_forces_stress, potential
from lycb_jax.runtime.precision import with_precision
from lycb_jax.md.npt import npt_conserved, npt_mtk
from lycb_jax.md.settings import IntegratorSettings, chain_energy, chain_kwargs, degrees_of_freedom
from lycb_jax.units import EV_A3_TO_GPA, FS, KB

class Dynamics(NamedTuple):
    """One replica's integrator: the jax-md energy function (eV) and its ``init`` / ``apply`` pair."""

    energy: Callable
    init: Callable
    apply: Callable


def energy_fn(model: Model, species, atom_mask, *, capacity: Capacity) -> Callable:
    """jax-md energy function E(R, edges=..., cell=...) in eV: R Cartesian positions (Angstrom),
    ``cell`` the rows, ``edges`` the Verlet list (the exact graph is taken from it at R)."""

    def energy(R, edges: EdgeList, cell=None, **unused):
        graph = refine_graph(edges, R, cell, capacity)
        e, _ = potential(model.module, model.params, species, R, cell, atom_mask, graph)
        return e

    return energy


def force_virial_fn(model: Model, species, atom_mask, *, capacity: Capacity) -> Callable:
    """(energy eV, forces [N, 3] eV/A, virial [3, 3] eV) at (positions, cell rows, Verlet list), one
    backward pass (:func:`lycb_jax.models.energy_forces_stress`); virial = -dE/d(strain) = -V sigma."""

    def fn(positions, cell, edges: EdgeList):
        graph = refine_graph(edges, positions, cell, capacity)
        e, f, stress_gpa, _ = energy_forces_stress(model.module, model.params, species, positions, cell, atom_mask,
                                                   graph)
        return e, f, -stress_gpa / EV_A3_TO_GPA * jnp.abs(jnp.linalg.det(cell))

    return fn


def _fixed_cell(init, apply):
    """The uniform signatures for jax-md's fixed-cell pairs (Cartesian positions, cell passed to the energy)."""

    def init_fn(key, positions, cell, mass, kT, edges, momenta=None):
        return init(key, positions, mass=mass, kT=kT, edges=edges, cell=cell, momenta=momenta)

    def apply_fn(state, kT, edges, cell):
        return apply(state, kT=kT, edges=edges, cell=cell)

    return init_fn, apply_fn


def nvt_nose_hoover(energy: Callable, settings: IntegratorSettings):
    """NVT with a Nose-Hoover chain (time constant ``tau_t_fs``) on 3N - 3 degrees of freedom: (init, apply).

    jax-md's integrator; its chain counts 3N degrees of freedom, so the chain is re-initialised with 3N - 3
    (jax-md's ``apply`` takes the count from the chain's state)."""
    _, shift = space.free()
    dt, tau = settings.dt_fs * FS, settings.tau_t_fs * FS
    init, apply = simulate.nvt_nose_hoover(energy, shift, dt, kT=1.0, tau=tau, **chain_kwargs(settings))
    chain = simulate.nose_hoover_chain(dt, tau=tau, **chain_kwargs(settings))
    init_fn, apply_fn = _fixed_cell(init, apply)

    def init_3n3(key, positions, cell, mass, kT, edges, momenta=None):
        state = init_fn(key, positions, cell, mass, kT, edges, momenta)
        return state.set(chain=chain.initialize(degrees_of_freedom(positions.shape[0]), state.chain.kinetic_energy, kT))

    return init_3n3, apply_fn


def nve(energy: Callable, settings: IntegratorSettings):
    """NVE, velocity Verlet: (init, apply); ``kT`` only draws the initial momenta."""
    _, shift = space.free()
    init, apply = simulate.nve(energy, shift, settings.dt_fs * FS)
    return _fixed_cell(init, apply)


def _nvt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return potential_energy + kinetic_energy + chain_energy(state.chain, kT)


def _npt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return npt_conserved(state, potential_energy, kT, settings=settings)


def _nve_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return potential_energy + kinetic_energy


class Ensemble(NamedTuple):
    """What the MD code needs to know of one kind of integrator."""

    pair: Callable  # (model, species, atom_mask, capacity, settings) -> (energy, init, apply)
    invariant: Callable  # (energy, state, kT, settings, edges, cell, E, K) -> the conserved quantity, eV
    box_in_state: bool  # the state carries its cell (NpT)


def _fixed_cell_pair(make):
    def pair(model, species, atom_mask, capacity, settings):
        energy = energy_fn(model, species, atom_mask, capacity=capacity)
        return (energy, *make(energy, settings))
    return pair


def _npt_pair(model, species, atom_mask, capacity, settings):
    fv = force_virial_fn(model, species, atom_mask, capacity=capacity)
    return (lambda R, edges, cell=None, **kw: fv(R, cell, edges)[0], *npt_mtk(fv, settings))


ENSEMBLES = {"nvt": Ensemble(_fixed_cell_pair(nvt_nose_hoover), _nvt_invariant, False),
             "npt": Ensemble(_npt_pair, _npt_invariant, True),
             "nve": Ensemble(_fixed_cell_pair(nve), _nve_invariant, False)}


def ensemble(settings: IntegratorSettings) -> Ensemble:
    """The :data:`ENSEMBLES` entry of ``settings.ensemble``; ValueError for an unknown name."""
    if settings.ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {settings.ensemble!r}: use {', '.join(map(repr, ENSEMBLES))}")
    return ENSEMBLES[settings.ensemble]


def dynamics(model: Model, species, atom_mask, settings: IntegratorSettings, capacity: Capacity) -> Dynamics:
    """The integrator of ``settings.ensemble`` for one replica (species [N], atom_mask [N])."""
    return Dynamics(*ensemble(settings).pair(model, species, atom_mask, capacity, settings))


def conserved(energy: Callable, state, kT, settings: IntegratorSettings, edges: EdgeList, cell, potential_energy,
              kinetic_energy):
    """The integrator's invariant (eV): Nose-Hoover's extended energy (NVT), MTK's (NpT), E + K (NVE)."""
    return ensemble(settings).invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy)


def real_positions(state, settings: IntegratorSettings):
    """Cartesian positions [N, 3] (Angstrom, unwrapped) of a state."""
    return state.position


def state_cell(state, settings: IntegratorSettings, cell):
    """The cell [3, 3] (rows, Angstrom) of a state: its own (NpT), else the fixed ``cell``."""
    return state.cell if ensemble(settings).box_in_state else cell


def temperature_K(kinetic_energy, n_atoms: int):
    """Instantaneous temperature (K) from the kinetic energy (eV) of ``n_atoms`` atoms, 3N - 3 degrees of freedom."""
    return 2 * kinetic_energy / (degrees_of_freedom(n_atoms) * KB)


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) of atomic numbers."""
    return np.asarray(atomic_masses[np.asarray(numbers)], np.float32)


@with_precision  # also called outside jit (tests, benchmarks): full float32 matrix products either way
def init_replica(model: Model, species, positions, *, cell, masses, kT, key, settings: IntegratorSettings,
                 capacity: Capacity, momenta=None):
    """jax-md state of one replica (momenta drawn at kT (eV) with zero total momentum if not given),
    and whether the graph capacity overflowed. positions [N, 3] and cell [3, 3] rows, Angstrom."""
    mask = species > 0
    dyn = dynamics(model, species, mask, settings, capacity)
    edges = verlet_list(positions, cell, mask, capacity)
    overflow = refine_graph(edges, positions, cell, capacity).overflow
    return dyn.init(key, positions, cell, masses, kT, edges, momenta), overflow


@jax.jit
def thermal_momenta(keys, masses, kT):
    """Momenta [R, N, 3] (amu Angstrom per jax-md time unit) drawn from Maxwell-Boltzmann at kT [R] (eV), total
    momentum zero per replica; keys [R], masses [R, N] (amu). The numbers of jax-md's ``initialize_momenta`` (same
    key split, same centring), drawn outside :func:`init_batch` so that a first start and a restart with momenta
    share one compiled program (each holds a force call of the model: ~12 s of compile on an H100)."""

    def one(key, m, t):
        p = jnp.sqrt(m[:, None] * t) * jax.random.normal(jax.random.split(key, 1)[0], (m.shape[0], 3), jnp.float32)
        return p - jnp.mean(p, axis=0, keepdims=True)

    return jax.vmap(one)(keys, masses, kT)


@functools.partial(jax.jit, static_argnames=("settings", "capacity"))
@with_precision
def init_batch(model: Model, species, positions, *, cells, masses, keys, kT, momenta,
               settings: IntegratorSettings, capacity: Capacity):
    """:func:`init_replica` of every replica (leading axis), momenta drawn where ``momenta`` is None:
    (states, overflow [R]). Compiled once per (model, settings, capacity), shared by every Simulation."""
    if momenta is None:
        return jax.vmap(lambda sp, x, c, m, k, t: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                               settings=settings, capacity=capacity))(
            species, positions, cells, masses, keys, kT)
    return jax.vmap(lambda sp, x, c, m, k, t, p: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                              settings=settings, capacity=capacity, momenta=p))(
        species, positions, cells, masses, keys, kT, momenta)
