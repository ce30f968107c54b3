"""Batched Nose-Hoover molecular dynamics with jax-md, driven by a lycb_jax model.

R replicas (temperatures, seeds, or structures with equal atom counts) advance together in one
jit-compiled program (``jax.vmap``); chunks of steps run inside ``lax.scan``. Each replica keeps a
Verlet list (pairs within the atom cutoff + a skin), rebuilt by brute force only when some replica
could have moved more than skin/2 since; every force call takes CHGNet's exact graph from it
(:func:`lycb_jax.graph.refine_graph`), so the model never pays for the skin. Every step is checked:
a capacity overflow, or an atom that moved more than skin/2 before a rebuild, rejects the whole
chunk, which is re-run with grown capacities. A replica whose temperature runs away or whose
positions become non-finite is frozen and reported.

Units: Angstrom, fs, eV, K, amu; pressure in bar. jax-md is unit-free: with eV, Angstrom and amu
its time unit is Angstrom sqrt(amu/eV) = 10.18 fs (``ase.units.fs`` converts).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units
from ase.data import atomic_masses
from jax_md import quantity, simulate, space

from lycb_jax.distributed import replica_mesh, shard_replicas
from lycb_jax.capacity import ATOM_CUTOFF, Capacity, count_edges, image_range, round_up
from lycb_jax.graph import EdgeList, build_edges, exact_sizes, refine_graph
from lycb_jax.models.base import Model, energy_forces_stress, potential
from lycb_jax.units import EV_A3_TO_GPA

KB = units.kB  # eV/K


class Frame(NamedTuple):
    """Per-replica output at one saved step."""

    positions: jax.Array  # [N, 3] unwrapped Cartesian, Angstrom
    cell: jax.Array  # [3, 3] rows, Angstrom
    temperature: jax.Array  # K
    potential_energy: jax.Array  # eV
    kinetic_energy: jax.Array  # eV
    conserved: jax.Array  # eV, the integrator's invariant (NVT or NpT Nose-Hoover)
    pressure: jax.Array  # bar, virial + kinetic
    stress: jax.Array  # [3, 3] GPa, virial only (ASE sign: positive = tensile)
    volume: jax.Array  # A^3


@dataclasses.dataclass(frozen=True)
class Integrator:
    """Static settings of one integrator kind; hashable for jit."""

    ensemble: str  # "nvt", "npt" or "nve"
    dt_fs: float = 1.0
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    pressure_bar: float = 1.0
    chain_length: int = 3


def _energy_fn(model: Model, species, atom_mask, capacity: Capacity):
    """jax-md energy function E(R, edges=..., box=None, perturbation=None, cell=None) in eV.

    ``edges`` is the Verlet list; the exact graph is taken from it at the positions being evaluated.
    NVT: R are Cartesian positions. NpT: R are fractional and ``box`` is the column matrix of
    lattice vectors; ``space.transform`` makes gradients with respect to R real-space forces.
    """

    def energy(R, edges: EdgeList, box=None, perturbation=None, cell=None, **unused):
        if box is None:
            pos, cell_rows = R, cell
        else:
            b = box if perturbation is None else box * perturbation
            pos, cell_rows = space.transform(b, R), b.T
        graph = refine_graph(edges, pos, cell_rows, capacity)
        e, _ = potential(model.module, model.params, species, pos, cell_rows, atom_mask, graph)
        return e

    return energy


def _make_integrator(model: Model, species, atom_mask, integ: Integrator, capacity: Capacity):
    energy = _energy_fn(model, species, atom_mask, capacity)
    dt = integ.dt_fs * units.fs
    chain = dict(chain_length=integ.chain_length, chain_steps=2, sy_steps=3)
    if integ.ensemble == "nvt":
        _, shift = space.free()
        init, apply = simulate.nvt_nose_hoover(energy, shift, dt, kT=1.0, tau=integ.tau_t_fs * units.fs, **chain)
    elif integ.ensemble == "nve":
        _, shift = space.free()
        init, apply = simulate.nve(energy, shift, dt)
    elif integ.ensemble == "npt":
        _, shift = space.periodic_general(jnp.eye(3), fractional_coordinates=True, wrapped=False)
        init, apply = simulate.npt_nose_hoover(
            energy, shift, dt, pressure=integ.pressure_bar * units.bar, kT=1.0,
            barostat_kwargs=dict(tau=integ.tau_p_fs * units.fs, **chain),
            thermostat_kwargs=dict(tau=integ.tau_t_fs * units.fs, **chain))
    else:
        raise ValueError(f"unknown ensemble {integ.ensemble!r}: use 'nvt', 'npt' or 'nve'")
    return energy, init, apply


def real_positions(state, integ: Integrator):
    if integ.ensemble == "npt":
        return space.transform(simulate.npt_box(state), state.position)
    return state.position


def state_cell(state, integ: Integrator, cell):
    return simulate.npt_box(state).T if integ.ensemble == "npt" else cell


def verlet_list(positions, cell, atom_mask, capacity: Capacity) -> EdgeList:
    """Half edges within ATOM_CUTOFF + skin (Angstrom), ``capacity.list_edges`` of them."""
    return build_edges(positions, cell, atom_mask, ATOM_CUTOFF + capacity.skin, capacity.list_edges, capacity.images)


def _drift(state, cell, ref_state, ref_cell, integ: Integrator, capacity: Capacity):
    """Bound (Angstrom) on half the change of any pair vector since the reference state.

    With largest atom displacement d (measured in the current cell) and cell strain
    e = ||C_ref^-1 C - I||_F, a pair further than ATOM_CUTOFF + skin at the reference is still
    further than ATOM_CUTOFF while d + (ATOM_CUTOFF + skin) e / 2 < skin / 2.
    """
    dq = state.position - ref_state.position  # fractional for NpT, Cartesian otherwise
    dx = dq @ cell if integ.ensemble == "npt" else dq
    strain = jnp.linalg.norm(jnp.linalg.solve(ref_cell, cell) - jnp.eye(3))
    return jnp.max(jnp.linalg.norm(dx, axis=-1)) + (ATOM_CUTOFF + capacity.skin) * strain / 2


def init_replica(model: Model, species, positions, cell, masses, kT, key, integ: Integrator, capacity: Capacity,
                 momenta=None):
    """jax-md state of one replica (momenta drawn at kT with zero total momentum if not given),
    and whether the graph capacity overflowed."""
    mask = species > 0
    energy, init, _ = _make_integrator(model, species, mask, integ, capacity)
    edges = verlet_list(positions, cell, mask, capacity)
    overflow = refine_graph(edges, positions, cell, capacity).overflow
    if integ.ensemble == "npt":
        frac = positions @ jnp.linalg.inv(cell)
        return init(key, frac, cell.T, mass=masses, kT=kT, edges=edges, momenta=momenta), overflow
    return init(key, positions, mass=masses, kT=kT, edges=edges, cell=cell, momenta=momenta), overflow


def _frame(model, species, state, cell, kT, integ: Integrator, energy_fn, edges, capacity):
    """Thermodynamic record of one replica at the current step (``edges``: a valid Verlet list)."""
    mask = species > 0
    pos = real_positions(state, integ)
    cell_now = state_cell(state, integ, cell)
    graph = refine_graph(edges, pos, cell_now, capacity)
    e, _, stress, _ = energy_forces_stress(model.module, model.params, species, pos, cell_now, mask, graph)
    ke = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
    n = pos.shape[0]
    temp = 2 * ke / (3 * n * KB)
    vol = jnp.abs(jnp.linalg.det(cell_now))
    p_virial_gpa = -jnp.trace(stress) / 3
    pressure_bar = p_virial_gpa * 1e4 + 2 * ke / (3 * vol) * EV_A3_TO_GPA * 1e4
    if integ.ensemble == "npt":
        inv = simulate.npt_nose_hoover_invariant(energy_fn, state, integ.pressure_bar * units.bar, kT, edges=edges)
    elif integ.ensemble == "nve":
        inv = e + ke
    else:
        inv = simulate.nvt_nose_hoover_invariant(energy_fn, state, kT, edges=edges, cell=cell)
    return Frame(pos, cell_now, temp, e, ke, inv, pressure_bar, stress, vol)


N_NEED = 8  # run_chunk's ``need``: exact edges, angles, short bonds/atom, images[3], moved too far, list edges


@functools.partial(jax.jit, static_argnames=("model_module", "integ", "capacity", "n_frames", "stride"))
def run_chunk(model_module, params, species, cell, states, kT_start, kT_end, alive, step0, total_steps,
              integ: Integrator, capacity: Capacity, n_frames: int, stride: int, max_kT_factor=3.0):
    """Advance R replicas by n_frames * stride steps; record a Frame every ``stride`` steps.

    kT ramps linearly from kT_start to kT_end (eV, per replica) over ``total_steps`` steps counted
    from ``step0`` of the stage. One Verlet list per replica (cutoff + skin) is rebuilt, for all
    replicas at once, when some live replica is about to move more than skin/2 from where it was
    built; every force call takes CHGNet's exact graph from it. Returns (states, frames [R, F, ...],
    alive, graph_ok [R], need [R, N_NEED], number of list rebuilds). ``graph_ok`` False means a
    capacity overflow or a move beyond skin/2 since the list was built: the caller must discard the result and re-run the
    chunk with ``need``-sized capacities.
    """
    model = Model(model_module, params)
    masks = species > 0
    half_skin = capacity.skin / 2

    def pos_cell(st, cell_r):
        return real_positions(st, integ), state_cell(st, integ, cell_r)

    def advance(species_r, cell_r, st, kT, edges):
        _, _, apply = _make_integrator(model, species_r, species_r > 0, integ, capacity)
        kwargs = {"edges": edges} if integ.ensemble == "npt" else {"edges": edges, "cell": cell_r}
        return apply(st, kT=kT, **kwargs)

    def drift(st, cell_now, ref, ref_cell):
        return _drift(st, cell_now, ref, ref_cell, integ, capacity)

    def counts(sizes, edges, live, moved_far):
        c = jnp.concatenate([jnp.stack(sizes), edges.images_needed,
                             jnp.stack([moved_far.astype(jnp.int32), edges.n_edges])])
        return c * live.astype(jnp.int32)

    v_drift = jax.vmap(drift)
    v_list = jax.vmap(lambda st, c, m: verlet_list(real_positions(st, integ), c, m, capacity))
    v_sizes = jax.vmap(lambda e, st, c: exact_sizes(e, real_positions(st, integ), c))
    v_cell = jax.vmap(lambda st, c: state_cell(st, integ, c))

    def ramp(k):
        return kT_start + (kT_end - kT_start) * jnp.minimum(k / jnp.maximum(total_steps, 1), 1.0)

    def step(carry, i):
        st, edges, ref, ref_cell, drift, margin, ok, live, need, rebuilds = carry
        cell0 = v_cell(st, cell)
        # rebuild every list when any live replica could cross skin/2 in this step
        rebuild = jnp.any(live & (drift + margin >= half_skin))
        edges, ref, ref_cell = jax.lax.cond(
            rebuild, lambda: (v_list(st, cell0, masks), st, cell0), lambda: (edges, ref, ref_cell))
        new = jax.vmap(advance)(species, cell, st, ramp(step0 + i), edges)
        cell1 = v_cell(new, cell)
        moved = v_drift(new, cell1, ref, ref_cell)
        finite = jnp.all(jnp.isfinite(new.position), axis=(1, 2)) & jnp.all(jnp.isfinite(new.momentum), axis=(1, 2))
        ke = jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(new.momentum, new.mass)
        hot = 2 * ke / (3 * new.position.shape[1]) > max_kT_factor * jnp.maximum(ramp(step0 + i), kT_end)
        live_new = live & finite & ~hot
        n_edges, n_angles, max_short = v_sizes(edges, new, cell1)  # of the graph the last force call used
        overflow = (edges.overflow | (n_edges > capacity.edges) | (n_angles > capacity.angles)
                    | (max_short > capacity.short_per_atom))
        ok = ok & (~live_new | (~overflow & (moved < half_skin)))
        need = jnp.maximum(need, jax.vmap(counts)((n_edges, n_angles, max_short), edges, live_new, moved >= half_skin))
        # margin for the next step: twice the largest single-step move of a live replica
        step_move = jnp.max(jnp.where(live_new, v_drift(new, cell1, st, cell0), 0.0))
        st = jax.tree.map(lambda a, b: jnp.where(live_new.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, st)
        return (st, edges, ref, ref_cell, moved, 2 * step_move, ok, live_new, need, rebuilds + rebuild), None

    def frame(carry, f):
        carry, _ = jax.lax.scan(step, carry, f * stride + jnp.arange(stride))
        st, edges = carry[0], carry[1]
        kT = ramp(step0 + (f + 1) * stride)

        def one(species_r, cell_r, st_r, kT_r, edges_r):
            energy_fn, _, _ = _make_integrator(model, species_r, species_r > 0, integ, capacity)
            return _frame(model, species_r, st_r, cell_r, kT_r, integ, energy_fn, edges_r, capacity)

        return carry, jax.vmap(one)(species, cell, st, kT, edges)

    cell0 = v_cell(states, cell)
    edges0 = v_list(states, cell0, masks)
    n_rep = species.shape[0]
    init = (states, edges0, states, cell0, jnp.zeros(n_rep, jnp.float32), jnp.float32(0.0), jnp.ones(n_rep, bool),
            alive, jnp.zeros((n_rep, N_NEED), jnp.int32), jnp.int32(0))
    (st, _, _, _, _, _, ok, live, need, rebuilds), frames = jax.lax.scan(frame, init, jnp.arange(n_frames))
    frames = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), frames)  # [F, R, ...] -> [R, F, ...]
    return st, frames, live, ok, need, rebuilds


@functools.lru_cache(maxsize=8)
def _sharded_run_chunk(mesh: jax.sharding.Mesh):
    """``run_chunk`` with the replica axis split over ``mesh`` by ``shard_map``: each device runs
    its own block of replicas as one program, list-rebuild decisions included, with no
    communication between devices (replicas never interact). Same arguments and outputs,
    except that the rebuild count is per device [n_devices]."""
    rep, rest = jax.sharding.PartitionSpec("replica"), jax.sharding.PartitionSpec()
    static = ("model_module", "integ", "capacity", "n_frames", "stride")

    @functools.partial(jax.jit, static_argnames=static)
    def chunk(model_module, params, species, cell, states, kT_start, kT_end, alive, step0, total_steps,
              integ, capacity, n_frames, stride, max_kT_factor=3.0):
        def local(params, species, cell, states, kT_start, kT_end, alive, step0, total_steps, max_kT_factor):
            *out, rebuilds = run_chunk(model_module, params, species, cell, states, kT_start, kT_end, alive, step0,
                                       total_steps, integ, capacity, n_frames, stride, max_kT_factor)
            return (*out, rebuilds[None])

        return jax.shard_map(local, mesh=mesh, in_specs=(rest,) + (rep,) * 6 + (rest,) * 3, out_specs=(rep,) * 6,
                             check_vma=False)(params, species, cell, states, kT_start, kT_end, alive, step0,
                                              total_steps, max_kT_factor)

    return chunk


def run_chunk_checked(model: Model, species, cells, states, kT_start, kT_end, alive, step0, total_steps,
                      integ: Integrator, capacity: Capacity, n_frames: int, stride: int, max_kT_factor=3.0,
                      retries: int = 3, mesh: jax.sharding.Mesh | None | str = "auto", fit: bool = False):
    """``run_chunk``, re-run with grown graph capacity (and skin) until every live replica's graph
    stayed valid. Returns ((states, frames, alive, ok), capacity); raises RuntimeError if it never does.

    With several devices (``mesh="auto"``: all local ones) the replica axis is sharded over the
    mesh; replicas are padded to a multiple of the device count with frozen copies, and the
    padding is dropped from every output. The physics is unchanged: replicas never interact.
    With ``fit`` the returned capacity is also shrunk to what the chunk needed (:func:`fit_capacity`),
    so that padded edges and angles, which cost as much as real ones, stay few.
    """
    mesh = replica_mesh() if mesh == "auto" else mesh
    n_rep = np.asarray(alive).shape[0]
    species, cells_dev = jnp.asarray(species), jnp.asarray(cells, jnp.float32)
    alive_dev = jnp.asarray(alive)
    if mesh is not None:
        n_dev = mesh.devices.size
        n_pad = -(-n_rep // n_dev) * n_dev
        species, cells_dev, states, kT_start, kT_end = shard_replicas(
            mesh, n_pad, species, cells_dev, states, kT_start, kT_end)
        (alive_dev,) = shard_replicas(mesh, n_pad, jnp.arange(n_pad) < n_rep)
        alive_dev = alive_dev & jnp.concatenate([jnp.asarray(alive), jnp.zeros(n_pad - n_rep, bool)])
    for _ in range(retries + 1):
        chunk = run_chunk if mesh is None else _sharded_run_chunk(mesh)
        out = chunk(model.module, model.params, species, cells_dev, states, kT_start, kT_end, alive_dev, step0,
                    total_steps, integ, capacity, n_frames, stride, max_kT_factor)
        out = jax.tree.map(lambda x: x[:n_rep], out[:5])
        ok = np.asarray(out[3])
        if ok.all():
            return out[:4], (fit_capacity(capacity, np.asarray(out[4])) if fit else capacity)
        capacity = _grow(capacity, cells, np.asarray(out[4]))
    raise RuntimeError(f"graph could not be kept valid for replicas {np.where(~ok)[0].tolist()} (capacity {capacity}): "
                       f"atoms moved more than skin/2 = {capacity.skin / 2:.2f} A in one step; the time step is too "
                       "long or the run exploded")


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) of atomic numbers."""
    return np.asarray(atomic_masses[np.asarray(numbers)], np.float32)


