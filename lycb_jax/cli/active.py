"""`lycb-jax active-learn`: the paper's iterative fine-tuning (MD at T, farthest-point sampling, DFT labels,
fine-tuning, T += dT)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from lycb_jax.cli import add_dispersion_argument, add_model_argument


def _labeller(args):
    from lycb_jax.active import ASELabeller, gpaw_labeller, vasp_labeller

    if args.labeller == "gpaw":
        return gpaw_labeller(ecut_eV=args.ecut, kpoint_density=args.kpoint_density, smearing_eV=args.smearing)
    if args.labeller == "vasp":
        return vasp_labeller(**json.loads(args.vasp or "{}"))
    module, _, name = args.labeller.partition(":")  # any ASE calculator class or factory: "package.module:Name"
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise SystemExit(f"error: --labeller {args.labeller!r}: use gpaw, vasp or module:Calculator ({err})")
    return ASELabeller(lambda atoms: factory(), {"code": args.labeller})


def _md_settings(md, source: str):
    """The sampling MD from the ``[md]`` table of an active-learn config (fields of lycb_jax.md.Protocol);
    InputError for a value that is no table, an unknown key, the temperatures (the loop sets them) or
    settings that Protocol.validate refuses."""
    from lycb_jax.active.loop import sampling_protocol
    from lycb_jax.io.config import check_settings
    from lycb_jax.io.errors import InputError
    from lycb_jax.md.protocol import Protocol

    if not isinstance(md, dict):
        raise InputError(f"{source}: [md] must be a table of MD settings (lycb_jax.md.Protocol), got {md!r}")
    check_settings(md, Protocol, f"{source}: [md]")
    if "temperatures_K" in md:
        raise InputError(f"{source}: [md] temperatures_K is set by the loop: use t_start_K, t_max_K and dt_K")
    protocol = sampling_protocol(**md)
    try:
        protocol.validate()
    except ValueError as err:
        raise InputError(f"{source}: [md] {err}") from None
    return protocol


def cmd_active_learn(args) -> int:
    from lycb_jax.active import ActiveLearningConfig, active_learn
    from lycb_jax.cli.predict import read_structure_or_exit

    from lycb_jax.io.config import check_settings, settings_from
    from lycb_jax.train.config import FinetuneConfig

    parents = {Path(p).stem: read_structure_or_exit(p) for p in args.structures}
    fields = settings_from(args.config, ActiveLearningConfig, t_start_K=args.t_start, t_max_K=args.t_max,
                           dt_K=args.dt, per_iteration=args.per_iteration)  # InputError: keys, types, units
    check_settings(fields.get("finetune", {}), FinetuneConfig, f"{args.config}: [finetune]")
    fields["md"] = _md_settings(fields.get("md", {}), str(args.config))
    try:
        cfg = ActiveLearningConfig(**fields)
        records = active_learn(parents, _labeller(args), args.out, config=cfg, model=args.model, workers=args.workers,
                               resume=args.resume, dispersion=args.dispersion)
    except (TypeError, ValueError, FileExistsError) as err:
        raise SystemExit(f"error: {err}")
    for r in records:
        m = r.get("test_metrics") or {}
        mae = {k: m.get(key) for k, key in (("E", "energy_mae_meV/atom"), ("F", "force_mae_meV/A"),
                                             ("S", "stress_mae_GPa"))}
        print(f"T = {r['temperature_K']:.0f} K: {r['n_structures']} structures, test MAE E {mae['E']} meV/atom, "
              f"F {mae['F']} meV/A, S {mae['S']} GPa -> {r['model']}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("active-learn", help="iterative fine-tuning: MD at T, FPS, DFT labels, fine-tune, T += dT")
    p.add_argument("structures", nargs="+", help="parent structures (e.g. ordered LYC and LYB models)")
    add_model_argument(p, "starting checkpoint name or folder")
    add_dispersion_argument(p, "in the sampling MD only: the labels and the fine-tuning stay DFT alone")
    p.add_argument("--out", default="active_out", help="output folder (iterations, labels.db, models)")
    p.add_argument("--t-start", type=float, help="first temperature, K (default 200)")
    p.add_argument("--t-max", type=float, help="last temperature, K (default 800)")
    p.add_argument("--dt", type=float, help="temperature step, K (default 200)")
    p.add_argument("--per-iteration", type=int, help="structures labelled per iteration, split over the parents (40)")
    p.add_argument("--config", help="JSON, TOML or YAML file with ActiveLearningConfig fields: the sampling MD in "
                   "an [md] table (lycb_jax.md.Protocol fields), fine-tuning overrides in [finetune]")
    p.add_argument("--labeller", default="gpaw", help="gpaw, vasp, or module:Calculator (any ASE calculator)")
    p.add_argument("--ecut", type=float, default=400.0, help="GPAW plane-wave cutoff, eV")
    p.add_argument("--kpoint-density", type=float, default=1.5, help="GPAW k-points per 2 pi / A")
    p.add_argument("--smearing", type=float, default=0.05, help="GPAW Fermi-Dirac width, eV")
    p.add_argument("--vasp", help="JSON of ASE Vasp keywords (needs VASP installed)")
    p.add_argument("--workers", type=int, default=1, help="labelling processes in parallel")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=cmd_active_learn)
