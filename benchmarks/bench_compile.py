"""XLA compile time against run time of the fine-tuning programs, per set of compiler options.

For the largest (or every) atom-count bucket of a fine-tuning data set, lowers the train step,
the eval step (both on precomputed graphs) and the graph builder once, then compiles each
lowered program with every option set in turn (sequentially, no persistent cache) and times
it: compile seconds and milliseconds per call (median of --calls calls after one warm-up) on two
device-resident batches: the bucket's largest structures and its smallest (most padding).
Option sets are XLA debug options, passed to ``Lowered.compile(compiler_options=...)``; an
option this XLA does not know is reported, not fatal.

  python benchmarks/bench_compile.py --data runs/bench_finetune_r2scan_300_0.extxyz
  python benchmarks/bench_compile.py --options '{}' '{"xla_gpu_autotune_level": 0}'

The result JSON goes to benchmarks/results/bench_compile_<device>.json (and $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OPTIONS = ['{}', '{"xla_gpu_autotune_level": 0}', '{"xla_gpu_enable_triton_gemm": false}',
                   '{"xla_gpu_autotune_level": 0, "xla_gpu_enable_triton_gemm": false}']


def gpu_profile(call, calls: int) -> dict:
    """GPU kernel time per call (ms) by kind and the top kernels, from a ``jax.profiler`` trace of
    ``calls`` calls of ``call()``."""
    import glob
    import tempfile
    from collections import defaultdict

    import jax
    from profile_md import kind_of

    tmp = tempfile.mkdtemp()
    jax.profiler.start_trace(tmp)
    for _ in range(calls):
        jax.block_until_ready(call())
    jax.profiler.stop_trace()
    pd = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
    by_kind, by_name = defaultdict(float), defaultdict(float)
    for plane in pd.planes:
        if "gpu" not in plane.name.lower():
            continue
        for line in plane.lines:
            if "kernel" not in line.name.lower() and "stream" not in line.name.lower():
                continue
            for ev in line.events:
                by_kind[kind_of(ev.name)] += ev.duration_ns / 1e6 / calls
                by_name[re.sub(r"[._]\d+", "", ev.name)[:80]] += ev.duration_ns / 1e6 / calls
        break
    return {"ms_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), "ms_total": sum(by_kind.values()),
            "top_kernels_ms": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:20])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "runs" / "bench_finetune_r2scan_300_0.extxyz"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--all-buckets", action="store_true", help="every bucket, not only the largest")
    ap.add_argument("--max-buckets", type=int, default=3, help="buckets of the data set's atom counts")
    ap.add_argument("--options", nargs="*", default=DEFAULT_OPTIONS, help="JSON dicts of compiler options")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--programs", nargs="*", default=["train", "eval", "graph"], choices=["train", "eval", "graph"])
    ap.add_argument("--profile", action="store_true",
                    help="trace the calls of the first option set's train program: GPU ms per kernel kind")
    ap.add_argument("--out")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_finetune import device_slug, gpu_scale_data

    from lycb_jax.models import load_model, param_labels
    from lycb_jax.train import (FinetuneConfig, batched_graphs, choose_buckets, iter_batches, make_optimizer,
                                make_steps, pack_dataset, read_dataset, select_packed)

    data = args.data if Path(args.data).exists() else str(gpu_scale_data())
    ds = read_dataset(data)
    cfg = FinetuneConfig(batch_size=args.batch_size)
    model = load_model(cfg.parent)
    buckets = choose_buckets([len(s) for s in ds.systems], args.max_buckets)
    packed = pack_dataset(ds, buckets, model.cutoffs)
    labels = param_labels(model.params, cfg.freeze, model.module.layer_groups())
    tx = make_optimizer(cfg, labels)
    train_step, eval_step = make_steps(model.module, tx, labels, cfg=cfg)
    dev = jax.devices()[0]
    res = {"device": f"{dev.platform}: {dev.device_kind}", "jax": jax.__version__,
           "matmul_precision": str(jax.config.jax_default_matmul_precision), "data": os.path.relpath(data, ROOT),
           "batch_size": args.batch_size, "buckets": buckets, "runs": []}
    name = f"bench_compile_{device_slug(dev.device_kind)}.json"
    outs = [Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name]
    if os.environ.get("OUT"):
        outs.append(Path(os.environ["OUT"]) / name)

    for pb in packed if args.all_buckets else packed[-1:]:
        # the bucket's largest structures (least padding) and its smallest (most padding)
        order = pb.index[np.argsort(pb.arrays["atom_mask"].sum(1), kind="stable")]
        batches = {}
        for which, idx in (("full", order[-args.batch_size:]), ("padded", order[:args.batch_size])):
            cap, bt = next(iter_batches(select_packed([pb], idx), args.batch_size))
            batches[which] = jax.device_put(bt)
        batch = batches["full"]
        params = jax.tree.map(jnp.array, model.params)
        opt_state = tx.init(params)
        t = time.perf_counter()
        lr = np.float32(1e-3)
        lowered = {"train": train_step.lower(params, opt_state, batch, lr), "eval": eval_step.lower(params, batch),
                   "graph": batched_graphs.lower(batch["positions"], batch["cells"], batch["atom_mask"], cap)}
        lower_s = time.perf_counter() - t
        for text in args.options:
            opts = json.loads(text)
            for kind, low in ((k, v) for k, v in lowered.items() if k in args.programs):
                row = {"bucket_atoms": pb.n_atoms, "capacity": str(cap), "program": kind, "options": opts,
                       "lower_s_both": lower_s}
                try:
                    t = time.perf_counter()
                    prog = low.compile(compiler_options=opts or None)
                    row["compile_s"] = time.perf_counter() - t
                except Exception as err:  # an option unknown to this XLA: say so, go on
                    row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                    res["runs"].append(row)
                    print(row, flush=True)
                    continue
                for which, bt in batches.items():
                    times = []
                    p, o = jax.tree.map(jnp.array, params), tx.init(params)
                    for _ in range(args.calls + 1):
                        t = time.perf_counter()
                        if kind == "train":
                            p, o, loss, _ = prog(p, o, bt, lr)
                        elif kind == "eval":
                            loss, *_ = prog(p, bt)
                        else:
                            loss = prog(bt["positions"], bt["cells"], bt["atom_mask"]).n_edges
                        loss.block_until_ready()
                        times.append(time.perf_counter() - t)
                        row.setdefault(f"first_output_{which}", float(np.sum(loss)))  # same inputs for every option set
                    row[f"ms_per_call_{which}"] = 1e3 * float(np.median(times[1:]))
                    if args.profile and kind == "train" and which == "full" and text == args.options[0]:
                        state = [p, o]

                        def step():  # params and optimiser state are donated: feed the outputs back
                            state[0], state[1], loss, _ = prog(state[0], state[1], bt, lr)
                            return loss

                        row["gpu_profile"] = gpu_profile(step, args.calls)
                res["runs"].append(row)
                print(f"bucket {pb.n_atoms} {kind:5s} {json.dumps(opts):46s} compile {row['compile_s']:6.1f} s  "
                      "ms/call "
                      + ", ".join(f"{w} {row[f'ms_per_call_{w}']:.2f}" for w in batches), flush=True)
                for out in outs:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
