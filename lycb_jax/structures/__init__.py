"""Ordered structure models of Li3YCl6-xBrx: experimental parents, enumeration, batched relaxation, ranking.

The paper's section 2.1: the disordered experimental structures (LYC P-3m1, LYB C2/m, partial Li and
Y occupancies) are turned into ordered models by enumerating the symmetry-distinct orderings of a
supercell (Hart-Forcade, via icet), relaxing every candidate (FIRE on positions and cell, as ASE's
FIRE + FrechetCellFilter, jit-compiled and vmapped over candidates) and ranking by energy per atom.
Units: Angstrom, eV, eV/A, GPa.
"""

# Modules: sites (parents, SiteModel, parent/wyckoff/halide site models), enumeration (Burnside
# counts, canonical labelings, icet, sampling), fire (the FIRE optimiser, pure functions),
# relaxation (FrechetCellFilter DOFs, batched device loop, relax), ranking (rank, the LYCB series),
# plot. The command line is lycb_jax.cli.structures.

from lycb_jax.structures.enumeration import (_canonical, brute_force_distinct, count_distinct, count_labelings,
                                             enumerate_orderings)
from lycb_jax.structures.fire import FIRE, FireParams, FireState, fire_apply, fire_init
from lycb_jax.structures.plot import plot_series
from lycb_jax.structures.ranking import halide_series, order_parent, rank, rank_relaxed, spacegroup, write_ranking
from lycb_jax.structures.relaxation import RelaxState, Relaxed, Slots, compiled_programs, frechet_forces, relax
from lycb_jax.structures.sites import (HALIDES, PARENTS, VACANCY, SiteModel, halide_site_model, load_parent,
                                       mixing_groups, parent_site_model, wyckoff_site_model)

__all__ = ["FIRE", "FireParams", "FireState", "HALIDES", "PARENTS", "RelaxState", "Relaxed", "SiteModel", "Slots",
           "VACANCY", "brute_force_distinct", "compiled_programs", "count_distinct", "count_labelings",
           "enumerate_orderings", "fire_apply", "fire_init", "frechet_forces", "halide_series", "halide_site_model",
           "load_parent", "mixing_groups", "order_parent", "parent_site_model", "plot_series", "rank", "rank_relaxed",
           "relax", "spacegroup", "wyckoff_site_model", "write_ranking"]
