"""Integrators: NVT Nose-Hoover, NpT Nose-Hoover (isotropic cell) and NVE as functional
``init`` / ``apply`` pairs in the style of ``jax_md.simulate`` (they wrap jax-md's), built from a
model's energy function.

Every pair takes a replica's real geometry the same way, whatever the ensemble::

    init(key, positions, cell, mass, kT, edges, momenta=None) -> state
    apply(state, kT, edges, cell) -> state

positions [N, 3] Cartesian (Angstrom), cell [3, 3] lattice vectors as rows (Angstrom), mass [N]
(amu), kT (eV), edges the replica's Verlet list (:mod:`lycb_jax.md.neighbours`). NpT states
hold fractional positions and the box (columns) instead: :func:`real_positions` and
:func:`state_cell` give the Cartesian ones for every ensemble.

:data:`ENSEMBLES` is the one switch over ensemble names ("nvt", "npt", "nve"): each entry holds the
pair's constructor, the conserved quantity and whether the state carries the cell. A new
integrator is a new entry; the chunk and the protocol take it by name.

Units: Angstrom, fs, eV, K, amu; pressure in bar. jax-md is unit-free: with eV, Angstrom and amu
its time unit is Angstrom sqrt(amu/eV) = 10.18 fs (:data:`lycb_jax.units.FS` is 1 fs in it) and its
pressure unit eV/A^3 (:data:`lycb_jax.units.BAR` is 1 bar in it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses
from jax_md import simulate, space

from lycb_jax.capacity import Capacity
from lycb_jax.graph import EdgeList, refine_graph
from lycb_jax.md.neighbours import verlet_list
from lycb_jax.models import Model, potential
from lycb_jax.runtime import with_precision
from lycb_jax.units import BAR, FS


@dataclasses.dataclass(frozen=True)
class IntegratorSettings:
    """Static settings of one integrator; hashable (a static argument of jit).

    ``ensemble`` "nvt", "npt" or "nve"; time step ``dt_fs`` (fs); thermostat and barostat time
    constants ``tau_t_fs``, ``tau_p_fs`` (fs); NpT target ``pressure_bar`` (bar); Nose-Hoover chain length."""

    ensemble: str
    dt_fs: float = 1.0
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    pressure_bar: float = 1.0
    chain_length: int = 3


Integrator = IntegratorSettings  # deprecated alias (for one release): it is a settings record, not an integrator


class Dynamics(NamedTuple):
    """One replica's integrator: the jax-md energy function (eV) and its ``init`` / ``apply`` pair."""

    energy: Callable
    init: Callable
    apply: Callable


def energy_fn(model: Model, species, atom_mask, capacity: Capacity) -> Callable:
    """jax-md energy function E(R, edges=..., box=None, perturbation=None, cell=None) in eV.

    ``edges`` is the Verlet list; the exact graph is taken from it at the positions being evaluated.
    NVT and NVE: R are Cartesian positions (Angstrom) and ``cell`` the rows. NpT: R are fractional
    and ``box`` is the column matrix of lattice vectors; ``space.transform`` makes gradients with
    respect to R real-space forces.
    """

    def energy(R, edges: EdgeList, box=None, perturbation=None, cell=None, **unused):
        if box is None:
            pos, cell_rows = R, cell
        else:
            b = box if perturbation is None else box * perturbation
            pos, cell_rows = space.transform(b, R), b.T
        graph = refine_graph(edges, pos, cell_rows, capacity)
        e, _ = potential(model.module, model.params, species, pos, cell_rows, atom_mask, graph)
        return e

    return energy


def _chain(settings: IntegratorSettings) -> dict:
    return dict(chain_length=settings.chain_length, chain_steps=2, sy_steps=3)


def _fixed_cell(init, apply):
    """The uniform signatures for jax-md's fixed-cell pairs (Cartesian positions, cell passed to the energy)."""

    def init_fn(key, positions, cell, mass, kT, edges, momenta=None):
        return init(key, positions, mass=mass, kT=kT, edges=edges, cell=cell, momenta=momenta)

    def apply_fn(state, kT, edges, cell):
        return apply(state, kT=kT, edges=edges, cell=cell)

    return init_fn, apply_fn


def nvt_nose_hoover(energy: Callable, settings: IntegratorSettings):
    """NVT with a Nose-Hoover chain (time constant ``tau_t_fs``): (init, apply)."""
    _, shift = space.free()
    init, apply = simulate.nvt_nose_hoover(energy, shift, settings.dt_fs * FS, kT=1.0, tau=settings.tau_t_fs * FS,
                                           **_chain(settings))
    return _fixed_cell(init, apply)


