"""SevenNet-0 single points: lycb_jax (Flax/e3nn-jax) vs ``sevenn``'s own ASE calculator, side by side.

Run on the GPU (needs the ``sevennet`` extra: torch + sevenn):  python benchmarks/bench_sevennet.py
Energies, forces and stresses at ~180, ~430 and ~1440 atoms (the CHGNet benchmark's LYC-like cells)
and a batch of 8 x ~180; prints a table (ms per call, agreement with sevenn) and writes
bench_sevennet.json to $OUT or the cwd. Batched MD against TorchSim is not covered here.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, time_call  # noqa: E402
from lycb_jax.graph.batch import pack  # noqa: E402
from lycb_jax.io.structures import to_system  # noqa: E402
from lycb_jax.models.predict import _predict_batched  # noqa: E402
from lycb_jax.units import EV_A3_TO_GPA  # noqa: E402


def sevenn_times(structs, repeat):
    """(median s per structure, predictions) of sevenn's SevenNetCalculator on cuda (or cpu)."""
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator("7net-0", device="cuda" if torch.cuda.is_available() else "cpu")
    out, times = [], []
    for s in structs:
        atoms = AseAtomsAdaptor.get_atoms(s)
        calc.calculate(atoms, ["energy", "forces", "stress"])  # warm-up
        for _ in range(repeat):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            calc.calculate(atoms, ["energy", "forces", "stress"])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        r = calc.results
        out.append((r["energy"], r["forces"], r["stress"] * EV_A3_TO_GPA))
    return statistics.median(times) * len(structs), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 4, 6], help="supercell n: 180, 427, 1440 atoms")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    model = lycb_jax.load_model("sevennet-0")
    res = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__}
    cases = [(f"single_N{len(lyc_like(n))}", [lyc_like(n)]) for n in args.sizes]
    cases.append((f"batch{args.batch}_N{len(lyc_like(3))}", [lyc_like(3, seed=i) for i in range(args.batch)]))
    for name, structs in cases:
        b = pack([to_system(s) for s in structs], cutoffs=model.cutoffs)
        inputs = (model, jnp.asarray(b.species), jnp.asarray(b.positions, jnp.float32),
                  jnp.asarray(b.cells, jnp.float32), jnp.asarray(b.atom_mask), b.capacity)
        first, med = time_call(lambda *a: _predict_batched(*a), *inputs, repeat=args.repeat)
        ours = lycb_jax.predict(model, structs)
        ref_s, ref = sevenn_times(structs, args.repeat)
        n_atoms = sum(len(s) for s in structs)
        res[name] = {
            "atoms": n_atoms, "capacity": str(b.capacity), "compile_s": first - med, "ms_per_call": med * 1e3,
            "sevenn_ase_ms": ref_s * 1e3, "speedup": ref_s / med,
            "max_dE_eV_per_atom": max(abs(o.energy - r[0]) / len(s) for o, r, s in zip(ours, ref, structs)),
            "max_dF_eV_per_A": max(float(np.abs(o.forces - r[1]).max()) for o, r in zip(ours, ref)),
        }
        print(name, json.dumps(res[name]), flush=True)
    print(f"\n{'case':<16}{'atoms':>7}{'compile s':>11}{'ms/call':>10}{'sevenn ms':>11}{'x':>7}")
    for name, _ in cases:
        r = res[name]
        print(f"{name:<16}{r['atoms']:>7}{r['compile_s']:>11.2f}{r['ms_per_call']:>10.2f}"
              f"{r['sevenn_ase_ms']:>11.2f}{r['speedup']:>7.1f}")
    with open(os.path.join(os.environ.get("OUT", "."), "bench_sevennet.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
