"""`lycb-jax md`, `study` and `sweep`: batched multi-temperature MD with the paper's protocol
(:mod:`lycb_jax.md`), and the transport study on top of it (:mod:`lycb_jax.workflows.study`).

The library is imported when a command runs, not when the parser is built: importing jax_md
takes seconds and starts JAX (after :func:`lycb_jax.cli._join_processes`, as it must)."""

from __future__ import annotations

from pathlib import Path

from lycb_jax.cli import add_dispersion_argument, add_model_argument
from lycb_jax.io.structures import DEFAULT_STRUCTURE, LARGE_STRUCTURE



def add_protocol_arguments(p, auto: bool = False) -> None:
    """The MD options; ``auto``: --config defaults to 'auto' (the cpu or gpu protocol by the device)."""
    from lycb_jax.models.paths import DEFAULT_MD_MODEL

    p.add_argument("-T", "--temperatures", type=float, nargs="+", help="target temperatures, K (one replica each)")
    p.add_argument("--config", default="auto" if auto else None,
                   help="MD protocol: cpu, gpu or paper (shipped, configs/NAME.toml), or a JSON/TOML file with Protocol "
                        "settings (durations in ps, dt_fs, pressure_bar, ...)" +
                        ("; auto: gpu if JAX sees a GPU, else cpu" if auto else "; default: the paper's protocol"))
    add_model_argument(p, default=DEFAULT_MD_MODEL)
    add_dispersion_argument(p)
    p.add_argument("--out", default="md_out", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--npt-ps", type=float, help="NpT stage length (0 = none)")
    p.add_argument("--production-ps", type=float, help="NVT production length")
    p.add_argument("--pressure-bar", type=float, help="NpT target pressure, bar (10 kbar = 10000)")
    p.add_argument("--barostat", choices=("iso", "aniso", "tri"),
                   help="NpT cell motions (MTK): tri = every cell parameter (default, LAMMPS fix npt tri), "
                        "aniso = x, y, z separately, iso = shape kept")
    p.add_argument("--max-replicas", type=int, metavar="N",
                   help="run at most N replicas in one program, the rest in groups after it (default: all at once; "
                        "a device out of memory splits them by XLA's memory analysis)")
    p.add_argument("--drift-bound", type=float, metavar="MEV",
                   help="flag replicas whose conserved quantity drifts faster than this, meV/atom/ps (default 1)")
    g = p.add_argument_group("several processes (hosts); srun, Open MPI's mpirun and JAX_COORDINATOR_ADDRESS "
                             "(+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) are detected without these")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (any free port on its host)")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="K", help="this process's index, 0..N-1")


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("md", help="batched multi-temperature MD with the paper's protocol")
    p.add_argument("structure", help="structure file (any format ASE or pymatgen reads)")
    add_protocol_arguments(p)
    p.set_defaults(func=cmd_md)
    p = subparsers.add_parser("study", help="the main job: batched MD at several T, then D, Ea and conductivity")
    p.add_argument("--structure", help=f"structure file (default: the shipped {DEFAULT_STRUCTURE} with the cpu "
                                       f"protocol, the 480-atom LYC0 ({LARGE_STRUCTURE} x 2x2x2) with gpu)")
    p.add_argument("--species", default="Li", help="mobile species to analyse")
    add_protocol_arguments(p, auto=True)
    p.set_defaults(func=cmd_study, out="study_out")
    p = subparsers.add_parser("sweep", help="structures x temperatures in one batched run (equal atom counts)")
    p.add_argument("structures", nargs="+", help="structure files, e.g. LYCB compositions of one cell size")
    p.add_argument("--species", default="Li", help="mobile species analysed")
    add_protocol_arguments(p)
    p.set_defaults(func=cmd_sweep, out="sweep_out")


def protocol_from_args(args):
    """The Protocol of ``--config`` and the flags; SystemExit with the message if they are wrong."""
    from lycb_jax.md import Protocol

    try:  # the file and flags checked by lycb_jax.io (unknown keys, types, units); InputError is a ValueError
        return Protocol.load(args.config, temperatures_K=args.temperatures, npt_ps=args.npt_ps,
                             production_ps=args.production_ps, pressure_bar=args.pressure_bar,
                             barostat=args.barostat, drift_bound_meV=args.drift_bound)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}")


def _or_exit(fn):
    """``fn()``; a ValueError (bad input) becomes SystemExit with its message."""
    try:
        return fn()
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def _model(args):
    """The checkpoint of ``--model``, with ``--dispersion`` added if given."""
    import lycb_jax

    return lycb_jax.load_model(args.model, dispersion=args.dispersion)


