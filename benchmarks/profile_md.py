"""Where the time of one MD force call goes: CHGNet energy+forces for R replicas of the ~430-atom
LYC-like cell, vmapped, as in ``bench_md.py``.

Times the two orders of the gated MLPs' first Linear (``gather_after_linear`` True/False; same
numbers) and other matrix-product algorithms than float32 (with their force error), then traces the default with ``jax.profiler`` and sums GPU kernel time by kind (matrix
products, gathers, scatters, reductions, elementwise fusions, sorts). Writes profile_md.json to $OUT.

  python benchmarks/profile_md.py --replicas 8
"""

import argparse
import dataclasses
import glob
import json
import os
import re
import sys
import tempfile
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, time_call  # noqa: E402
from lycb_jax.md import default_capacity  # noqa: E402
from lycb_jax.graph import build_graph  # noqa: E402
from lycb_jax.models import Model, potential  # noqa: E402
from lycb_jax.models.chgnet import CHGNet  # noqa: E402
from lycb_jax.runtime.precision import precision_scope, with_precision  # noqa: E402

KINDS = [("matmul", r"gemm|cublas|cutlass|xmma|dot|matmul|triton"), ("scatter", r"scatter"),
         ("gather", r"gather|dynamic.slice"), ("sort", r"sort|radix"), ("reduce", r"reduc|reduction"),
         ("elementwise/other fusions", r"fusion|loop|input|wrapped"), ("copy/memset", r"copy|memset|memcpy|transpose")]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pat in KINDS:
        if re.search(pat, low):
            return kind
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--calls", type=int, default=10, help="traced calls")
    args = ap.parse_args()
    model = lycb_jax.load_model()
    s = lyc_like(args.n)
    r = args.replicas
    cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=0.0, cutoffs=model.cutoffs)  # exact cutoffs, as MD
    species = jnp.asarray(np.tile([x.specie.Z for x in s], (r, 1)), jnp.int32)
    rng = np.random.default_rng(0)
    pos = jnp.asarray(s.cart_coords[None] + rng.normal(scale=0.05, size=(r, len(s), 3)), jnp.float32)
    cell = jnp.asarray(np.tile(s.lattice.matrix, (r, 1, 1)), jnp.float32)
    mask = species > 0
    graph = jax.jit(with_precision(jax.vmap(lambda p, c, m: build_graph(p, c, m, cap))))(pos, cell, mask)
    assert not bool(graph.overflow.any())
    res = {"device": jax.devices()[0].device_kind, "atoms": len(s), "replicas": r,
           "edges_per_atom": float(np.asarray(graph.n_edges).mean() * 2 / len(s)),
           "angles_per_atom": float(np.asarray(graph.n_angles).mean() / len(s))}

    def make(gal, precision=None):
        """Energy and forces, traced with matrix products of ``precision`` (default: the package's, "highest")."""
        module = CHGNet(dataclasses.replace(model.module.config, gather_after_linear=gal))
        m = Model(module, model.params)

        def ef(sp, p, c, mk, g):
            return jax.value_and_grad(lambda q: potential(m.module, m.params, sp, q, c, mk, g)[0])(p)

        def traced(*a):
            with precision_scope(precision):
                return jax.vmap(ef)(*a)
        return jax.jit(traced)

    fns = {gal: make(gal) for gal in (True, False)}
    for gal, fn in fns.items():
        _, t = time_call(fn, species, pos, cell, mask, graph)
        res[f"ms_energy_forces_gather_after_linear_{gal}"] = t * 1e3
    e1, f1 = fns[True](species, pos, cell, mask, graph)
    e0, f0 = fns[False](species, pos, cell, mask, graph)
    res["max_force_difference_between_orders_eV_A"] = float(jnp.max(jnp.abs(f1 - f0)))

    # matrix-product algorithms (the package default is float32 "highest"): speed and force error
    for prec in ("TF32_TF32_F32_X3", "BF16_BF16_F32_X6", "tensorfloat32"):
        try:
            fn = make(True, prec)
            _, t = time_call(fn, species, pos, cell, mask, graph)
            e, f = fn(species, pos, cell, mask, graph)
            res[f"precision_{prec}"] = {"ms_energy_forces": t * 1e3,
                                        "max_force_diff_eV_A": float(jnp.max(jnp.abs(f - f1))),
                                        "max_energy_diff_meV_atom": float(jnp.max(jnp.abs(e - e1))) / len(s) * 1e3}
        except Exception as err:  # an algorithm this backend lacks
            res[f"precision_{prec}"] = f"unsupported: {str(err)[:120]}"

    fn = fns[True]
    jax.block_until_ready(fn(species, pos, cell, mask, graph))
    tmp = tempfile.mkdtemp()
    jax.profiler.start_trace(tmp)
    for _ in range(args.calls):
        jax.block_until_ready(fn(species, pos, cell, mask, graph))
    jax.profiler.stop_trace()
    pd = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
    by_kind, by_name = defaultdict(float), defaultdict(float)
    for plane in pd.planes:
        if "GPU" not in plane.name and "gpu" not in plane.name:
            continue
        for line in plane.lines:
            if "kernel" not in line.name.lower() and "stream" not in line.name.lower():
                continue
            for ev in line.events:
                by_kind[kind_of(ev.name)] += ev.duration_ns / 1e6 / args.calls
                by_name[re.sub(r"[._]\d+", "", ev.name)[:80]] += ev.duration_ns / 1e6 / args.calls
        break
    res["gpu_ms_per_call_by_kind"] = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
    res["gpu_ms_per_call_top_kernels"] = dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:25])
    res["gpu_ms_per_call_total"] = sum(by_kind.values())
    print(json.dumps(res, indent=1))
    with open(os.path.join(os.environ.get("OUT", "."), "profile_md.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
