"""`lycb-jax analyze`: the transport analysis of a trajectory the project wrote (trajectory.h5 of `md`,
`study`, `sweep`), or of ASE-readable trajectories with their time step and temperatures.

Writes transport.json/csv, msd.png/svg (fitted window shaded, non-converged temperatures dotted) and
arrhenius.png/svg into --out; a sweep's trajectory gets one report per structure, in --out/<structure>/.  The library is imported when the command runs."""

from __future__ import annotations

from pathlib import Path


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="MSD, D (diffusive window or 'not converged'), Ea, conductivity "
                                              "of a trajectory")
    p.add_argument("trajectories", nargs="+", metavar="TRAJ",
                   help="trajectory.h5 written by lycb-jax, or ASE-readable files (one per temperature)")
    p.add_argument("--species", default="Li", help="mobile species")
    p.add_argument("--stage", default="production", help="stage of a trajectory.h5 (default production)")
    p.add_argument("--out", help="output folder (default: the trajectory's folder)")
    p.add_argument("--fit-start-ps", type=float, help="force the fit window start (ps); needs --fit-end-ps")
    p.add_argument("--fit-end-ps", type=float, help="force the fit window end (ps)")
    p.add_argument("--hop-distance", type=float, help="Li hop length (A) of the window rule (default: the "
                                                      "structure's nearest mobile-ion distance)")
    p.add_argument("--msd-source", choices=["frames", "streaming"], default="frames",
                   help="trajectory.h5: MSD from the stored frames (default) or from the run's streaming MSD curve "
                        "(Protocol.streaming_msd_every_fs; resolves short lags however sparse the frames)")
    g = p.add_argument_group("ASE-readable files")
    g.add_argument("--dt-fs", type=float, help="time between stored frames (fs)")
    g.add_argument("-T", "--temperatures", type=float, nargs="+", help="temperature (K) of each file")
    g.add_argument("--wrapped", action="store_true", help="the files hold wrapped coordinates: unwrap them")
    p.set_defaults(func=cmd_analyze)


def _window(args):
    if (args.fit_start_ps is None) != (args.fit_end_ps is None):
        raise SystemExit("error: give both --fit-start-ps and --fit-end-ps, or neither")
    return None if args.fit_start_ps is None else (1000.0 * args.fit_start_ps, 1000.0 * args.fit_end_ps)


def _summary(args, window_fs):
    from lycb_jax import analysis

    paths = [Path(t) for t in args.trajectories]
    for p in paths:
        if not p.exists():
            raise SystemExit(f"error: {p}: no such file")
    out = Path(args.out) if args.out else paths[0].parent
    if paths[0].suffix in (".h5", ".hdf5"):
        if len(paths) > 1:
            raise SystemExit("error: give one trajectory.h5 (it holds all temperatures)")
        groups = analysis.replica_groups(paths[0])
        reports = {}
        for name, idx in groups.items():  # one Arrhenius set per structure, never pooled
            where = out / name if len(groups) > 1 else out
            reports[name] = (analysis.analyse_md(paths[0], where, args.species, stage=args.stage, replicas=idx,
                                                 window_fs=window_fs, hop_distance=args.hop_distance,
                                                 msd_source=args.msd_source), where)
        return reports
    if args.msd_source == "streaming":
        raise SystemExit("error: --msd-source streaming needs a trajectory.h5 written with the streaming MSD on")
    if args.dt_fs is None or not args.temperatures or len(args.temperatures) != len(paths):
        raise SystemExit("error: ASE-readable trajectories need --dt-fs and one --temperatures value per file")
    results = []
    for path, temp in zip(paths, args.temperatures):
        traj = analysis.trajectory_from_file(path, args.dt_fs, wrapped="unwrap" if args.wrapped else "raise")
        results.append(analysis.analyze_trajectory(traj, temp, args.species, window_fs=window_fs,
                                                   hop_distance=args.hop_distance))
    return {None: (analysis.write_report(results, out), out)}


def cmd_analyze(args) -> int:
    window_fs = _window(args)
    try:
        reports = _summary(args, window_fs)
    except (ValueError, KeyError, OSError) as err:
        raise SystemExit(f"error: {err}")
    for name, (summary, out) in reports.items():
        if name is not None:
            print(f"== {name} ==")
        print_summary(summary)
        print(f"report written to {out}/ (transport.json, transport.csv, msd.png, arrhenius.png)")
    return 0


def print_summary(summary: dict) -> None:
    """One line per temperature (D with its window, or 'not converged' with the reason), then the tracer
    and the collective Arrhenius lines, each from its own converged temperatures (or the refusal)."""
    for r in summary["per_temperature"]:
        if r["converged"]:
            hr = (f"; collective sigma = {r['sigma_collective']:.3g} +- {r['sigma_collective_err']:.2g} mS/cm, H_R = "
                  f"{r['haven_ratio']:.2f} +- {r['haven_ratio_err']:.2f}" if r["collective_converged"]
                  else "; collective MSD not converged")
            print(f"T = {r['T']:g} K: D = {r['D']:.3g} +- {r['D_err']:.2g} cm^2/s (window {r['t0_fs'] / 1000:.3g}-"
                  f"{r['t1_fs'] / 1000:.3g} ps, {r['window_source']}), sigma = {r['sigma']:.3g} +- "
                  f"{r['sigma_err']:.2g} mS/cm [{r['sigma_source']}]{hr}" + (f"; {r['note']}" if r["note"] else ""))
        else:
            print(f"T = {r['T']:g} K: NOT CONVERGED: {r['reason']}")
    tx = summary["T_extrapolate"]
    if summary["Ea"] is None:
        print(f"tracer Arrhenius: refused: {summary['arrhenius_refused']}")
    else:
        print(f"tracer Arrhenius: Ea = {summary['Ea']:.3f} +- {summary['Ea_err']:.3f} eV from {summary['converged_T']} K; "
              f"sigma({tx:g} K) = {summary['sigma_extrapolated']:.3g} +- {summary['sigma_extrapolated_err']:.2g} mS/cm "
              f"[{summary['sigma_extrapolated_source']}]" + (f" ({summary['arrhenius_note']})" if summary["arrhenius_note"] else ""))
    c = summary.get("collective") or {}
    if c.get("refused") or not c:
        print(f"collective Arrhenius: refused: {c.get('refused', 'not computed')}")
    else:
        print(f"collective Arrhenius: Ea = {c['Ea']:.3f} +- {c['Ea_err']:.3f} eV from {c['converged_T']} K; "
              f"sigma({tx:g} K) = {c['sigma_extrapolated']:.3g} +- {c['sigma_extrapolated_err']:.2g} mS/cm"
              + (f" ({c['note']})" if c["note"] else ""))
