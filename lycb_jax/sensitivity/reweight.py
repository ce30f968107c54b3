"""Static observables at nearby model parameters by reweighting stored frames (DiffTRe: Thaler and
Zavadlav, Nat. Commun. 12, 6884 (2021)), and their gradients by ``jax.grad`` through the weights.

Frames x_i sampled at parameters theta0 and temperature T (NVT, or NpT at a fixed pressure) give
<A>_theta = sum_i w_i A_theta(x_i) with w = softmax(-(U_theta(x_i) - U_theta0(x_i)) / kT). In NpT the
P V term of the weight cancels, since a parameter change leaves each frame's volume unchanged.
The estimate is only as good as the effective sample size n_eff = 1 / sum w_i^2 (Kish); below
``min_ess_fraction`` * n a warning says to re-sample at theta.

Observables are callables ``A(module, params, species, positions, cell, atom_mask, graph) -> array``
of one frame; :data:`potential_energy`, :func:`virial_stress`, :func:`virial_pressure`, :func:`volume`,
:func:`cell_parameters`, :func:`rdf` and :func:`site_occupancy` are provided. Units: eV, Angstrom, K, GPa.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import lycb_jax.graph.capacity as caps
from lycb_jax.graph.capacity import Capacity
from lycb_jax.graph import Graph, build_graph
from lycb_jax.models.base import edge_vectors, energy_forces_stress, potential
from lycb_jax.units import EV_A3_TO_GPA, KB


class Frames(NamedTuple):
    """Stored configurations of one system: atomic numbers [N], positions [F, N, 3] (Angstrom),
    cells [F, 3, 3] (Angstrom, rows), atom mask [N] (True for real atoms)."""

    species: jax.Array
    positions: jax.Array
    cells: jax.Array
    atom_mask: jax.Array


def frames_from_trajectory(path, stage: str = "production", replica: int = 0, *, every: int = 1,
                           skip: int = 0) -> Frames:
    """Frames of one replica of a :class:`lycb_jax.md.Simulation` ``trajectory.h5`` (its ``stage``
    group), every ``every``-th frame after the first ``skip``."""
    from lycb_jax.md.trajectory import read_trajectory

    with read_trajectory(path) as f:
        if stage not in f:
            raise ValueError(f"{path}: no stage {stage!r}; stages: {sorted(k for k in f)}")
        n_rep = f[stage]["positions"].shape[0]
        if not 0 <= replica < n_rep:
            raise ValueError(f"{path}: replica {replica} out of range (the file has {n_rep})")
        numbers = np.asarray(f.attrs["numbers"])[replica]
        pos = np.asarray(f[stage]["positions"][replica, skip::every], np.float64)
        cells = np.asarray(f[stage]["cell"][replica, skip::every], np.float64)
    if len(pos) == 0:
        raise ValueError(f"{path}: stage {stage!r} has no frames after skipping {skip}")
    return Frames(jnp.asarray(numbers), jnp.asarray(pos), jnp.asarray(cells), jnp.asarray(numbers > 0))


GRAPH_BATCH = 64  # frames per vectorised graph build: temporaries of one batch, not of the whole trajectory


@functools.partial(jax.jit, static_argnames="capacity")
def _graphs(frames: Frames, capacity: Capacity) -> Graph:
    return jax.lax.map(lambda pc: build_graph(pc[0], pc[1], frames.atom_mask, capacity),
                       (frames.positions, frames.cells), batch_size=GRAPH_BATCH)


def check_frames(frames: Frames) -> None:
    """ValueError naming the problem if ``frames`` are not species [N], positions [F, N, 3], cells [F, 3, 3],
    atom_mask [N] with F >= 1 and finite coordinates."""
    n = np.shape(frames.species)
    f = np.shape(frames.positions)
    if len(n) != 1 or len(f) != 3 or f[1:] != (n[0], 3) or f[0] < 1:
        raise ValueError(f"frames: positions must be [F, N, 3] with N = {n} atoms, got {f}")
    if np.shape(frames.cells) != (f[0], 3, 3) or np.shape(frames.atom_mask) != n:
        raise ValueError(f"frames: cells must be [{f[0]}, 3, 3] and atom_mask [{n[0]}], got "
                         f"{np.shape(frames.cells)} and {np.shape(frames.atom_mask)}")
    if not (np.all(np.isfinite(np.asarray(frames.positions))) and np.all(np.isfinite(np.asarray(frames.cells)))):
        raise ValueError("frames: non-finite positions or cells")


def frame_graphs(frames: Frames, cutoffs, capacity: Capacity | None = None) -> tuple[Graph, Capacity]:
    """Graphs of every frame (batched [F, ...]) for a model with ``cutoffs`` (atom, bond; Angstrom), and the
    capacity used: estimated from the first, middle and last frames when None, grown once if exceeded;
    ValueError if a given capacity is exceeded."""
    check_frames(frames)
    given = capacity is not None
    if capacity is None:
        pick = sorted({0, len(frames.positions) // 2, len(frames.positions) - 1})
        systems = [caps._Geometry(np.asarray(frames.positions[i]), np.asarray(frames.cells[i])) for i in pick]
        capacity = caps.estimate(systems, tuple(cutoffs), headroom=1.3)
    graphs = _graphs(frames, capacity)
    if bool(np.any(np.asarray(graphs.overflow))):
        if given:
            raise ValueError(f"graph capacity {capacity} is too small for some frames (needed up to "
                             f"{int(np.max(np.asarray(graphs.n_edges)))} edges, "
                             f"{int(np.max(np.asarray(graphs.n_angles)))} angles)")
        capacity = capacity.grown(graphs)
        graphs = _graphs(frames, capacity)
        if bool(np.any(np.asarray(graphs.overflow))):
            raise ValueError(f"graph capacity {capacity} is still too small for some frames")
    return graphs, capacity


# ---------------------------------------------------------------- observables of one frame

def potential_energy(module, params, species, positions, cell, atom_mask, graph):
    """Potential energy of the frame, eV."""
    return potential(module, params, species, positions, cell, atom_mask, graph)[0]


def virial_stress(module, params, species, positions, cell, atom_mask, graph):
    """Virial (configurational) stress [3, 3], GPa, ASE sign (positive = tensile)."""
    return energy_forces_stress(module, params, species, positions, cell, atom_mask, graph)[2]


def virial_pressure(module, params, species, positions, cell, atom_mask, graph):
    """Configurational pressure -tr(stress)/3, GPa. The full pressure adds the parameter-independent
    kinetic part n kT / V (:func:`ideal_pressure_gpa`)."""
    return -jnp.trace(virial_stress(module, params, species, positions, cell, atom_mask, graph)) / 3


def volume(module, params, species, positions, cell, atom_mask, graph):
    """Cell volume |det cell|, Angstrom^3 (differs between frames only in NpT)."""
    return jnp.abs(jnp.linalg.det(cell))


def cell_parameters(module, params, species, positions, cell, atom_mask, graph):
    """Lattice parameters [a, b, c (Angstrom), alpha, beta, gamma (degrees)] of the frame's cell (NpT)."""
    lengths = jnp.linalg.norm(cell, axis=1)
    cos = jnp.stack([cell[1] @ cell[2] / (lengths[1] * lengths[2]), cell[0] @ cell[2] / (lengths[0] * lengths[2]),
                     cell[0] @ cell[1] / (lengths[0] * lengths[1])])
    return jnp.concatenate([lengths, jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))])