def _report_elsewhere(out) -> int:
    from lycb_jax.runtime import distributed

    print(f"process {distributed.process_index()}: MD done; process 0 writes the report to {out}/")
    return 0


def cmd_md(args) -> int:
    from lycb_jax.cli.predict import read_structure_or_exit
    from lycb_jax.md import Simulation

    structure = read_structure_or_exit(args.structure)
    protocol = protocol_from_args(args)
    print(_or_exit(lambda: Simulation(_model(args), structure, protocol, args.out,
                                      resume=args.resume, max_replicas=args.max_replicas).run()))
    return 0


def choose_protocol(config: str) -> tuple[str, str]:
    """(protocol, the line saying why): ``config`` itself unless it is 'auto', then 'gpu' when JAX's
    default backend is a GPU, else 'cpu'."""
    if config != "auto":
        return config, f"protocol: {config} (--config)"
    import jax

    if jax.default_backend() == "gpu":
        return "gpu", (f"protocol: gpu (configs/gpu.toml), because JAX sees a GPU ({jax.devices()[0].device_kind}): "
                       "480 atoms, 4 temperatures, 125 ps; about 17 min on one H100")
    return "cpu", (f"protocol: cpu (configs/cpu.toml), because JAX sees no GPU (backend {jax.default_backend()}): "
                   "30 atoms, 300 and 800 K, 3 ps, about 2 min on 2 cores. It checks the density and runs the "
                   "pipeline; D cannot converge in 1 ps (on a GPU the same command runs the gpu protocol)")


def cmd_study(args) -> int:
    from lycb_jax.cli.predict import read_structure_or_exit
    from lycb_jax.io.structures import default_structure
    from lycb_jax.workflows.study import study

    args.config, why = choose_protocol(args.config)
    print(why)
    structure = (read_structure_or_exit(args.structure) if args.structure
                 else default_structure(large=args.config == "gpu"))
    protocol = protocol_from_args(args)
    summary = _or_exit(lambda: study(_model(args), structure, protocol, out=args.out, resume=args.resume,
                                     species=args.species, max_replicas=args.max_replicas))
    if summary is None:
        return _report_elsewhere(args.out)
    from lycb_jax.cli.analyze import print_summary

    print(summary["feasibility"])
    print_volumes(summary, structure, Path(args.out) / "md" / "trajectory.h5", protocol=protocol)
    print_summary(summary)  # per T: D or NOT CONVERGED with the reason; Ea and sigma(300 K) or the refusal
    print(f"report written to {args.out}/ (transport.json, transport.csv, msd.png, arrhenius.png, thermo.png)")
    return 0


def print_volumes(summary: dict, structure, trajectory, *, protocol) -> None:
    """One line per temperature: the production volume (the NpT average cell; A^3/atom), the standard
    deviation of the NpT volume over the averaging window (a spread, not an error of the mean), and, for
    a composition with a shipped experimental structure, the difference to experiment."""
    import numpy as np

    from lycb_jax.io.structures import experimental_volume, to_system
    from lycb_jax.md.trajectory import read_trajectory

    if protocol.npt_ps <= 0:
        return
    system = to_system(structure)
    reference = experimental_volume(system.numbers)
    n = max(2, int(round(protocol.npt_average_ps * 1000 / protocol.save_every_fs)))
    with read_trajectory(trajectory) as f:
        spread = np.std(np.asarray(f["npt"]["volume"][:, -n:], np.float64), axis=1) / len(system.numbers)
    for r, s in zip(summary["per_temperature"], spread):
        v = r["volume_A3"] / len(system.numbers)
        versus = f", {100 * (v / reference[0] - 1):+.1f}% vs experiment {reference[0]:.2f} ({reference[1]})" if reference else ""
        print(f"T = {r['T']:g} K: NpT volume {v:.2f} A^3/atom (fluctuation +- {100 * s / v:.1f}%{versus})")


def cmd_sweep(args) -> int:
    from lycb_jax.cli.predict import read_structure_or_exit
    from lycb_jax.workflows.study import sweep

    structures = {Path(p).stem: read_structure_or_exit(p) for p in args.structures}
    if len(structures) != len(args.structures):
        raise SystemExit("error: structure files need distinct names")
    protocol = protocol_from_args(args)
    rows = _or_exit(lambda: sweep(_model(args), structures, protocol, out=args.out, resume=args.resume,
                                  species=args.species, max_replicas=args.max_replicas))
    if rows is None:
        return _report_elsewhere(args.out)
    for r in rows:
        print(r)
    print(f"table written to {args.out}/sweep.csv")
    return 0
