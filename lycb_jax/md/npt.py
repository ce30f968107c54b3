"""NpT (:func:`npt_mtk`): the MTK equations (Martyna, Tobias, Klein, J. Chem. Phys. 101, 4177 (1994))
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

Units as in :mod:`lycb_jax.md.integrators`: Angstrom, jax-md time (:data:`lycb_jax.units.FS` is 1 fs), eV, amu.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import dataclasses as jmd_dataclasses
from jax_md import quantity, simulate

from lycb_jax.md.settings import BAROSTATS, IntegratorSettings, chain_energy, chain_kwargs, degrees_of_freedom
from lycb_jax.units import FS


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
    thermostat = simulate.nose_hoover_chain(dt, tau=settings.tau_t_fs * FS, **chain_kwargs(settings))
    barostat = simulate.nose_hoover_chain(dt, tau=settings.tau_p_fs * FS, **chain_kwargs(settings))

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


def npt_conserved(st: NPTState, potential_energy, kT, *, settings: IntegratorSettings):
    """The MTK invariant (eV): E + K + |p_g|^2 / 2W + P V + deviatoric work + both chains' energies."""
    n = st.position.shape[0]
    w = (n + 1) * kT * (settings.tau_p_fs * FS) ** 2
    p_mean = float(np.trace(settings.target_pressure()) / 3)
    vol = jnp.abs(jnp.linalg.det(st.cell))
    ke = quantity.kinetic_energy(momentum=st.momentum, mass=st.mass)
    return (potential_energy + ke + jnp.sum(st.cell_momentum ** 2) / (2 * w) + p_mean * vol + st.work
            + chain_energy(st.thermostat, kT) + chain_energy(st.barostat, kT))