def site_occupancy(sites_frac, radius: float, species_z: int) -> Callable:
    """Observable: the number of atoms of ``species_z`` within ``radius`` (Angstrom) of each site [S]
    (fractional coordinates [S, 3], mapped by each frame's cell; minimum image), e.g. the Li occupancy
    of the octahedral and tetrahedral sites of the ideal structure. Sites closer than 2 ``radius`` could
    count one atom twice, so ValueError if ``radius`` is not positive."""
    sites = np.asarray(sites_frac, np.float64)
    if sites.ndim != 2 or sites.shape[1] != 3:
        raise ValueError(f"sites must be fractional coordinates [S, 3], got shape {sites.shape}")
    if not radius > 0:
        raise ValueError(f"site radius must be positive (Angstrom), got {radius}")

    def occ(module, params, species, positions, cell, atom_mask, graph):
        frac = positions @ jnp.linalg.inv(cell)
        d = frac[None, :, :] - jnp.asarray(sites, positions.dtype)[:, None, :]  # [S, N, 3]
        d = (d - jnp.round(d)) @ cell  # minimum image (exact for sites within half a cell)
        near = jnp.sum(d**2, -1) < radius**2
        return jnp.sum(near & (atom_mask & (species == species_z))[None, :], axis=1).astype(positions.dtype)

    return occ


def ideal_pressure_gpa(n_atoms: int, temperature_K: float, volume_A3) -> float:
    """Kinetic pressure n k T / V, GPa (add it to :func:`virial_pressure` for the full pressure)."""
    return n_atoms * KB * temperature_K / volume_A3 * EV_A3_TO_GPA


