"""Batched relaxation of positions and cell on the device: ASE's FIRE on the degrees of freedom of
``ase.filters.FrechetCellFilter``, jit-compiled and vmapped over slots of candidates, with finished
slots refilled from a queue and graph capacities grown when a program reports an overflow.

Units: Angstrom, eV, eV/Angstrom, GPa.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from pymatgen.core import Lattice, Structure

from lycb_jax.graph import capacity as cap
from lycb_jax.graph import build_graph
from lycb_jax.io.structures import System, to_system
from lycb_jax.models import Model, energy_forces_stress
from lycb_jax.graph.batch import pack
from lycb_jax.runtime.precision import with_precision
from lycb_jax.structures.fire import FireState, fire_apply, fire_init
from lycb_jax.units import EV_A3_TO_GPA


@dataclasses.dataclass
class Relaxed:
    """One relaxed candidate: structure, energy (eV), energy_per_atom (eV/atom), fmax (eV/A, the ASE
    FrechetCellFilter criterion incl. cell rows), converged (fmax < target), steps (FIRE steps)."""

    structure: Structure
    energy: float
    energy_per_atom: float
    fmax: float
    converged: bool
    steps: int


class Slots(NamedTuple):
    """The systems in the slots (leading axis: slot): atomic numbers [N] (0 = padding), atom mask [N],
    atom count n, reference cell [3, 3] (Angstrom) of the cell filter."""

    species: jax.Array
    mask: jax.Array
    n: jax.Array
    ref_cell: jax.Array


class RelaxState(NamedTuple):
    """Batched relaxation: the systems, their FIRE states, FIRE steps taken, converged, idle (no
    candidate left for the slot), and graph overflow at the last force evaluation."""

    system: Slots
    fire: FireState
    step: jax.Array
    done: jax.Array
    idle: jax.Array
    overflow: jax.Array


def frechet_forces(module, params, system: Slots, x, capacity: cap.Capacity):
    """Energy (eV), generalised forces [N+3, 3] and overflow of one system at FrechetCellFilter DOFs x.

    x[:N] are positions in the reference cell frame (A), x[N:] = n * logm(F) with F the deformation
    gradient (cell = ref_cell @ F.T); the cell rows are -dE/dx[N:] (eV), as in ase.filters.
    """
    n_pad = system.species.shape[0]
    f_def = jax.scipy.linalg.expm(x[n_pad:] / system.n)
    cell = system.ref_cell @ f_def.T
    positions = x[:n_pad] @ f_def.T
    graph = build_graph(positions, cell, system.mask, capacity)
    e, f, s, _ = energy_forces_stress(module, params, system.species, positions, cell, system.mask, graph)
    virial = -jnp.abs(jnp.linalg.det(cell)) * s / EV_A3_TO_GPA  # eV
    ucf_grad = virial @ jnp.linalg.inv(f_def.T)
    _, vjp = jax.vjp(jax.scipy.linalg.expm, x[n_pad:] / system.n)  # Frechet derivative of expm, transposed
    return e, jnp.concatenate([f @ f_def, vjp(ucf_grad)[0] / system.n]), graph.overflow


def _fnorm(g):
    return jnp.max(jnp.linalg.norm(g, axis=-1), axis=-1)


def _where(mask, new, old):
    """Per slot: the leaves of ``new`` where ``mask`` [B], else those of ``old``."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


@functools.partial(jax.jit, static_argnames="capacity")
@with_precision
def _evaluate(model: Model, state: RelaxState, fresh, fmax, capacity) -> RelaxState:
    """Energies and forces of every slot at its DOFs (after a refill or a new capacity); the ``fresh``
    slots [B] (new candidates) start FIRE anew at step 0."""
    e, g, ovf = jax.vmap(functools.partial(frechet_forces, model.module, model.params, capacity=capacity))(
        state.system, state.fire.x)
    fire = _where(fresh, fire_init(state.fire.x, e, g), state.fire._replace(e=e, g=g))
    return state._replace(fire=fire, step=jnp.where(fresh, 0, state.step), done=_fnorm(g) < fmax, overflow=ovf)


