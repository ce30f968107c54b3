"""Ship a fine-tuned round as a named checkpoint (issue 17): copy models/<round>/ to
checkpoints/<name>/ with the manifest's name set and the training data recorded (DFT settings, label
files with their sha256, held-out errors), and write its held-out PBE set (never trained on) to
tests/data/lycb_pbe_heldout.extxyz for the test that checks the shipped model against DFT.

    python ship_model.py models/r2_all --name chgnet-0.3.0-lycb-pbe --rounds r0 r1 r2
"""
import argparse
import hashlib
import json
import shutil
from pathlib import Path

from ase.io import read, write

here = Path(__file__).parent
root = here.parents[1]
p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--name", default="chgnet-0.3.0-lycb-pbe")
p.add_argument("--rounds", nargs="+", default=["r0", "r1", "r2"])
args = p.parse_args()

src, dst = here / args.model, root / "checkpoints" / args.name
dst.mkdir(parents=True, exist_ok=True)
shutil.copy(src / "params.msgpack", dst / "params.msgpack")
manifest = json.loads((src / "manifest.json").read_text())
heldout = json.loads((src / "heldout.json").read_text())
files = sorted(f for r in args.rounds for f in here.glob(f"labelled_*_{r}.extxyz"))
first = read(files[0], index=0)
manifest["name"] = args.name
manifest["training_data"] = {
    "labels": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
    "where": "benchmarks/active_learning/ (README.md there: sampling, rounds, DFT convergence)",
    "dft_settings": json.loads(first.info["labeller"]),
    "split": "every 5th structure of each labelled file held out (never trained on); 10% of the rest validation",
    "heldout_mae": heldout["heldout"],
}
(dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
test = [a for f in files for i, a in enumerate(read(f, index=":")) if i % 5 == 4]
write(root / "tests" / "data" / "lycb_pbe_heldout.extxyz", test)
print(f"{dst}: {len(files)} label files, {len(test)} held-out structures -> tests/data/lycb_pbe_heldout.extxyz")