def rdf(r: Sequence[float], width: float = 0.05, species_pair: tuple[int, int] | None = None) -> Callable:
    """Observable: the radial distribution function g_ab(r) at radii ``r`` (Angstrom, up to the model's
    atom cutoff) with each pair distance smeared by a normalized Gaussian of ``width`` (Angstrom), so that
    it is differentiable. ``species_pair`` (Z_a, Z_b), or None for all atoms.
    g_ab(r) = V / (N_a N_b) sum_{i in a, j in b, j != i} G(r - r_ij) / (4 pi r^2) over periodic images
    (NaN if a species of the pair is absent)."""
    r = np.asarray(r, np.float64)
    if r.ndim != 1 or np.any(r <= 0):
        raise ValueError("rdf radii must be a 1-d array of positive distances (Angstrom)")
    if not width > 0:
        raise ValueError(f"rdf width must be positive (Angstrom), got {width}")

    def g(module, params, species, positions, cell, atom_mask, graph):
        if r.max() + 3 * width > module.cutoffs.atom:
            raise ValueError(f"rdf radii up to {r.max()} A (+3 widths) exceed the graph cutoff "
                             f"{module.cutoffs.atom} A")
        za, zb = species_pair if species_pair is not None else (None, None)
        in_a = atom_mask if za is None else atom_mask & (species == za)
        in_b = atom_mask if zb is None else atom_mask & (species == zb)
        src, dst = graph.edge_src, graph.edge_dst
        # each half edge is one unordered pair: count it once per ordered (a, b) assignment
        weight = (in_a[src] & in_b[dst]).astype(positions.dtype) + (in_b[src] & in_a[dst]).astype(positions.dtype)
        weight = jnp.where(graph.edge_mask, weight, 0.0)
        d = jnp.sqrt(jnp.where(graph.edge_mask, jnp.sum(edge_vectors(positions, cell, graph) ** 2, -1), 1.0))
        rr = jnp.asarray(r, positions.dtype)
        kernel = jnp.exp(-0.5 * ((rr[:, None] - d[None, :]) / width) ** 2) / (width * jnp.sqrt(2 * jnp.pi))
        shell = kernel @ weight / (4 * jnp.pi * rr**2)
        vol = jnp.abs(jnp.linalg.det(cell))
        return shell * vol / (jnp.sum(in_a) * jnp.sum(in_b))

    return g


# ---------------------------------------------------------------- weights and averages (pure, jit-able)

def frame_map(fn: Callable, module, params, *, frames: Frames, graphs: Graph, batch_size: int | None = None):
    """``fn(module, params, species, positions, cell, atom_mask, graph)`` of every frame, stacked [F, ...]
    (``jax.lax.map``, ``batch_size`` frames at a time vectorised; None: all at once)."""
    def one(x):
        pos, cell, graph = x
        return fn(module, params, frames.species, pos, cell, frames.atom_mask, graph)

    return jax.lax.map(one, (frames.positions, frames.cells, graphs), batch_size=batch_size or len(frames.positions))


def weights(energies, ref_energies, kT):
    """Reweighting weights [F] (sum 1): softmax(-(energies - ref_energies) / kT); energies in eV, kT in eV."""
    return jax.nn.softmax(-(energies - ref_energies) / kT)


def effective_sample_size(w):
    """Kish effective sample size 1 / sum w^2 of normalized weights (n for uniform weights)."""
    return 1.0 / jnp.sum(w**2)


def reweighted_mean(params, module, frames: Frames, *, graphs: Graph, ref_energies, kT, observable: Callable,
                    batch_size: int | None = None):
    """(<A>_params, weights [F]): the weighted average of ``observable`` over the frames, which were sampled
    with reference energies ``ref_energies`` [F] (eV, U_theta0 of each frame) at ``kT`` (eV).
    Differentiable in ``params`` through the weights and through A."""
    @functools.partial(jax.checkpoint, static_argnums=(0,))  # gradients keep one batch of frames' residuals
    def both(module, params, species, positions, cell, atom_mask, graph):
        e = potential_energy(module, params, species, positions, cell, atom_mask, graph)
        return e, observable(module, params, species, positions, cell, atom_mask, graph)

    energies, values = frame_map(both, module, params, frames=frames, graphs=graphs, batch_size=batch_size)
    w = weights(energies, ref_energies, kT)
    return jnp.tensordot(w, values, axes=1), w


# ---------------------------------------------------------------- parameter groups

