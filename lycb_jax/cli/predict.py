"""`lycb-jax predict` and `lycb-jax convert`."""

from __future__ import annotations

import json

from lycb_jax.cli import add_dispersion_argument, add_model_argument


def read_structures_or_exit(paths) -> list:
    """(name, structure) of every frame of every file; SystemExit naming the file it cannot read."""
    from lycb_jax.io.structures import read_structures

    try:
        return read_structures(paths)
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def read_structure_or_exit(path):
    """The last frame of a structure file; SystemExit naming the file it cannot read."""
    return read_structures_or_exit([path])[-1][1]


def cmd_predict(args) -> int:
    import numpy as np

    import lycb_jax

    named = read_structures_or_exit(args.files)
    model = lycb_jax.load_model(args.model, dispersion=args.dispersion)
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
    print(f"model: {model.name}; stress in GPa, ASE sign (pressure = -trace/3)")
    for r in records:
        s = np.asarray(r["stress_GPa"])
        fmax = np.linalg.norm(np.asarray(r["forces_eV_per_A"]), axis=1).max()
        print(f"{r['file']}: {r['n_atoms']} atoms  E = {r['energy_eV']:.6f} eV ({r['energy_per_atom_eV']:.6f} eV/atom)  "
              f"max|F| = {fmax:.4f} eV/A  pressure = {-np.trace(s) / 3:.4f} GPa")
    return 0


CONVERTERS = {"chgnet-0.3.0": "lycb_jax.models.convert_chgnet", "sevennet-0": "lycb_jax.models.convert_sevennet"}


def cmd_convert(args) -> int:
    import importlib

    print(importlib.import_module(CONVERTERS[args.name]).convert_pretrained(args.name, args.out))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("predict", help="energies, forces, stresses of structure files")
    p.add_argument("files", nargs="+", help="structure files (any format ASE or pymatgen reads; all frames)")
    add_model_argument(p)
    add_dispersion_argument(p)
    p.add_argument("-o", "--output", help="write JSON with energies, forces, stresses, magmoms")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("convert", help="convert the PyTorch weights of the installed `chgnet` (chgnet-0.3.0) or "
                       "`sevenn` (sevennet-0) package")
    p.add_argument("--name", default="chgnet-0.3.0", choices=sorted(CONVERTERS))
    p.add_argument("--out", help="output folder (default: checkpoints/NAME)")
    p.set_defaults(func=cmd_convert)
