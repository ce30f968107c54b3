"""The checkpoints of :class:`lycb_jax.md.Simulation` (``checkpoint.npz``): the replica states' leaves
``leaf_0 ...``, the stage and step to continue at, alive flags, cells (Angstrom), graph capacity and skin
(Angstrom), frames written per stage and the replica indices, with a SHA-256 of them
(:mod:`lycb_jax.io.durable`). Written atomically; the previous one is kept as ``*.prev.npz``, and used (with a
warning) if the newer one is damaged. In production with the streaming MSD on, the accumulator state is in it
too (``msd_<field>``)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.md.observables import StreamingMSD
from lycb_jax.graph.capacity import Capacity
from lycb_jax.io import durable


def capacity_fields(capacity: Capacity) -> dict:
    """The checkpoint entries of a graph capacity (its cutoffs are the model's, not stored)."""
    return {"skin": capacity.skin, "capacity": np.array([capacity.edges, capacity.angles, capacity.short_per_atom,
                                                         *capacity.images, capacity.list_edges, capacity.per_bin,
                                                         *(capacity.bins or (0, 0, 0))])}


def capacity_from(ck: dict, cutoffs) -> Capacity:
    """The graph capacity stored in a checkpoint, for a model with ``cutoffs`` (Angstrom)."""
    c = [int(x) for x in ck["capacity"]]
    bins = tuple(c[8:11]) if len(c) >= 11 and min(c[8:11]) > 0 else None  # checkpoints before cell lists: 7 entries
    return Capacity(c[0], c[1], c[2], tuple(c[3:6]), float(ck["skin"]), c[6], *cutoffs, bins,
                    c[7] if bins is not None else 0)


def save_checkpoint(path: Path, prev_path: Path, states, *, fields: dict, replicas) -> None:
    """Write the states' leaves and ``fields`` atomically, with their checksum, to ``path``; the
    checkpoint there before is kept as ``prev_path`` (:func:`lycb_jax.io.durable.previous` of ``path``;
    another process may be killed before writing its own). CheckpointWriteError naming the folder
    if the disk is full or the folder not writable (the checkpoints there stay as they were)."""
    if Path(prev_path) != durable.previous(path):
        raise ValueError(f"the previous checkpoint of {path} is {durable.previous(path)}, not {prev_path}")
    leaves = jax.tree.leaves(states)
    durable.save_npz(path, {**{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)},
                            **{k: np.asarray(v) for k, v in fields.items()}, "replicas": np.asarray(replicas)},
                     "md_checkpoint")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's entries (checksum verified, no pickles), and ``path``: the file read. If
    ``path`` is damaged or truncated, the other generation (``checkpoint.npz`` <->
    ``checkpoint.prev.npz``) is read instead, with a warning naming the damaged file;
    CorruptCheckpointError if neither is good."""
    path = Path(path)
    if path.stem.endswith(".prev"):  # the previous generation: its fallback is the newer one
        newer = path.with_name(path.stem[: -len(".prev")] + path.suffix)
        try:
            return dict(durable.load_npz(path), path=str(path))
        except durable.CorruptCheckpointError as err:
            if not newer.exists():
                raise
            print(f"WARNING: {err}; using {newer.name}", file=sys.stderr, flush=True)
            path = newer
    data, used = durable.load_npz_or_previous(path)
    return dict(data, path=str(used))


def states_from(ck: dict, template):
    """The replica states of a checkpoint, with the tree structure of ``template``; ValueError naming
    the file if the checkpoint holds another number of state arrays (another ensemble or version)."""
    treedef = jax.tree.structure(template)
    stored = sum(1 for k in ck if k.startswith("leaf_"))
    if stored != treedef.num_leaves:
        raise ValueError(f"{ck.get('path', 'the checkpoint')} holds {stored} state arrays but this run's state has "
                         f"{treedef.num_leaves}: it was written by another ensemble or lycb_jax version; start the "
                         "run again without --resume")
    return jax.tree.unflatten(treedef, [jnp.asarray(ck[f"leaf_{i}"]) for i in range(treedef.num_leaves)])


def streaming_fields(msd: StreamingMSD | None, every_fs: float) -> dict:
    """The checkpoint entries (``msd_<field>``, ``msd_every_fs``) of a streaming MSD state updated every
    ``every_fs`` fs (none when off)."""
    if msd is None:
        return {}
    return {**{f"msd_{k}": np.asarray(v) for k, v in msd._asdict().items()}, "msd_every_fs": every_fs}


def streaming_from(ck: dict, n_rep: int, n_atoms: int, *, levels: int, block: int,
                   every_fs: float) -> StreamingMSD | None:
    """The streaming MSD state stored in a checkpoint (None if it holds none); ValueError naming the
    file if it was accumulated with another (replicas, atoms, levels, block, interval) than this run's."""
    if "msd_buffer" not in ck:
        return None
    msd = StreamingMSD(**{k: jnp.asarray(ck[f"msd_{k}"]) for k in StreamingMSD._fields})
    if float(ck["msd_every_fs"]) != every_fs:
        raise ValueError(f"{ck.get('path', 'the checkpoint')} holds a streaming MSD updated every "
                         f"{float(ck['msd_every_fs'])} fs, this run asks for {every_fs} fs: resume with the same "
                         "streaming_msd_every_fs")
    if msd.buffer.shape != (n_rep, levels, block, n_atoms, 3):
        raise ValueError(f"{ck.get('path', 'the checkpoint')} holds a streaming MSD of shape {msd.buffer.shape[:3]} "
                         f"(replicas, levels, block) but this run has ({n_rep}, {levels}, {block}): resume with the "
                         "streaming_msd_levels and streaming_msd_block of the run that wrote it")
    return msd