def split_params(params, select: Sequence[str] | None, layer_groups=None):
    """(selected, rest) flat dicts {path tuple: leaf} of ``params``: ``select`` names layer groups or
    aliases of ``layer_groups`` (:class:`lycb_jax.models.LayerGroups`), or, without ``layer_groups``,
    top-level keys of ``params``; None selects everything. ValueError for unknown names."""
    flat = traverse_util.flatten_dict(params)
    if select is None:
        return flat, {}
    if layer_groups is not None:
        from lycb_jax.models.groups import group_of, resolve_groups

        chosen = set(resolve_groups(list(select), layer_groups))
        if not chosen:
            raise ValueError("no layer group selected")
        keep = {k for k in flat if group_of(k, layer_groups) in chosen}
    else:
        unknown = set(select) - {k[0] for k in flat}
        if unknown:
            raise ValueError(f"unknown parameter keys {sorted(unknown)}; top-level keys: "
                             f"{sorted({k[0] for k in flat})}")
        keep = {k for k in flat if k[0] in set(select)}
    return {k: v for k, v in flat.items() if k in keep}, {k: v for k, v in flat.items() if k not in keep}


def merge_params(selected: dict, rest: dict):
    """The params pytree from :func:`split_params`' two flat dicts."""
    return traverse_util.unflatten_dict({**rest, **selected})


# ---------------------------------------------------------------- host-level driver

@dataclasses.dataclass
class Reweighted:
    """<A>_theta (``mean``, the observable's units), its Jacobian ``grad`` w.r.t. the selected parameters
    (nested dict like params, leaves of shape mean.shape + leaf.shape; None if not asked), the
    weights [F], n_eff (Kish) and n_eff / F."""

    mean: np.ndarray
    grad: dict | None
    weights: np.ndarray
    ess: float
    ess_fraction: float


@functools.partial(jax.jit, static_argnames=("module", "observable", "with_grad", "batch_size"))
def _mean_and_grad(selected, rest, module, frames, graphs, ref_energies, kT, observable, with_grad, batch_size):
    def f(sel):
        return reweighted_mean(merge_params(sel, rest), module, frames, graphs=graphs, ref_energies=ref_energies, kT=kT,
                               observable=observable, batch_size=batch_size)

    (mean, w) = f(selected)
    if not with_grad:
        return mean, w, None
    jac = jax.jacrev(lambda s: f(s)[0])(selected)
    return mean, w, jac


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def _energies(params, module, frames, graphs, batch_size):
    return frame_map(potential_energy, module, params, frames=frames, graphs=graphs, batch_size=batch_size)


def reweight(model, params, frames: Frames, *, temperature_K: float, observable: Callable, ref_params=None,
             ref_energies=None, select: Sequence[str] | None = None, by_layer_group: bool = True,
             with_grad: bool = True, min_ess_fraction: float = 0.5, graphs=None, batch_size: int | None = None
             ) -> Reweighted:
    """<A> at ``params`` (and d<A>/d params) from ``frames`` sampled with ``model`` at temperature_K (K).

    The reference energies (eV) are ``ref_energies`` [F] or recomputed at ``ref_params`` (default
    ``model.params``); recomputing avoids the float32 rounding of stored energies. ``select``: the
    parameters to differentiate, layer groups of ``model.module.layer_groups()`` when ``by_layer_group``,
    else top-level keys; None: all. Warns when n_eff / F < ``min_ess_fraction``."""
    if not temperature_K > 0:
        raise ValueError(f"temperature must be positive (K), got {temperature_K}")
    check_frames(frames)
    module = model.module
    if graphs is None:
        graphs, _ = frame_graphs(frames, module.cutoffs)
    if ref_energies is None:
        ref_energies = _energies(model.params if ref_params is None else ref_params, module, frames, graphs,
                                 batch_size)
    ref_energies = jnp.asarray(ref_energies)
    if ref_energies.shape != frames.positions.shape[:1]:
        raise ValueError(f"ref_energies has shape {ref_energies.shape}, expected ({len(frames.positions)},)")
    groups = module.layer_groups() if (select is not None and by_layer_group) else None
    selected, rest = split_params(params, select, groups)
    kT = jnp.asarray(KB * temperature_K, frames.positions.dtype)
    mean, w, jac = _mean_and_grad(selected, rest, module, frames, graphs, ref_energies, kT, observable,
                                  with_grad, batch_size)
    w = np.asarray(w)
    ess = float(1.0 / np.sum(w.astype(np.float64) ** 2))
    frac = ess / len(w)
    if frac < min_ess_fraction:
        warnings.warn(f"reweighting: effective sample size {ess:.1f} of {len(w)} frames ({frac:.0%}) is below "
                      f"{min_ess_fraction:.0%}; the parameters moved too far from the sampled ones, re-sample "
                      "at the new parameters", RuntimeWarning, stacklevel=2)
    grad = None if jac is None else traverse_util.unflatten_dict({k: np.asarray(v) for k, v in jac.items()})
    return Reweighted(np.asarray(mean), grad, w, ess, frac)
