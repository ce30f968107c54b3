"""`lycb-jax sensitivity`: layer-group and strain sensitivities of one stored MD run
(:func:`lycb_jax.sensitivity.study.sensitivity_study`). The argument is a trajectory.h5 of `md`/`study`/
`sweep`, or a TOML file whose keys are this command's options (trajectory = "...", stage = "npt", ...)."""

from __future__ import annotations

import json
from pathlib import Path

OPTIONS = {"model": str, "stage": str, "replica": int, "every": int, "species": str, "msd_window_fs": float,
           "n_windows": int, "out": str, "trajectory": str}


def add_cli(subparsers) -> None:
    from lycb_jax.cli import add_dispersion_argument, add_model_argument

    p = subparsers.add_parser("sensitivity", help="which layer groups the volume, pressure, energy and short-time "
                                                  "Li MSD depend on; d ln MSD / d strain", description=__doc__)
    p.add_argument("source", metavar="TRAJ_OR_CONFIG", help="trajectory.h5, or a .toml config")
    add_model_argument(p, "checkpoint the trajectory was run with (reweighting needs the same one; default: the "
                          "one the trajectory records)")
    add_dispersion_argument(p)
    p.add_argument("--stage", default=None, help="stage (default production; npt adds <V> and the NpT responses)")
    p.add_argument("--replica", type=int, default=None, help="replica (temperature) index, default 0")
    p.add_argument("--every", type=int, default=None, help="reweight every n-th stored frame (default 10)")
    p.add_argument("--species", default=None, help="mobile species of the MSD (default Li)")
    p.add_argument("--msd-window-fs", type=float, default=None, help="MSD window, fs (default 500; > ~1000 is chaotic)")
    p.add_argument("--n-windows", type=int, default=None, help="MSD windows averaged (default 4)")
    p.add_argument("--out", default=None, help="folder for sensitivity.json (default: the trajectory's)")
    p.set_defaults(func=cmd_sensitivity, model=None)  # None: the config's model, else the trajectory's


def resolve(args) -> dict:
    """The options: defaults, then the TOML config (if the source is one), then flags given."""
    opts = {"model": None, "stage": "production", "replica": 0, "every": 10, "species": "Li",
            "msd_window_fs": 500.0, "n_windows": 4, "out": None, "trajectory": args.source}
    if args.source.endswith(".toml"):
        import tomllib

        path = Path(args.source)
        if not path.exists():
            raise SystemExit(f"error: {path}: no such file")
        cfg = tomllib.loads(path.read_text())
        unknown = set(cfg) - set(OPTIONS)
        if unknown:
            raise SystemExit(f"error: {path}: unknown keys {sorted(unknown)}; known: {sorted(OPTIONS)}")
        if "trajectory" not in cfg:
            raise SystemExit(f"error: {path}: needs trajectory = \"path/to/trajectory.h5\"")
        cfg["trajectory"] = str((path.parent / cfg["trajectory"]).resolve())
        opts.update({k: OPTIONS[k](v) for k, v in cfg.items()})
    for k in OPTIONS:
        v = getattr(args, k, None)
        if v is not None and k != "trajectory":
            opts[k] = v
    return opts


def recorded_model(traj: Path, model: str | None, dispersion: str | None) -> tuple[str, str | None]:
    """(checkpoint, dispersion) to reweight ``traj`` with: the ones given, else those the trajectory records
    (``model_name``, ``model_dispersion``; files written before that: chgnet-0.3.0 without dispersion).
    SystemExit when the given ones differ from the recorded ones (reweighting with another model is wrong)."""
    from lycb_jax.md.trajectory import read_trajectory

    with read_trajectory(traj) as f:
        name = f.attrs.get("model_name")
        disp = json.loads(f.attrs["model_dispersion"]) if "model_dispersion" in f.attrs else None
    if name is None:
        return model or "chgnet-0.3.0", dispersion
    base = str(name).split("+")[0]
    rec_disp = f"{disp['method'].lower()}{disp['damping']}:{disp['functional']}" if disp else None
    given_disp = None if dispersion is None else (dispersion if ":" in dispersion else dispersion + ":pbe").lower()
    if (model is not None and Path(model).name != base) or (dispersion is not None and given_disp != rec_disp):
        raise SystemExit(f"error: {traj} was run with {name} (dispersion {rec_disp}); reweighting needs the same model: "
                         "leave out --model/--dispersion to use it")
    return model or base, rec_disp


def cmd_sensitivity(args) -> int:
    opts = resolve(args)
    traj = Path(opts["trajectory"])
    if not traj.exists():
        raise SystemExit(f"error: {traj}: no such file")
    from lycb_jax.models import load_model
    from lycb_jax.sensitivity.study import sensitivity_study

    model = load_model(*recorded_model(traj, opts["model"], getattr(args, "dispersion", None)))
    res = sensitivity_study(model, traj, opts["stage"], replica=opts["replica"], every=opts["every"],
                            species=opts["species"], msd_window_fs=opts["msd_window_fs"], n_windows=opts["n_windows"])
    out = Path(opts["out"]) if opts["out"] else traj.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text(json.dumps(res, indent=1))
    print(format_table(res))
    print(f"wrote {out / 'sensitivity.json'}")
    return 0


def format_table(res: dict) -> str:
    """Per layer group: dA/ds (A per relative change of the group) for each static observable and the MSD."""
    static, dyn = res["static"], res["dynamics"]
    cols = list(static) + ["msd_A2"]
    lines = [f"{res['trajectory']} [{res['stage']}, replica {res['replica']}, {res['temperature_K']:g} K], "
             f"model {res['model']}: d<A>/ds for every parameter of a group scaled by (1 + s)",
             f"{'group':24s}" + "".join(f"{c:>30s}" for c in cols)]
    for g in dyn["d_ds"]:
        row = [static[c]["d_ds"][g] for c in static] + [dyn["d_ds"][g][0]]
        lines.append(f"{g:24s}" + "".join(f"{v:30.4g}" for v in row))
    lines.append(f"{'value':24s}" + "".join(f"{static[c]['value']:30.4g}" for c in static) + f"{dyn['msd_A2']:30.4g}")
    lines.append(f"MSD after {dyn['window_fs']:g} fs: {dyn['msd_A2']:.3g} +- {dyn['msd_err_A2']:.2g} A^2 "
                 f"({dyn['n_windows']} windows); d ln MSD / d strain: " +
                 ", ".join(f"{k} {v[0]:.3g} +- {v[1]:.2g}" for k, v in dyn["dlnmsd_dstrain"].items()))
    lines.append("fluctuations: " + json.dumps(res["fluctuations"]))
    return "\n".join(lines)
