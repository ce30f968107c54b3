"""Runs over several processes (hosts, or one process per GPU): start-up and the little they share.

Design: each process simulates its own contiguous block of replicas on its local devices and
writes its own trajectory and checkpoint (``trajectory.p{k}.h5``, ``checkpoint.p{k}.npz``).
Replicas never interact, so this is exactly the single-process run cut into pieces, with no
global arrays and no traffic between hosts inside the MD. Per chunk the processes only exchange
each replica's temperature and alive flag (progress bar, all-failed check); on resume they agree
on the newest checkpoint every one of them has; at the end process 0 joins the per-process files
into ``trajectory.h5`` (:func:`lycb_jax.md.trajectory.merge_trajectories`: HDF5 virtual datasets, nothing
is copied; needs a shared file system).

With one process every function here is a no-op or the identity, and file names are unchanged.
"""

from __future__ import annotations

import os

import jax
import numpy as np


def requested(coordinator: str | None = None) -> bool:
    """Whether this process is one of several: a coordinator given (argument or
    ``JAX_COORDINATOR_ADDRESS``), or started by ``srun`` / Open MPI's ``mpirun`` with more than one task."""
    env = os.environ
    if coordinator or env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS") or 1) > 1:  # inside srun, not the batch script
        return True
    return "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE") or 1) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Join a multi-process run (``jax.distributed.initialize``) when :func:`requested` says so;
    nothing for a single process. Call it first: before anything uses JAX, and before importing
    ``lycb_jax.md`` / ``lycb_jax.workflows.study`` (importing jax_md starts JAX). Unset values come from
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, else from JAX's cluster detection (SLURM, Open MPI).
    Returns whether this process is one of several."""
    is_initialized = getattr(jax.distributed, "is_initialized", None)  # newer than some JAX we support
    if is_initialized is not None and is_initialized():
        return jax.process_count() > 1
    if not requested(coordinator):
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError("--num-processes / --process-id need --coordinator HOST:PORT (the address of process 0)")
        return False
    env = os.environ
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):  # older JAX on CPU
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:  # a long shutdown wait: processes that finish first wait there while process 0 writes the report
        jax.distributed.initialize(coordinator, num_processes, process_id, shutdown_timeout_seconds=4 * 3600)
    except RuntimeError as err:
        raise RuntimeError(f"{err} (call lycb_jax.runtime.distributed.initialize() before importing lycb_jax.md: "
                           "importing jax_md already starts JAX)") from err
    return jax.process_count() > 1


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Process 0 (the only one in a single-process run) writes reports."""
    return jax.process_index() == 0


def file_tag() -> str:
    """Suffix of this process's output files: ``.p{k}`` with several processes, else empty."""
    return f".p{jax.process_index()}" if jax.process_count() > 1 else ""


def _blocks(n_total: int) -> list[np.ndarray]:
    n_proc = jax.process_count()
    if n_total < n_proc:
        raise ValueError(f"{n_total} replicas for {n_proc} processes: use at most one process per replica")
    return np.array_split(np.arange(n_total), n_proc)


def local_replicas(n_total: int) -> np.ndarray:
    """Global indices of the replicas this process runs: a contiguous block, blocks in process order."""
    return _blocks(n_total)[jax.process_index()]


def gather_replicas(x, n_total: int) -> np.ndarray:
    """Per-replica values of every process, [n_total, ...] in global order, from this process's
    [n_local, ...] (a collective: every process calls it at the same point)."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    blocks = _blocks(n_total)
    m = max(len(b) for b in blocks)
    dtype = np.int32 if x.dtype == bool else x.dtype
    pad = np.zeros((m,) + x.shape[1:], dtype)
    pad[:len(x)] = x
    g = np.asarray(multihost_utils.process_allgather(pad))
    return np.concatenate([g[p, :len(b)] for p, b in enumerate(blocks)]).astype(x.dtype)


def latest_common(positions) -> int:
    """The largest of ``positions`` (non-negative ints, e.g. checkpoint step counts; at most 2 per
    process) that every process has; 0 if none (a collective)."""
    mine = sorted({int(p) for p in positions})[-2:]
    if jax.process_count() == 1:
        return max(mine, default=0)
    from jax.experimental import multihost_utils

    g = np.asarray(multihost_utils.process_allgather(np.array(mine + [-1] * (2 - len(mine)), np.int32)))
    common = set.intersection(*({int(v) for v in row if v >= 0} for row in g))
    return max(common, default=0)


def barrier(name: str) -> None:
    """Wait until every process got here."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

