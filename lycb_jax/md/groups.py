"""How the replicas of a :class:`lycb_jax.md.Simulation` are split over programs and processes: groups run one
after another when one program does not fit the device (the size asked for, recorded by an earlier run of the
folder, or planned from XLA's memory analysis after an out-of-memory error), and the join of the processes' files.

Replicas never interact, so running them in groups, one program after another, gives the trajectory of one
program over all of them (to float32 round-off of the shared graph capacity). Sizes in replicas, memory in bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

RECORD = "groups.json"


def planned_size(out_dir, resume: bool, max_replicas: int | None, n_replicas: int) -> int | None:
    """Replicas per program for a run into ``out_dir`` (None: all in one). A resumed run keeps the groups
    it was started with; ValueError if ``max_replicas`` asks for others."""
    path = Path(out_dir) / RECORD
    recorded = json.loads(path.read_text())["size"] if resume and path.exists() else None
    if not resume:
        path.unlink(missing_ok=True)  # an earlier run's groups must not steer a later resume of this one
    asked = max_replicas if max_replicas is not None and max_replicas < n_replicas else None
    if recorded is not None and max_replicas is not None and asked != recorded:
        raise ValueError(f"the run in {out_dir} ran in groups of {recorded} replicas ({path}); resume it with "
                         f"max_replicas={recorded}, or start afresh without resume")
    return recorded if recorded is not None else asked


def record(out_dir, size: int, n_groups: int) -> None:
    """Write the group size into ``out_dir`` so that a resumed run uses the same groups."""
    (Path(out_dir) / RECORD).write_text(json.dumps({"size": int(size), "groups": int(n_groups)}))


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is XLA's device out-of-memory error."""
    while err is not None:
        if "RESOURCE_EXHAUSTED" in str(err) or "Out of memory" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def device_bytes() -> int | None:
    """Memory of the first device (bytes), None where the backend reports none (the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def size_after_oom(sim, err: BaseException) -> int:
    """Replicas per program after all of ``sim``'s (a :class:`lycb_jax.md.Simulation`) ran out of device memory
    with ``err``: what :func:`lycb_jax.md.plan_replicas` says fits (below all), else half. Re-raises ``err``
    when it is another error, or when splitting cannot help (one replica, several processes)."""
    from lycb_jax.md.memory import plan_replicas
    from lycb_jax.runtime import distributed

    if not out_of_memory(err) or distributed.process_count() > 1 or sim.n_rep == 1:
        raise err
    limit = device_bytes()
    settings = sim._settings("npt" if sim.protocol.npt_ps else "nvt")
    fit = plan_replicas(sim.model, sim.first_system, settings, device_bytes=limit).max_replicas if limit else 0
    size = fit if 0 < fit < sim.n_rep else max(1, sim.n_rep // 2)
    print(f"out of device memory with {sim.n_rep} replicas in one program ({str(err).splitlines()[0][:120]}); "
          f"running them in groups of {size} from the start")
    return size


def join_processes(sim, summary: dict) -> dict:
    """With several processes, process 0 joins every process's file into ``trajectory.h5`` (all wait for it);
    ``summary`` of this process's run, completed for all. One process: ``summary`` as it is."""
    from lycb_jax.md import trajectory as md_traj
    from lycb_jax.runtime import distributed

    if distributed.process_count() == 1:
        return summary
    for r in np.where(~np.asarray(summary["alive"]))[0]:
        summary["failed"].setdefault(int(r), f"replica {r} failed on another process (see its output)")
    distributed.barrier("lycb_jax.md: trajectories written")
    if distributed.is_main():
        try:
            md_traj.merge_trajectories(sim.out, distributed.process_count())
        except (OSError, ValueError) as err:
            print(f"WARNING: trajectory.h5 not written: {err}")
    distributed.barrier("lycb_jax.md: trajectories joined")
    merged = sim.out / "trajectory.h5"
    summary["trajectory"] = str(merged) if merged.exists() else None
    summary["trajectory_of_this_process"] = str(sim.h5_path)
    return summary


def run_in_groups(sim, size: int) -> dict:
    """Run the replicas of ``sim`` (a :class:`lycb_jax.md.Simulation`) in groups of ``size``, one program each,
    one after another (files ``*.g{k}.*``, each resumable), joined into ``trajectory.h5``; the summary of all."""
    from lycb_jax.md import trajectory as md_traj
    from lycb_jax.runtime import distributed

    if distributed.process_count() > 1:
        raise ValueError("max_replicas with several processes: use more processes instead, so that each "
                         "process's block fits its devices")
    blocks = [sim.replicas[i:i + size] for i in range(0, sim.n_rep, size)]
    record(sim.out, size, len(blocks))
    summary = {"failed": {}, "alive": [], "groups": [b.tolist() for b in blocks]}
    for k, block in enumerate(blocks):
        if sim.progress:
            print(f"replica group {k + 1} of {len(blocks)}: replicas {block.tolist()}")
        part = type(sim)(sim.model, sim.all_structures, sim.protocol, sim.out, resume=sim.resume,
                         progress=sim.progress, names=sim.all_names, _group=(block, f".g{k}"))
        try:
            got = part._run()
        except RuntimeError as err:  # every replica of this group failed: the other groups still run
            if "all replicas failed" not in str(err):
                raise
            print(f"WARNING: replica group {k + 1}: {err}")
            got = {"failed": {int(r): str(err) for r in block}, "alive": [False] * len(block)}
        summary["failed"].update(got["failed"])
        summary["alive"] += got["alive"]
        for r, flags in got.get("drift_flagged", {}).items():
            summary.setdefault("drift_flagged", {})[r] = flags
    if not any(summary["alive"]):
        raise RuntimeError(f"all replicas failed; the frames written so far are in {sim.out}/trajectory.g*.h5")
    path = md_traj.merge_trajectories(sim.out, len(blocks), tag="g")
    summary.update(temperatures_K=sim.all_temps.tolist(), trajectory=str(path))
    return summary