def default_capacity(positions: np.ndarray, cell: np.ndarray, skin: float = 1.0, headroom: float = 1.25) -> Capacity:
    """Graph capacity for MD: exact counts at the start (CHGNet's cutoffs, and cutoff + skin for
    the Verlet list) plus headroom for thermal fluctuations; a run regrows it when exceeded."""
    ne, na, ns = count_edges(positions, cell)
    nl, _, _ = count_edges(positions, cell, skin)
    return Capacity(round_up(ne * headroom), round_up(na * headroom ** 2), max(8, ns + 4),
                    image_range(cell, ATOM_CUTOFF + skin + 0.5), skin, round_up(nl * headroom))


# ----------------------------------------------------------------------------------------------
# The protocol driver: stages, output, checkpoints


@dataclasses.dataclass
class Protocol:
    """The paper's MD protocol; every duration and setting can be changed (times in ps, T in K).

    Maxwell-Boltzmann velocities at ``start_K``, linear heating to the target over ``heat_ps`` at
    fixed cell (NVT), ``nvt_ps`` NVT equilibration, optionally ``npt_ps`` NpT at ``pressure_bar``
    followed by rescaling the cell to its average over the last ``npt_average_ps``, then
    ``production_ps`` of NVT production.
    """

    temperatures_K: tuple[float, ...] = (600.0, 700.0, 800.0)
    dt_fs: float = 1.0
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    pressure_bar: float = 1.0
    start_K: float = 100.0
    heat_ps: float = 2.0
    nvt_ps: float = 50.0
    npt_ps: float = 0.0
    npt_average_ps: float = 112.0
    production_ps: float = 2000.0
    save_every_fs: float = 50.0
    chunk_ps: float = 1.0
    checkpoint_every_ps: float = 10.0
    seed: int = 0
    skin: float = 1.0  # Verlet-list skin, Angstrom
    max_temperature_factor: float = 3.0

    def validate(self) -> None:
        t = np.asarray(self.temperatures_K, float)
        if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError(f"temperatures must be positive (K), got {list(self.temperatures_K)}")
        if self.start_K <= 0:
            raise ValueError(f"start temperature must be positive, got {self.start_K} K")
        if not 0 < self.dt_fs <= 10:
            raise ValueError(f"time step {self.dt_fs} fs is outside (0, 10] fs")
        if self.save_every_fs < self.dt_fs or self.chunk_ps * 1000 < self.save_every_fs:
            raise ValueError("need dt_fs <= save_every_fs <= chunk_ps * 1000")
        if self.npt_ps and self.npt_average_ps > self.npt_ps:
            raise ValueError(f"npt_average_ps {self.npt_average_ps} exceeds npt_ps {self.npt_ps}")

    def stages(self) -> list[tuple[str, str, int, bool]]:
        """(name, ensemble, steps, heating?) of each stage with steps > 0."""
        steps = lambda ps: int(round(ps * 1000 / self.dt_fs))  # noqa: E731
        out = [("heat", "nvt", steps(self.heat_ps), True), ("nvt", "nvt", steps(self.nvt_ps), False)]
        if self.npt_ps:
            out.append(("npt", "npt", steps(self.npt_ps), False))
        out.append(("production", "nvt", steps(self.production_ps), False))
        return [s for s in out if s[2] > 0]


