"""`lycb-jax study`: batched multi-temperature MD, then diffusion, Arrhenius and conductivity.

Writes into one folder: ``md/`` (trajectory.h5, checkpoint, protocol), ``transport.json`` and
``transport.csv`` (T, D, sigma, Ea, sigma at 300 K with errors), ``msd.png/svg``,
``arrhenius.png/svg`` and ``thermo.png``.
"""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from lycb_jax import analysis, distributed
from lycb_jax.md import Protocol, Simulation, add_protocol_arguments, protocol_from_args

DEFAULT_STRUCTURE = "Li3YCl6_P-3m1_ordered30.cif"


def default_structure():
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(resources.files("lycb_jax") / "data" / DEFAULT_STRUCTURE))


def analyse(h5_path, out, species: str = "Li", stage: str = "production", alive=None, replicas=None) -> dict:
    """Diffusion per replica (those in ``replicas``, default all; one composition) from the stage's
    unwrapped positions, Arrhenius fit over their temperatures, report files into ``out``."""
    import h5py
    from ase.data import chemical_symbols

    with h5py.File(h5_path) as f:
        n_rep = len(f.attrs["temperatures_K"])
        idx = np.arange(n_rep) if replicas is None else np.asarray(replicas)
        keep = idx[np.ones(n_rep, bool)[idx] if alive is None else np.asarray(alive, bool)[idx]]
        numbers = np.atleast_2d(f.attrs["numbers"])[min(idx[0], len(np.atleast_2d(f.attrs["numbers"])) - 1)]
        masses = np.atleast_2d(f.attrs["masses_amu"])[min(idx[0], len(np.atleast_2d(f.attrs["masses_amu"])) - 1)]
        temps = np.asarray(f.attrs["temperatures_K"], float)[keep]
        pos = f[stage]["positions"][keep]
        vols = f[stage]["volume"][keep].astype(np.float64).mean(axis=1)
        time_fs = f[stage]["time_fs"][:]
    symbols = np.array([chemical_symbols[z] for z in numbers])
    mobile = symbols == species
    if not mobile.any():
        raise ValueError(f"species {species!r} not present (elements: {sorted(set(symbols))})")
    dt_fs = float(time_fs[1] - time_fs[0])
    framework = ~mobile if (~mobile).any() else None  # drift removal needs a framework
    results = analysis.diffusion_coefficient(pos, dt_fs, mobile=mobile, framework=framework, masses=masses,
                                             temperature=temps, volume_A3=vols)
    results = results if isinstance(results, list) else [results]
    out = Path(out)
    if len(results) < 2:
        raise ValueError("an Arrhenius fit needs at least two temperatures that finished")
    summary = analysis.summarize(results)
    analysis.write_summary(summary, out)
    analysis.plot_msd(results, out)
    analysis.plot_arrhenius(summary, out)
    return summary


def plot_thermo(h5_path, out) -> Path:
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    with h5py.File(h5_path) as f:
        t0 = 0.0
        for stage in [s for s in ("heat", "nvt", "npt", "production") if s in f]:
            t = (f[stage]["time_fs"][:] + t0) / 1000
            for r, temp in enumerate(f.attrs["temperatures_K"]):
                kw = dict(color=f"C{r}", lw=0.8, label=f"{temp:.0f} K" if stage == "heat" else None)
                axes[0].plot(t, f[stage]["temperature"][r], **kw)
                axes[1].plot(t, f[stage]["pressure"][r] / 1e4, **kw)
                axes[2].plot(t, f[stage]["volume"][r], **kw)
            for ax in axes:
                ax.axvline(t[-1], color="0.7", lw=0.5)
            t0 += f[stage]["time_fs"][-1]
    axes[0].set_ylabel("T (K)")
    axes[1].set_ylabel("P (GPa)")
    axes[2].set_ylabel("V (A$^3$)")
    axes[2].set_xlabel("time (ps)")
    axes[0].legend(fontsize=7, ncol=4)
    path = Path(out) / "thermo.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _simulate(model, structures, protocol: Protocol, out: Path, resume: bool) -> tuple[dict, str | None]:
    """Run the MD into ``out/md`` and plot its thermodynamics; returns (MD summary, trajectory of all
    replicas). The trajectory is None on processes other than 0 (several processes: each ran its block
    of replicas, process 0 writes the report)."""
    md = Simulation(model, structures, protocol, out / "md", resume=resume).run()
    if not distributed.is_main():
        return md, None
    if md["trajectory"] is None:
        raise RuntimeError("process 0 could not join the per-process trajectories (no shared file system?): "
                           "copy every trajectory.p*.h5 into one folder, run lycb_jax.distributed.merge_trajectories")
    plot_thermo(md["trajectory"], out)
    return md, md["trajectory"]


