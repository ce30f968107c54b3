"""The NpT cross-check against ASE's MTKNPT (ASE >= 3.26), shared by tests/md/test_npt.py (short) and
benchmarks/npt_vs_ase.py (long): the same force-shifted Lennard-Jones argon (tests/potentials.py's,
re-implemented in numpy as an ASE calculator) in a hexagonal (hcp) cell, run by lycb_jax's MTK
integrator (vmapped replicas) and by ASE's MTKNPT; average cell parameters, volume and stress.

Units: Angstrom, fs, K, eV; pressure in bar, stress in GPa (ASE sign: positive = tensile).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry.cell import cell_to_cellpar
from ase.neighborlist import neighbor_list
from potentials import EPS, RC, SIGMA, lj_model

GPA = 1 / units.GPa  # 1 eV/A^3 in GPa


class ForceShiftedLJ(Calculator):
    """tests/potentials.lj in numpy: 4 eps ((s/r)^12 - (s/r)^6) shifted so that energy and force vanish at RC."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, d, vec = neighbor_list("ijdD", self.atoms, RC)

        def e(r):
            return 4 * EPS * ((SIGMA / r) ** 12 - (SIGMA / r) ** 6)

        def de(r):
            return 4 * EPS * (-12 * SIGMA ** 12 / r ** 13 + 6 * SIGMA ** 6 / r ** 7)

        pair = e(d) - e(RC) - (d - RC) * de(RC)
        dphi = de(d) - de(RC)
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, (dphi / d)[:, None] * vec)
        virial = 0.5 * np.einsum("k,ki,kj->ij", dphi / d, vec, vec)  # dE/dstrain, eV
        stress = virial / self.atoms.get_volume()
        self.results = {"energy": 0.5 * pair.sum(), "free_energy": 0.5 * pair.sum(), "forces": forces,
                        "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}


def hcp_argon(n=(3, 3, 2), a=3.80, seed=0):
    """hcp argon (hexagonal cell, c/a ideal), rattled by 0.01 A: 36 atoms for (3, 3, 2)."""
    atoms = bulk("Ar", "hcp", a=a, c=a * np.sqrt(8 / 3)) * n
    atoms.rattle(0.01, seed=seed)
    return atoms


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """One NpT comparison run: T (K), P (bar), time step and coupling times (fs), lengths (ps)."""

    temperature_K: float = 20.0  # at 40 K ASE's (hotter, 9-dof) cell lets the hcp layers slip
    pressure_bar: float = 100.0
    dt_fs: float = 5.0
    tau_t_fs: float = 200.0
    tau_p_fs: float = 1000.0
    equilibrate_ps: float = 5.0
    sample_ps: float = 25.0
    every_fs: float = 50.0
    chunk_ps: float = 1.0  # lycb_jax: MD per compiled call (equilibrate_ps and sample_ps are multiples)


def lycb_capacity(atoms):
    """A generous fixed graph capacity for LJ argon (run_chunk does not grow it; it reports an overflow)."""
    from lycb_jax.md import default_capacity

    cap = default_capacity(atoms.positions, atoms.cell[:], skin=0.5, cutoffs=lj_model().cutoffs)
    return dataclasses.replace(cap, edges=cap.edges * 2, angles=8192, short_per_atom=32, list_edges=cap.list_edges * 2)


def run_lycb(atoms, s: RunSettings, barostat: str = "tri", replicas: int = 4, seed: int = 0, stress_GPa=None,
             model=None) -> dict:
    """lycb_jax's MTK NpT: ``replicas`` independent runs (vmapped). Returns time series [R, F] of
    cell [.., 3, 3] (rows, A), stress [.., 3, 3] (GPa, virial + kinetic, ASE sign), volume (A^3),
    conserved (eV), temperature (K), kinetic energy (eV), and ``time_ps`` [F]."""
    from lycb_jax.md import ChunkInputs, ChunkSpec, IntegratorSettings, init_replica, masses_of, run_chunk

    model = model or lj_model()
    settings = IntegratorSettings("npt", dt_fs=s.dt_fs, tau_t_fs=s.tau_t_fs, tau_p_fs=s.tau_p_fs,
                                  pressure_bar=s.pressure_bar, barostat=barostat,
                                  stress_GPa=None if stress_GPa is None else tuple(stress_GPa))
    cap = lycb_capacity(atoms)
    rep = lambda x: np.stack([x] * replicas)  # noqa: E731
    species = jnp.asarray(rep(atoms.numbers), jnp.int32)
    cell = jnp.asarray(rep(atoms.cell[:]), jnp.float32)
    kT = jnp.full(replicas, s.temperature_K * units.kB, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), replicas)
    states = jax.vmap(lambda sp, x, c, m, t, k: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                             settings=settings, capacity=cap)[0])(
        species, jnp.asarray(rep(atoms.positions), jnp.float32), cell, jnp.asarray(rep(masses_of(atoms.numbers))),
        kT, keys)
    alive = jnp.ones(replicas, bool)
    stride = int(round(s.every_fs / s.dt_fs))

    n_frames = int(round(s.chunk_ps * 1000 / s.every_fs))  # one compiled chunk for every call

    def run(states, ps):
        frames = []
        for _ in range(int(round(ps / s.chunk_ps))):
            out = run_chunk(model, ChunkInputs(species, cell, states, kT, kT, alive),
                            ChunkSpec(settings, cap, n_frames, stride))
            assert bool(np.all(out.ok)), "graph capacity overflow in the NpT comparison run"
            states = out.states
            frames.append(out.frames)
        return states, frames and jax.tree.map(lambda *x: np.concatenate(x, axis=1), *frames)

    states, _ = run(states, s.equilibrate_ps)
    _, fr = run(states, s.sample_ps)
    vol = np.asarray(fr.volume, np.float64)
    kinetic = 2 * np.asarray(fr.kinetic_energy, np.float64) / (3 * vol) * GPA  # isotropic kinetic stress, GPa
    stress = np.asarray(fr.stress, np.float64) - kinetic[..., None, None] * np.eye(3)
    return dict(cell=np.asarray(fr.cell, np.float64), stress=stress, volume=vol,
                conserved=np.asarray(fr.conserved, np.float64), temperature=np.asarray(fr.temperature, np.float64),
                kinetic_energy=np.asarray(fr.kinetic_energy, np.float64),
                time_ps=np.arange(1, vol.shape[1] + 1) * s.every_fs / 1000)


