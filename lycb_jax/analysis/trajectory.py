"""Trajectory inputs (arrays, ASE files, lycb-jax's MD HDF5) and the one-call analyses on them.

Units: positions and cells in Angstrom, time in fs, masses in amu, temperatures in K, volumes in
Angstrom^3.  Both paths (``analyze_trajectory`` and ``analyse_md``) choose the mobile ions and
the drift reference with ``species_masks`` and remove the mass-weighted framework drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lycb_jax.analysis.diffusion import diffusion_coefficient, diffusion_from_streaming, framework_msd
from lycb_jax.analysis.msd import species_masks
from lycb_jax.analysis.report import write_report
from lycb_jax.analysis.wrapping import _unwrap64, check_unwrapped, unwrap_npt
from lycb_jax.io.structures import nearest_distance


def _masses_of(symbols):
    """Standard atomic masses [N] (amu) of element symbols, or None if one is not an element."""
    from ase.data import atomic_masses, atomic_numbers

    try:
        return np.array([atomic_masses[atomic_numbers[s]] for s in symbols])
    except KeyError:
        return None


@dataclass
class Trajectory:
    """Unwrapped positions [T, N, 3] (A), element symbols [N], cell [3, 3] or [T, 3, 3] (A), dt (fs).

    masses [N] (amu) weight the framework drift; default: standard masses of the symbols.
    """

    positions: np.ndarray
    symbols: list
    cell: np.ndarray
    dt_fs: float
    masses: np.ndarray | None = None

    def __post_init__(self):
        if self.masses is None:
            self.masses = _masses_of(self.symbols)

    def masks(self, species="Li"):
        """(mobile, framework) boolean masks; ValueError if ``species`` is absent."""
        mobile, _ = species_masks(self.symbols, species)
        return mobile, ~mobile

    @property
    def volume_A3(self):
        return float(np.mean(np.abs(np.linalg.det(np.asarray(self.cell)))))

    def hop_distance(self, species="Li"):
        """Median nearest ``species``-``species`` distance (A) in the first frame: the default hop length."""
        cell = np.asarray(self.cell)
        return nearest_distance(self.positions[0], cell[0] if cell.ndim == 3 else cell, self.masks(species)[0])


def trajectory_from_arrays(positions, symbols, cell, *, dt_fs, wrapped="raise"):
    """Trajectory from raw arrays; ``wrapped`` = 'raise' (ValueError on wrapped coordinates) or 'unwrap'."""
    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[1] != len(symbols):
        raise ValueError(f"positions must be [T, N, 3] with N = len(symbols) = {len(symbols)}, got {pos.shape}")
    if wrapped == "unwrap":
        pos = _unwrap64(pos, cell)
    elif wrapped == "raise":
        check_unwrapped(pos, cell)
    else:
        raise ValueError("wrapped must be 'raise' or 'unwrap'")
    return Trajectory(pos, list(symbols), cell, float(dt_fs))


def trajectory_from_file(path, dt_fs, index=":", *, wrapped="raise", **read_kwargs):
    """Trajectory from any ASE-readable file (``ase.io.read(path, index=':')``); dt_fs between frames."""
    import ase.io

    frames = ase.io.read(path, index=index, **read_kwargs)
    if not isinstance(frames, list):
        frames = [frames]
    if len(frames) < 2:
        raise ValueError(f"{path}: need a trajectory (>= 2 frames), got {len(frames)}")
    pos = np.stack([a.get_positions(wrap=False) for a in frames])
    cell = np.stack([a.cell.array for a in frames])
    if np.allclose(cell, cell[0]):
        cell = cell[0]
    return trajectory_from_arrays(pos, frames[0].get_chemical_symbols(), cell, dt_fs=dt_fs, wrapped=wrapped)


def analyze_trajectory(traj, temperature, species="Li", *, remove_drift=True, charge=1.0, **kwargs):
    """Diffusion + conductivity of ``species`` in a ``Trajectory`` at ``temperature`` (K).

    Drift: the mass-weighted centre of mass of all other atoms is removed (``remove_drift``).  The hop
    length of the window rule defaults to the structure's nearest ``species`` distance; ``kwargs`` go to
    ``diffusion_coefficient`` (``hop_distance``, ``window_fs``, ...).
    """
    mobile, framework = species_masks(traj.symbols, species)
    if kwargs.get("hop_distance") is None:
        kwargs["hop_distance"] = traj.hop_distance(species)
    return diffusion_coefficient(traj.positions, traj.dt_fs, mobile, framework=framework if remove_drift else None,
                                 masses=traj.masses, temperature=temperature, volume_A3=traj.volume_A3, charge=charge,
                                 **kwargs)


class MDTrajectory(NamedTuple):
    """One stage of lycb-jax's MD trajectory.h5 for the kept replicas (one composition)."""

    positions: np.ndarray  # [R, T, N, 3] unwrapped, A
    symbols: np.ndarray  # [N]
    masses: np.ndarray  # [N], amu
    temperatures: np.ndarray  # [R], K (target temperatures)
    volumes_A3: np.ndarray  # [R], time-averaged
    dt_fs: float  # time between stored frames
    replicas: np.ndarray  # [R] indices of the kept replicas in the file
    cells: np.ndarray  # [R, 3, 3] first-frame cells (rows, A)
    hop_distance: float | None = None  # A, of the input structure (written by the MD), for hop_species
    hop_species: str | None = None


