"""One fine-tuning round on the GPAW PBE labels: held-out split, fine-tune, evaluation on the held-out set.

    python finetune_round.py r0 [--parent chgnet-0.3.0] [--epochs 40] [--lr 1e-3] [--freeze ...]

Reads labelled_*_<round>.extxyz (and earlier rounds' train files given with --extra), holds out every
5th structure of each parent file (FPS order, so spread over the sampled configurations) as the test set
(never trained on: test_<round>.extxyz), trains on the rest (10% of it for validation and early stopping)
and writes the model to ft_<round>/ and the table to ft_<round>/heldout.json.
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

from ase.io import read, write

from lycb_jax.models import load_model
from lycb_jax.train import FinetuneConfig, finetune
from lycb_jax.train.data import as_dataset
from lycb_jax.train.metrics import evaluate
from lycb_jax.train.refit import refit_composition

here = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument("round")
p.add_argument("--parent", default="chgnet-0.3.0")
p.add_argument("--extra", nargs="*", default=[], help="earlier rounds' train_*.extxyz to train on as well")
p.add_argument("--epochs", type=int, default=40)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--stress-weight", type=float, default=0.1)
p.add_argument("--freeze", default=None, help="comma-separated groups; default: the parent's default")
p.add_argument("--patience", type=int, default=10)
p.add_argument("--tag", default="", help="suffix of the output folder ft_<round><tag>")
p.add_argument("--out-dir", default=str(here), help="where ft_<round><tag>/ goes")
args = p.parse_args()

train, test = [], []
for f in sorted(here.glob(f"labelled_*_{args.round}.extxyz")):
    frames = read(f, index=":")
    for i, a in enumerate(frames):
        a.info["source"] = f.name
        (test if i % 5 == 4 else train).append(a)
write(here / f"train_{args.round}.extxyz", train)
write(here / f"test_{args.round}.extxyz", test)
for f in args.extra:
    train += read(here / f, index=":")
print(f"{len(train)} training structures, {len(test)} held out")

cfg = FinetuneConfig(parent=args.parent, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch,
                     stress_weight=args.stress_weight, refit_composition=True, val_fraction=0.1,
                     test_fraction=0.0, patience=args.patience,
                     freeze=None if args.freeze is None else [s for s in args.freeze.split(",") if s])
t0 = time.time()
result = finetune(train, cfg, out=Path(args.out_dir) / f"ft_{args.round}{args.tag}")
train_s = time.time() - t0

test_ds = as_dataset(test)
parent = load_model(args.parent)
rows = {"parent": evaluate(parent, test_ds),
        "parent + composition refit": evaluate(refit_composition(parent, as_dataset(train))[0], test_ds),
        "fine-tuned": evaluate(load_model(str(Path(args.out_dir) / f"ft_{args.round}{args.tag}")), test_ds)}
table = {"round": args.round, "n_train": len(train), "n_test": len(test), "train_wall_s": round(train_s, 1),
         "config": dataclasses.asdict(cfg),
         "heldout": {k: {m: v for m, v in r.items() if "mae" in m} for k, r in rows.items()}}
(Path(args.out_dir) / f"ft_{args.round}{args.tag}" / "heldout.json").write_text(json.dumps(table, indent=1))
for k, r in table["heldout"].items():
    print(f"{k:28s} " + "  ".join(f"{m} {v:.4g}" for m, v in r.items()))
