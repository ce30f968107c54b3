"""The MD trajectory file (``trajectory.h5``), its one owner: the writer (:func:`open_trajectory`,
:func:`append_frames`, :func:`write_streaming_msd`, :func:`truncate`, :func:`clear`), the join of several
processes' files (:func:`merge_trajectories`) and the reader's door (:func:`read_trajectory`).

Layout: one group per stage with datasets [replica, frame, ...] (fields and units: :data:`FRAME_FIELDS`,
:data:`FRAME_UNITS`) and ``time_fs`` [frame]; root attributes hold atomic numbers, masses (amu),
temperatures (K), the global replica indices, structure names and the model's provenance.

Streaming MSD (optional, :func:`write_streaming_msd`): datasets of the stage group, rewritten at each
checkpoint: ``streaming_msd_lag_fs`` [M], ``streaming_msd_tracer_A2`` and ``streaming_msd_collective_A2``
[R, M] (A^2 per mobile atom, NaN where no origin pair yet), ``streaming_msd_pairs`` [R, M]
(time-origin pairs averaged). Not frames: :func:`truncate` leaves them alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lycb_jax.md.observables import StreamingMSD, streaming_finalize
from lycb_jax.io.faults import maybe_fail

FRAME_FIELDS = ("positions", "cell", "temperature", "potential_energy", "kinetic_energy", "conserved",
                "pressure", "stress", "volume")
FRAME_UNITS = {"positions": "Angstrom (unwrapped)", "cell": "Angstrom (rows)", "temperature": "K",
               "potential_energy": "eV", "kinetic_energy": "eV", "conserved": "eV", "pressure": "bar",
               "stress": "GPa (virial, ASE sign)", "volume": "Angstrom^3"}
REPLICA_ATTRS = ("numbers", "masses_amu", "temperatures_K", "replicas", "structure_names", "hop_distance_A")  # root attributes with a replica axis
FORMAT = "lycb_jax MD trajectory v1: /<stage>/<field> [replica, frame, ...]; units in attrs"


def open_trajectory(path, numbers, masses, *, temperatures, replicas, replace_unreadable: bool = False, names=None,
                    model: dict | None = None, hops: tuple | None = None):
    """The trajectory file (h5py.File, appended to) with its root attributes: atomic numbers [R, N]
    (replicas may differ in composition, not in size), masses [R, N] (amu), temperatures [R] (K),
    global replica indices [R] (a block of them per process), structure names [R] (UTF-8; readers group
    replicas by them: :func:`lycb_jax.analysis.replica_groups`), and ``model``: the model's name and its
    dispersion term (``model_name``, ``model_dispersion`` as JSON, "null" without one), and ``hops`` = (species,
    [R] A): the median nearest species-species distance of each input structure (``hop_distance_A``,
    ``hop_species``), the hop of the pre-MD check and of the analysis. A file left unreadable by a kill while it
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
    if hops is not None:
        f.attrs["hop_species"], f.attrs["hop_distance_A"] = hops[0], np.asarray(hops[1], np.float64)
    f.attrs["format"] = FORMAT
    return f


def append_frames(f, stage: str, frames, *, t0_fs: float, save_every_fs: float) -> None:
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


STREAMING_PREFIX = "streaming_msd_"


def write_streaming_msd(f, stage: str, msd: StreamingMSD, *, every_fs: float, species: str) -> None:
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


def merge_trajectories(folder, n_processes: int | None = None, out_name: str = "trajectory.h5", *,
                       tag: str = "p") -> Path:
    """Join ``trajectory.p{k}.h5`` of every process in ``folder`` into ``out_name``: each [replica,
    frame, ...] dataset becomes an HDF5 virtual dataset over the files (no copy; they must stay
    next to it), per-replica attributes are concatenated. Process 0 does this at the end of a
    run; without a shared file system, copy the files into one folder and call it there
    (``n_processes`` default: the number of such files in ``folder``). ``tag="g"`` joins the replica
    groups of one process (``trajectory.g{k}.h5``) instead."""
    import h5py

    folder = Path(folder)
    if n_processes is None:
        n_processes = sum(bool(re.fullmatch(rf"trajectory\.{tag}\d+\.h5", p.name)) for p in folder.iterdir())
    paths = [folder / f"trajectory.{tag}{k}.h5" for k in range(n_processes)]
    missing = [p.name for p in paths if not p.exists()]
    if missing or not paths:
        raise FileNotFoundError(f"{folder} lacks {missing or f'trajectory.{tag}*.h5'}: without a shared file "
                                "system, copy every process's file into one folder and merge there")
    tmp = folder / (out_name + ".tmp")
    srcs = [h5py.File(p, "r") for p in paths]
    try:
        replicas = np.concatenate([s.attrs["replicas"] for s in srcs])
        if not np.array_equal(replicas, np.arange(len(replicas))):
            raise ValueError(f"the files in {folder} hold replicas {replicas.tolist()}, not 0..{len(replicas) - 1}: "
                             "some process's file is missing or from another run")
        with h5py.File(tmp, "w") as out:
            for key, val in srcs[0].attrs.items():
                out.attrs[key] = np.concatenate([s.attrs[key] for s in srcs]) if key in REPLICA_ATTRS else val
            out.attrs["sources"] = [p.name for p in paths]
            for stage, grp in srcs[0].items():
                g = out.create_group(stage)
                for key in grp.attrs:  # per-replica stage attributes (the NpT average cell and volume)
                    g.attrs[key] = np.concatenate([s[stage].attrs[key] for s in srcs])
                for name, ds in grp.items():
                    if ds.ndim == 1:  # time axis, the same in every file
                        g.create_dataset(name, data=ds[:])
                        continue
                    shapes = [s[stage][name].shape for s in srcs]
                    if len({sh[1:] for sh in shapes}) != 1:
                        raise ValueError(f"{stage}/{name}: the processes' files differ in frames {shapes}")
                    layout = h5py.VirtualLayout((sum(sh[0] for sh in shapes),) + shapes[0][1:], dtype=ds.dtype)
                    r0 = 0
                    for p, sh in zip(paths, shapes):
                        layout[r0:r0 + sh[0]] = h5py.VirtualSource(p.name, f"{stage}/{name}", shape=sh)
                        r0 += sh[0]
                    g.create_virtual_dataset(name, layout, fillvalue=np.nan)
                    g[name].attrs.update(dict(ds.attrs))
    finally:
        for s in srcs:
            s.close()
    os.replace(tmp, folder / out_name)
    return folder / out_name


def read_trajectory(path):
    """``path`` opened for reading (an h5py.File; use it as a context manager): the one way readers
    (analysis, sensitivity, active learning, reports) open an MD trajectory."""
    import h5py

    return h5py.File(path, "r")
