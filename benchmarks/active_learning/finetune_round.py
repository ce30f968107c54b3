"""One fine-tuning round on the GPAW PBE labels: held-out split, fine-tune, evaluation on the held-out set.

    python finetune_round.py r0 [r1 ...] [--parent chgnet-0.3.0] [--epochs 40] [--lr 1e-3] [--freeze ...]

Reads labelled_*_<round>.extxyz of every round given, holds out every 5th structure of each file (FPS
order, so spread over the sampled configurations) as the test set (never trained on: test_<round>.extxyz),
trains on the rest of all rounds (10% of it for validation and early stopping) and writes the model to
ft_<last round><tag>/ and the table (held-out errors per round and over all) to its heldout.json.
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
p.add_argument("rounds", nargs="+")
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

train, tests = [], {}
for rnd in args.rounds:
    tr, te = [], []
    for f in sorted(here.glob(f"labelled_*_{rnd}.extxyz")):
        for i, a in enumerate(read(f, index=":")):
            a.info["source"] = f.name
            (te if i % 5 == 4 else tr).append(a)
    if not tr:
        raise SystemExit(f"no labelled_*_{rnd}.extxyz next to {__file__}")
    write(here / f"train_{rnd}.extxyz", tr)
    write(here / f"test_{rnd}.extxyz", te)
    train += tr
    tests[rnd] = te
test = [a for te in tests.values() for a in te]
args.round = args.rounds[-1]
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

parent = load_model(args.parent)
models = {"parent": parent, "parent + composition refit": refit_composition(parent, as_dataset(train))[0],
          "fine-tuned": load_model(str(Path(args.out_dir) / f"ft_{args.round}{args.tag}"))}
sets = {"all": test, **tests} if len(tests) > 1 else {"all": test}
heldout = {}
for set_name, frames in sets.items():
    ds = as_dataset(frames)
    for k, m in models.items():
        key = k if set_name == "all" else f"{k} [{set_name} only]"
        heldout[key] = {name: v for name, v in evaluate(m, ds).items() if "mae" in name}
table = {"rounds": args.rounds, "n_train": len(train), "n_test": len(test), "train_wall_s": round(train_s, 1),
         "config": dataclasses.asdict(cfg), "heldout": heldout}
(Path(args.out_dir) / f"ft_{args.round}{args.tag}" / "heldout.json").write_text(json.dumps(table, indent=1))
for k, r in table["heldout"].items():
    print(f"{k:28s} " + "  ".join(f"{m} {v:.4g}" for m, v in r.items()))