def replica_groups(h5_path) -> dict:
    """{structure name: replica indices} of a lycb-jax trajectory.h5, in file order: by the stored
    ``structure_names`` (sweeps), or, for files written without them, by the chemical formula of each
    replica's atoms (replicas of one composition but different frameworks then share a group: a warning says so)."""
    from lycb_jax.md.trajectory import read_trajectory

    with read_trajectory(h5_path) as f:
        n_rep = len(f.attrs["temperatures_K"])
        if "structure_names" in f.attrs:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(f.attrs["structure_names"])]
        else:
            from lycb_jax.io.structures import formula

            numbers = np.atleast_2d(f.attrs["numbers"])
            names = [formula(numbers[min(r, len(numbers) - 1)]) for r in range(n_rep)]
            if len(set(names)) > 1:
                import warnings

                warnings.warn(f"{h5_path} has no structure names (written before they were stored): replicas grouped "
                              f"by composition ({', '.join(dict.fromkeys(names))})", stacklevel=2)
    groups: dict = {}
    for r, name in enumerate(names):
        groups.setdefault(name, []).append(r)
    return {k: np.asarray(v) for k, v in groups.items()}


def read_md_trajectory(h5_path, stage="production", replicas=None, *, alive=None) -> MDTrajectory:
    """Read ``stage`` of a lycb-jax trajectory.h5 for ``replicas`` (indices, default all) that are
    ``alive`` (boolean [n_replicas], default all).  Symbols and masses are those of the first
    requested replica (per-replica attributes [R, N]) or the shared ones ([N])."""
    from lycb_jax.md.trajectory import read_trajectory
    from ase.data import chemical_symbols

    with read_trajectory(h5_path) as f:
        n_rep = len(f.attrs["temperatures_K"])
        idx = np.arange(n_rep) if replicas is None else np.asarray(replicas)
        keep = idx[np.ones(n_rep, bool)[idx] if alive is None else np.asarray(alive, bool)[idx]]
        numbers, masses = (np.atleast_2d(f.attrs[k]) for k in ("numbers", "masses_amu"))
        numbers, masses = numbers[min(idx[0], len(numbers) - 1)], masses[min(idx[0], len(masses) - 1)]
        temps = np.asarray(f.attrs["temperatures_K"], float)[keep]
        if stage not in f:
            raise ValueError(f"{h5_path}: no stage {stage!r} (stages: {', '.join(f)})")
        pos = f[stage]["positions"][keep]
        cells = f[stage]["cell"][keep] if "cell" in f[stage] else None
        vols = f[stage]["volume"][keep].astype(np.float64).mean(axis=1)
        time_fs = f[stage]["time_fs"][:]
        hops = np.asarray(f.attrs["hop_distance_A"], float) if "hop_distance_A" in f.attrs else None
        hop_species = str(f.attrs.get("hop_species", "")) or None
    if len(time_fs) < 2:
        raise ValueError(f"{h5_path}: stage {stage!r} has {len(time_fs)} frame(s)")
    if cells is not None and np.ptp(cells, axis=1).max() > 1e-6:  # NpT: re-unwrap with each frame's cell
        pos = np.stack([unwrap_npt(p, c) for p, c in zip(pos, cells)])
    first = cells[:, 0] if cells is not None else np.full((len(keep), 3, 3), np.nan)
    symbols = np.array([chemical_symbols[z] for z in numbers])
    return MDTrajectory(pos, symbols, masses, temps, vols, float(time_fs[1] - time_fs[0]), keep, first,
                        float(np.median(hops[keep])) if hops is not None else None, hop_species)


