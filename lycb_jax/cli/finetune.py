"""`lycb-jax finetune`: fine-tune a model on labelled structures (:func:`lycb_jax.train.finetune`)."""

from __future__ import annotations

import argparse
import dataclasses

from lycb_jax.io.config import check_settings
from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.config import TRAIN_STATE

DESCRIPTION = "Fine-tuning CHGNet on new labelled data (DFT energies, forces, stresses, magmoms) with optax."
TYPES = {"patience": int, "weight_decay": float, "max_buckets": int}  # fields whose default None has no type
CHOICES = {"optimizer": ["adam", "adamw"], "scheduler": ["cos", "constant"], "criterion": ["mse", "huber", "mae"]}


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` subcommand to an argparse ``subparsers`` object (sets ``func``)."""
    p = subparsers.add_parser("finetune", help="fine-tune CHGNet on labelled structures (extxyz, ASE db, VASP)",
                              description=DESCRIPTION)
    p.add_argument("data", nargs="*", help="files readable by ase.io (extxyz, .db, vasprun.xml, OUTCAR)")
    p.add_argument("--config", help="JSON/YAML file with FinetuneConfig fields; flags below override it")
    p.add_argument("--out", help="checkpoint folder (default ./finetune_out/<parent>-ft-<sha>, working directory)")
    p.add_argument("--freeze", help="comma-separated layer groups/aliases to freeze ('' = none)")
    p.add_argument("--list-groups", action="store_true", help="print layer groups, aliases and sizes, then exit")
    p.add_argument("--save-config", help="write the resolved config to this file and exit")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--resume", action="store_true", help=f"continue a killed run from <out>/{TRAIN_STATE}")
    defaults = FinetuneConfig()
    for f in dataclasses.fields(FinetuneConfig):
        if f.name == "freeze":
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        flags = (flag, "--model") if f.name == "parent" else (flag,)  # --model as in every other command
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {default}")
        else:
            p.add_argument(*flags, type=TYPES.get(f.name, type(default)), default=None, choices=CHOICES.get(f.name),
                           help=f"default {default}")
    p.set_defaults(func=cmd_finetune)
    return p


def config_from_args(args) -> FinetuneConfig:
    """``--config`` (or the defaults) with the flags given on the command line applied."""
    cfg = FinetuneConfig.from_file(args.config) if args.config else FinetuneConfig()
    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
            if f.name != "freeze" and getattr(args, f.name, None) is not None}
    if args.freeze is not None:
        over["freeze"] = [s for s in args.freeze.split(",") if s.strip()]
    check_settings(over, FinetuneConfig, "command line")  # InputError naming the flag: signs, ranges
    return dataclasses.replace(cfg, **over)


def list_groups(cfg: FinetuneConfig) -> None:
    """Print the parent model's layer groups (sizes, frozen or not under ``cfg``) and aliases."""
    from lycb_jax.models import load_model
    from lycb_jax.models.groups import group_sizes, resolve_groups

    model = load_model(cfg.parent)
    groups = model.module.layer_groups()
    frozen = set(resolve_groups(cfg.freeze, groups))
    for g, n in group_sizes(model.params, groups).items():
        print(f"{g:24s} {n:8d}  {'frozen' if g in frozen else 'trainable'}")
    for a, gs in groups.aliases.items():
        print(f"alias {a:18s} = {','.join(gs)}")


def cmd_finetune(args) -> int:
    cfg = config_from_args(args)
    if args.list_groups:
        list_groups(cfg)
        return 0
    if args.save_config:
        if cfg.freeze is None:  # the model's default groups by name, not null
            from lycb_jax.models import load_model

            cfg = cfg.with_freeze_resolved(load_model(cfg.parent).module.layer_groups().default_frozen)
        cfg.save(args.save_config)
        return 0
    if not args.data:
        raise SystemExit("error: finetune: no data files given (labelled extxyz, ASE db, vasprun.xml, OUTCAR)")
    from lycb_jax.train import finetune

    finetune(args.data, cfg, out=args.out, verbose=not args.quiet, resume=args.resume)
    return 0