@functools.partial(jax.jit, static_argnames="capacity")
@with_precision
def _fire_loop(model: Model, state: RelaxState, fmax, max_steps, min_active, capacity) -> RelaxState:
    """FIRE steps inside one while_loop until fewer than min_active systems are still running,
    or a graph overflowed (the caller grows the capacity and re-evaluates)."""

    def step_one(fire, system):
        return fire_apply(fire, functools.partial(frechet_forces, model.module, model.params, system,
                                                  capacity=capacity))

    def running(s):
        return ~s.done & ~s.idle & (s.step < max_steps)

    def cond(s):
        return (jnp.sum(running(s)) >= min_active) & ~jnp.any(s.overflow)

    def body(s):
        act = running(s)
        fire, ovf = jax.vmap(step_one)(s.fire, s.system)
        return s._replace(fire=_where(act, fire, s.fire), step=s.step + act,
                          done=jnp.where(act, _fnorm(fire.g) < fmax, s.done), overflow=ovf & act)

    return jax.lax.while_loop(cond, body, state)


def relax(model, structures: Sequence, fmax: float = 0.01, *, max_steps: int = 3000, batch_size: int = 32,
          refill_fraction: float = 0.25, progress: bool = True, min_pad: int = 0) -> list[Relaxed]:
    """Relax positions and cell of many structures with FIRE (ASE parameters) on device.

    Equivalent to ``FIRE(FrechetCellFilter(atoms)).run(fmax, max_steps)`` per structure (fmax in
    eV/A). Structures of one padded size (at least ``min_pad`` atoms: one size for all saves
    compilations) share a jit-compiled, vmapped while_loop over ``batch_size`` slots; finished
    slots are refilled with new candidates when ``refill_fraction`` of them are done. Graph capacity
    overflow is detected, the capacity grown and the step redone; within a process, later calls
    reuse a capacity compiled before when it is large enough. Unconverged results are returned
    with ``converged=False`` and a warning. ``model``: a :class:`lycb_jax.models.Model`.
    """
    from tqdm.auto import tqdm

    systems = [to_system(s) for s in structures]
    for s in systems:
        model.check_elements(s.numbers)
    results: list[Relaxed | None] = [None] * len(systems)
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(systems):
        by_size.setdefault(max(cap.bucket_size(len(s)), min_pad), []).append(i)
    bar = tqdm(total=len(systems), desc="relax", unit="cand", disable=not progress)
    for n_pad, idx in sorted(by_size.items()):
        group = _Group(model, [systems[i] for i in idx], n_pad, min(batch_size, len(idx)))
        for k, res in group.run(fmax, max_steps, refill_fraction):
            results[idx[k]] = res
            bar.update(1)
    bar.close()
    bad = sum(not r.converged for r in results)
    if bad:
        warnings.warn(f"{bad} of {len(results)} relaxations did not reach fmax < {fmax} eV/A in {max_steps} steps")
    return results  # type: ignore[return-value]


_CAPACITIES: dict = {}  # (padded atoms, slots, cutoffs) -> graph capacity last compiled for that shape


def compiled_programs() -> int:
    """Relaxation loops jit-compiled so far in this process (a new shape or capacity adds one)."""
    return getattr(_fire_loop, "_cache_size", lambda: 0)()


def _shared_capacity(key, need: cap.Capacity) -> cap.Capacity:
    """The capacity compiled before for this shape, grown elementwise to ``need`` where short (equal
    to the old one, so the jit cache hits, whenever that suffices)."""
    old = _CAPACITIES.get(key)
    _CAPACITIES[key] = need if old is None else cap.merged(old, need)
    return _CAPACITIES[key]