def analyse_md(h5_path, out, species="Li", *, stage="production", alive=None, replicas=None, window_fs=None,
               hop_distance=None, msd_source="frames") -> dict:
    """Diffusion per replica (those in ``replicas``, default all, that are ``alive``; one composition)
    from the stage's unwrapped positions, Arrhenius fit over the converged temperatures, report files
    (transport.json/csv, msd.png/svg, arrhenius.png/svg) into ``out``; returns the summary.
    ``window_fs`` = (t0, t1) forces the fit window; ``hop_distance`` (A) defaults to the median nearest
    ``species`` distance of the input structure (stored by the MD; of the first frame in files without it). ``msd_source``: "frames" (the stored positions) or "streaming"
    (the stage's streaming MSD curve, :func:`diffusion_from_streaming`: short lags resolved however sparse
    the frames; the framework-melting check still uses the frames)."""
    if msd_source not in ("frames", "streaming"):
        raise ValueError(f"msd_source must be 'frames' or 'streaming', got {msd_source!r}")
    groups = replica_groups(h5_path)
    chosen = np.concatenate(list(groups.values())) if replicas is None else np.asarray(replicas)
    mixed = [n for n, idx in groups.items() if np.isin(idx, chosen).any()]
    if len(mixed) > 1:
        raise ValueError(f"{h5_path}: the replicas to analyse belong to {len(mixed)} structures ({', '.join(mixed)}); "
                         "one Arrhenius set is one structure: analyse each group (lycb_jax.analysis.replica_groups; "
                         "lycb-jax analyze does this and writes one report per structure)")
    md = read_md_trajectory(h5_path, stage, replicas, alive=alive)
    if len(md.replicas) == 0:
        raise ValueError(f"{h5_path}: no replica left to analyse (all failed or none selected)")
    mobile, framework = species_masks(md.symbols, species)
    if hop_distance is None and md.hop_species == species and np.isfinite(md.hop_distance or np.nan):
        hop_distance = md.hop_distance  # the input structure's, as the pre-MD check used (one hop everywhere)
    elif hop_distance is None and np.isfinite(md.cells).all():  # files written without it
        hop_distance = nearest_distance(md.positions[0, 0], md.cells[0], mobile)
    if msd_source == "frames":
        results = diffusion_coefficient(md.positions, md.dt_fs, mobile, framework=framework, masses=md.masses,
                                        hop_distance=hop_distance, window_fs=window_fs, temperature=md.temperatures,
                                        volume_A3=md.volumes_A3)
        results = results if isinstance(results, list) else [results]
    else:
        results = _streaming_results(h5_path, stage, md, species, mobile, framework, hop_distance, window_fs)
    return write_report(results, Path(out))


def _streaming_results(h5_path, stage, md, species, mobile, framework, hop_distance, window_fs):
    from lycb_jax.md.trajectory import read_trajectory

    with read_trajectory(h5_path) as f:
        g = f[stage]
        if "streaming_msd_lag_fs" not in g:
            raise ValueError(f"{h5_path}: stage {stage!r} has no streaming MSD (run with "
                             "Protocol.streaming_msd_every_fs > 0), analyse its frames instead")
        lag = np.asarray(g["streaming_msd_lag_fs"], np.float64)
        stored = g["streaming_msd_lag_fs"].attrs["streaming_msd_species"]
        tracer = np.asarray(g["streaming_msd_tracer_A2"], np.float64)[md.replicas]
        collective = np.asarray(g["streaming_msd_collective_A2"], np.float64)[md.replicas]
        time_fs = np.asarray(g["time_fs"], np.float64)
    if str(stored) != species:
        raise ValueError(f"{h5_path}: the streaming MSD is of {stored}, not {species}")
    run_fs = float(time_fs[-1] - time_fs[0] + md.dt_fs)  # frames are written at the end of each save interval
    fw = framework_msd(md.positions, framework, md.masses) if np.any(framework) else np.full(len(md.replicas), np.nan)
    out = []
    for k in range(len(md.replicas)):
        out.append(diffusion_from_streaming(lag, tracer[k], collective[k], run_fs=run_fs, n_mobile=int(np.sum(mobile)),
                                            hop_distance=hop_distance, window_fs=window_fs,
                                            temperature=md.temperatures[k], volume_A3=md.volumes_A3[k],
                                            framework_msd_A2=float(np.atleast_1d(fw)[k])))
    return out
