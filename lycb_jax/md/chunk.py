"""One chunk of batched MD: R replicas advance together in one jit-compiled program (``jax.vmap``),
``n_frames * stride`` steps inside ``lax.scan``, with a :class:`Frame` recorded every ``stride`` steps.
:func:`run_chunk` takes the model, the traced inputs (:class:`ChunkInputs`, a pytree) and the static
:class:`ChunkSpec` (one compiled program per spec and input shapes), and returns a :class:`ChunkOut`.

Each replica keeps a Verlet list (:mod:`lycb_jax.graph.verlet`), rebuilt for all replicas at once
only when some live replica could have moved more than skin/2 since it was built. Every step is
checked: a graph capacity overflow, or an atom that moved more than skin/2 before a rebuild,
marks the chunk invalid; :func:`run_chunk_checked` then re-runs it with capacities grown by
:func:`lycb_jax.graph.capacity.grow`. A replica whose temperature runs away or whose positions become
non-finite is frozen and reported.

Optionally (``ChunkInputs.msd``: a :class:`lycb_jax.md.observables.StreamingMSD` per replica) the scan also
carries the streaming multiple-time-origin MSD, updated every ``ChunkSpec.msd_stride`` steps of the stage with
the unwrapped positions relative to the framework's centre of mass (the rule of
:mod:`lycb_jax.analysis.msd`), so that long runs need not keep every frame.

Units: Angstrom, fs, eV, K, amu; pressure in bar, stress in GPa.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import quantity

import lycb_jax.graph.capacity as caps
from lycb_jax.md.observables import relative_to_framework, streaming_update
from lycb_jax.graph.capacity import Capacity, Need
from lycb_jax.runtime.devices import replica_mesh, shard_replicas
from lycb_jax.graph import EdgeList, refine_graph
from lycb_jax.md.integrators import conserved, dynamics, real_positions, state_cell, temperature_K
from lycb_jax.md.settings import IntegratorSettings, degrees_of_freedom
from lycb_jax.graph.verlet import drift_bound, graph_sizes, verlet_list
from lycb_jax.models import Model, energy_forces_stress
from lycb_jax.runtime.precision import with_precision
from lycb_jax.units import EV_A3_TO_GPA, GPA_TO_BAR



class Frame(NamedTuple):
    """Per-replica output at one saved step."""

    positions: jax.Array  # [N, 3] unwrapped Cartesian, Angstrom
    cell: jax.Array  # [3, 3] rows, Angstrom
    temperature: jax.Array  # K, 2 K / ((3N - 3) kB): the total momentum is fixed at zero
    potential_energy: jax.Array  # eV
    kinetic_energy: jax.Array  # eV
    conserved: jax.Array  # eV, the integrator's invariant (NVT or NpT Nose-Hoover; E + K for NVE)
    pressure: jax.Array  # bar, virial + kinetic
    stress: jax.Array  # [3, 3] GPa, virial only (ASE sign: positive = tensile)
    volume: jax.Array  # A^3


class ChunkOut(NamedTuple):
    """What :func:`run_chunk` returns (leading axis: replicas)."""

    states: Any  # jax-md states after the chunk
    frames: Frame  # [R, F, ...] one every ``stride`` steps
    alive: jax.Array  # [R] replicas still running
    ok: jax.Array  # [R] every graph stayed valid; False: discard, grow the capacity to ``need``, re-run
    need: jax.Array  # [R, Need.SIZE] largest sizes needed (capacity.Need.from_vector's layout)
    rebuilds: jax.Array  # () list rebuilds ([n_devices] from the sharded variant)
    msd: Any = None  # StreamingMSD [R, ...], or None (off)


class ChunkResult(NamedTuple):
    """What :func:`run_chunk_checked` returns besides the capacity: a chunk whose graphs all stayed valid."""

    states: Any
    frames: Frame
    alive: np.ndarray
    ok: np.ndarray
    msd: Any = None


class ChunkInputs(NamedTuple):
    """The traced inputs of :func:`run_chunk` (a pytree; leading axis of the arrays: replicas R)."""

    species: Any  # [R, N] int32 atomic numbers, 0 = padding
    cells: Any  # [R, 3, 3] rows, Angstrom: the fixed cells (NVT, NVE; NpT: the stage's initial ones)
    states: Any  # jax-md states [R, ...] (lycb_jax.md.init_replica)
    kT_start: Any  # [R] eV, target kT at step 0 of the stage
    kT_end: Any  # [R] eV, target kT from step ``total_steps`` of the stage on
    alive: Any  # [R] bool, replicas still running (frozen ones are carried unchanged)
    step0: Any = 0  # () steps of the stage done before this chunk
    total_steps: Any = 0  # () steps of the linear kT ramp (0: kT_end from the first step on)
    max_kT_factor: Any = 3.0  # () a replica hotter than this x the target kT is frozen
    msd: Any = None  # StreamingMSD [R, ...] (lycb_jax.md.observables), or None: off
    n_active: Any = None  # () frames run of spec.n_frames (the rest skipped, their records blank), or None: all
    msd_on: Any = None  # () bool, update ``msd`` (False: carried unchanged), or None: on


@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """The static part of :func:`run_chunk` (hashable: one compiled program per distinct spec and input shapes)."""

    settings: IntegratorSettings
    capacity: Capacity  # graph capacity (and Verlet skin)
    n_frames: int  # frames recorded
    stride: int  # MD steps between frames (the chunk runs n_frames * stride steps)
    msd_stride: int = 0  # steps of the stage between streaming-MSD updates (0: none; >= 1 with ChunkInputs.msd)


class Carry(NamedTuple):
    """What the scan of :func:`run_chunk` carries from step to step (leading axis: replicas)."""

    states: Any  # jax-md states
    edges: EdgeList  # Verlet lists (cutoff + skin)
    ref: Any  # the states at which the lists were built
    ref_cell: jax.Array  # [R, 3, 3] the cells then, Angstrom
    drift: jax.Array  # [R] bound on half the change of any pair vector since then (drift_bound), Angstrom
    margin: jax.Array  # () twice the largest single-step move of a live replica in the last step, Angstrom
    ok: jax.Array  # [R] every graph stayed valid (no overflow, no move beyond skin/2 before a rebuild)
    live: jax.Array  # [R] replicas still running (not frozen)
    need: jax.Array  # [R, Need.SIZE] largest sizes needed, in capacity.Need.from_vector's layout
    rebuilds: jax.Array  # () number of list rebuilds
    msd: Any = None  # StreamingMSD [R, ...] or None (off)


def record(model: Model, species, state, cell, kT, settings: IntegratorSettings, energy, edges: EdgeList,
           capacity: Capacity) -> Frame:
    """Thermodynamic record of one replica at the current step (``edges``: a valid Verlet list,
    ``energy``: the integrator's energy function, ``kT`` in eV)."""
    mask = species > 0
    pos = real_positions(state, settings)
    cell_now = state_cell(state, settings, cell)
    graph = refine_graph(edges, pos, cell_now, capacity)
    e, _, stress, _ = energy_forces_stress(model.module, model.params, species, pos, cell_now, mask, graph)
    ke = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
    temp = temperature_K(ke, pos.shape[0])
    vol = jnp.abs(jnp.linalg.det(cell_now))
    p_virial_gpa = -jnp.trace(stress) / 3
    pressure_bar = p_virial_gpa * GPA_TO_BAR + 2 * ke / (3 * vol) * EV_A3_TO_GPA * GPA_TO_BAR
    inv = conserved(energy, state, kT, settings, edges, cell, e, ke)
    return Frame(pos, cell_now, temp, e, ke, inv, pressure_bar, stress, vol)


def _need_vector(sizes, edges: EdgeList, live, moved_far):
    """One replica's ``need`` row: (edges, angles, short, images x3, moved_far, list edges, atoms per bin),
    zero if frozen."""
    c = jnp.concatenate([jnp.stack(sizes), edges.images_needed,
                         jnp.stack([moved_far.astype(jnp.int32), edges.n_edges, edges.max_per_bin])])
    return c * live.astype(jnp.int32)


def _select(live, new, old):
    """``new`` for live replicas, ``old`` for frozen ones (every leaf, leading axis replicas)."""
    return jax.tree.map(lambda a, b: jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


class _Chunk(NamedTuple):
    """One :func:`run_chunk` trace: its inputs, its spec, and the pieces of its step (all vmapped over replicas)."""

    model: Model
    x: ChunkInputs
    spec: ChunkSpec

    @property
    def settings(self) -> IntegratorSettings:
        return self.spec.settings

    @property
    def capacity(self) -> Capacity:
        return self.spec.capacity

    @property
    def half_skin(self) -> float:
        return self.capacity.skin / 2

    def ramp(self, k):
        """kT (eV, [R]) at step k of the stage: linear from kT_start to kT_end over total_steps."""
        x = self.x
        return x.kT_start + (x.kT_end - x.kT_start) * jnp.minimum(k / jnp.maximum(x.total_steps, 1), 1.0)

    def cells(self, states):
        return jax.vmap(lambda st, c: state_cell(st, self.settings, c))(states, self.x.cells)

    def lists(self, states, cells):
        return jax.vmap(lambda st, c, m: verlet_list(real_positions(st, self.settings), c, m, self.capacity))(
            states, cells, self.x.species > 0)

    def drift(self, states, cells, ref, ref_cell):
        return jax.vmap(lambda st, c, r, rc: drift_bound(real_positions(st, self.settings), c,
                                                         real_positions(r, self.settings), rc, self.capacity))(
            states, cells, ref, ref_cell)

    def sizes(self, edges, states, cells):
        return jax.vmap(lambda e, st, c: graph_sizes(e, real_positions(st, self.settings), c, self.capacity))(
            edges, states, cells)

    def integrator(self, species_r):
        return dynamics(self.model, species_r, species_r > 0, self.settings, self.capacity)

    def advance(self, states, kT, edges):
        return jax.vmap(lambda sp, c, st, t, e: self.integrator(sp).apply(st, t, e, c))(
            self.x.species, self.x.cells, states, kT, edges)

    def sane(self, states, kT):
        """[R] positions and momenta finite, and the temperature below max_kT_factor x the target."""
        finite = (jnp.all(jnp.isfinite(states.position), axis=(1, 2))
                  & jnp.all(jnp.isfinite(states.momentum), axis=(1, 2)))
        ke = jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(states.momentum, states.mass)
        hot = (2 * ke / degrees_of_freedom(states.position.shape[1])
               > self.x.max_kT_factor * jnp.maximum(kT, self.x.kT_end))
        return finite & ~hot

    def start(self) -> Carry:
        states = self.x.states
        cells = self.cells(states)
        n_rep = self.x.species.shape[0]
        return Carry(states, self.lists(states, cells), states, cells, jnp.zeros(n_rep, jnp.float32),
                     jnp.float32(0.0), jnp.ones(n_rep, bool), self.x.alive, jnp.zeros((n_rep, Need.SIZE), jnp.int32),
                     jnp.int32(0), self.x.msd)

    def streaming(self, msd, states, live, done):
        """The streaming MSD after ``done`` steps of the stage: live replicas add their unwrapped
        positions (relative to the framework's centre of mass) when ``done`` is a multiple of
        ``msd_stride``; a ``lax.cond`` on the step (not per replica), so other steps cost nothing."""
        def update(m):
            def one(m_r, st):
                x = real_positions(st, self.settings)
                mass = jnp.broadcast_to(jnp.reshape(st.mass, (-1,)), x.shape[:1])
                return streaming_update(m_r, relative_to_framework(x, m_r.mobile, mass))
            return _select(live, jax.vmap(one)(m, states), m)
        due = done % self.spec.msd_stride == 0
        return jax.lax.cond(due if self.x.msd_on is None else due & self.x.msd_on, update, lambda m: m, msd)

    def step(self, c: Carry, i) -> tuple[Carry, None]:
        """One MD step of every replica: rebuild the lists if needed, advance, check the graphs."""
        cell0 = self.cells(c.states)
        # rebuild every list when any live replica could cross skin/2 in this step
        rebuild = jnp.any(c.live & (c.drift + c.margin >= self.half_skin))
        edges, ref, ref_cell = jax.lax.cond(
            rebuild, lambda: (self.lists(c.states, cell0), c.states, cell0), lambda: (c.edges, c.ref, c.ref_cell))
        kT = self.ramp(self.x.step0 + i)
        new = self.advance(c.states, kT, edges)
        cell1 = self.cells(new)
        moved = self.drift(new, cell1, ref, ref_cell)
        live = c.live & self.sane(new, kT)
        n_edges, n_angles, max_short = self.sizes(edges, new, cell1)  # of the graph the last force call used
        cap = self.capacity
        overflow = (edges.overflow | (n_edges > cap.edges) | (n_angles > cap.angles)
                    | (max_short > cap.short_per_atom))
        ok = c.ok & (~live | (~overflow & (moved < self.half_skin)))
        need = jnp.maximum(c.need, jax.vmap(_need_vector)((n_edges, n_angles, max_short), edges, live,
                                                          moved >= self.half_skin))
        # margin for the next step: twice the largest single-step move of a live replica
        step_move = jnp.max(jnp.where(live, self.drift(new, cell1, c.states, cell0), 0.0))
        states = _select(live, new, c.states)
        msd = None if c.msd is None else self.streaming(c.msd, states, live, self.x.step0 + i + 1)
        return Carry(states, edges, ref, ref_cell, moved, 2 * step_move, ok, live, need, c.rebuilds + rebuild,
                     msd), None

    def frame(self, carry: Carry, f) -> tuple[Carry, Frame]:
        """:meth:`active_frame` for the first ``n_active`` frames; after them the carry unchanged and a
        blank (zero) record, so that chunks of any length up to ``n_frames`` share one program."""
        if self.x.n_active is None:
            return self.active_frame(carry, f)
        blank = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                             jax.eval_shape(lambda c: self.active_frame(c, f)[1], carry))
        return jax.lax.cond(f < self.x.n_active, lambda c: self.active_frame(c, f), lambda c: (c, blank), carry)

    def active_frame(self, carry: Carry, f) -> tuple[Carry, Frame]:
        """``stride`` steps, then the Frame of every replica."""
        carry, _ = jax.lax.scan(self.step, carry, f * self.spec.stride + jnp.arange(self.spec.stride))
        kT = self.ramp(self.x.step0 + (f + 1) * self.spec.stride)

        def one(species_r, cell_r, st_r, kT_r, edges_r):
            energy = self.integrator(species_r).energy
            return record(self.model, species_r, st_r, cell_r, kT_r, self.settings, energy, edges_r, self.capacity)

        return carry, jax.vmap(one)(self.x.species, self.x.cells, carry.states, kT, carry.edges)


@functools.partial(jax.jit, static_argnames=("spec",))
@with_precision
def run_chunk(model: Model, inputs: ChunkInputs, spec: ChunkSpec) -> ChunkOut:
    """Advance R replicas by ``spec.n_frames * spec.stride`` steps; record a Frame every ``spec.stride`` steps.

    kT ramps linearly from ``inputs.kT_start`` to ``inputs.kT_end`` (eV, per replica) over ``inputs.total_steps``
    steps counted from ``inputs.step0`` of the stage. One Verlet list per replica (cutoff + skin) is rebuilt, for
    all replicas at once, when some live replica is about to move more than skin/2 from where it was built; every
    force call takes the model's exact graph from it. Returns a :class:`ChunkOut`; its ``ok`` False means a
    capacity overflow or a move beyond skin/2 since the list was built: the caller must discard the result and
    re-run the chunk with capacities grown to ``need`` (``capacity.grow(capacity, Need.from_vector(need))``).
    ``inputs.msd`` (StreamingMSD with leading axis R, or None): updated every ``spec.msd_stride`` steps of the
    stage (at steps done = multiples of it, counted from ``step0``), returned in ``ChunkOut.msd`` (None when off).
    """
    capacity = spec.capacity
    if (capacity.cutoff, capacity.bond_cutoff) != tuple(model.cutoffs):
        raise ValueError(f"graph capacity for cutoffs {(capacity.cutoff, capacity.bond_cutoff)} A, but the model "
                         f"needs {tuple(model.cutoffs)} A: estimate it with cutoffs=model.cutoffs")
    if inputs.msd is not None and spec.msd_stride < 1:
        raise ValueError(f"streaming MSD given with msd_stride {spec.msd_stride}: it must be >= 1 step")
    chunk = _Chunk(model, inputs, spec)
    carry, frames = jax.lax.scan(chunk.frame, chunk.start(), jnp.arange(spec.n_frames))
    frames = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), frames)  # [F, R, ...] -> [R, F, ...]
    return ChunkOut(carry.states, frames, carry.live, carry.ok, carry.need, carry.rebuilds, carry.msd)


