"""A cheap Lennard-Jones pair potential implementing the model interface (lycb_jax.models.base), for MD tests."""

import dataclasses

import jax
import jax.numpy as jnp
from ase.build import bulk

from lycb_jax.models import Cutoffs, LayerGroups, Model
from lycb_jax.models.base import edge_vectors

EPS, SIGMA, RC = 0.0104, 3.40, 6.0  # eV, Angstrom (argon), cutoff = CHGNet's atom-graph cutoff


def lj(r, eps=EPS):
    """LJ shifted and smoothly truncated at RC: E(RC) = 0 and continuous force (energy-conserving)."""
    def e(x):
        return 4 * eps * ((SIGMA / x) ** 12 - (SIGMA / x) ** 6)
    de = jax.grad(e)
    return jnp.where(r < RC, e(r) - e(RC) - (r - RC) * de(RC), 0.0)


@dataclasses.dataclass(frozen=True)
class LJConfig:
    cutoff: float = RC  # Angstrom


@dataclasses.dataclass(frozen=True)
class LennardJones:
    """Pair potential on the atom graph (the bond graph is built but unused); parameter: epsilon (eV)."""

    config: LJConfig = LJConfig()

    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs(self.config.cutoff, 3.0)

    def energy(self, params, species, positions, cell, atom_mask, graph):
        vec = edge_vectors(positions, cell, graph)
        r = jnp.sqrt(jnp.where(graph.edge_mask, jnp.sum(vec**2, -1), 1.0))
        pair = jnp.where(graph.edge_mask, lj(r, params["epsilon"]), 0.0)
        return jnp.sum(pair), jnp.zeros(species.shape[0], positions.dtype)

    def layer_groups(self) -> LayerGroups:
        return LayerGroups({"pair": ("epsilon",)}, {}, ())


def register() -> None:
    """Make checkpoints of the LJ model loadable (``lycb_jax.load_model(folder)``)."""
    from lycb_jax.models import ARCHITECTURES

    ARCHITECTURES["lj-test"] = (LennardJones, LJConfig)


def lj_model() -> Model:
    return Model(LennardJones(), {"epsilon": jnp.float32(EPS)}, "lj-argon")


def argon(n=2, a=5.30, seed=0):
    atoms = bulk("Ar", "fcc", a, cubic=True) * (n, n, n)
    atoms.rattle(0.02, seed=seed)
    return atoms


def _ase_lj(atoms):
    from ase.calculators.lj import LennardJones as AseLJ

    return AseLJ(epsilon=0.0125, sigma=SIGMA, rc=RC, smooth=True)


def ase_lj_labeller():
    """A cheap labeller for loop tests: ASE's Lennard-Jones with a different epsilon (0.0125 eV)."""
    from lycb_jax.active import ASELabeller

    return ASELabeller(_ase_lj, {"code": "ase-lj", "epsilon_eV": 0.0125, "sigma_A": SIGMA, "rc_A": RC})
