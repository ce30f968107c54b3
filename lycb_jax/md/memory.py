"""How many replicas fit in one program: device memory of the MD chunk from XLA's own analysis.

The chunk program (:func:`lycb_jax.md.run_chunk`) is lowered and compiled for two replica counts, without
running it; ``compiled.memory_analysis()`` gives its argument, output and temporary bytes, which grow
linearly with the replicas (vmap). The line through the two points, with headroom, gives the most
replicas a device holds, as TorchSim's autobatcher does by probing, but without allocating anything.
Bytes throughout; a structure's graph capacity comes from :func:`lycb_jax.md.default_capacity`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.md.chunk import ChunkInputs, ChunkSpec, default_capacity, run_chunk
from lycb_jax.md.integrators import init_replica, masses_of
from lycb_jax.md.settings import IntegratorSettings


@dataclasses.dataclass
class MemoryPlan:
    """Bytes of the chunk program per replica and fixed, the device's limit, and the replicas that fit."""

    bytes_per_replica: float
    bytes_fixed: float
    device_bytes: int
    headroom: float
    max_replicas: int
    probes: dict  # replicas -> total bytes that XLA reported


def chunk_bytes(model, atoms, replicas: int, *, settings: IntegratorSettings, n_frames: int = 10, stride: int = 10,
                capacity=None) -> int:
    """Argument + output + temporary bytes of the MD chunk for ``replicas`` copies of ``atoms`` (ASE Atoms),
    from XLA's memory analysis of the compiled program (nothing is run). ValueError if the backend gives none."""
    capacity = capacity or default_capacity(atoms.positions, atoms.cell[:], cutoffs=model.cutoffs)
    r = replicas
    species = jnp.asarray(np.tile(atoms.numbers, (r, 1)), jnp.int32)
    pos = jnp.asarray(np.tile(atoms.positions, (r, 1, 1)), jnp.float32)
    cell = jnp.asarray(np.tile(atoms.cell[:], (r, 1, 1)), jnp.float32)
    masses = jnp.asarray(np.tile(masses_of(atoms.numbers), (r, 1)))
    kT = jnp.full(r, 0.05, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), r)
    init = jax.vmap(lambda s, x, c, m, t, k: init_replica(model, s, x, cell=c, masses=m, kT=t, key=k, settings=settings,
                                                          capacity=capacity)[0])
    states = jax.eval_shape(init, species, pos, cell, masses, kT, keys)  # shapes only
    alive = jax.ShapeDtypeStruct((r,), jnp.bool_)
    lowered = run_chunk.lower(model.bare(), ChunkInputs(species, cell, states, kT, kT, alive),
                              ChunkSpec(settings, capacity, n_frames, stride))
    mem = lowered.compile().memory_analysis()
    if mem is None:
        raise ValueError(f"the {jax.default_backend()} backend reports no memory analysis")
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - getattr(mem, "alias_size_in_bytes", 0))


def plan_replicas(model, atoms, settings: IntegratorSettings, *, device_bytes: int | None = None, headroom: float = 0.8,
                  probe: tuple[int, int] = (1, 4), n_frames: int = 10, stride: int = 10) -> MemoryPlan:
    """The most replicas of ``atoms`` that one program can run within ``headroom`` x ``device_bytes``
    (default: the first device's ``bytes_limit``; required on backends that report none, e.g. the CPU),
    from :func:`chunk_bytes` at the two ``probe`` replica counts and a straight line through them
    (the model's parameters are the fixed part)."""
    if device_bytes is None:
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" not in stats:
            raise ValueError(f"{jax.devices()[0].device_kind} reports no memory limit: pass device_bytes")
        device_bytes = int(stats["bytes_limit"])
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    a, b = probe
    if not 0 < a < b:
        raise ValueError(f"probe must be two replica counts 0 < a < b, got {probe}")
    ma, mb = (chunk_bytes(model, atoms, r, settings=settings, n_frames=n_frames, stride=stride) for r in (a, b))
    per = (mb - ma) / (b - a)
    fixed = ma - per * a
    fit = int((headroom * device_bytes - fixed) // per) if per > 0 else 0
    return MemoryPlan(per, fixed, device_bytes, headroom, max(0, fit), {a: ma, b: mb})