@functools.lru_cache(maxsize=8)
def _sharded_run_chunk(mesh: jax.sharding.Mesh):
    """``run_chunk`` with the replica axis split over ``mesh`` by ``shard_map``: each device runs
    its own block of replicas as one program, list-rebuild decisions included, with no
    communication between devices (replicas never interact). Same arguments and outputs,
    except that the rebuild count is per device [n_devices]."""
    rep, rest = jax.sharding.PartitionSpec("replica"), jax.sharding.PartitionSpec()
    input_specs = ChunkInputs(species=rep, cells=rep, states=rep, kT_start=rep, kT_end=rep, alive=rep,
                              step0=rest, total_steps=rest, max_kT_factor=rest, msd=rep, n_active=rest, msd_on=rest)

    @functools.partial(jax.jit, static_argnames=("spec",))
    @with_precision
    def chunk(model: Model, inputs: ChunkInputs, spec: ChunkSpec) -> ChunkOut:
        def local(model, inputs):
            out = run_chunk(model, inputs, spec)
            return out._replace(rebuilds=out.rebuilds[None])

        return jax.shard_map(local, mesh=mesh, in_specs=(rest, input_specs), out_specs=ChunkOut(*(rep,) * 7),
                             check_vma=False)(model, inputs)

    return chunk


