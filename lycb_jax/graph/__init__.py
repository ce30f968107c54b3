"""Periodic neighbour lists and crystal graphs with static capacities (jit- and vmap-compatible).

Modules, one concept each:

* :mod:`.capacity`: :class:`Capacity`, the static sizes of a graph: estimated from structures on the
  host, grown from what a program needed, shrunk, bucketed; the cell-list grid (:func:`bin_grid`);
* :mod:`.edges`: :class:`EdgeList`, half edges within a cutoff by brute force over pairs and images;
* :mod:`.cells`: the same half edges from a cell list, O(N), for large cells;
* :mod:`.build`: :class:`Graph` (atom graph and angles), :func:`build_graph`, :func:`refine_graph`
  (the exact graph taken from a Verlet list), :func:`exact_sizes`;
* :mod:`.verlet`: the MD Verlet list (cutoff + skin) and the bound on how far pairs moved since;
* :mod:`.batch`: structures of different sizes padded and stacked into one :class:`Batch`.
"""

from lycb_jax.graph.batch import Batch, pack
from lycb_jax.graph.build import Graph, build_graph, exact_sizes, neighbour_edges, refine_graph
from lycb_jax.graph.capacity import Capacity, Need, bin_grid
from lycb_jax.graph.cells import build_edges_binned
from lycb_jax.graph.edges import EdgeList, build_edges
from lycb_jax.graph.verlet import drift_bound, graph_sizes, verlet_list

__all__ = ["Batch", "Capacity", "EdgeList", "Graph", "Need", "bin_grid", "build_edges", "build_edges_binned",
           "build_graph", "drift_bound", "exact_sizes", "graph_sizes", "neighbour_edges", "pack", "refine_graph",
           "verlet_list"]
