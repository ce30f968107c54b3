"""Fine-tuning side by side: lycb_jax.train vs chgnet's own ``chgnet.trainer.Trainer``.

Same data, same split (``Dataset.split`` with the seed), same frozen layers (CHGNet's
fine-tuning notebook), same epochs, batch size, learning rate, loss (MSE, weights 1/1/0.1),
optimiser (Adam) and cosine schedule; both start from CHGNet 0.3.0 with the same composition
model (refit on the training split unless --no-refit). Both report the final-epoch model.
Held-out (test split) MAEs of both are computed by the same code (the trained torch weights
are converted to Flax and evaluated with :func:`lycb_jax.train.evaluate`).

Timing (seconds per epoch = one pass over the training split + the validation pass):
  lycb_jax: the jit compilation (one train + one eval program per atom-count bucket, compiled
            side by side before epoch 1) is ``compile_s`` (plus whatever epoch 1 takes beyond the
            median); ``s_per_epoch`` is the median of epochs 2..E, ``s_per_epoch_incl_compile`` =
            (compilation + all E epochs) / E.
  chgnet:   epoch 1 includes building the crystal graphs (StructureData caches them);
            ``s_per_epoch`` is the median of epochs 2..E, ``s_per_epoch_incl_first`` = wall / E.
  ``speedup`` = chgnet s_per_epoch / lycb_jax s_per_epoch; ``speedup_incl_compile`` uses the
  whole training walls (lycb_jax with its compilation, chgnet with its graph building);
  ``speedup_end_to_end`` = chgnet (model load, StructureData, training) / lycb_jax (the whole
  ``finetune()`` call: model load, packing, compilation, refit, training, test evaluation).

Sizes:
  --size small  tests/data/lycb_gpaw.extxyz (64 GPAW-PBE 10-atom Li3YCl6-xBrx cells)
  --size gpu    300 supercells of 60-180 atoms (rattled/strained Li3YCl6-xBrx), labels from
                CHGNet's r2scan model (a different reference than 0.3.0), generated once
                (about 60 s on 2 CPU cores) and cached in runs/bench_finetune_r2scan_300_0.extxyz
                (3.6 MB); with that file present (or given with --data) no label work is done.

  python benchmarks/bench_finetune.py --size small --epochs 10
  python benchmarks/bench_finetune.py --size gpu --epochs 5 --device cuda
  python benchmarks/bench_finetune.py --size gpu --n-structures 12 --epochs 2   # quick check

The result JSON goes to benchmarks/results/bench_finetune_<size>_<device>.json (and a copy to
$OUT when that variable is set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

T_START = time.perf_counter()  # script start, for --budget-s
ROOT = Path(__file__).resolve().parents[1]
N_GPU_SET = 300  # structures in the --size gpu file
WRAP_UP_S = 30.0  # s kept for the work after the chgnet Trainer (its test evaluation, output)


def gpu_scale_data(n: int = N_GPU_SET, seed: int = 0, device: str = "cpu") -> Path:
    """n supercells of 60-180 atoms labelled with CHGNet r2scan; cached extxyz under runs/.

    Labels in ASE conventions: total energy eV, forces eV/A, stress eV/A^3 (positive = tensile).
    Returns the cached file at once when it exists (no torch, no CHGNet)."""
    path = ROOT / "runs" / f"bench_finetune_r2scan_{n}_{seed}.extxyz"
    if path.exists():
        return path
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from chgnet.model import CHGNet
    from make_lycb_gpaw import sample
    from pymatgen.io.ase import AseAtomsAdaptor

    print(f"labelling {n} structures with CHGNet r2scan on {device} -> {path}", flush=True)
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


def steady(epoch_s: list[float]) -> float:
    """Median seconds per epoch after the first (the first alone if there is only one)."""
    return float(np.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s))


def device_slug(name: str) -> str:
    """Short device name for file names: 'NVIDIA H100 80GB HBM3' -> 'h100', 'cpu' -> 'cpu'."""
    m = re.search(r"\b([a-z]{1,2}\d{2,4})\b", name.lower())
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


class _TimeCap(Exception):
    """Raised from the Trainer's validation hook when another epoch would overrun ``--budget-s``."""