def _shard(mesh: jax.sharding.Mesh, inputs: ChunkInputs) -> ChunkInputs:
    """Pad the replica axis to a multiple of the device count (frozen copies of replica 0) and shard it."""
    n_rep = inputs.alive.shape[0]
    n_dev = mesh.devices.size
    n_pad = -(-n_rep // n_dev) * n_dev
    x = inputs
    species, cells, states, kT_start, kT_end = shard_replicas(mesh, n_pad, x.species, x.cells, x.states, x.kT_start,
                                                              x.kT_end)
    (alive,) = shard_replicas(mesh, n_pad, jnp.arange(n_pad) < n_rep)
    alive = alive & jnp.concatenate([x.alive, jnp.zeros(n_pad - n_rep, bool)])
    msd = None if x.msd is None else shard_replicas(mesh, n_pad, x.msd)[0]
    return x._replace(species=species, cells=cells, states=states, kT_start=kT_start, kT_end=kT_end, alive=alive,
                      msd=msd)


def run_chunk_checked(model: Model, inputs: ChunkInputs, spec: ChunkSpec, *, retries: int = 3,
                      mesh: jax.sharding.Mesh | None | str = "auto", fit: bool = False) -> tuple[ChunkResult, Capacity]:
    """:func:`run_chunk`, re-run with grown graph capacity (and skin) until every live replica's graph
    stayed valid. Returns (:class:`ChunkResult`, capacity); raises RuntimeError if it never does.
    With a streaming MSD ``inputs.msd`` the result's ``msd`` is the updated one (None when off).

    ``inputs`` may hold host arrays (NumPy). With several devices (``mesh="auto"``: all local ones) the
    replica axis is sharded over the mesh; replicas are padded to a multiple of the device count with
    frozen copies, and the padding is dropped from every output. The physics is unchanged: replicas never
    interact. With ``fit`` the returned capacity is also shrunk to what the chunk needed
    (:func:`fit_capacity`), so that padded edges and angles, which cost as much as real ones, stay few.
    """
    mesh = replica_mesh() if mesh == "auto" else mesh
    cells = inputs.cells  # the host copy, for growing the capacity
    n_rep = np.asarray(inputs.alive).shape[0]
    x = inputs._replace(species=jnp.asarray(inputs.species), cells=jnp.asarray(cells, jnp.float32),
                        alive=jnp.asarray(inputs.alive))
    if x.msd is None:
        spec = dataclasses.replace(spec, msd_stride=0)  # off: one compiled program, whatever the stride
    if mesh is not None:
        x = _shard(mesh, x)
    chunk = run_chunk if mesh is None else _sharded_run_chunk(mesh)
    for _ in range(retries + 1):
        out = chunk(model.bare(), x, spec)
        out = jax.tree.map(lambda a: a[:n_rep], out._replace(rebuilds=None))  # the padding replicas dropped
        ok, need = np.asarray(out.ok), Need.from_vector(np.asarray(out.need))
        if ok.all():
            frames = out.frames if x.n_active is None else jax.tree.map(lambda a: a[:, :int(x.n_active)], out.frames)
            result = ChunkResult(out.states, frames, np.asarray(out.alive), ok, out.msd)
            return result, (caps.fit(spec.capacity, need) if fit else spec.capacity)
        spec = dataclasses.replace(spec, capacity=caps.grow(spec.capacity, need, cells=cells))
    raise RuntimeError(f"graph could not be kept valid for replicas {np.where(~ok)[0].tolist()} "
                       f"(capacity {spec.capacity}): atoms moved more than skin/2 = {spec.capacity.skin / 2:.2f} A "
                       "in one step; the time step is too long or the run exploded")


def fit_capacity(capacity: Capacity, need, shrink_below: float = 0.7) -> Capacity:
    """Shrink a capacity that is far larger than a chunk needed (``need`` [..., Need.SIZE] from
    run_chunk): :func:`lycb_jax.graph.capacity.fit`."""
    return caps.fit(capacity, Need.from_vector(need), shrink_below)


def default_capacity(positions: np.ndarray, cell: np.ndarray, *, cutoffs: tuple[float, float | None],
                     skin: float = 1.0, headroom: float = 1.25) -> Capacity:
    """Graph capacity for MD from one geometry (positions [N, 3], cell [3, 3] rows, Angstrom):
    exact counts at the model's ``cutoffs`` (Angstrom, ``model.cutoffs``) and at cutoff + ``skin`` for the
    Verlet list, plus ``headroom`` for thermal fluctuations (angles: its square); a run regrows it when exceeded."""
    system = types.SimpleNamespace(positions=positions, cell=cell)
    return caps.estimate([system], tuple(cutoffs), headroom=headroom, angle_headroom=headroom ** 2, skin=skin,
                         with_list=True)