def study(model, structure, protocol: Protocol, out, resume: bool = False, species: str = "Li") -> dict | None:
    """Run the protocol at every temperature in one batched simulation, then analyse it (with
    several processes: each runs its share of the temperatures, process 0 analyses, the others return None)."""
    out = Path(out)
    md, h5 = _simulate(model, structure, protocol, out, resume)
    if h5 is None:
        return None
    summary = analyse(h5, out, species=species, alive=md["alive"])
    summary["failed_replicas"] = md["failed"]
    (out / "transport.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def sweep(model, structures: dict, protocol: Protocol, out, resume: bool = False,
          species: str = "Li") -> list[dict] | None:
    """Structures x temperatures in one batched simulation (all structures of equal size), then
    one transport report per structure in ``out/<name>/`` and a table ``out/sweep.csv`` (with
    several processes by process 0; the others return None)."""
    import csv
    import dataclasses

    out = Path(out)
    names = list(structures)
    temps = tuple(protocol.temperatures_K)
    replicas = [structures[n] for n in names for _ in temps]
    swept = dataclasses.replace(protocol, temperatures_K=temps * len(names))
    md, h5 = _simulate(model, replicas, swept, out, resume)
    if h5 is None:
        return None
    rows = []
    for k, name in enumerate(names):
        idx = np.arange(k * len(temps), (k + 1) * len(temps))
        try:
            s = analyse(h5, out / name, species=species, alive=md["alive"], replicas=idx)
            rows.append(dict(structure=name, Ea=s["Ea"], Ea_err=s["Ea_err"], T_extrapolate=s["T_extrapolate"],
                             sigma_extrapolated=s["sigma_extrapolated"], sigma_extrapolated_err=s["sigma_extrapolated_err"]))
        except ValueError as err:  # e.g. fewer than two temperatures survived
            rows.append(dict(structure=name, error=str(err)))
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "structure", k))
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("study", help="the main job: batched MD at several T, then D, Ea and conductivity")
    p.add_argument("--structure", help=f"structure file (default: the shipped {DEFAULT_STRUCTURE})")
    p.add_argument("--species", default="Li", help="mobile species to analyse")
    add_protocol_arguments(p)
    p.set_defaults(func=_cli, out="study_out")
    p = subparsers.add_parser("sweep", help="structures x temperatures in one batched run (equal atom counts)")
    p.add_argument("structures", nargs="+", help="structure files, e.g. LYCB compositions of one cell size")
    p.add_argument("--species", default="Li")
    add_protocol_arguments(p)
    p.set_defaults(func=_cli_sweep, out="sweep_out")


def _cli(args) -> int:
    import lycb_jax
    from lycb_jax.cli import read_structure

    structure = read_structure(args.structure) if args.structure else default_structure()
    protocol = protocol_from_args(args)
    try:
        summary = study(lycb_jax.load_model(args.model), structure, protocol, args.out, args.resume, args.species)
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    if summary is None:
        print(f"process {distributed.process_index()}: MD done; process 0 writes the report to {args.out}/")
        return 0
    keys = ("Ea", "Ea_err", "T_extrapolate", "sigma_extrapolated", "sigma_extrapolated_err")
    for row in summary["per_temperature"]:
        print(f"T = {row['T']:.0f} K: D = {row['D']:.3g} +- {row['D_err']:.2g} cm^2/s, "
              f"sigma = {row['sigma']:.3g} +- {row['sigma_err']:.2g} mS/cm, hops/ion = {row['hops_per_ion']:.1f}")
    print("Ea (eV), sigma(T_extrapolate) (mS/cm):", json.dumps({k: summary[k] for k in keys}, default=float))
    print(f"report written to {args.out}/ (transport.json, transport.csv, msd.png, arrhenius.png, thermo.png)")
    return 0


def _cli_sweep(args) -> int:
    import lycb_jax
    from lycb_jax.cli import read_structure

    structures = {Path(p).stem: read_structure(p) for p in args.structures}
    if len(structures) != len(args.structures):
        raise SystemExit("error: structure files need distinct names")
    try:
        rows = sweep(lycb_jax.load_model(args.model), structures, protocol_from_args(args), args.out, args.resume,
                     args.species)
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    if rows is None:
        print(f"process {distributed.process_index()}: MD done; process 0 writes the report to {args.out}/")
        return 0
    for r in rows:
        print(r)
    print(f"table written to {args.out}/sweep.csv")
    return 0