def run_chgnet_trainer(train, val, atom_ref, args) -> tuple[dict, dict]:
    """Train with chgnet.trainer.Trainer for ``args.chgnet_epochs`` epochs, or fewer: with
    ``args.budget_s`` it stops after a whole epoch when one more epoch (as long as the last one)
    would end later than ``WRAP_UP_S`` seconds before the budget (seconds since the script started).

    Returns (state_dict as numpy, timing: wall_s and epoch_s, seconds per epoch incl. validation,
    end_to_end_s from loading the model to the end of training)."""
    t_start = time.perf_counter()
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
                      epochs=args.chgnet_epochs, learning_rate=args.lr, use_device=args.device,
                      print_freq=10**6, torch_seed=args.seed)
    train_loader = get_loader(structure_data(train), batch_size=args.batch_size, num_workers=0, pin_memory=False)
    val_loader = get_loader(structure_data(val), batch_size=args.batch_size, num_workers=0, pin_memory=False)
    stamps = []  # time at the end of each epoch's validation pass (its .item() calls synchronise)
    validate = trainer._validate

    def timed_validate(*a, **k):
        out = validate(*a, **k)
        stamps.append(time.perf_counter())
        last = stamps[-1] - (stamps[-2] if len(stamps) > 1 else t0)
        if (args.budget_s and len(stamps) < args.chgnet_epochs
                and stamps[-1] + last - T_START > args.budget_s - WRAP_UP_S):
            raise _TimeCap
        return out

    trainer._validate = timed_validate
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            trainer.train(train_loader, val_loader, save_dir=tmp, train_composition_model=False)
        except _TimeCap:
            print(f"chgnet Trainer stopped after {len(stamps)} epochs: one more would overrun --budget-s")
        wall = stamps[-1] - t0
    epoch_s = list(np.diff([t0, *stamps]))
    state = {k: v.detach().cpu().numpy() for k, v in trainer.model.state_dict().items()}
    return state, {"wall_s": wall, "epoch_s": epoch_s, "steps_per_epoch": len(train_loader),
                   "end_to_end_s": stamps[-1] - t_start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "gpu"], default="small")
    ap.add_argument("--data", help="labelled file(s) for ase.io (overrides --size)", nargs="*")
    ap.add_argument("--n-structures", "--n", type=int, help="use only the first N structures of the data")
    ap.add_argument("--epochs", type=int, default=10, help="epochs for both sides")
    ap.add_argument("--chgnet-epochs", type=int,
                    help="cap the chgnet Trainer at fewer epochs (timing only: its MAEs are then not comparable)")
    ap.add_argument("--budget-s", type=float,
                    help="wall seconds for the whole script: the chgnet Trainer (run last) stops after a whole "
                         "epoch when the next one would overrun it (its MAEs are then not comparable)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-buckets", type=int, help="padded atom counts (default 1 on GPU, 3 on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--no-refit", action="store_true", help="keep CHGNet's AtomRef instead of refitting it")
    ap.add_argument("--device", default="cpu", help="torch device for chgnet (cpu/cuda)")
    ap.add_argument("--torch-threads", type=int, help="torch CPU threads (default: all cores)")
    ap.add_argument("--skip-chgnet", action="store_true")
    ap.add_argument("--cache-dir", help="JAX persistent compilation cache folder (lycb_jax.enable_compilation_cache); "
                                        "a second run with the same folder loads the programs instead of compiling")
    ap.add_argument("--out", help="result JSON (default benchmarks/results/bench_finetune_<size>_<device>.json)")
    args = ap.parse_args()
    args.chgnet_epochs = args.chgnet_epochs or args.epochs
    if args.device.startswith("cuda"):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch too

    import jax

    import lycb_jax

    if args.cache_dir:
        lycb_jax.enable_compilation_cache(args.cache_dir)
    from lycb_jax.models.convert_chgnet import params_from_torch_state_dict
    from lycb_jax.train import (
        FinetuneConfig,
        bucket_limit,
        choose_buckets,
        evaluate,
        finetune,
        read_dataset,
    )
    from lycb_jax.models import Model

    data = args.data or ([str(ROOT / "tests" / "data" / "lycb_gpaw.extxyz")] if args.size == "small"
                         else [str(gpu_scale_data(N_GPU_SET, args.seed, args.device))])
    ds = read_dataset(data)
    if args.n_structures:
        if args.n_structures > len(ds):
            raise SystemExit(f"--n-structures {args.n_structures}: the data has only {len(ds)}")
        ds = ds.subset(range(args.n_structures))
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         refit_composition=not args.no_refit, restore_best=False, evaluate_initial=False,
                         max_buckets=args.max_buckets)
    train, val, test, _ = ds.split(cfg.val_fraction, cfg.test_fraction, cfg.seed)
    sizes = [len(s) for s in ds.systems]
    dev = jax.devices()[0]
    print(f"{len(ds)} structures ({min(sizes)}-{max(sizes)} atoms), split {len(train)}/{len(val)}/{len(test)}, "
          f"epochs {args.epochs} (chgnet {args.chgnet_epochs}), batch {args.batch_size}, lr {args.lr}, "
          f"jax {dev.device_kind}, torch {args.device}", flush=True)
    res = {"config": dataclasses.asdict(cfg), "data": [os.path.relpath(d, ROOT) for d in data],
           "dataset_sha256": ds.sha256(), "n": len(ds), "atoms": [min(sizes), max(sizes)],
           "split": [len(train), len(val), len(test)], "jax_device": f"{dev.platform}: {dev.device_kind}",
           "torch_device": args.device, "jax_matmul_precision": jax.config.jax_default_matmul_precision}

    name = f"bench_finetune_{args.size if not args.data else 'data'}_{device_slug(dev.device_kind)}.json"
    outs = [Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name]
    if os.environ.get("OUT") and outs[0].parent.resolve() != Path(os.environ["OUT"]).resolve():
        outs.append(Path(os.environ["OUT"]) / outs[0].name)

    def save() -> None:  # after each side, so that a run killed later keeps what it has
        for out in outs:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2, default=float) + "\n")
        print(f"wrote {', '.join(map(str, outs))}", flush=True)

    # lycb_jax first, before any other jax work, so that its epoch 1 holds all of its compilation
    t0 = time.perf_counter()
    ours = finetune(ds, cfg, out=False, verbose=True)
    wall = time.perf_counter() - t0
    ends = [h["time_s"] for h in ours.history[1:]]  # s since the first epoch began, at each epoch's end
    epoch_s = list(np.diff([0.0, *ends]))
    buckets = choose_buckets(sizes, bucket_limit(cfg))  # as finetune() pads: one batch stream per bucket
    per_bucket = np.bincount([buckets.index(min(b for b in buckets if b >= len(s))) for s in train.systems])
    compile_s = ours.history[0]["compile_s"]  # all bucket programs, compiled ahead of epoch 1
    res["lycb_jax"] = {"epochs": args.epochs, "s_per_epoch": steady(epoch_s),
                       "steps_per_epoch": int(np.sum(np.ceil(per_bucket / cfg.batch_size))),
                       "compile_s": compile_s + (epoch_s[0] - steady(epoch_s) if len(epoch_s) > 1 else 0.0),
                       "s_per_epoch_incl_compile": (compile_s + ends[-1]) / len(ends), "train_s": ends[-1],
                       "epoch_s": epoch_s,
                       "wall_s": wall, "test": ours.test_metrics}
    parent = lycb_jax.load_model(cfg.parent)
    atom_ref = ours.model.params["atom_ref"]  # the refit composition model (frozen while training)
    res["test_parent"] = evaluate(parent, test, cfg)
    if not args.no_refit:
        res["test_refit_only"] = evaluate(dataclasses.replace(parent, params=dict(parent.params, atom_ref=atom_ref)),
                                          test, cfg)
    save()

    if not args.skip_chgnet:
        import torch

        state, timing = run_chgnet_trainer(train, val, atom_ref, args)
        torch_model = Model(parent.module, params_from_torch_state_dict(state), "chgnet-trainer")
        ep = timing["epoch_s"]
        res["chgnet_trainer"] = {"epochs": len(ep), "s_per_epoch": steady(ep),
                                 "steps_per_epoch": timing["steps_per_epoch"],
                                 "s_per_epoch_incl_first": timing["wall_s"] / len(ep), "train_s": timing["wall_s"],
                                 "epoch_s": ep, "end_to_end_s": timing["end_to_end_s"], "torch": torch.__version__,
                                 "torch_device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                                 else "cpu", "torch_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                                 "test": evaluate(torch_model, test, cfg)}
        if len(ep) != args.epochs:
            res["chgnet_trainer"]["note"] = f"{len(ep)} epochs, lycb_jax {args.epochs}: MAEs not comparable"
        res["speedup"] = res["chgnet_trainer"]["s_per_epoch"] / res["lycb_jax"]["s_per_epoch"]
        res["speedup_incl_compile"] = (res["chgnet_trainer"]["s_per_epoch_incl_first"]
                                       / res["lycb_jax"]["s_per_epoch_incl_compile"])
        res["speedup_end_to_end"] = res["chgnet_trainer"]["end_to_end_s"] / res["lycb_jax"]["wall_s"]

    keys = [("energy_mae_meV/atom", "E MAE meV/atom"), ("force_mae_meV/A", "F MAE meV/A"),
            ("stress_mae_GPa", "S MAE GPa")]
    rows = [("parent CHGNet 0.3.0", res["test_parent"], None)]
    if "test_refit_only" in res:
        rows.append(("parent + AtomRef refit", res["test_refit_only"], None))
    rows.append(("lycb_jax.finetune", res["lycb_jax"]["test"], res["lycb_jax"]))
    if "chgnet_trainer" in res:
        rows.append(("chgnet Trainer", res["chgnet_trainer"]["test"], res["chgnet_trainer"]))
    print(f"\n{'test split':24s}" + "".join(f"{h:>16s}" for _, h in keys) + f"{'s/epoch':>10s}{'incl 1st':>10s}")
    for row_name, m, t in rows:
        first = t and t.get("s_per_epoch_incl_compile", t.get("s_per_epoch_incl_first"))
        print(f"{row_name:24s}" + "".join(f"{m.get(k, float('nan')):16.4g}" for k, _ in keys)
              + (f"{t['s_per_epoch']:10.2f}{first:10.2f}" if t else ""))
    compile_s = res["lycb_jax"]["compile_s"]
    print(f"lycb_jax compile {'n/a (1 epoch)' if compile_s is None else f'{compile_s:.1f} s'}")
    if "speedup" in res:
        print(f"speed-up (chgnet / lycb_jax s/epoch): {res['speedup']:.1f}x steady, "
              f"{res['speedup_incl_compile']:.1f}x with compile / graph building; end to end (model load, data "
              f"preparation, compilation, training) {res['lycb_jax']['wall_s']:.1f} s vs "
              f"{res['chgnet_trainer']['end_to_end_s']:.1f} s: {res['speedup_end_to_end']:.2f}x")
    save()


if __name__ == "__main__":
    main()