def nve(energy: Callable, settings: IntegratorSettings):
    """NVE, velocity Verlet: (init, apply); ``kT`` only draws the initial momenta."""
    _, shift = space.free()
    init, apply = simulate.nve(energy, shift, settings.dt_fs * FS)
    return _fixed_cell(init, apply)


def npt_nose_hoover(energy: Callable, settings: IntegratorSettings):
    """NpT with Nose-Hoover chains on particles and cell (isotropic: the cell keeps its shape),
    target ``pressure_bar``: (init, apply). The state holds fractional positions and the box."""
    _, shift = space.periodic_general(jnp.eye(3), fractional_coordinates=True, wrapped=False)
    chain = _chain(settings)
    init, apply = simulate.npt_nose_hoover(
        energy, shift, settings.dt_fs * FS, pressure=settings.pressure_bar * BAR, kT=1.0,
        barostat_kwargs=dict(tau=settings.tau_p_fs * FS, **chain),
        thermostat_kwargs=dict(tau=settings.tau_t_fs * FS, **chain))

    def init_fn(key, positions, cell, mass, kT, edges, momenta=None):
        frac = positions @ jnp.linalg.inv(cell)
        return init(key, frac, cell.T, mass=mass, kT=kT, edges=edges, momenta=momenta)

    def apply_fn(state, kT, edges, cell):  # ``cell`` unused: the state carries the box
        return apply(state, kT=kT, edges=edges)

    return init_fn, apply_fn


def _nvt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return simulate.nvt_nose_hoover_invariant(energy, state, kT, edges=edges, cell=cell)


def _npt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return simulate.npt_nose_hoover_invariant(energy, state, settings.pressure_bar * BAR, kT, edges=edges)


def _nve_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return potential_energy + kinetic_energy


class Ensemble(NamedTuple):
    """What the MD code needs to know of one kind of integrator."""

    pair: Callable  # (energy, settings) -> (init, apply)
    invariant: Callable  # (energy, state, kT, settings, edges, cell, E, K) -> the conserved quantity, eV
    box_in_state: bool  # the state holds fractional positions and the box (NpT), else Cartesian positions


ENSEMBLES = {"nvt": Ensemble(nvt_nose_hoover, _nvt_invariant, False),
             "npt": Ensemble(npt_nose_hoover, _npt_invariant, True),
             "nve": Ensemble(nve, _nve_invariant, False)}


def ensemble(settings: IntegratorSettings) -> Ensemble:
    """The :data:`ENSEMBLES` entry of ``settings.ensemble``; ValueError for an unknown name."""
    if settings.ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {settings.ensemble!r}: use {', '.join(map(repr, ENSEMBLES))}")
    return ENSEMBLES[settings.ensemble]


def dynamics(model: Model, species, atom_mask, settings: IntegratorSettings, capacity: Capacity) -> Dynamics:
    """The integrator of ``settings.ensemble`` for one replica (species [N], atom_mask [N])."""
    pair = ensemble(settings).pair
    energy = energy_fn(model, species, atom_mask, capacity)
    return Dynamics(energy, *pair(energy, settings))


def conserved(energy: Callable, state, kT, settings: IntegratorSettings, edges: EdgeList, cell, potential_energy,
              kinetic_energy):
    """The integrator's invariant (eV): Nose-Hoover's extended energy (NVT, NpT), E + K (NVE)."""
    return ensemble(settings).invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy)


def real_positions(state, settings: IntegratorSettings):
    """Cartesian positions [N, 3] (Angstrom, unwrapped) of a state."""
    if ensemble(settings).box_in_state:
        return space.transform(simulate.npt_box(state), state.position)
    return state.position


def state_cell(state, settings: IntegratorSettings, cell):
    """The cell [3, 3] (rows, Angstrom) of a state: its box (NpT), else the fixed ``cell``."""
    return simulate.npt_box(state).T if ensemble(settings).box_in_state else cell


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) of atomic numbers."""
    return np.asarray(atomic_masses[np.asarray(numbers)], np.float32)


@with_precision  # also called outside jit (tests, benchmarks): full float32 matrix products either way
def init_replica(model: Model, species, positions, cell, masses, kT, key, settings: IntegratorSettings,
                 capacity: Capacity, momenta=None):
    """jax-md state of one replica (momenta drawn at kT (eV) with zero total momentum if not given),
    and whether the graph capacity overflowed. positions [N, 3] and cell [3, 3] rows, Angstrom."""
    mask = species > 0
    dyn = dynamics(model, species, mask, settings, capacity)
    edges = verlet_list(positions, cell, mask, capacity)
    overflow = refine_graph(edges, positions, cell, capacity).overflow
    return dyn.init(key, positions, cell, masses, kT, edges, momenta), overflow
