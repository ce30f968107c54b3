"""Issue 28, why the lattice expands so much: does the fine-tuned model follow PBE away from the experimental
volume? GPAW PBE single points (the shipped labels' settings: 400 eV, 1.5 k-points per 2 pi/A) of LYC0 (60 atoms)
and LYB0 (40 atoms) scaled isotropically to V/V_exp = 1.00 ... 1.18 and strained along the stacking axis (c of
LYC0, the layer normal of LYB0) by +6 and +12%, against each shipped model with and without D3(BJ).

    python benchmarks/dispersion/strain_check.py [--out benchmarks/results/dispersion] [--labels-only]

Labels are cached in ``<out>/strain_labels.db`` (resumable; about 2 min per LYC0 point on 2 cores). Writes
``<out>/strain_check.json``: per structure and strain, P (GPa, + = the cell wants to expand) and the energy
relative to V_exp (meV/atom) of PBE, of each model, and of D3. Units: GPa, meV/atom, A^3/atom."""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SERIES = ROOT / "benchmarks" / "results" / "lycb_series_cpu"
EXPERIMENT = {"LYC0": 21.93, "LYB0": 26.75}  # A^3/atom, Schlem 2021 (../shared/reference/README.md)
FILES = {"LYC0": SERIES / "LYC0_x0.0.cif", "LYB0": SERIES / "LYB0_x6.0.cif"}
SCALES = (1.00, 1.06, 1.12, 1.18)  # V / V_exp, isotropic
STACKING = (1.06, 1.12)  # length of the stacking axis / its length at V_exp
MODELS = ("chgnet-0.3.0-lycb-pbe", "chgnet-0.3.0", "sevennet-0-lycb-pbe")


def strained(name: str):
    """(label, Atoms) of every strain of one structure; positions follow the cell (fractional kept)."""
    from ase.io import read

    atoms = read(FILES[name])
    atoms.set_cell(atoms.cell * (EXPERIMENT[name] * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    out = []
    for s in SCALES:
        a = atoms.copy()
        a.set_cell(a.cell * s ** (1 / 3), scale_atoms=True)
        out.append((f"iso {s:.2f}", a))
    normal = np.cross(atoms.cell[0], atoms.cell[1])  # the stacking direction: normal to the a-b layers
    normal /= np.linalg.norm(normal)
    for s in STACKING:
        a = atoms.copy()
        stretch = np.eye(3) + (s - 1) * np.outer(normal, normal)  # uniaxial along the layer normal
        a.set_cell(a.cell[:] @ stretch, scale_atoms=True)
        out.append((f"stack {s:.2f}", a))
    return out


def pressure(stress_voigt_eV_A3) -> float:
    """GPa, + = tensile stress (the cell wants to expand), from an ASE Voigt stress in eV/A^3."""
    from ase.units import GPa

    return float(-np.mean(np.asarray(stress_voigt_eV_A3)[:3]) / GPa)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dispersion"))
    ap.add_argument("--labels-only", action="store_true")
    ap.add_argument("--structures", nargs="+", default=list(FILES))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lycb_jax.active.labellers import gpaw_labeller, label_structures

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = [(name, label, atoms) for name in args.structures for label, atoms in strained(name)]
    labelled = label_structures([a for _, _, a in cases], gpaw_labeller(), out / "strain_labels.db", workers=2)
    if args.labels_only:
        return
    import lycb_jax

    rows = [dict(structure=n, strain=l, atoms=len(a), volume_A3_per_atom=a.get_volume() / len(a),
                 pbe_P_GPa=pressure(lab.get_stress()), pbe_energy_eV_per_atom=lab.get_potential_energy() / len(a))
            for (n, l, a), lab in zip(cases, labelled)]
    d3 = lycb_jax.load_model(MODELS[0], dispersion="d3bj")
    base = lycb_jax.load_model(MODELS[0])
    for name in MODELS:
        preds = lycb_jax.predict(lycb_jax.load_model(name), [a for _, _, a in cases])
        for row, p in zip(rows, preds):
            row[f"{name}_P_GPa"] = model_pressure(p.stress)
            row[f"{name}_energy_eV_per_atom"] = p.energy_per_atom
    for row, pd, pb in zip(rows, lycb_jax.predict(d3, [a for _, _, a in cases]),
                           lycb_jax.predict(base, [a for _, _, a in cases])):
        row["d3bj_P_GPa"] = model_pressure(pd.stress) - model_pressure(pb.stress)
        row["d3bj_energy_eV_per_atom"] = pd.energy_per_atom - pb.energy_per_atom
    for name in args.structures:  # energies relative to the experimental volume, meV/atom
        ref = next(r for r in rows if r["structure"] == name and r["strain"] == "iso 1.00")
        for r in rows:
            if r["structure"] == name:
                for k in [k for k in r if k.endswith("energy_eV_per_atom")]:
                    r[k.replace("energy_eV_per_atom", "dE_meV_per_atom")] = 1000 * (r[k] - ref[k])
    result = dict(labeller=labelled[0].info.get("labeller"), experiment_A3_per_atom=EXPERIMENT, rows=rows)
    (out / "strain_check.json").write_text(json.dumps(result, indent=1))
    cols = ["pbe"] + list(MODELS)
    print(f"{'structure':9s} {'strain':10s} {'V':>6s} " + " ".join(f"{c[:14]:>14s}" for c in cols) + "   D3   (P, GPa)")
    for r in rows:
        print(f"{r['structure']:9s} {r['strain']:10s} {r['volume_A3_per_atom']:6.2f} "
              + " ".join(f"{r[f'{c}_P_GPa']:14.3f}" for c in cols) + f" {r['d3bj_P_GPa']:6.3f}")


def model_pressure(stress_GPa) -> float:
    """GPa, + = the cell wants to expand, from a prediction's 3x3 stress (GPa, ASE sign)."""
    return float(-np.trace(np.asarray(stress_GPa)) / 3)


if __name__ == "__main__":
    sys.exit(main())
