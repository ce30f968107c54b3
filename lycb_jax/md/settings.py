"""Static settings of the MD integrators (:class:`IntegratorSettings`), the barostat modes and the
Nose-Hoover chain pieces the NVT and NpT integrators share. Units: fs, bar, GPa (ASE sign), eV."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lycb_jax.units import BAR, EV_A3_TO_GPA

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


def degrees_of_freedom(n_atoms: int) -> int:
    """Kinetic degrees of freedom of ``n_atoms`` atoms with the total momentum fixed at zero: 3N - 3."""
    return max(3 * n_atoms - 3, 1)


def chain_kwargs(settings: IntegratorSettings) -> dict:
    """jax-md ``nose_hoover_chain`` keyword arguments of the settings' chain."""
    return dict(chain_length=settings.chain_length, chain_steps=2, sy_steps=3)


def chain_energy(chain, kT):
    """Energy (eV) of a Nose-Hoover chain: sum p^2 / 2Q + g kT xi_0 + kT sum_{j>0} xi_j."""
    return (jnp.sum(chain.momentum ** 2 / (2 * chain.mass)) + chain.degrees_of_freedom * kT * chain.position[0]
            + kT * jnp.sum(chain.position[1:]))
