"""The driver :class:`Simulation`, which runs a :class:`lycb_jax.md.protocol.Protocol` in chunks for R
replicas with output, progress, checkpoints and resume.

Units: times in ps (stage lengths) or fs (time step, saving), temperatures in K, pressure in bar,
lengths in Angstrom.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lycb_jax.md.checkpoints as md_ck
import lycb_jax.md.groups as groups
import lycb_jax.md.trajectory as md_traj
import lycb_jax.graph.capacity as caps
from lycb_jax.runtime import distributed
from lycb_jax.md.observables import streaming_init
from lycb_jax.graph.capacity import Capacity
from lycb_jax.io.structures import formula, hop_distances, to_system
from lycb_jax.md.chunk import ChunkInputs, ChunkSpec, default_capacity, run_chunk_checked
from lycb_jax.md.integrators import ensemble, init_batch, masses_of, thermal_momenta, real_positions, state_cell
from lycb_jax.md.settings import IntegratorSettings
from lycb_jax.md.protocol import Protocol
from lycb_jax.md.stages import stage_drift, to_average_cell
from lycb_jax.models import Model
from lycb_jax.units import KB


def _replica_systems(structures, n_temperatures: int) -> list:
    """One System per replica: one structure for every temperature, or one per temperature."""
    systems = [to_system(s) for s in (structures if isinstance(structures, (list, tuple)) else [structures])]
    if len(systems) == 1:
        systems = systems * n_temperatures
    if len(systems) != n_temperatures:
        raise ValueError(f"{len(systems)} structures for {n_temperatures} temperatures: give one structure, or one per T")
    if len({len(s) for s in systems}) != 1:
        raise ValueError("all replicas need the same number of atoms (vmap); run different sizes separately")
    return systems


@dataclasses.dataclass
class _Run:
    """Where a run stands: stage index, step in the stage, this process's replica states, cells
    [R, 3, 3] (Angstrom), alive flags, graph capacity, and the step of the last checkpoint."""

    stage: int
    step: int
    states: Any
    cells: np.ndarray
    alive: np.ndarray
    capacity: Capacity
    last_checkpoint: int = 0
    msd: Any = None  # streaming MSD state [R, ...] in production (Protocol.streaming_msd_every_fs), else None


class Simulation:
    """Run the protocol for R replicas into ``out_dir`` (``trajectory.h5`` + ``checkpoint.npz``).

    The HDF5 file has one group per stage with datasets [R, F, ...] (see ``FRAME_UNITS``) and
    ``time_fs`` [F]; root attributes hold atomic numbers, masses, temperatures and the protocol.
    A checkpoint of the full state is written atomically every ``checkpoint_every_ps``; a run
    restarted with ``resume=True`` truncates the file to the checkpoint and continues, producing
    the same trajectory as an uninterrupted run.

    Several processes (``lycb_jax.runtime.distributed.initialize``): each runs its own block of replicas
    into ``trajectory.p{k}.h5`` / ``checkpoint.p{k}.npz`` (attribute ``replicas``: their global
    indices), process 0 shows the progress of all and joins the files into ``trajectory.h5``.
    """

    def __init__(self, model: Model, structures, protocol: Protocol, out_dir, resume: bool = False,
                 progress: bool = True, names=None, *, max_replicas: int | None = None, _group=None):
        """``structures``: one structure (run at every temperature) or one per temperature
        (equal atom counts, e.g. a composition x temperature sweep). ``names``: the structure name of
        each replica (stored in the trajectory, attribute ``structure_names``; readers group replicas by
        it); default the chemical formula of each replica. ``max_replicas``: the most replicas one
        program runs (None: all; a device that runs out of memory with all splits them by
        :func:`lycb_jax.md.plan_replicas`); more run in groups, one after another, joined into
        ``trajectory.h5`` (``_group``: (replica indices, file tag) of one such group, set by the driver)."""
        protocol.validate()
        self.model, self.protocol, self.progress = model, protocol, progress
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        temps = np.asarray(protocol.temperatures_K, float)
        systems = _replica_systems(structures, len(temps))
        for s in systems:
            model.check_elements(s.numbers)
        if max_replicas is not None and (int(max_replicas) != max_replicas or max_replicas < 1):
            raise ValueError(f"max_replicas must be a positive integer, got {max_replicas!r}")
        # several processes: each runs its own block of replicas on its local devices, not one global array:
        # replicas never interact, so this is exact, and checkpoints, HDF5 and stage switches stay host-local
        self.n_total = len(systems)
        self.replicas = distributed.local_replicas(len(systems)) if _group is None else np.asarray(_group[0])
        names = [formula(s.numbers) for s in systems] if names is None else [str(n) for n in names]
        if len(names) != len(systems):
            raise ValueError(f"{len(names)} structure names for {len(systems)} replicas: give one name per replica")
        self.all_structures, self.all_names = systems, names  # what a group of replicas is built from
        self.max_replicas = max_replicas
        self.names = [names[r] for r in self.replicas]
        self.first_system = systems[0]  # the initial graph capacity comes from replica 0 on every process
        self.systems, self.temps, self.all_temps = [systems[r] for r in self.replicas], temps[self.replicas], temps
        self.n_rep, self.n_atoms = len(self.systems), len(systems[0])
        protocol.check_time_step(np.concatenate([s.numbers for s in systems]))
        self.species = np.stack([s.numbers for s in self.systems]).astype(np.int32)
        self.msd_stride = int(round(protocol.streaming_msd_every_fs / protocol.dt_fs))  # 0: off
        if self.msd_stride:
            from ase.data import atomic_numbers

            self.msd_mobile = self.species == atomic_numbers[protocol.streaming_msd_species]
            if not self.msd_mobile.any(axis=1).all():
                raise ValueError(f"streaming MSD of {protocol.streaming_msd_species}: replicas "
                                 f"{np.flatnonzero(~self.msd_mobile.any(axis=1)).tolist()} have no such atom")
        self.masses = np.stack([masses_of(s.numbers) for s in self.systems])
        self.stride = int(round(protocol.save_every_fs / protocol.dt_fs))
        self.frames_per_chunk = max(1, int(round(protocol.chunk_ps * 1000 / protocol.save_every_fs)))
        tag = distributed.file_tag() if _group is None else _group[1]  # ".p{k}" with several processes
        self.h5_path, self.ck_path = self.out / f"trajectory{tag}.h5", self.out / f"checkpoint{tag}.npz"
        self.prev_ck_path = self.out / f"checkpoint{tag}.prev.npz"
        (self.out / "protocol.json").write_text(json.dumps(dataclasses.asdict(protocol), indent=1))
        self.resume = resume
        self._drift_warned = set()  # (replica, stage) already warned about
        if resume and not self.ck_path.exists():
            print(f"no checkpoint in {self.out}; starting from the beginning")

    # -- helpers
    def _settings(self, ensemble: str) -> IntegratorSettings:
        p = self.protocol
        return IntegratorSettings(ensemble, p.dt_fs, p.tau_t_fs, p.tau_p_fs, p.pressure_bar, barostat=p.barostat)

    def _kT(self, name: str):
        """(start, end) kT (eV) of each replica in stage ``name``."""
        target = self.temps * KB
        start = np.full_like(target, self.protocol.start_K * KB) if name == "heat" else target
        return jnp.asarray(start, jnp.float32), jnp.asarray(target, jnp.float32)

    def _init_args(self, positions, cells, momenta, key):
        """:func:`init_batch`'s arrays by name (kT: the start of heating when momenta are drawn, else the target)."""
        kT = self._kT("heat")[0] if momenta is None else self._kT("nvt")[1]
        keys, masses = jax.random.split(key, self.n_total)[self.replicas], jnp.asarray(self.masses)
        momenta = thermal_momenta(keys, masses, kT) if momenta is None else jnp.asarray(momenta, jnp.float32)
        return dict(species=jnp.asarray(self.species), positions=jnp.asarray(positions, jnp.float32),
                    cells=jnp.asarray(cells, jnp.float32), masses=masses, keys=keys, kT=kT, momenta=momenta)

    def _init_states(self, ensemble, positions, cells, momenta, key, capacity: Capacity, tries: int = 3):
        """(states, capacity) at ``positions`` [R, N, 3] and ``cells`` [R, 3, 3] (Angstrom); the capacity
        grown from exact host counts at this geometry where it is too small (a cell that NpT shrank)."""
        args = self._init_args(positions, cells, momenta, key)
        for _ in range(tries):
            states, overflow = init_batch(self.model.bare(), **args, settings=self._settings(ensemble),
                                          capacity=capacity)
            if not bool(jnp.any(overflow)):
                return states, capacity
            geometries = [types.SimpleNamespace(positions=x, cell=c)
                          for x, c in zip(np.asarray(positions, np.float64), np.asarray(cells, np.float64))]
            need = caps.measure(geometries, tuple(self.model.cutoffs), capacity.skin, with_list=True)
            capacity = caps.grow(capacity, need, cells=cells)
        raise RuntimeError(f"initial graph overflow with capacity {capacity} after growing it {tries} times "
                           "(please report)")

    def _h5(self):
        resumable = self.resume and (self.ck_path.exists() or self.prev_ck_path.exists())
        return md_traj.open_trajectory(self.h5_path, self.species, self.masses, temperatures=self.temps,
                                     replicas=self.replicas, replace_unreadable=not resumable, names=self.names,
                                     model=dict(name=self.model.name, dispersion=self.model.metadata.get("dispersion")),
                                     hops=(self.protocol.streaming_msd_species,
                                           hop_distances(self.systems, self.protocol.streaming_msd_species)))

    def _append(self, f, stage, frames, t0_fs):
        md_traj.append_frames(f, stage, frames, t0_fs=t0_fs, save_every_fs=self.protocol.save_every_fs)

    def _save_checkpoint(self, states, ck: dict):
        md_ck.save_checkpoint(self.ck_path, self.prev_ck_path, states, fields=ck, replicas=self.replicas)

    def _load_checkpoint(self, stages) -> dict | None:
        """The checkpoint to resume from (None: start afresh): the newest one that every process
        has. A process killed while the others wrote theirs is one behind; they go back one."""
        ends = np.cumsum([0] + [s[2] for s in stages])  # a checkpoint's position: steps done in all
        found = {}
        for path in (self.prev_ck_path, self.ck_path) if self.resume else ():
            if path.exists():
                ck = md_ck.load_checkpoint(path)
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
        """(states, cells, capacity) for the next stage: same positions and momenta; after NpT the
        cell is set to the average of the last ``npt_average_ps`` (:func:`lycb_jax.md.stages.to_average_cell`)."""
        prev_name, prev_ens = prev_stage[0], prev_stage[1]
        settings = self._settings(prev_ens)
        pos = np.asarray(jax.vmap(lambda st: real_positions(st, settings))(states), np.float64)
        mom = np.asarray(states.momentum, np.float64)
        if ensemble(settings).box_in_state:  # after NpT: the average cell
            cur = np.asarray(jax.vmap(lambda st: state_cell(st, settings, None))(states), np.float64)
            pos, mom, cells = to_average_cell(f, prev_name, self.protocol.npt_average_ps * 1000, positions=pos,
                                              momenta=mom, cells=cur, temperatures=self.protocol.temperatures_K)
        key = jax.random.PRNGKey(self.protocol.seed + 1)
        states, capacity = self._init_states(next_ensemble, pos, cells, mom, key, capacity)
        return states, cells, capacity

    def _start(self, f, stages) -> _Run:
        """The run from its checkpoint (``resume``), the file truncated to it; else from the start."""
        p = self.protocol
        positions = np.stack([s.positions for s in self.systems])
        cells = np.stack([s.cell for s in self.systems]).astype(np.float64)
        first = self.first_system
        capacity = default_capacity(np.asarray(first.positions), np.asarray(first.cell, np.float64), skin=p.skin,
                                    cutoffs=self.model.cutoffs)
        ck = self._load_checkpoint(stages)
        if ck is None:
            md_traj.clear(f)
            states, capacity = self._init_states("nvt", positions, cells, None, jax.random.PRNGKey(p.seed), capacity)
            return _Run(0, 0, states, cells, np.ones(self.n_rep, bool), capacity)
        si, step = int(ck["stage"]), int(ck["step"])
        capacity = md_ck.capacity_from(ck, self.model.cutoffs)
        alive, cells = ck["alive"].astype(bool), ck["cells"]
        md_traj.truncate(f, {name: int(ck[f"frames_{name}"]) for name, *_ in stages if name in f})
        name, ensemble = stages[min(si, len(stages) - 1)][:2]
        # the states' tree structure only (no graph built): the saved capacity fits the saved geometry, not the
        # initial one, which NpT may have left far behind
        settings = self._settings(ensemble)
        template = jax.eval_shape(lambda a: init_batch(self.model.bare(), **a, settings=settings, capacity=capacity),
                                  self._init_args(positions, cells, None, jax.random.PRNGKey(0)))[0]
        print(f"{ck['path']}: the run is complete" if si >= len(stages) else
              f"resuming {ck['path']} at stage {si} ({name}), step {step}")
        run = _Run(si, step, md_ck.states_from(ck, template), cells, alive, capacity)
        if self.msd_stride:
            run.msd = md_ck.streaming_from(ck, self.n_rep, self.n_atoms, levels=p.streaming_msd_levels,
                                           block=p.streaming_msd_block, every_fs=p.streaming_msd_every_fs)
            if run.msd is not None:  # the curve of this checkpoint (the file may hold a later one)
                md_traj.write_streaming_msd(f, "production", run.msd, every_fs=p.streaming_msd_every_fs,
                                          species=p.streaming_msd_species)
        return run

    # -- main loop
    def run(self) -> dict:
        """Run (or resume) every stage; returns a summary dict (all replicas, also with several
        processes). Raises RuntimeError if all replicas fail."""
        size = groups.planned_size(self.out, self.resume, self.max_replicas, self.n_rep)
        if size is None:
            try:
                return groups.join_processes(self, self._run())
            except Exception as err:  # noqa: BLE001 - re-raised unless it is the device's out-of-memory error
                size = groups.size_after_oom(self, err)
        return groups.run_in_groups(self, size)

    def _run(self) -> dict:
        stages = self.protocol.stages()
        f, bar = self._h5(), None
        summary = {"failed": {}}
        try:
            run = self._start(f, stages)
            bar = self._progress_bar(stages, run)
            while run.stage < len(stages):
                self._run_stage(f, stages, run, bar, summary)
                run.stage, run.step = run.stage + 1, 0
            alive_all = distributed.gather_replicas(run.alive, self.n_total)
            summary.update(alive=alive_all.astype(bool).tolist(), temperatures_K=self.all_temps.tolist(),
                           trajectory=str(self.h5_path))
            return summary
        finally:
            if bar is not None:
                bar.close()
            f.close()

    def _progress_bar(self, stages, run: _Run):
        from tqdm import tqdm

        dt_ps = self.protocol.dt_fs / 1000
        done_ps = (sum(s[2] for s in stages[:run.stage]) + run.step) * dt_ps
        return tqdm(total=round(sum(s[2] for s in stages) * dt_ps, 3), initial=round(done_ps, 3), unit="ps",
                    disable=not self.progress or not distributed.is_main(),
                    bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} ps [{elapsed}<{remaining}{postfix}]")

    def _run_stage(self, f, stages, run: _Run, bar, summary: dict) -> None:
        """The rest of stage ``run.stage``, chunk by chunk; at its end the states for the next stage."""
        name, ensemble, n_steps, heating = stages[run.stage]
        settings = self._settings(ensemble)
        run.last_checkpoint = run.step
        if self.msd_stride and name == "production" and run.msd is None:
            run.msd = self._empty_msd
        # fitted to what the chunks needed only before production: a new capacity compiles a new program
        refit = run.stage + 1 < len(stages) and stages[run.stage + 1][0] == "production"
        while run.step < n_steps:
            self._chunk(f, run, name, settings, n_steps, heating, bar, summary, refit=refit)
            if run.step >= n_steps and run.stage + 1 < len(stages):
                run.states, run.cells, run.capacity = self._switch(run.states, stages[run.stage], stages[run.stage + 1][1],
                                                                   run.cells, f, run.capacity)
            self._checkpoint(f, stages, run, n_steps)

    @functools.cached_property
    def _empty_msd(self):
        """An empty streaming-MSD state [R, ...] of the streaming species (immutable: built once, shared)."""
        return jax.vmap(functools.partial(streaming_init, self.n_atoms, self.protocol.streaming_msd_levels,
                                          self.protocol.streaming_msd_block))(mobile=jnp.asarray(self.msd_mobile))

    def _chunk(self, f, run: _Run, name: str, settings: IntegratorSettings, n_steps: int, heating: bool, bar,
               summary: dict, *, refit: bool) -> None:
        """One chunk of stage ``name`` and its bookkeeping: frames written, replicas that stopped
        reported (into ``summary``), progress shown; RuntimeError when no replica is left anywhere.
        Every chunk of ``frames_per_chunk`` frames or fewer runs one program per ensemble (``n_active``),
        the NVT one with the streaming MSD switched off outside production (``msd_on``)."""
        p = self.protocol
        n_frames = min(self.frames_per_chunk, (n_steps - run.step) // self.stride)
        stride = self.stride if n_frames else n_steps - run.step  # a tail shorter than one frame
        n_frames = max(n_frames, 1)
        t_wall = time.perf_counter()
        kT_start, kT_end = self._kT(name)
        production, nvt = name == "production", settings.ensemble == "nvt"
        msd = (run.msd if production else self._empty_msd if nvt else None) if self.msd_stride else None
        inputs = ChunkInputs(self.species, run.cells, run.states, kT_start, kT_end, run.alive, step0=run.step,
                             total_steps=n_steps if heating else 0, max_kT_factor=p.max_temperature_factor,
                             msd=msd, msd_on=None if msd is None else np.bool_(production),
                             n_active=np.int32(n_frames) if stride == self.stride else None)
        spec = ChunkSpec(settings, run.capacity, self.frames_per_chunk if stride == self.stride else 1, stride,
                         msd_stride=self.msd_stride)
        out, run.capacity = run_chunk_checked(self.model, inputs, spec, fit=refit and run.step + n_frames * stride >= n_steps)
        new_states, frames, new_alive = out.states, out.frames, out.alive
        run.msd = out.msd if production else run.msd
        wall = time.perf_counter() - t_wall
        self._report_stopped(run.alive & ~new_alive, name, (run.step + n_frames * stride) * p.dt_fs, summary)
        run.states, run.alive = new_states, new_alive
        if stride == self.stride:
            self._append(f, name, frames, run.step * p.dt_fs)
        flagged = self._drift_guard(f, name, heating, run.alive, summary)
        run.step += n_frames * stride
        bar.update(min(n_frames * stride * p.dt_fs / 1000, bar.total - bar.n))  # float sums must not pass the total
        temps, alive_all, flagged_all = distributed.gather_replicas(  # every process's replicas (a collective)
            np.stack([np.asarray(frames.temperature[:, -1]), run.alive, flagged], 1).astype(np.float32),
            self.n_total).T
        ns_day = n_frames * stride * p.dt_fs * 1e-6 / wall * 86400
        drifting = np.where(flagged_all > 0)[0]
        bar.set_postfix_str(f"{name}, {ns_day:.2f} ns/day/replica, T = " + " ".join(f"{t:.0f}" for t in temps)
                            + (f", DRIFT > {p.drift_bound_meV:g} meV/atom/ps: replicas {drifting.tolist()}"
                               if drifting.size else ""))
        if not alive_all.any():
            f.flush()
            raise RuntimeError(f"all replicas failed in stage '{name}'; the frames written so far are in "
                               f"{self.h5_path}")

    def _drift_guard(self, f, name: str, heating: bool, alive, summary: dict) -> np.ndarray:
        """[R] replicas whose conserved quantity drifts faster than ``drift_bound_meV`` (meV/atom/ps, over
        stage ``name`` so far; not while heating: the target T moves; :func:`lycb_jax.md.stages.stage_drift`);
        a flagged replica is warned about once per stage and listed in the summary."""
        bound = self.protocol.drift_bound_meV
        f.attrs["drift_bound_meV_per_atom_ps"] = bound
        if heating or name not in f or f[name]["time_fs"].shape[0] < 3:
            return np.zeros(self.n_rep, bool)
        drift, flagged = stage_drift(f[name], self.n_atoms, bound, alive=alive)
        for r in np.where(flagged)[0]:
            rep = int(self.replicas[r])
            summary.setdefault("drift_flagged", {}).setdefault(rep, {})[name] = float(drift[r])
            if (rep, name) not in self._drift_warned:
                self._drift_warned.add((rep, name))
                print(f"WARNING: replica {rep} (T = {self.temps[r]:.0f} K): the conserved quantity drifts "
                      f"{drift[r]:.2f} meV/atom/ps in stage '{name}' (bound {bound:g}): the integration is not "
                      "reliable (time step too long, or the model is unstable here)")
        return flagged

    def _report_stopped(self, stopped, name: str, t_fs: float, summary: dict) -> None:
        """Warn about the replicas that stopped in this chunk (ending at ``t_fs`` of stage ``name``)."""
        for r in np.where(stopped)[0]:
            msg = (f"replica {self.replicas[r]} (T = {self.temps[r]:.0f} K) stopped in stage '{name}' before "
                   f"{t_fs / 1000:.2f} ps: temperature ran away or positions became non-finite (time step too long, "
                   "or the model is unstable here); its state is frozen, the other replicas go on")
            print("WARNING:", msg)
            summary["failed"][int(self.replicas[r])] = msg

    def _checkpoint(self, f, stages, run: _Run, n_steps: int) -> None:
        """A checkpoint at the end of each stage (pointing at the next) and every ``checkpoint_every_ps``."""
        p, done = self.protocol, run.step >= n_steps
        if not done and (run.step - run.last_checkpoint) * p.dt_fs < p.checkpoint_every_ps * 1000:
            return
        if run.msd is not None:
            md_traj.write_streaming_msd(f, stages[run.stage][0], run.msd, every_fs=p.streaming_msd_every_fs,
                                      species=p.streaming_msd_species)
        f.flush()
        self._save_checkpoint(run.states, {
            "stage": run.stage + 1 if done else run.stage, "step": 0 if done else run.step, "alive": run.alive,
            "cells": run.cells, **md_ck.capacity_fields(run.capacity),
            **md_traj.frame_counts(f, [n for n, *_ in stages]), **md_ck.streaming_fields(run.msd, p.streaming_msd_every_fs)})
        run.last_checkpoint = run.step