FRAME_FIELDS = ("positions", "cell", "temperature", "potential_energy", "kinetic_energy", "conserved",
                "pressure", "stress", "volume")
FRAME_UNITS = {"positions": "Angstrom (unwrapped)", "cell": "Angstrom (rows)", "temperature": "K",
               "potential_energy": "eV", "kinetic_energy": "eV", "conserved": "eV", "pressure": "bar",
               "stress": "GPa (virial, ASE sign)", "volume": "Angstrom^3"}


class Simulation:
    """Run the protocol for R replicas into ``out_dir`` (``trajectory.h5`` + ``checkpoint.npz``).

    The HDF5 file has one group per stage with datasets [R, F, ...] (see ``FRAME_UNITS``) and
    ``time_fs`` [F]; root attributes hold atomic numbers, masses, temperatures and the protocol.
    A checkpoint of the full state is written atomically every ``checkpoint_every_ps``; a run
    restarted with ``resume=True`` truncates the file to the checkpoint and continues, producing
    the same trajectory as an uninterrupted run.

    Several processes (``lycb_jax.distributed.initialize``): each runs its own block of replicas
    into ``trajectory.p{k}.h5`` / ``checkpoint.p{k}.npz`` (attribute ``replicas``: their global
    indices), process 0 shows the progress of all and joins the files into ``trajectory.h5``.
    """

    def __init__(self, model: Model, structures, protocol: Protocol, out_dir, resume: bool = False,
                 progress: bool = True):
        """``structures``: one structure (run at every temperature) or one per temperature
        (equal atom counts, e.g. a composition x temperature sweep)."""
        import json
        from pathlib import Path

        from lycb_jax import distributed
        from lycb_jax.predict import to_system

        protocol.validate()
        self.model, self.protocol, self.progress = model, protocol, progress
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        temps = np.asarray(protocol.temperatures_K, float)
        systems = [to_system(s) for s in (structures if isinstance(structures, (list, tuple)) else [structures])]
        if len(systems) == 1:
            systems = systems * len(temps)
        if len(systems) != len(temps):
            raise ValueError(f"{len(systems)} structures for {len(temps)} temperatures: give one structure, or one per T")
        if len({len(s) for s in systems}) != 1:
            raise ValueError("all replicas need the same number of atoms (vmap); run different sizes separately")
        # several processes: each runs its own block of replicas on its local devices, not one global array:
        # replicas never interact, so this is exact, and checkpoints, HDF5 and stage switches stay host-local
        self.n_total, self.replicas = len(systems), distributed.local_replicas(len(systems))
        self.first_system = systems[0]  # the initial graph capacity comes from replica 0 on every process
        self.systems, self.temps, self.all_temps = [systems[r] for r in self.replicas], temps[self.replicas], temps
        self.n_rep, self.n_atoms = len(self.systems), len(systems[0])
        self.species = np.stack([s.numbers for s in self.systems]).astype(np.int32)
        self.masses = np.stack([masses_of(s.numbers) for s in self.systems])
        self.stride = int(round(protocol.save_every_fs / protocol.dt_fs))
        self.frames_per_chunk = max(1, int(round(protocol.chunk_ps * 1000 / protocol.save_every_fs)))
        tag = distributed.file_tag()  # ".p{k}" with several processes
        self.h5_path, self.ck_path = self.out / f"trajectory{tag}.h5", self.out / f"checkpoint{tag}.npz"
        self.prev_ck_path = self.out / f"checkpoint{tag}.prev.npz"
        (self.out / "protocol.json").write_text(json.dumps(dataclasses.asdict(protocol), indent=1))
        self.resume = resume
        self._init_fns = {}
        if resume and not self.ck_path.exists():
            print(f"no checkpoint in {self.out}; starting from the beginning")

    # -- helpers
    def _integ(self, ensemble: str) -> Integrator:
        p = self.protocol
        return Integrator(ensemble, p.dt_fs, p.tau_t_fs, p.tau_p_fs, p.pressure_bar)

    def _kT(self, name: str):
        target = self.temps * KB
        start = np.full_like(target, self.protocol.start_K * KB) if name == "heat" else target
        return jnp.asarray(start, jnp.float32), jnp.asarray(target, jnp.float32)

    def _init_states(self, ensemble, positions, cells, momenta, key, capacity):
        integ = self._integ(ensemble)
        kT = self._kT("heat")[0] if momenta is None else self._kT("nvt")[1]
        keys = jax.random.split(key, self.n_total)[self.replicas]
        fn = self._init_fns.get((ensemble, capacity, momenta is None))  # one compile per kind, not per call
        if fn is None:
            fn = self._init_fns[ensemble, capacity, momenta is None] = jax.jit(jax.vmap(
                lambda sp, x, c, m, k, t, p: init_replica(self.model, sp, x, c, m, t, k, integ, capacity, p),
                in_axes=(0, 0, 0, 0, 0, 0, None if momenta is None else 0)))
        states, overflow = fn(jnp.asarray(self.species), jnp.asarray(positions, jnp.float32),
                              jnp.asarray(cells, jnp.float32), jnp.asarray(self.masses), keys, kT,
                              None if momenta is None else jnp.asarray(momenta, jnp.float32))
        if bool(jnp.any(overflow)):
            raise RuntimeError("initial graph overflow: capacity estimate too small (please report)")
        return states

    def _h5(self):
        import h5py

        f = h5py.File(self.h5_path, "a")
        f.attrs["numbers"] = self.species  # [R, N]: replicas may differ in composition (same size)
        f.attrs["masses_amu"] = self.masses
        f.attrs["temperatures_K"] = self.temps
        f.attrs["replicas"] = self.replicas  # global replica indices (a block of them per process)
        f.attrs["format"] = "lycb_jax MD trajectory v1: /<stage>/<field> [replica, frame, ...]; units in attrs"
        return f

    def _append(self, f, stage, frames: Frame, t0_fs):
        grp = f.require_group(stage)
        n_new = frames.temperature.shape[1]
        for name in FRAME_FIELDS:
            arr = np.asarray(getattr(frames, name), np.float32)
            if name not in grp:
                grp.create_dataset(name, shape=(arr.shape[0], 0) + arr.shape[2:], maxshape=(arr.shape[0], None) + arr.shape[2:],
                                   chunks=(1, max(1, n_new)) + arr.shape[2:], dtype="f4")
                grp[name].attrs["units"] = FRAME_UNITS[name]
            ds = grp[name]
            ds.resize(ds.shape[1] + n_new, axis=1)
            ds[:, -n_new:] = arr
        t = t0_fs + self.protocol.save_every_fs * np.arange(1, n_new + 1)
        if "time_fs" not in grp:
            grp.create_dataset("time_fs", shape=(0,), maxshape=(None,), dtype="f8")
        grp["time_fs"].resize(grp["time_fs"].shape[0] + n_new, axis=0)
        grp["time_fs"][-n_new:] = t

    def _save_checkpoint(self, states, ck: dict):
        import os

        leaves = jax.tree.leaves(states)
        tmp = self.ck_path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)},
                 **{k: np.asarray(v) for k, v in ck.items()}, replicas=self.replicas)
        if self.ck_path.exists():  # the previous one is kept: another process may be killed before writing its own
            os.replace(self.ck_path, self.prev_ck_path)
        os.replace(tmp, self.ck_path)

    def _load_checkpoint(self, stages) -> dict | None:
        """The checkpoint to resume from (None: start afresh): the newest one that every process
        has. A process killed while the others wrote theirs is one behind; they go back one."""
        from lycb_jax import distributed

        ends = np.cumsum([0] + [s[2] for s in stages])  # a checkpoint's position: steps done in all
        found = {}
        for path in (self.prev_ck_path, self.ck_path) if self.resume else ():
            if path.exists():
                ck = dict(np.load(path), path=str(path))
                found[int(ends[int(ck["stage"])] + int(ck["step"]))] = ck
        at = distributed.latest_common(found)
        if at == 0:
            for path in (self.prev_ck_path, self.ck_path):  # stale ones must not mix with the new run's
                path.unlink(missing_ok=True)
            return None
        ck = found[at]
        if "replicas" in ck and not np.array_equal(ck["replicas"], self.replicas):
            raise ValueError(f"{self.ck_path} holds replicas {ck['replicas'].tolist()} but this process runs "
                             f"{self.replicas.tolist()}: resume with the same number of processes")
        return ck

    def _switch(self, states, prev_stage, next_ensemble: str, cells, f, capacity):
        """States for the next stage: same positions and momenta; after NpT the cell (and the
        positions, affinely) are rescaled to the average cell of the last ``npt_average_ps``."""
        prev_name, prev_ens = prev_stage[0], prev_stage[1]
        integ = self._integ(prev_ens)
        pos = np.asarray(jax.vmap(lambda st: real_positions(st, integ))(states))
        mom = np.asarray(states.momentum)
        if prev_ens == "npt":
            cur = np.asarray(jax.vmap(lambda st: state_cell(st, integ, None))(states))
            t = f[prev_name]["time_fs"][:]
            sel = t > t[-1] - self.protocol.npt_average_ps * 1000
            avg = f[prev_name]["cell"][:, sel].mean(axis=1)
            frac = np.einsum("rni,rij->rnj", pos, np.linalg.inv(cur))
            pos = np.einsum("rni,rij->rnj", frac, avg)
            cells = avg
            f[prev_name].attrs["average_cell"] = avg
            f[prev_name].attrs["average_volume_A3"] = np.abs(np.linalg.det(avg))
        key = jax.random.PRNGKey(self.protocol.seed + 1)
        return self._init_states(next_ensemble, pos, cells, mom, key, capacity), cells

    # -- main loop
    def run(self) -> dict:
        """Run (or resume) every stage; returns a summary dict (all replicas, also with several
        processes). Raises RuntimeError if all replicas fail."""
        from lycb_jax import distributed

        summary = self._run()
        if distributed.process_count() > 1:  # process 0 joins every process's file into trajectory.h5
            for r in np.where(~np.asarray(summary["alive"]))[0]:
                summary["failed"].setdefault(int(r), f"replica {r} failed on another process (see its output)")
            distributed.barrier("lycb_jax.md: trajectories written")
            if distributed.is_main():
                try:
                    distributed.merge_trajectories(self.out, distributed.process_count())
                except (OSError, ValueError) as err:
                    print(f"WARNING: trajectory.h5 not written: {err}")
            distributed.barrier("lycb_jax.md: trajectories joined")
            merged = self.out / "trajectory.h5"
            summary["trajectory"] = str(merged) if merged.exists() else None
            summary["trajectory_of_this_process"] = str(self.h5_path)
        return summary

    def _run(self) -> dict:
        import time

        from tqdm import tqdm

        from lycb_jax import distributed

        p = self.protocol
        stages = p.stages()
        positions = np.stack([s.positions for s in self.systems])
        cells = np.stack([s.cell for s in self.systems]).astype(np.float64)
        first = self.first_system
        capacity = default_capacity(np.asarray(first.positions), np.asarray(first.cell, np.float64), skin=p.skin)
        alive = np.ones(self.n_rep, bool)
        si, step = 0, 0
        f = self._h5()
        ck = self._load_checkpoint(stages)
        if ck is not None:
            si, step = int(ck["stage"]), int(ck["step"])
            c = [int(x) for x in ck["capacity"]]
            capacity = Capacity(c[0], c[1], c[2], tuple(c[3:6]), float(ck["skin"]), c[6])
            alive, cells = ck["alive"].astype(bool), ck["cells"]
            for name, *_ in stages:  # drop frames written after the checkpoint
                if name in f:
                    for ds in f[name].values():
                        ds.resize(int(ck[f"frames_{name}"]), axis=1 if ds.ndim > 1 else 0)
            template = self._init_states(stages[min(si, len(stages) - 1)][1], positions, cells, None,
                                         jax.random.PRNGKey(0), capacity)
            treedef = jax.tree.structure(template)
            states = jax.tree.unflatten(treedef, [jnp.asarray(ck[f"leaf_{i}"]) for i in range(treedef.num_leaves)])
            print(f"resuming {ck['path']} at stage {si} ({stages[min(si, len(stages) - 1)][0]}), step {step}")
        else:
            for name in list(f.keys()):
                del f[name]
            states = self._init_states("nvt", positions, cells, None, jax.random.PRNGKey(p.seed), capacity)
        total_ps = sum(s[2] for s in stages) * p.dt_fs / 1000
        done_ps = (sum(s[2] for s in stages[:si]) + step) * p.dt_fs / 1000
        bar = tqdm(total=round(total_ps, 3), initial=round(done_ps, 3), unit="ps",
                   disable=not self.progress or not distributed.is_main(),
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} ps [{elapsed}<{remaining}{postfix}]")
        summary = {"failed": {}}
        try:
            while si < len(stages):
                name, ensemble, n_steps, heating = stages[si]
                integ = self._integ(ensemble)
                kT0, kT1 = self._kT(name)
                last_ck = step
                while step < n_steps:
                    n_frames = min(self.frames_per_chunk, (n_steps - step) // self.stride)
                    stride = self.stride if n_frames else n_steps - step  # a tail shorter than one frame
                    n_frames = max(n_frames, 1)
                    t_wall = time.perf_counter()
                    out, capacity = run_chunk_checked(
                        self.model, self.species, cells, states, kT0, kT1, alive, step, n_steps if heating else 0,
                        integ, capacity, n_frames, stride, p.max_temperature_factor, fit=True)
                    new_states, frames, new_alive = out[0], out[1], np.asarray(out[2])
                    wall = time.perf_counter() - t_wall
                    for r in np.where(alive & ~new_alive)[0]:
                        msg = (f"replica {self.replicas[r]} (T = {self.temps[r]:.0f} K) stopped in stage '{name}' "
                               f"before {(step + n_frames * stride) * p.dt_fs / 1000:.2f} ps: temperature ran away or "
                               "positions became non-finite (time step too long, or the model is unstable here); its state is "
                               "frozen, the other replicas go on")
                        print("WARNING:", msg)
                        summary["failed"][int(self.replicas[r])] = msg
                    states, alive = new_states, new_alive
                    if stride == self.stride:
                        self._append(f, name, frames, step * p.dt_fs)
                    step += n_frames * stride
                    bar.update(n_frames * stride * p.dt_fs / 1000)
                    temps, alive_all = distributed.gather_replicas(  # every process's replicas (a collective)
                        np.stack([np.asarray(frames.temperature[:, -1]), alive], 1).astype(np.float32), self.n_total).T
                    ns_day = n_frames * stride * p.dt_fs * 1e-6 / wall * 86400
                    bar.set_postfix_str(f"{name}, {ns_day:.2f} ns/day/replica, T = " + " ".join(f"{t:.0f}" for t in temps))
                    if not alive_all.any():
                        f.flush()
                        raise RuntimeError(f"all replicas failed in stage '{name}'; the frames written so far are in "
                                           f"{self.h5_path}")
                    next_si, next_step = si, step
                    if step >= n_steps:
                        next_si, next_step = si + 1, 0
                        if next_si < len(stages):
                            states, cells = self._switch(states, stages[si], stages[next_si][1], cells, f, capacity)
                    if next_si != si or (step - last_ck) * p.dt_fs >= p.checkpoint_every_ps * 1000:
                        f.flush()
                        self._save_checkpoint(states, {
                            "stage": next_si, "step": next_step, "alive": alive, "cells": cells, "skin": capacity.skin,
                            "capacity": np.array([capacity.edges, capacity.angles, capacity.short_per_atom,
                                                  *capacity.images, capacity.list_edges]),
                            **{f"frames_{n}": (f[n]["temperature"].shape[1] if n in f else 0) for n, *_ in stages}})
                        last_ck = step
                si, step = si + 1, 0
            alive_all = distributed.gather_replicas(alive, self.n_total)
            summary.update(alive=alive_all.astype(bool).tolist(), temperatures_K=self.all_temps.tolist(),
                           trajectory=str(self.h5_path))
            return summary
        finally:
            bar.close()
            f.close()


def _grow(capacity: Capacity, cells, need: np.ndarray) -> Capacity:
    """Capacity for the sizes a chunk needed (``need`` from run_chunk), with 25% headroom; the skin
    grows by 1.5x (at most 2 A) only if atoms moved more than skin/2 before the list was rebuilt."""
    need = np.asarray(need).reshape(-1, N_NEED).max(axis=0)
    skin = min(2.0, capacity.skin * 1.5) if need[6] else capacity.skin
    images = np.max([image_range(c, ATOM_CUTOFF + skin + 0.5) for c in np.asarray(cells)], axis=0)
    images = np.maximum(np.maximum(images, need[3:6]), capacity.images)
    list_grow = ((ATOM_CUTOFF + skin) / (ATOM_CUTOFF + capacity.skin)) ** 3  # a larger skin, a longer list
    return Capacity(max(capacity.edges, round_up(need[0] * 1.25)), max(capacity.angles, round_up(need[1] * 1.25)),
                    max(capacity.short_per_atom, int(need[2]) + 4), tuple(int(x) for x in images), skin,
                    max(round_up(capacity.list_edges * list_grow), round_up(need[7] * 1.25 * list_grow)))


def fit_capacity(capacity: Capacity, need: np.ndarray, shrink_below: float = 0.8) -> Capacity:
    """Shrink a capacity that is far larger than a chunk needed (a recompile, worth it for long runs).

    A size is cut to need x headroom (edges and list 10%, angles 20%: they fluctuate more) when that
    is below ``shrink_below`` x the current size; growth is :func:`_grow`'s job.
    """
    need = np.asarray(need).reshape(-1, N_NEED).max(axis=0)

    def fitted(current, n, headroom):
        target = round_up(n * headroom)
        return target if target < shrink_below * current else current

    return dataclasses.replace(capacity, edges=fitted(capacity.edges, need[0], 1.1),
                               angles=fitted(capacity.angles, need[1], 1.2),
                               list_edges=fitted(capacity.list_edges, need[7], 1.1))


def load_protocol(config: str | None, **overrides) -> Protocol:
    """Protocol from a JSON or TOML file (keys = Protocol fields), then ``overrides`` (None ignored)."""
    import json
    import tomllib
    from pathlib import Path

    fields = {}
    if config:
        text = Path(config).read_text()
        fields = tomllib.loads(text) if config.endswith(".toml") else json.loads(text)
        fields = fields.get("md", fields)
        unknown = set(fields) - {f.name for f in dataclasses.fields(Protocol)}
        if unknown:
            raise SystemExit(f"{config}: unknown protocol settings {sorted(unknown)}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if "temperatures_K" in fields:
        fields["temperatures_K"] = tuple(float(t) for t in fields["temperatures_K"])
    return Protocol(**fields)


def add_protocol_arguments(p) -> None:
    p.add_argument("-T", "--temperatures", type=float, nargs="+", help="target temperatures, K (one replica each)")
    p.add_argument("--config", help="JSON or TOML file with Protocol settings (durations in ps, dt_fs, pressure_bar, ...)")
    p.add_argument("--model", default="chgnet-0.3.0", help="checkpoint name or folder")
    p.add_argument("--out", default="md_out", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--npt-ps", type=float, help="NpT stage length (0 = none)")
    p.add_argument("--production-ps", type=float, help="NVT production length")
    p.add_argument("--pressure-bar", type=float, help="NpT target pressure, bar (10 kbar = 10000)")
    g = p.add_argument_group("several processes (hosts); srun, Open MPI's mpirun and JAX_COORDINATOR_ADDRESS "
                             "(+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) are detected without these")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (any free port on its host)")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="K", help="this process's index, 0..N-1")


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("md", help="batched multi-temperature MD with the paper's protocol")
    p.add_argument("structure", help="structure file (any format ASE or pymatgen reads)")
    add_protocol_arguments(p)
    p.set_defaults(func=_cli)


def protocol_from_args(args) -> Protocol:
    try:
        return load_protocol(args.config, temperatures_K=args.temperatures, npt_ps=args.npt_ps,
                             production_ps=args.production_ps, pressure_bar=args.pressure_bar)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}")


def _cli(args) -> int:
    import lycb_jax
    from lycb_jax.cli.predict import read_structure_or_exit as read_structure

    structure = read_structure(args.structure)
    protocol = protocol_from_args(args)
    try:
        sim = Simulation(lycb_jax.load_model(args.model), structure, protocol, args.out, resume=args.resume)
        print(sim.run())
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    return 0
