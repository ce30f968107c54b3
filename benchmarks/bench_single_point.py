"""Single-point energy + forces + stress: lycb_jax vs the PyTorch CHGNet, side by side.

Run on the GPU:  python benchmarks/bench_single_point.py  (then torch_chgnet_baseline.py in the
same session). Prints a table and writes bench_single_point.json to $OUT or the cwd.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, time_call  # noqa: E402
from lycb_jax.graph.batch import pack  # noqa: E402
from lycb_jax.io.structures import to_system  # noqa: E402
from lycb_jax.models.predict import _predict_batched  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 4, 6], help="supercell n: 180, 427, 1440 atoms")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    model = lycb_jax.load_model()
    res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__}
    cases = [(f"single_N{len(lyc_like(n))}", [lyc_like(n)]) for n in args.sizes]
    cases.append((f"batch{args.batch}_N{len(lyc_like(3))}", [lyc_like(3, seed=i) for i in range(args.batch)]))
    for name, structs in cases:
        b = pack([to_system(s) for s in structs], cutoffs=model.cutoffs)
        inputs = (model, jnp.asarray(b.species), jnp.asarray(b.positions, jnp.float32),
                  jnp.asarray(b.cells, jnp.float32), jnp.asarray(b.atom_mask), b.capacity)
        first, med = time_call(lambda *a: _predict_batched(*a), *inputs, repeat=args.repeat)
        t = time.perf_counter()
        for _ in range(5):
            lycb_jax.predict(model, structs)
        e2e = (time.perf_counter() - t) / 5
        n_atoms = sum(len(s) for s in structs)
        res[name] = {"atoms": n_atoms, "padded_atoms": int(b.species.size), "capacity": str(b.capacity),
                     "compile_s": first - med, "ms_per_call": med * 1e3, "ms_per_call_end_to_end": e2e * 1e3,
                     "atom_evals_per_s": n_atoms / med}
        print(name, json.dumps(res[name]), flush=True)
    print(f"\n{'case':<16}{'atoms':>7}{'compile s':>11}{'ms/call':>10}{'ms e2e':>9}")
    for name, _ in cases:
        r = res[name]
        print(f"{name:<16}{r['atoms']:>7}{r['compile_s']:>11.2f}{r['ms_per_call']:>10.2f}{r['ms_per_call_end_to_end']:>9.2f}")
    with open(os.path.join(os.environ.get("OUT", "."), "bench_single_point.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
