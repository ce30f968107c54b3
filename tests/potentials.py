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
class LennardJones:
    """Pair potential on the atom graph (the bond graph is built but unused); parameter: epsilon (eV)."""

    cutoffs: Cutoffs = Cutoffs(RC, 3.0)

    def energy(self, params, species, positions, cell, atom_mask, graph):
        vec = edge_vectors(positions, cell, graph)
        r = jnp.sqrt(jnp.where(graph.edge_mask, jnp.sum(vec**2, -1), 1.0))
        pair = jnp.where(graph.edge_mask, lj(r, params["epsilon"]), 0.0)
        return jnp.sum(pair), jnp.zeros(species.shape[0], positions.dtype)

    def layer_groups(self) -> LayerGroups:
        return LayerGroups({"pair": ("epsilon",)}, {}, ())


def lj_model() -> Model:
    return Model(LennardJones(), {"epsilon": jnp.float32(EPS)}, "lj-argon")


def argon(n=2, a=5.30, seed=0):
    atoms = bulk("Ar", "fcc", a, cubic=True) * (n, n, n)
    atoms.rattle(0.02, seed=seed)
    return atoms
