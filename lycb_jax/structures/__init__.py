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

from lycb_jax.runtime import lazy

# name -> module, imported on first use (keeps `import lycb_jax...` and `lycb-jax --help` fast)
_LAZY = {
    'brute_force_distinct': 'lycb_jax.structures.enumeration',
    'count_distinct': 'lycb_jax.structures.enumeration',
    'count_labelings': 'lycb_jax.structures.enumeration',
    'enumerate_orderings': 'lycb_jax.structures.enumeration',
    'FIRE': 'lycb_jax.structures.fire',
    'FireParams': 'lycb_jax.structures.fire',
    'FireState': 'lycb_jax.structures.fire',
    'fire_apply': 'lycb_jax.structures.fire',
    'fire_init': 'lycb_jax.structures.fire',
    'plot_series': 'lycb_jax.structures.plot',
    'halide_series': 'lycb_jax.structures.ranking',
    'order_parent': 'lycb_jax.structures.ranking',
    'rank': 'lycb_jax.structures.ranking',
    'rank_relaxed': 'lycb_jax.structures.ranking',
    'spacegroup': 'lycb_jax.structures.ranking',
    'write_ranking': 'lycb_jax.structures.ranking',
    'RelaxState': 'lycb_jax.structures.relaxation',
    'Relaxed': 'lycb_jax.structures.relaxation',
    'Slots': 'lycb_jax.structures.relaxation',
    'compiled_programs': 'lycb_jax.structures.relaxation',
    'frechet_forces': 'lycb_jax.structures.relaxation',
    'relax': 'lycb_jax.structures.relaxation',
    'HALIDES': 'lycb_jax.structures.sites',
    'PARENTS': 'lycb_jax.structures.sites',
    'VACANCY': 'lycb_jax.structures.sites',
    'SiteModel': 'lycb_jax.structures.sites',
    'halide_site_model': 'lycb_jax.structures.sites',
    'load_parent': 'lycb_jax.structures.sites',
    'mixing_groups': 'lycb_jax.structures.sites',
    'parent_site_model': 'lycb_jax.structures.sites',
    'wyckoff_site_model': 'lycb_jax.structures.sites',
}

__all__ = ["FIRE", "FireParams", "FireState", "HALIDES", "PARENTS", "RelaxState", "Relaxed", "SiteModel", "Slots",
           "VACANCY", "brute_force_distinct", "compiled_programs", "count_distinct", "count_labelings",
           "enumerate_orderings", "fire_apply", "fire_init", "frechet_forces", "halide_series", "halide_site_model",
           "load_parent", "mixing_groups", "order_parent", "parent_site_model", "plot_series", "rank", "rank_relaxed",
           "relax", "spacegroup", "wyckoff_site_model", "write_ranking"]


__getattr__, __dir__ = lazy.attributes(__name__, _LAZY)
