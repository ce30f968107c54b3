"""MD output: the HDF5 trajectory and the checkpoints of :class:`lycb_jax.md.Simulation`.

Trajectory (``trajectory.h5``): one group per stage with datasets [replica, frame, ...] (fields
and units: :data:`FRAME_FIELDS`, :data:`FRAME_UNITS`) and ``time_fs`` [frame]; root attributes hold
atomic numbers, masses (amu), temperatures (K) and the global replica indices.

Checkpoint (``checkpoint.npz``): the replica states' leaves ``leaf_0 ...``, the stage and step to
continue at, alive flags, cells (Angstrom), graph capacity and skin (Angstrom), frames written per
stage and the replica indices, with a SHA-256 of them (:mod:`lycb_jax.io.durable`). Written atomically;
the previous one is kept as ``*.prev.npz``, and used (with a warning) if the newer one is damaged.
In production with the streaming MSD on, the accumulator state is in it too (``msd_<field>``).

Streaming MSD (optional, :func:`write_streaming_msd`): datasets of the stage group, rewritten at each
checkpoint: ``streaming_msd_lag_fs`` [M], ``streaming_msd_tracer_A2`` and ``streaming_msd_collective_A2``
[R, M] (A^2 per mobile atom, NaN where no origin pair yet), ``streaming_msd_pairs`` [R, M]
(time-origin pairs averaged). Not frames: :func:`truncate` leaves them alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.io import durable
from lycb_jax.analysis.streaming import StreamingMSD, streaming_finalize
from lycb_jax.graph.capacity import Capacity
from lycb_jax.io.faults import maybe_fail

FRAME_FIELDS = ("positions", "cell", "temperature", "potential_energy", "kinetic_energy", "conserved",
                "pressure", "stress", "volume")
FRAME_UNITS = {"positions": "Angstrom (unwrapped)", "cell": "Angstrom (rows)", "temperature": "K",
               "potential_energy": "eV", "kinetic_energy": "eV", "conserved": "eV", "pressure": "bar",
               "stress": "GPa (virial, ASE sign)", "volume": "Angstrom^3"}
FORMAT = "lycb_jax MD trajectory v1: /<stage>/<field> [replica, frame, ...]; units in attrs"


def open_trajectory(path, numbers, masses, temperatures, replicas, replace_unreadable: bool = False, names=None,
                    model: dict | None = None):
    """The trajectory file (h5py.File, appended to) with its root attributes: atomic numbers [R, N]
    (replicas may differ in composition, not in size), masses [R, N] (amu), temperatures [R] (K),
    global replica indices [R] (a block of them per process), structure names [R] (UTF-8; readers group
    replicas by them: :func:`lycb_jax.analysis.replica_groups`), and ``model``: the model's name and its
    dispersion term (``model_name``, ``model_dispersion`` as JSON, "null" without one). A file left unreadable by a kill while it
    was being written is replaced when ``replace_unreadable`` (nothing to resume from), else refused."""
    import h5py

    try:
        f = h5py.File(path, "a")
    except OSError as err:
        if not replace_unreadable:
            raise RuntimeError(f"{path} cannot be opened ({err}); it was probably being written when the run was "
                               "killed. Move it away to restart the run from its checkpoint's stage") from err
        Path(path).unlink()
        f = h5py.File(path, "a")
    f.attrs["numbers"] = numbers
    f.attrs["masses_amu"] = masses
    f.attrs["temperatures_K"] = temperatures
    f.attrs["replicas"] = replicas
    if names is not None:
        f.attrs["structure_names"] = np.array([str(n).encode() for n in names], dtype="S")
    if model is not None:
        import json

        f.attrs["model_name"] = str(model.get("name"))
        f.attrs["model_dispersion"] = json.dumps(model.get("dispersion"))
    f.attrs["format"] = FORMAT
    return f


def append_frames(f, stage: str, frames, t0_fs: float, save_every_fs: float) -> None:
    """Append ``frames`` (a Frame of [R, F, ...] arrays) to group ``stage``; their times are
    ``t0_fs + save_every_fs * (1 .. F)`` (fs from the start of the stage)."""
    grp = f.require_group(stage)
    n_new = frames.temperature.shape[1]
    for k, name in enumerate(FRAME_FIELDS):
        if k == len(FRAME_FIELDS) // 2:
            maybe_fail("md_trajectory.half_appended")
        arr = np.asarray(getattr(frames, name), np.float32)
        if name not in grp:
            grp.create_dataset(name, shape=(arr.shape[0], 0) + arr.shape[2:],
                               maxshape=(arr.shape[0], None) + arr.shape[2:],
                               chunks=(1, max(1, n_new)) + arr.shape[2:], dtype="f4")
            grp[name].attrs["units"] = FRAME_UNITS[name]
        ds = grp[name]
        ds.resize(ds.shape[1] + n_new, axis=1)
        ds[:, -n_new:] = arr
    t = t0_fs + save_every_fs * np.arange(1, n_new + 1)
    if "time_fs" not in grp:
        grp.create_dataset("time_fs", shape=(0,), maxshape=(None,), dtype="f8")
    grp["time_fs"].resize(grp["time_fs"].shape[0] + n_new, axis=0)
    grp["time_fs"][-n_new:] = t
    maybe_fail("md_trajectory.appended")


def frame_counts(f, stages) -> dict:
    """``frames_<stage>``: frames written so far for each stage name (0 if none)."""
    return {f"frames_{n}": (f[n]["temperature"].shape[1] if n in f else 0) for n in stages}


def truncate(f, counts: dict) -> None:
    """Drop the frames written after a checkpoint: stage name -> frames to keep. RuntimeError, naming
    the file, if a stage holds fewer frames than the checkpoint counted or they cannot be read."""
    for name, n in counts.items():
        if name in f:
            for key, ds in f[name].items():
                if key.startswith(STREAMING_PREFIX):  # not frames: rewritten from the checkpoint's state
                    continue
                have = ds.shape[1 if ds.ndim > 1 else 0]
                if have < n:
                    raise RuntimeError(f"{f.filename}: stage '{name}' holds {have} frames of {ds.name}, but its "
                                       f"checkpoint counted {n}: the trajectory does not belong to this checkpoint")
                ds.resize(n, axis=1 if ds.ndim > 1 else 0)
                if n:
                    try:
                        ds[:, n - 1] if ds.ndim > 1 else ds[n - 1]  # the last frame kept is readable
                    except (OSError, KeyError, ValueError) as err:
                        raise RuntimeError(f"{f.filename}: frames of stage '{name}' cannot be read ({err}); the file "
                                           "was damaged after its checkpoint. Start the run again without "
                                           "--resume") from err


def clear(f) -> None:
    """Remove every stage (a run that starts afresh)."""
    for name in list(f.keys()):
        del f[name]


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


def save_checkpoint(path: Path, prev_path: Path, states, fields: dict, replicas) -> None:
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


STREAMING_PREFIX = "streaming_msd_"


def streaming_fields(msd: StreamingMSD | None, every_fs: float) -> dict:
    """The checkpoint entries (``msd_<field>``, ``msd_every_fs``) of a streaming MSD state updated every
    ``every_fs`` fs (none when off)."""
    if msd is None:
        return {}
    return {**{f"msd_{k}": np.asarray(v) for k, v in msd._asdict().items()}, "msd_every_fs": every_fs}


def streaming_from(ck: dict, n_rep: int, n_atoms: int, levels: int, block: int, every_fs: float) -> StreamingMSD | None:
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


def write_streaming_msd(f, stage: str, msd: StreamingMSD, every_fs: float, species: str) -> None:
    """(Re)write the finalized streaming MSD of every replica (``msd`` with leading axis R, updated
    every ``every_fs`` fs) into group ``stage``: every lag of the accumulator grid (fs), NaN where a
    replica has no origin pair yet (shapes fixed for the whole run). Mobile ``species``, the interval
