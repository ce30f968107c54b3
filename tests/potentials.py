"""A cheap Lennard-Jones pair potential with the CHGNet module's call signature, for MD tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from ase.build import bulk

from lycb_jax.models import Model

EPS, SIGMA, RC = 0.0104, 3.40, 6.0  # eV, Angstrom (argon), cutoff = CHGNet's atom-graph cutoff


def lj(r):
    """LJ shifted and smoothly truncated at RC: E(RC) = 0 and continuous force (energy-conserving)."""
    def e(x):
        return 4 * EPS * ((SIGMA / x) ** 12 - (SIGMA / x) ** 6)
    de = jax.grad(e)
    return jnp.where(r < RC, e(r) - e(RC) - (r - RC) * de(RC), 0.0)


class LennardJones(nn.Module):
    @nn.compact
    def __call__(self, species, edge_vec, graph):
        r = jnp.sqrt(jnp.where(graph.edge_mask, jnp.sum(edge_vec**2, -1), 1.0))
        pair = jnp.where(graph.edge_mask, lj(r), 0.0)
        n = species.shape[0]
        atom_e = 0.5 * (jax.ops.segment_sum(pair, graph.edge_src, n) + jax.ops.segment_sum(pair, graph.edge_dst, n))
        return atom_e, jnp.zeros(n)


def lj_model() -> Model:
    return Model(LennardJones(), {"chgnet": {}, "atom_ref": jnp.zeros(94)}, "lj-argon")


def argon(n=2, a=5.30, seed=0):
    atoms = bulk("Ar", "fcc", a, cubic=True) * (n, n, n)
    atoms.rattle(0.02, seed=seed)
    return atoms
