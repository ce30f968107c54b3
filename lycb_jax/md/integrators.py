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

NpT (:func:`npt_mtk`): the MTK equations (Martyna, Tobias, Klein, J. Chem. Phys. 101, 4177 (1994))
with Nose-Hoover chains on the particles and on the cell, integrated with the Liouville
factorisation of Tuckerman et al., J. Phys. A 39, 5629 (2006), the scheme of ASE's ``MTKNPT`` and
of LAMMPS ``fix npt``. With cell rows h, strain rate D = p_g / W (symmetric) and N_f = 3N - 3::

    dq/dt   = p / m + q D                         dh/dt = h D
    dp/dt   = F - p (D + tr(D) / N_f)  - (particle chain) p
    dp_g/dt = Proj[ sum p p^T / m - V sigma - V P_ext + (1 / N_f) sum p^2 / m  I ]  - (cell chain) p_g

sigma the model's virial stress (eV/A^3, ASE sign), P_ext the target pressure tensor, W = (N + 1)
kT tau_p^2 (LAMMPS' and ASE's cell mass) and Proj the projection onto the barostat's cell motions
(:data:`BAROSTATS`): ``iso`` p_g = p I (the cell keeps its shape; 1 degree of freedom), ``aniso``
p_g diagonal (x, y, z lengths separately, the cell's tilt scaled with them: 3), ``tri`` p_g any
symmetric matrix (every cell parameter, no rotation: 6). The conserved quantity is
E + K + |p_g|^2 / 2W + P V + (work of the deviatoric target) + the two chains' energies.

Units: Angstrom, fs, eV, K, amu; pressure in bar, target stress in GPa (ASE sign: positive =
tensile). jax-md is unit-free: with eV, Angstrom and amu its time unit is Angstrom sqrt(amu/eV) =
10.18 fs (:data:`lycb_jax.units.FS` is 1 fs in it) and its pressure unit eV/A^3
(:data:`lycb_jax.units.BAR` is 1 bar in it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_masses
from jax_md import dataclasses as jmd_dataclasses
from jax_md import quantity, simulate, space

from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph import EdgeList, refine_graph
from lycb_jax.graph.verlet import verlet_list
from lycb_jax.models import Model, energy_forces_stress, potential
from lycb_jax.runtime.precision import with_precision
from lycb_jax.units import BAR, EV_A3_TO_GPA, FS, KB

BAROSTATS = {"iso": 1, "aniso": 3, "tri": 6}  # barostat mode -> cell degrees of freedom


@dataclasses.dataclass(frozen=True)
class IntegratorSettings:
    """Static settings of one integrator; hashable (a static argument of jit).

    ``ensemble`` "nvt", "npt" or "nve"; time step ``dt_fs`` (fs); thermostat and barostat time
    constants ``tau_t_fs``, ``tau_p_fs`` (fs); NpT target: hydrostatic ``pressure_bar`` (bar) plus
    an optional ``stress_GPa`` (Voigt xx, yy, zz, yz, xz, xy in GPa, ASE sign: positive = tensile,
    so a uniaxial compression is negative); ``barostat`` "iso", "aniso" or "tri"
    (:data:`BAROSTATS`); Nose-Hoover chain length."""

    ensemble: str
    dt_fs: float = 1.0
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    pressure_bar: float = 1.0
    chain_length: int = 3
    barostat: str = "tri"
    stress_GPa: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.barostat not in BAROSTATS:
            raise ValueError(f"unknown barostat {self.barostat!r}: use {', '.join(map(repr, BAROSTATS))}")
        if self.stress_GPa is not None and len(self.stress_GPa) != 6:
            raise ValueError(f"stress_GPa needs 6 Voigt components (xx, yy, zz, yz, xz, xy), got {self.stress_GPa}")

    def target_pressure(self) -> np.ndarray:
        """The target pressure tensor P_ext [3, 3] (eV/A^3, positive = compressive)."""
        p = np.eye(3) * self.pressure_bar * BAR
        if self.stress_GPa is not None:
            xx, yy, zz, yz, xz, xy = self.stress_GPa
            p = p - np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) / EV_A3_TO_GPA
        return p


class Dynamics(NamedTuple):
    """One replica's integrator: the jax-md energy function (eV) and its ``init`` / ``apply`` pair."""

    energy: Callable
    init: Callable
    apply: Callable


def degrees_of_freedom(n_atoms: int) -> int:
    """Kinetic degrees of freedom of ``n_atoms`` atoms with the total momentum fixed at zero: 3N - 3."""
    return max(3 * n_atoms - 3, 1)


def energy_fn(model: Model, species, atom_mask, capacity: Capacity) -> Callable:
    """jax-md energy function E(R, edges=..., cell=...) in eV: R Cartesian positions (Angstrom),
    ``cell`` the rows, ``edges`` the Verlet list (the exact graph is taken from it at R)."""

    def energy(R, edges: EdgeList, cell=None, **unused):
        graph = refine_graph(edges, R, cell, capacity)
        e, _ = potential(model.module, model.params, species, R, cell, atom_mask, graph)
        return e

    return energy


def force_virial_fn(model: Model, species, atom_mask, capacity: Capacity) -> Callable:
    """(energy eV, forces [N, 3] eV/A, virial [3, 3] eV) at (positions, cell rows, Verlet list), one
    backward pass (:func:`lycb_jax.models.energy_forces_stress`); virial = -dE/d(strain) = -V sigma."""

    def fn(positions, cell, edges: EdgeList):
        graph = refine_graph(edges, positions, cell, capacity)
        e, f, stress_gpa, _ = energy_forces_stress(model.module, model.params, species, positions, cell, atom_mask,
                                                   graph)
        return e, f, -stress_gpa / EV_A3_TO_GPA * jnp.abs(jnp.linalg.det(cell))

    return fn


def _chain(settings: IntegratorSettings) -> dict:
    return dict(chain_length=settings.chain_length, chain_steps=2, sy_steps=3)


def _chain_energy(chain, kT):
    """Energy (eV) of a Nose-Hoover chain: sum p^2 / 2Q + g kT xi_0 + kT sum_{j>0} xi_j."""
    return (jnp.sum(chain.momentum ** 2 / (2 * chain.mass)) + chain.degrees_of_freedom * kT * chain.position[0]
            + kT * jnp.sum(chain.position[1:]))


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
    init, apply = simulate.nvt_nose_hoover(energy, shift, dt, kT=1.0, tau=tau, **_chain(settings))
    chain = simulate.nose_hoover_chain(dt, tau=tau, **_chain(settings))
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


@jmd_dataclasses.dataclass
class NPTState:
    """State of one replica under :func:`npt_mtk`.

    position [N, 3] Cartesian (Angstrom, unwrapped), momentum [N, 3] (amu A / jax-md time), force
    [N, 3] (eV/A), mass [N, 1] (amu), cell [3, 3] rows (Angstrom), virial [3, 3] (eV, -dE/dstrain
    at this geometry), cell_momentum p_g [3, 3] (symmetric, eV x jax-md time), thermostat and
    barostat the chains (jax-md ``NoseHooverChain``), work (eV): the work of the deviatoric part of
    the target stress (zero for a hydrostatic target), for the conserved quantity."""

    position: jax.Array
    momentum: jax.Array
    force: jax.Array
    mass: jax.Array
    cell: jax.Array
    virial: jax.Array
    cell_momentum: jax.Array
    thermostat: simulate.NoseHooverChain
    barostat: simulate.NoseHooverChain
    work: jax.Array

    @property
    def velocity(self) -> jax.Array:
        return self.momentum / self.mass


def _project(g, barostat: str):
    """Frobenius-orthogonal projection of a [3, 3] tensor onto the barostat's cell motions."""
    if barostat == "iso":
        return jnp.trace(g) / 3 * jnp.eye(3, dtype=g.dtype)
    if barostat == "aniso":
        return jnp.diag(jnp.diag(g))
    return (g + g.T) / 2


def _eig(d, barostat: str):
    """Eigenvalues [3] and eigenvectors [3, 3] (columns) of the symmetric strain rate ``d``; diagonal
    for iso and aniso (no eigensolver)."""
    if barostat == "tri":
        return jnp.linalg.eigh(d)
    return jnp.diag(d), jnp.eye(3, dtype=d.dtype)


def _exprel(x):
    """(e^x - 1) / x, 1 at x = 0 (series below |x| < 1e-3: float32-accurate)."""
    small = jnp.abs(x) < 1e-3
    xs = jnp.where(small, 1.0, x)
    return jnp.where(small, 1 + x / 2 + x * x / 6, jnp.expm1(xs) / xs)


def npt_mtk(force_virial: Callable, settings: IntegratorSettings):
    """NpT, MTK barostat with Nose-Hoover chains on particles and cell (module docstring for the
    equations), mode ``settings.barostat``; target :meth:`IntegratorSettings.target_pressure`:
    (init, apply). ``force_virial``: :func:`force_virial_fn`. vmap both over replicas."""
    dt = settings.dt_fs * FS
    mode = settings.barostat
    p_ext = jnp.asarray(settings.target_pressure(), jnp.float32)
    p_mean = jnp.trace(p_ext) / 3
    p_dev = p_ext - p_mean * jnp.eye(3)
    thermostat = simulate.nose_hoover_chain(dt, tau=settings.tau_t_fs * FS, **_chain(settings))
    barostat = simulate.nose_hoover_chain(dt, tau=settings.tau_p_fs * FS, **_chain(settings))

    def cell_mass(n, kT):
        return (n + 1) * kT * (settings.tau_p_fs * FS) ** 2

    def init_fn(key, positions, cell, mass, kT, edges, momenta=None):
        n = positions.shape[0]
        mass = jnp.reshape(mass, (n, 1)).astype(positions.dtype)
        if momenta is None:
            p = jnp.sqrt(mass * kT) * jax.random.normal(key, positions.shape, positions.dtype)
            momenta = p - jnp.sum(p, 0) / n  # zero total momentum
        _, f, vir = force_virial(positions, cell, edges)
        ke = quantity.kinetic_energy(momentum=momenta, mass=mass)
        zero = jnp.zeros((3, 3), positions.dtype)
        return NPTState(positions, momenta, f, mass, cell, vir, zero,
                        thermostat.initialize(degrees_of_freedom(n), ke, kT),
                        barostat.initialize(BAROSTATS[mode], jnp.zeros((), positions.dtype), kT),
                        jnp.zeros((), positions.dtype))

    def cell_force(st: NPTState, n_f):
        """dp_g/dt without the chain: the projected internal minus target pressure, times V (eV)."""
        pp = st.momentum.T @ (st.momentum / st.mass)  # sum p p^T / m
        vol = jnp.abs(jnp.linalg.det(st.cell))
        g = pp + st.virial - vol * p_ext + jnp.trace(pp) / n_f * jnp.eye(3, dtype=pp.dtype)
        return _project(g, mode)

    def kick(st: NPTState, w, n_f, delta):
        """Momenta over ``delta``: dp/dt = F - p (D + tr(D)/N_f), exactly for constant D and F."""
        lam, u = _eig(st.cell_momentum / w, mode)
        kappa = lam + jnp.sum(lam) / n_f
        y, f = st.momentum @ u, st.force @ u
        p = y * jnp.exp(-kappa * delta) + delta * f * _exprel(-kappa * delta)
        return st.set(momentum=p @ u.T)

    def drift(st: NPTState, w, delta):
        """Positions and cell over ``delta``: dq/dt = p/m + q D, dh/dt = h D; the deviatoric work."""
        d = st.cell_momentum / w
        lam, u = _eig(d, mode)
        x, y = st.position @ u, st.velocity @ u
        q = x * jnp.exp(lam * delta) + delta * y * _exprel(lam * delta)
        cell = (st.cell @ u) * jnp.exp(lam * delta)
        vol = jnp.abs(jnp.linalg.det(st.cell))
        tr = jnp.sum(lam)  # dW/dt = V tr(P_dev D), V = V0 exp(t tr D): exact integral over the step
        work = st.work + jnp.sum(p_dev * d) * vol * delta * _exprel(tr * delta)
        return st.set(position=q @ u.T, cell=cell @ u.T, work=work)

    def baro_chain(st: NPTState, w, kT):
        pg = st.cell_momentum
        chain = st.barostat.set(kinetic_energy=jnp.sum(pg * pg) / (2 * w))
        pg, chain = barostat.half_step(pg, chain, kT)
        return st.set(cell_momentum=pg, barostat=chain)

    def particle_chain(st: NPTState, kT):
        chain = st.thermostat.set(kinetic_energy=quantity.kinetic_energy(momentum=st.momentum, mass=st.mass))
        p, chain = thermostat.half_step(st.momentum, chain, kT)
        return st.set(momentum=p, thermostat=chain)

    def apply_fn(st: NPTState, kT, edges, cell=None):  # ``cell`` unused: the state carries its own
        n = st.position.shape[0]
        n_f, w = degrees_of_freedom(n), cell_mass(n, kT)
        st = st.set(thermostat=thermostat.update_mass(st.thermostat, kT),
                    barostat=barostat.update_mass(st.barostat, kT))
        st = particle_chain(baro_chain(st, w, kT), kT)
        st = st.set(cell_momentum=st.cell_momentum + dt / 2 * cell_force(st, n_f))
        st = drift(kick(st, w, n_f, dt / 2), w, dt)
        _, f, vir = force_virial(st.position, st.cell, edges)
        st = kick(st.set(force=f, virial=vir), w, n_f, dt / 2)
        st = st.set(cell_momentum=st.cell_momentum + dt / 2 * cell_force(st, n_f))
        return baro_chain(particle_chain(st, kT), w, kT)

    return init_fn, apply_fn


def npt_conserved(st: NPTState, potential_energy, kT, settings: IntegratorSettings):
    """The MTK invariant (eV): E + K + |p_g|^2 / 2W + P V + deviatoric work + both chains' energies."""
    n = st.position.shape[0]
    w = (n + 1) * kT * (settings.tau_p_fs * FS) ** 2
    p_mean = float(np.trace(settings.target_pressure()) / 3)
    vol = jnp.abs(jnp.linalg.det(st.cell))
    ke = quantity.kinetic_energy(momentum=st.momentum, mass=st.mass)
    return (potential_energy + ke + jnp.sum(st.cell_momentum ** 2) / (2 * w) + p_mean * vol + st.work
            + _chain_energy(st.thermostat, kT) + _chain_energy(st.barostat, kT))


def _nvt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return potential_energy + kinetic_energy + _chain_energy(state.chain, kT)


def _npt_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return npt_conserved(state, potential_energy, kT, settings)


def _nve_invariant(energy, state, kT, settings, edges, cell, potential_energy, kinetic_energy):
    return potential_energy + kinetic_energy


class Ensemble(NamedTuple):
    """What the MD code needs to know of one kind of integrator."""

    pair: Callable  # (model, species, atom_mask, capacity, settings) -> (energy, init, apply)
    invariant: Callable  # (energy, state, kT, settings, edges, cell, E, K) -> the conserved quantity, eV
    box_in_state: bool  # the state carries its cell (NpT)


def _fixed_cell_pair(make):
    def pair(model, species, atom_mask, capacity, settings):
        energy = energy_fn(model, species, atom_mask, capacity)
        return (energy, *make(energy, settings))
    return pair


def _npt_pair(model, species, atom_mask, capacity, settings):
    fv = force_virial_fn(model, species, atom_mask, capacity)
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
def init_replica(model: Model, species, positions, cell, masses, kT, key, settings: IntegratorSettings,
                 capacity: Capacity, momenta=None):
    """jax-md state of one replica (momenta drawn at kT (eV) with zero total momentum if not given),
    and whether the graph capacity overflowed. positions [N, 3] and cell [3, 3] rows, Angstrom."""
    mask = species > 0
    dyn = dynamics(model, species, mask, settings, capacity)
    edges = verlet_list(positions, cell, mask, capacity)
    overflow = refine_graph(edges, positions, cell, capacity).overflow
    return dyn.init(key, positions, cell, masses, kT, edges, momenta), overflow
