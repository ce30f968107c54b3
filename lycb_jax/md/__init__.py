"""Batched molecular dynamics with jax-md, driven by a lycb_jax model (any :mod:`lycb_jax.models` potential).

R replicas (temperatures, seeds, or structures with equal atom counts) advance together in one
jit-compiled program (``jax.vmap``); chunks of steps run inside ``lax.scan``. Each replica keeps a
Verlet list (pairs within the model's atom cutoff + a skin), rebuilt by brute force only when some
replica could have moved more than skin/2 since; every force call takes the model's exact graph
from it (:func:`lycb_jax.graph.refine_graph`), so the model never pays for the skin. Every step is
checked: a capacity overflow, or an atom that moved more than skin/2 before a rebuild, rejects the
whole chunk, which is re-run with grown capacities. A replica whose temperature runs away or whose
positions become non-finite is frozen and reported.

Modules, one concept each:

* :mod:`.integrators`: NVT Nose-Hoover and NVE (jax-md's), NpT MTK with a full-cell barostat
  (``iso``, ``aniso``, ``tri``) as ``init`` / ``apply`` pairs, the energy function,
  :class:`IntegratorSettings`, :func:`init_replica`, 3N - 3 degrees of freedom;
* :mod:`.chunk`: :func:`run_chunk` (jitted, scanned; :class:`ChunkInputs` in, static :class:`ChunkSpec`,
  :class:`ChunkOut` out), its sharded variant, :func:`run_chunk_checked`;
* :mod:`.protocol`: :class:`Protocol` (the settings, their validation, :meth:`Protocol.load`);
* :mod:`.simulation`: the stage driver :class:`Simulation` (chunks, output, progress, checkpoints, resume);
* :mod:`.stages`: the drift check of the conserved quantity and the switch to the average cell after NpT;
* :mod:`.observables`: the streaming (order-n) MSD accumulator carried through the production scan;
* :mod:`.trajectory`: the HDF5 trajectory file, its one writer and reader;
* :mod:`.checkpoints`: the checkpoints;
* :mod:`.memory`: how many replicas fit in one program (XLA's memory analysis of the chunk, no run).

Every jitted program here traces under :func:`lycb_jax.runtime.precision_scope` (full float32
matrix products by default). The command line (``lycb-jax md``) is :mod:`lycb_jax.cli.md`.

Units: Angstrom, fs, eV, K, amu; pressure in bar, stress in GPa. jax-md is unit-free: with eV,
Angstrom and amu its time unit is Angstrom sqrt(amu/eV) = 10.18 fs (:data:`lycb_jax.units.FS`).
"""

from lycb_jax.md.chunk import (Carry, ChunkInputs, ChunkOut, ChunkResult, ChunkSpec, Frame, default_capacity,
                               fit_capacity, record, run_chunk, run_chunk_checked)
from lycb_jax.md.integrators import (
    ENSEMBLES,
    Dynamics,
    Ensemble,
    dynamics,
    energy_fn,
    init_replica,
    masses_of,
    nve,
    nvt_nose_hoover,
    real_positions,
    state_cell,
    temperature_K,
)
from lycb_jax.md.npt import NPTState, npt_conserved, npt_mtk
from lycb_jax.md.settings import BAROSTATS, IntegratorSettings, degrees_of_freedom
from lycb_jax.md.trajectory import FRAME_FIELDS, FRAME_UNITS
from lycb_jax.md.memory import MemoryPlan, chunk_bytes, plan_replicas
from lycb_jax.md.protocol import Protocol
from lycb_jax.md.simulation import Simulation

__all__ = ["BAROSTATS", "Carry", "ChunkInputs", "ChunkOut", "ChunkResult", "ChunkSpec", "Dynamics", "ENSEMBLES", "Ensemble", "FRAME_FIELDS",
           "FRAME_UNITS", "Frame",
           "IntegratorSettings", "MemoryPlan", "NPTState", "Protocol", "Simulation", "chunk_bytes", "default_capacity",
           "degrees_of_freedom", "dynamics", "energy_fn", "fit_capacity", "init_replica",
           "masses_of", "npt_conserved", "npt_mtk", "nve", "nvt_nose_hoover", "plan_replicas", "real_positions",
           "record", "run_chunk", "run_chunk_checked", "state_cell", "temperature_K"]
