"""Cost of D3(BJ) in the MD force call: energy + forces + stress of R replicas of a 480-atom LYC0 cell
(benchmarks/reproduction/structures/LYC0.cif), vmapped, for the model alone and the model + D3, on the
same device in one process. Prints a table and writes bench_dispersion.json into $OUT (or .).
    python benchmarks/bench_dispersion.py [--replicas 8] [--structure FILE] [--model NAME]"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import time_call  # noqa: E402
from lycb_jax.graph import refine_graph  # noqa: E402
from lycb_jax.graph import verlet_list  # noqa: E402
from lycb_jax.md import default_capacity  # noqa: E402
from lycb_jax.models import energy_forces_stress  # noqa: E402
from lycb_jax.runtime.precision import with_precision  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--structure", default=str(HERE / "reproduction" / "structures" / "LYC0.cif"))
    ap.add_argument("--model", default="chgnet-0.3.0-lycb-pbe")
    args = ap.parse_args()
    from pymatgen.core import Structure

    s = Structure.from_file(args.structure)
    n, r = len(s), args.replicas
    rng = np.random.default_rng(0)
    pos = jnp.asarray(s.cart_coords[None] + rng.normal(0, 0.05, (r, n, 3)), jnp.float32)
    cell = jnp.asarray(np.tile(s.lattice.matrix, (r, 1, 1)), jnp.float32)
    species = jnp.asarray(np.tile([x.specie.Z for x in s], (r, 1)), jnp.int32)
    mask = species > 0
    res = {"device": jax.devices()[0].device_kind, "atoms": n, "replicas": r, "structure": Path(args.structure).name}
    for label, disp in (("model", None), ("model+d3bj", "d3bj")):
        model = lycb_jax.load_model(args.model, dispersion=disp)
        cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=1.0, cutoffs=model.cutoffs)
        edges = jax.jit(with_precision(jax.vmap(lambda p, c, m: verlet_list(p, c, m, cap))))(pos, cell, mask)
        g = jax.jit(with_precision(jax.vmap(lambda e, p, c: refine_graph(e, p, c, cap))))(edges, pos, cell)
        efs = jax.jit(with_precision(jax.vmap(
            lambda sp, p, c, m, gr: energy_forces_stress(model.module, model.params, sp, p, c, m, gr))))
        t0 = time.perf_counter()
        out = jax.block_until_ready(efs(species, pos, cell, mask, g))
        first = time.perf_counter() - t0
        _, t = time_call(efs, species, pos, cell, mask, g)
        res[label] = {"ms_energy_forces_stress": t * 1e3, "compile_s": first - t,
                      "pressure_GPa_mean": float(-np.trace(np.asarray(out[2]), axis1=1, axis2=2).mean() / 3)}
        print(label, res[label], flush=True)
    res["d3_extra_ms"] = res["model+d3bj"]["ms_energy_forces_stress"] - res["model"]["ms_energy_forces_stress"]
    res["ratio"] = res["model+d3bj"]["ms_energy_forces_stress"] / res["model"]["ms_energy_forces_stress"]
    print(json.dumps(res, indent=1))
    with open(os.path.join(os.environ.get("OUT", "."), "bench_dispersion.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