def run_ase(atoms, s: RunSettings, seed: int = 0) -> dict:
    """ASE's MTKNPT (full 3x3 cell) on :class:`ForceShiftedLJ`; the same series as :func:`run_lycb`, [1, F].

    ASE's particle chain drives sum p^2/m to 3N kT although the total momentum is zero (3N - 3
    degrees of freedom): its target is set to T (3N - 3) / 3N so that the particles run at T."""
    from ase.md.nose_hoover_chain import MTKNPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = ForceShiftedLJ()
    MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    n = len(atoms)
    dyn = MTKNPT(atoms, timestep=s.dt_fs * units.fs, temperature_K=s.temperature_K * (3 * n - 3) / (3 * n),
                 pressure_au=s.pressure_bar * units.bar, tdamp=s.tau_t_fs * units.fs, pdamp=s.tau_p_fs * units.fs)
    stride = int(round(s.every_fs / s.dt_fs))
    dyn.run(int(round(s.equilibrate_ps * 1000 / s.dt_fs)))
    rec = {k: [] for k in ("cell", "stress", "volume", "conserved", "temperature")}

    def observe():
        rec["cell"].append(atoms.cell[:].copy())
        rec["stress"].append(atoms.get_stress(voigt=False, include_ideal_gas=True) * GPA)
        rec["volume"].append(atoms.get_volume())
        rec["conserved"].append(dyn.get_conserved_energy())
        rec["temperature"].append(2 * atoms.get_kinetic_energy() / ((3 * n - 3) * units.kB))

    dyn.attach(observe, interval=stride)
    dyn.run(int(round(s.sample_ps * 1000 / s.dt_fs)))
    out = {k: np.asarray(v, np.float64)[None, 1:] for k, v in rec.items()}  # the first call is at step 0
    out["time_ps"] = np.arange(1, out["volume"].shape[1] + 1) * s.every_fs / 1000
    return out


def cell_parameters(cells) -> np.ndarray:
    """(a, b, c in A, alpha, beta, gamma in degrees) [..., 6] of cells [..., 3, 3]."""
    flat = np.asarray(cells).reshape(-1, 3, 3)
    return np.array([cell_to_cellpar(c) for c in flat]).reshape(np.shape(cells)[:-2] + (6,))


def block_mean(x, blocks: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a series x [R, F, ...] and its standard error from ``blocks`` block means per run."""
    x = np.asarray(x, np.float64)
    f = x.shape[1] // blocks * blocks
    b = x[:, :f].reshape((x.shape[0], blocks, f // blocks) + x.shape[2:]).mean(2).reshape((-1,) + x.shape[2:])
    return b.mean(0), b.std(0, ddof=1) / np.sqrt(b.shape[0])


def drift_meV_per_atom_ps(res: dict, n_atoms: int) -> np.ndarray:
    """Least-squares slope of each run's conserved quantity, meV/atom/ps [R]."""
    t = res["time_ps"]
    return np.array([np.polyfit(t, c / n_atoms * 1e3, 1)[0] for c in res["conserved"]])


def summary(res: dict, n_atoms: int) -> dict:
    """Means and standard errors of cell parameters, volume, stress (GPa), and the conserved-quantity drift."""
    par, par_err = block_mean(cell_parameters(res["cell"]))
    vol, vol_err = block_mean(res["volume"])
    st, st_err = block_mean(res["stress"])
    return dict(cellpar=par, cellpar_err=par_err, volume=vol, volume_err=vol_err, stress=st, stress_err=st_err,
                drift=drift_meV_per_atom_ps(res, n_atoms), temperature=float(res["temperature"].mean()))