and the accumulator's shape are attributes of ``streaming_msd_lag_fs``."""
    lags, tracer, collective, pairs = streaming_finalize(msd, keep_empty=True)
    grp = f.require_group(stage)
    data = {"lag_fs": (lags * every_fs, "fs"), "tracer_A2": (tracer, "Angstrom^2 per mobile atom"),
            "collective_A2": (collective, "Angstrom^2, |sum_i dr_i|^2 / N_mobile"),
            "pairs": (pairs, "time-origin pairs averaged")}
    for name, (arr, units) in data.items():
        key = STREAMING_PREFIX + name
        arr = np.asarray(arr, np.int64 if name == "pairs" else np.float64)
        if key in grp and grp[key].shape != arr.shape:
            del grp[key]
        if key not in grp:
            grp.create_dataset(key, shape=arr.shape, dtype=arr.dtype)
        grp[key][...] = arr
        grp[key].attrs["units"] = units
    levels, block = np.asarray(msd.n_pairs).shape[-2:]  # on a dataset: the stage's attributes are per replica
    grp[STREAMING_PREFIX + "lag_fs"].attrs.update({"streaming_msd_species": species, "streaming_msd_every_fs": every_fs,
                      "streaming_msd_levels": levels, "streaming_msd_block": block,
                      "streaming_msd_drift": "positions relative to the framework's mass-weighted centre of mass"})
