"""The `lycb-jax` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _read_structures(paths):
    """Read every frame of every file with ASE (any format it reads), else pymatgen."""
    from ase.io import read

    out = []
    for path in paths:
        try:
            frames = read(path, index=":")
        except Exception as ase_error:  # fall back to pymatgen's readers (POSCAR variants, CIF quirks)
            try:
                from pymatgen.core import Structure

                frames = [Structure.from_file(path)]
            except Exception as pmg_error:
                raise SystemExit(f"cannot read structure file {path!r}: ASE: {ase_error}; pymatgen: {pmg_error}")
        out += [(f"{path}@{k}" if len(frames) > 1 else path, f) for k, f in enumerate(frames)]
    return out


def read_structure(path):
    """The last frame of a structure file."""
    return _read_structures([path])[-1][1]


def cmd_predict(args) -> int:
    import numpy as np

    import lycb_jax

    named = _read_structures(args.files)
    model = lycb_jax.load_model(args.model)
    try:
        preds = lycb_jax.predict(model, [s for _, s in named])
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    records = [{"file": name, "n_atoms": len(p.forces), "energy_eV": p.energy, "energy_per_atom_eV": p.energy_per_atom,
                "forces_eV_per_A": np.round(p.forces, 6).tolist(), "stress_GPa": np.round(p.stress, 6).tolist(),
                "magmoms_muB": np.round(p.magmoms, 5).tolist()} for (name, _), p in zip(named, preds)]
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(records, fh, indent=1)
    for r in records:
        s = np.asarray(r["stress_GPa"])
        fmax = np.linalg.norm(np.asarray(r["forces_eV_per_A"]), axis=1).max()
        print(f"{r['file']}: {r['n_atoms']} atoms  E = {r['energy_eV']:.6f} eV ({r['energy_per_atom_eV']:.6f} eV/atom)  "
              f"max|F| = {fmax:.4f} eV/A  pressure = {-np.trace(s) / 3:.4f} GPa")
    return 0


def cmd_convert(args) -> int:
    from lycb_jax.checkpoint import convert_pretrained

    print(convert_pretrained(args.name, args.out))
    return 0


SUBCOMMAND_MODULES = ("lycb_jax.md", "lycb_jax.study", "lycb_jax.structures", "lycb_jax.finetune")  # each defines add_cli(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lycb-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="energies, forces, stresses of structure files")
    p.add_argument("files", nargs="+", help="structure files (any format ASE or pymatgen reads; all frames)")
    p.add_argument("--model", default="chgnet-0.3.0", help="checkpoint name or folder")
    p.add_argument("-o", "--output", help="write JSON with energies, forces, stresses, magmoms")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("convert", help="convert the PyTorch CHGNet weights of the installed `chgnet` package")
    p.add_argument("--name", default="chgnet-0.3.0")
    p.add_argument("--out", help="output folder (default: checkpoints/NAME)")
    p.set_defaults(func=cmd_convert)
    import importlib

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    return parser


MULTI_PROCESS_COMMANDS = ("md", "study", "sweep")  # options --coordinator, --num-processes, --process-id


def _join_processes(argv) -> None:
    """md / study / sweep: join a multi-process run if asked (lycb_jax.distributed.initialize). It
    must come before the subcommands are imported: importing jax_md already starts JAX."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in MULTI_PROCESS_COMMANDS or {"-h", "--help"} & set(argv):
        return
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--coordinator")
    pre.add_argument("--num-processes", type=int)
    pre.add_argument("--process-id", type=int)
    known, _ = pre.parse_known_args(argv[1:])
    from lycb_jax import distributed

    try:
        distributed.initialize(known.coordinator, known.num_processes, known.process_id)
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def main(argv=None) -> int:
    _join_processes(argv)
    args = build_parser().parse_args(argv)
    if os.environ.get("LYCB_JAX_CACHE", "").lower() != "off":
        from lycb_jax import enable_compilation_cache

        enable_compilation_cache()
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
