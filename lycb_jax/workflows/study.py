"""The transport study: batched multi-temperature MD, then diffusion, Arrhenius and conductivity
(:func:`study`; :func:`sweep` for structures x temperatures). Command line: ``lycb-jax study`` and
``lycb-jax sweep`` (:mod:`lycb_jax.cli.md`).

Writes into one folder: ``md/`` (trajectory.h5, checkpoint, protocol), ``transport.json`` and
``transport.csv`` (per T: converged or the reason, D, sigma, Haven ratio; Ea and sigma at 300 K with
errors from the converged temperatures, or the refusal), ``msd.png/svg``, ``arrhenius.png/svg`` and
``thermo.png``.  A study that cannot converge at its settings is refused before the MD
(:func:`check_before_md`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lycb_jax import analysis
from lycb_jax.runtime import distributed
from lycb_jax.md import Protocol, Simulation


def analyse(h5_path, out, species: str = "Li", *, stage: str = "production", alive=None, replicas=None,
            window_fs=None) -> dict:
    """Transport report of one composition's replicas: ``lycb_jax.analysis.analyse_md``."""
    return analysis.analyse_md(h5_path, out, species, stage=stage, alive=alive, replicas=replicas, window_fs=window_fs)


def check_before_md(protocol: Protocol, structures=(), species: str = "Li") -> str:
    """Refuse (ValueError) a study or sweep that cannot converge at its settings before any MD runs
    (``lycb_jax.analysis.check_production``: only settings hopeless even for the shortest plausible hop);
    returns its line on the smallest D that can converge. Its hop is the one the analysis uses, the nearest
    ``species``-``species`` distance (``io.structures.nearest_distance``), here of the input structures (the
    shortest of them); ``DEFAULT_HOP_DISTANCE`` without structures."""
    hops = [_hop_of(s, species) for s in structures]
    hops = [h for h in hops if h is not None]
    hop = min(hops) if hops else analysis.DEFAULT_HOP_DISTANCE
    return analysis.check_production(protocol.temperatures_K, protocol.production_ps, protocol.save_every_fs,
                                     hop_distance=hop)


def _hop_of(structure, species: str) -> float | None:
    """Nearest ``species`` distance (A) of a pymatgen Structure or ASE Atoms; None with fewer than 2 of them."""
    from ase.data import atomic_numbers

    from lycb_jax.io.structures import nearest_distance, to_system

    system = to_system(structure)
    mask = system.numbers == atomic_numbers[species]
    if mask.sum() < 2:
        return None
    return nearest_distance(system.positions, system.cell, mask)


def _write_json(summary: dict, out: Path) -> None:
    (out / "transport.json").write_text(json.dumps(analysis.json_safe(summary), indent=1, allow_nan=False))


def _simulate(model, structures, protocol: Protocol, out: Path, *, resume: bool, names=None,
              max_replicas: int | None = None) -> tuple[dict, str | None]:
    """Run the MD into ``out/md`` and plot its thermodynamics; returns (MD summary, trajectory of all
    replicas). The trajectory is None on processes other than 0 (several processes: each ran its block
    of replicas, process 0 writes the report). ``max_replicas``: see :class:`lycb_jax.md.Simulation`."""
    md = Simulation(model, structures, protocol, out / "md", resume=resume, names=names,
                    max_replicas=max_replicas).run()
    if not distributed.is_main():
        return md, None
    if md["trajectory"] is None:
        raise RuntimeError("process 0 could not join the per-process trajectories (no shared file system?): "
                           "copy every trajectory.p*.h5 into one folder, run lycb_jax.md.trajectory.merge_trajectories")
    analysis.plot_thermo(md["trajectory"], out)
    return md, md["trajectory"]


def study(model, structure, protocol: Protocol, *, out, resume: bool = False, species: str = "Li",
          window_fs=None, max_replicas: int | None = None) -> dict | None:
    """Run the protocol at every temperature in one batched simulation, then analyse it (with
    several processes: each runs its share of the temperatures, process 0 analyses, the others return None).
    Refused before the MD (ValueError) when it cannot converge (``check_before_md``).  ``window_fs`` =
    (t0, t1) forces the fit window."""
    out = Path(out)
    feasibility = check_before_md(protocol, [structure], species)
    md, h5 = _simulate(model, structure, protocol, out, resume=resume, max_replicas=max_replicas)
    if h5 is None:
        return None
    summary = analyse(h5, out, species=species, alive=md["alive"], window_fs=window_fs)
    summary["failed_replicas"] = md["failed"]
    summary["feasibility"] = feasibility
    _write_json(summary, out)
    return summary


def sweep(model, structures: dict, protocol: Protocol, *, out, resume: bool = False,
          species: str = "Li", window_fs=None, max_replicas: int | None = None) -> list[dict] | None:
    """Structures x temperatures in one batched simulation (all structures of equal size), then
    one transport report per structure in ``out/<name>/`` and a table ``out/sweep.csv`` (with
    several processes by process 0; the others return None)."""
    import csv
    import dataclasses

    out = Path(out)
    names = list(structures)
    if not names:
        raise ValueError("sweep needs at least one structure")
    check_before_md(protocol, list(structures.values()), species)
    temps = tuple(protocol.temperatures_K)
    replicas = [structures[n] for n in names for _ in temps]
    swept = dataclasses.replace(protocol, temperatures_K=temps * len(names))
    md, h5 = _simulate(model, replicas, swept, out, resume=resume, names=[n for n in names for _ in temps],
                       max_replicas=max_replicas)
    if h5 is None:
        return None
    rows = []
    for k, name in enumerate(names):
        idx = np.arange(k * len(temps), (k + 1) * len(temps))
        try:
            s = analyse(h5, out / name, species=species, alive=md["alive"], replicas=idx, window_fs=window_fs)
            c = s["collective"]
            rows.append(dict(structure=name, converged_T=" ".join(f"{t:g}" for t in s["converged_T"]), Ea=s["Ea"],
                             Ea_err=s["Ea_err"], T_extrapolate=s["T_extrapolate"],
                             sigma_extrapolated=s["sigma_extrapolated"], sigma_extrapolated_err=s["sigma_extrapolated_err"],
                             refused=s["arrhenius_refused"], note=s["arrhenius_note"],
                             collective_converged_T=" ".join(f"{t:g}" for t in c["converged_T"]),
                             collective_Ea=c.get("Ea"), collective_Ea_err=c.get("Ea_err"),
                             collective_sigma_extrapolated=c.get("sigma_extrapolated"),
                             collective_sigma_extrapolated_err=c.get("sigma_extrapolated_err"),
                             collective_refused=c["refused"], collective_note=c["note"]))
        except ValueError as err:  # e.g. no replica of this structure survived
            rows.append(dict(structure=name, error=str(err)))
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "structure", k))
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows
