"""Fine-tuning side by side: lycb_jax.finetune vs chgnet's own ``chgnet.trainer.Trainer``.

Same data, same split (``Dataset.split`` with the seed), same frozen layers (CHGNet's
fine-tuning notebook), same epochs, batch size, learning rate, loss (MSE, weights 1/1/0.1),
optimiser (Adam) and cosine schedule; both start from CHGNet 0.3.0 with the same composition
model (refit on the training split unless --no-refit). Both report the final-epoch model.
Held-out (test split) MAEs of both are computed by the same code (the trained torch weights
are converted to Flax and evaluated with :func:`lycb_jax.finetune.evaluate`).

Sizes:
  --size small  tests/data/lycb_gpaw.extxyz (64 GPAW-PBE 10-atom Li3YCl6-xBrx cells)
  --size gpu    300 supercells of 60-200 atoms (rattled/strained Li3YCl6-xBrx), labels from
                CHGNet's r2scan model (a different reference than 0.3.0), cached in runs/

  python benchmarks/bench_finetune.py --size small --epochs 10
  python benchmarks/bench_finetune.py --size gpu --epochs 5 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_FROZEN_TORCH = ["atom_embedding", "bond_embedding", "angle_embedding", "bond_basis_expansion",
                         "angle_basis_expansion", "atom_conv_layers[:-1]", "bond_conv_layers", "angle_layers"]


def gpu_scale_data(n: int, seed: int = 0, device: str = "cpu") -> Path:
    """n supercells of 60-200 atoms labelled with CHGNet r2scan; cached extxyz under runs/."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    path = ROOT / "runs" / f"bench_finetune_r2scan_{n}_{seed}.extxyz"
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from make_lycb_gpaw import sample
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    rng = np.random.default_rng(seed)
    reps = [r for r in ((a, b, c) for a in range(1, 5) for b in range(1, 5) for c in range(1, 5))
            if 60 <= 10 * np.prod(r) <= 200]
    ref = CHGNet.load(model_name="r2scan", use_device=device, verbose=False)
    images = []
    for k in range(n):
        atoms = sample(1000 + k).repeat(reps[rng.integers(len(reps))])
        atoms.rattle(0.05, seed=k)
        p = ref.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="efs")
        n_at = len(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=float(p["e"]) * n_at, forces=p["f"],
                                           stress=np.asarray(p["s"]) / 160.21766208)  # GPa, ASE sign -> eV/A^3
        images.append(atoms)
    path.parent.mkdir(exist_ok=True)
    ase.io.write(path, images, format="extxyz")
    return path


def run_chgnet_trainer(train, val, atom_ref, args) -> tuple[dict, float]:
    """Train with chgnet.trainer.Trainer; returns (state_dict as numpy, wall seconds)."""
    import torch
    from chgnet.data.dataset import StructureData, get_loader
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from pymatgen.core import Lattice, Structure

    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)

    def structure_data(ds):
        structs = [Structure(Lattice(s.cell), [int(z) for z in s.numbers], s.positions, coords_are_cartesian=True)
                   for s in ds.systems]
        n = np.array([len(s) for s in ds.systems])
        # CHGNet labels: energy eV/atom, forces eV/A, stress VASP kBar (it multiplies by -0.1 to GPa)
        return StructureData(structs, list(ds.energy / n), [f for f in ds.forces],
                             stresses=[-10.0 * s for s in ds.stress])

    model = CHGNet.load(model_name="0.3.0", use_device=args.device, verbose=False)
    with torch.no_grad():
        model.composition_model.fc.weight.copy_(torch.tensor(np.asarray(atom_ref), dtype=torch.float32)[None])
    for layer in [model.atom_embedding, model.bond_embedding, model.angle_embedding, model.bond_basis_expansion,
                  model.angle_basis_expansion, *model.atom_conv_layers[:-1], model.bond_conv_layers,
                  model.angle_layers]:
        for p in layer.parameters():
            p.requires_grad = False
    trainer = Trainer(model=model, targets="efs", optimizer="Adam", scheduler="CosLR", criterion="MSE",
                      epochs=args.epochs, learning_rate=args.lr, use_device=args.device, print_freq=10**6,
                      torch_seed=args.seed)
    train_loader = get_loader(structure_data(train), batch_size=args.batch_size, num_workers=0, pin_memory=False)
    val_loader = get_loader(structure_data(val), batch_size=args.batch_size, num_workers=0, pin_memory=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer.train(train_loader, val_loader, save_dir=tmp, train_composition_model=False)
        wall = time.perf_counter() - t0
    return {k: v.detach().cpu().numpy() for k, v in trainer.model.state_dict().items()}, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "gpu"], default="small")
    ap.add_argument("--data", help="labelled file(s) for ase.io (overrides --size)", nargs="*")
    ap.add_argument("--n", type=int, default=300, help="structures for --size gpu")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--no-refit", action="store_true", help="keep CHGNet's AtomRef instead of refitting it")
    ap.add_argument("--device", default="cpu", help="torch device for chgnet (cpu/cuda)")
    ap.add_argument("--torch-threads", type=int, help="torch CPU threads (default: all cores)")
    ap.add_argument("--skip-chgnet", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_finetune.json"))
    args = ap.parse_args()

    import jax

    import lycb_jax
    from lycb_jax.checkpoint import params_from_torch_state_dict
    from lycb_jax.finetune import FinetuneConfig, evaluate, finetune, read_dataset, refit_composition
    from lycb_jax.model import Model

    data = args.data or ([str(ROOT / "tests" / "data" / "lycb_gpaw.extxyz")] if args.size == "small"
                         else [str(gpu_scale_data(args.n, args.seed, args.device))])
    ds = read_dataset(data)
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         refit_composition=not args.no_refit, restore_best=False, evaluate_initial=False)
    train, val, test, _ = ds.split(cfg.val_fraction, cfg.test_fraction, cfg.seed)
    sizes = [len(s) for s in ds.systems]
    print(f"{len(ds)} structures ({min(sizes)}-{max(sizes)} atoms), split {len(train)}/{len(val)}/{len(test)}, "
          f"epochs {args.epochs}, batch {args.batch_size}, lr {args.lr}, jax {jax.devices()[0].platform}")

    parent = lycb_jax.load_model(cfg.parent)
    refit = parent if args.no_refit else refit_composition(parent, train)[0]
    res = {"config": dataclasses.asdict(cfg), "n": len(ds), "atoms": [min(sizes), max(sizes)],
           "jax_device": str(jax.devices()[0]), "torch_device": args.device,
           "test_parent": evaluate(parent, test, cfg)}
    if not args.no_refit:
        res["test_refit_only"] = evaluate(refit, test, cfg)

    t0 = time.perf_counter()
    ours = finetune(ds, cfg, out=False, verbose=True)
    res["lycb_jax"] = {"wall_s": time.perf_counter() - t0, "test": ours.test_metrics,
                       "epoch_times_s": [h["time_s"] for h in ours.history[1:]]}

    if not args.skip_chgnet:
        state, wall = run_chgnet_trainer(train, val, refit.params["atom_ref"], args)
        torch_model = Model(parent.module, params_from_torch_state_dict(state), "chgnet-trainer")
        res["chgnet_trainer"] = {"wall_s": wall, "test": evaluate(torch_model, test, cfg)}

    keys = [("energy_mae_meV/atom", "E MAE meV/atom"), ("force_mae_meV/A", "F MAE meV/A"),
            ("stress_mae_GPa", "S MAE GPa")]
    rows = [("parent CHGNet 0.3.0", res["test_parent"], None)]
    if "test_refit_only" in res:
        rows.append(("parent + AtomRef refit", res["test_refit_only"], None))
    rows.append(("lycb_jax.finetune", res["lycb_jax"]["test"], res["lycb_jax"]["wall_s"]))
    if "chgnet_trainer" in res:
        rows.append(("chgnet Trainer", res["chgnet_trainer"]["test"], res["chgnet_trainer"]["wall_s"]))
    print(f"\n{'test split':26s}" + "".join(f"{h:>16s}" for _, h in keys) + f"{'wall s':>10s}")
    for name, m, wall in rows:
        print(f"{name:26s}" + "".join(f"{m.get(k, float('nan')):16.4g}" for k, _ in keys)
              + (f"{wall:10.1f}" if wall is not None else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
