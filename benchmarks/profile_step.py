"""Issue 31, step 1: where the time of one batched NVT MD step goes (profile_md.py: the force call alone), from JAX's own profiler (no nsys on the GPU
machine). The setup of bench_md.py (R replicas of the baseline's LYC-like cell, pretrained model), one chunk to
compile and settle the capacity, then ``--chunks`` chunks traced with ``jax.profiler.trace``. The trace is read
back with ``jax.profiler.ProfileData``: on each device plane, the events of every line are grouped by name and
ranked by total time (the "XLA Ops" line: one event per HLO op or fusion; stream lines: the kernels). The
per-event statistics the profiler attaches (e.g. bytes accessed, flops) are summed where present, which gives
the achieved bandwidth of the top items.

    python benchmarks/profile_step.py [--n 4] [--replicas 8] [--steps 100] [--chunks 2] [--top 15]

Writes $OUT (or .)/profile_step.json and prints the tables. Units: ms, GB/s, per MD step of the whole batch."""

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, nvt_replicas  # noqa: E402
from lycb_jax.md import ChunkInputs, ChunkSpec, default_capacity, run_chunk_checked  # noqa: E402

NUMERIC_STATS = ("bytes_accessed", "flops", "raw_bytes_accessed", "memory_access_breakdown")


def ranked(profile, steps: int, top: int) -> dict:
    """Per device plane and line: the events grouped by name, top ``top`` by total time, in ms per MD step."""
    out = {}
    for plane in profile.planes:
        if "GPU" not in plane.name and "TPU" not in plane.name and "/host:CPU" not in plane.name:
            continue
        for line in plane.lines:
            total = defaultdict(float)
            n_events = 0
            count = defaultdict(int)
            stats = defaultdict(lambda: defaultdict(float))
            for ev in line.events:
                n_events += 1
                total[ev.name] += ev.duration_ns
                count[ev.name] += 1
                for key, value in ev.stats:
                    if key in NUMERIC_STATS and isinstance(value, (int, float)):
                        stats[ev.name][key] += float(value)
            if not total or sum(total.values()) == 0:
                continue
            line_total = sum(total.values())
            rows = []
            for name, ns in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
                row = dict(name=name[:120], ms_per_step=ns / 1e6 / steps, share=ns / max(line_total, 1.0), calls=count[name])
                for key, value in stats[name].items():
                    row[f"{key}_per_step"] = value / steps
                if "bytes_accessed" in stats[name] and ns > 0:
                    row["achieved_GB_per_s"] = stats[name]["bytes_accessed"] / ns
                rows.append(row)
            out[f"{plane.name} | {line.name}"] = dict(ms_per_step=line_total / 1e6 / steps, events=n_events,
                                                      top=rows)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="supercell of the baseline's LYC-like cell (4: 427 atoms)")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100, help="steps per chunk")
    ap.add_argument("--chunks", type=int, default=2, help="chunks traced")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    model = lycb_jax.load_model()
    s = lyc_like(args.n)
    r = args.replicas
    cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=1.0, cutoffs=model.cutoffs)
    species, cell, states, kT, integ = nvt_replicas(model, s, r, cap)
    alive = jnp.ones(r, bool)

    def chunk(st, capacity, fit=False):
        return run_chunk_checked(model, ChunkInputs(species, cell, st, kT, kT, alive),
                                 ChunkSpec(integ, capacity, n_frames=1, stride=args.steps), fit=fit, mesh=None)

    out, cap = chunk(states, cap, fit=True)  # compile, fit the capacity
    out, cap = chunk(out.states, cap)  # compile the fitted shape
    jax.block_until_ready(out.states)
    trace_dir = tempfile.mkdtemp(prefix="lycb_profile_")
    t = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        st = out.states
        for _ in range(args.chunks):
            out, cap2 = chunk(st, cap)
            assert cap2 == cap, "the capacity grew while tracing; rerun"
            st = out.states
        jax.block_until_ready(st)
    wall = time.perf_counter() - t
    steps = args.chunks * args.steps
    files = sorted(Path(trace_dir).rglob("*.xplane.pb"))
    profile = jax.profiler.ProfileData.from_file(str(files[-1]))
    if os.environ.get("OUT"):  # the raw trace too, for a second look (TensorBoard / xprof)
        import shutil

        shutil.copy(files[-1], Path(os.environ["OUT"]) / "profile_step.xplane.pb")
    res = dict(device=jax.devices()[0].device_kind, atoms=len(s), replicas=r, steps_traced=steps,
               capacity=str(cap), wall_ms_per_step_while_tracing=wall / steps * 1e3,
               planes=[p.name for p in profile.planes], lines=ranked(profile, steps, args.top))
    for key, line in res["lines"].items():
        print(f"\n== {key}: {line['ms_per_step']:.3f} ms/step over {line['events']} events")
        for row in line["top"]:
            extra = "".join(f"  {k}={v:.3g}" for k, v in row.items() if k.endswith("per_step") and k != "ms_per_step"
                            or k == "achieved_GB_per_s")
            print(f"  {row['ms_per_step']:8.3f} ms {100 * row['share']:5.1f}%  x{row['calls']:<5d} {row['name'][:70]}{extra}")
    with open(os.path.join(os.environ.get("OUT", "."), "profile_step.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