class _Group:
    """Candidates of one padded size relaxed through ``n_slots`` vmapped slots: host-side queue,
    slot refill and capacity growth around the jit-compiled programs."""

    def __init__(self, model, systems: list[System], n_pad: int, n_slots: int):
        self.model, self.systems, self.n_pad = model.bare(), systems, n_pad  # for the jitted programs
        self.batch = pack(systems, headroom=1.25, n_atoms=n_pad, n_systems=len(systems),  # cells change: 25% headroom
                          cutoffs=model.cutoffs)
        self.key = (n_pad, n_slots, tuple(model.cutoffs))
        self.capacity = _shared_capacity(self.key, self.batch.capacity)
        self.queue = list(range(len(systems)))
        self.slot_of = [-1] * n_slots

    def run(self, fmax: float, max_steps: int, refill_fraction: float):
        """Yield (index into the group's systems, Relaxed) as candidates finish."""
        n_slots, fmax32 = len(self.slot_of), np.float32(fmax)
        host = self._empty_state(n_slots)
        for slot in range(n_slots):
            self._load(host, slot)
        state = self._evaluate(host, np.ones(n_slots, bool), fmax32)
        while True:
            if bool(jnp.any(state.overflow)):
                self.capacity = _shared_capacity(self.key, self._grown(state))
                state = self._evaluate(state, np.zeros(n_slots, bool), fmax32)
                continue
            min_active = max(1, math.ceil(n_slots * (1 - refill_fraction))) if self.queue else 1
            state = _fire_loop(self.model, state, fmax32, max_steps, min_active, self.capacity)
            if bool(jnp.any(state.overflow)):
                continue
            host = jax.tree.map(np.array, state)  # writable host copies
            finished = [s for s in range(n_slots)
                        if not host.idle[s] and (host.done[s] or host.step[s] >= max_steps)]
            for s in finished:
                yield self.slot_of[s], self._result(host, s, fmax)
                self.slot_of[s] = -1
            if not self.queue and all(k < 0 for k in self.slot_of):
                return
            fresh = np.zeros(n_slots, bool)
            for s in finished:
                if self.queue:
                    self._load(host, s)
                    fresh[s] = True
                else:  # no candidates left: the slot idles (frozen)
                    host.idle[s] = True
            state = self._evaluate(host, fresh, fmax32)

    def _evaluate(self, state, fresh, fmax) -> RelaxState:
        return _evaluate(self.model, state, fresh, fmax, self.capacity)

    def _empty_state(self, n_slots: int) -> RelaxState:
        """Host arrays of the right shapes and dtypes (every slot is loaded before the first evaluation)."""
        n_pad = self.n_pad
        system = Slots(np.zeros((n_slots, n_pad), np.int32), np.zeros((n_slots, n_pad), bool),
                       np.ones(n_slots, np.float32), np.tile(np.eye(3, dtype=np.float32), (n_slots, 1, 1)))
        x = np.zeros((n_slots, n_pad + 3, 3), np.float32)
        fire = fire_init(x, np.zeros(n_slots, np.float32), np.zeros_like(x))
        flags = np.zeros(n_slots, bool)
        return jax.tree.map(np.array, RelaxState(system, fire, np.zeros(n_slots, np.int32), flags, flags, flags))

    def _load(self, host: RelaxState, slot: int) -> None:
        """Put the next queued candidate into ``slot`` of the host state (at the identity deformation)."""
        k = self.queue.pop(0)
        b = self.batch
        host.system.species[slot], host.system.mask[slot] = b.species[k], b.atom_mask[k]
        host.system.n[slot], host.system.ref_cell[slot] = b.counts[k], b.cells[k]
        host.fire.x[slot] = 0.0
        host.fire.x[slot, :self.n_pad] = b.positions[k]
        self.slot_of[slot] = k

    def _grown(self, state: RelaxState) -> cap.Capacity:
        """Capacity for the current geometries (host neighbour count, 30% headroom), at least 1.5x the old."""
        host = jax.tree.map(np.asarray, state)
        now = [System(host.system.species[s][:int(host.system.n[s])], *_cartesian(host, s, self.n_pad))
               for s in range(len(self.slot_of))]
        need = cap.measure(now, tuple(self.model.cutoffs))
        return cap.grow(self.capacity, need, factor=1.3, min_factor=1.5)

    def _result(self, host: RelaxState, s: int, fmax: float) -> Relaxed:
        system, n_pad = self.systems[self.slot_of[s]], self.n_pad
        n = len(system)
        pos, cell = _cartesian(host, s, n_pad)
        struct = Structure(Lattice(cell), [int(z) for z in system.numbers], pos, coords_are_cartesian=True)
        fm = float(np.max(np.linalg.norm(host.fire.g[s][np.r_[0:n, n_pad:n_pad + 3]], axis=-1)))
        e = float(host.fire.e[s])
        return Relaxed(struct, e, e / n, fm, bool(fm < fmax), int(host.step[s]))


def _cartesian(host: RelaxState, s: int, n_pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [n, 3] and cell [3, 3] (Angstrom, float64) of slot ``s`` from its filter DOFs."""
    from scipy.linalg import expm

    x, n = host.fire.x[s].astype(np.float64), int(host.system.n[s])
    f_def = expm(x[n_pad:] / host.system.n[s])
    return x[:n] @ f_def.T, host.system.ref_cell[s].astype(np.float64) @ f_def.T
