"""Replica sharding over the GPUs of one host: aggregate NVT atom-steps/s on 1, 2, 4, ... devices.

Weak scaling as in issue 7: ``--per-device`` replicas (default 8) of the ~430-atom LYC-like cell
per device, temperatures spread over 500-1200 K. Each device count runs the production path,
``md.run_chunk_checked`` with a ``replica`` mesh (``shard_map``: every device runs its own block
of replicas, list rebuilds included, without communication), host transfer of the frames
included. Efficiency = rate(k devices) / (k * rate(1 device)).

  python benchmarks/bench_scaling.py                  # 1, 2, 4, ... up to all local devices
  python benchmarks/bench_scaling.py --devices 1 2
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import lyc_like, nvt_replicas

import lycb_jax
from lycb_jax.runtime.devices import replica_mesh
from lycb_jax.md import ChunkInputs, ChunkSpec, default_capacity, run_chunk_checked


def rate_on(model, s, k: int, per_device: int, steps: int, stride: int, repeats: int) -> dict:
    n_rep, n = k * per_device, len(s)
    mesh = replica_mesh(jax.local_devices()[:k])
    cap = default_capacity(s.cart_coords, s.lattice.matrix, cutoffs=model.cutoffs)
    species, cell, states, kT, integ = nvt_replicas(model, s, n_rep, cap)
    alive = np.ones(n_rep, bool)
    n_frames = steps // stride

    def chunk(st, capacity, fit=False):
        return run_chunk_checked(model, ChunkInputs(species, cell, st, kT, kT, alive),
                                 ChunkSpec(integ, capacity, n_frames, stride), mesh=mesh, fit=fit)

    t0 = time.perf_counter()
    (states, *_), cap = chunk(states, cap, fit=True)  # compile, heat-up growth, capacity fitted as Simulation does
    first = time.perf_counter() - t0
    (states, *_), cap = chunk(states, cap)  # compile the fitted shape (untimed)
    walls = []
    while len(walls) < repeats:
        t = time.perf_counter()
        (new, frames, *_), cap2 = chunk(states, cap)
        np.asarray(frames.positions)  # to the host, as a run writing its trajectory does
        wall = time.perf_counter() - t
        if cap2 != cap:  # grown and re-run inside: recompiled, so not a steady timing
            cap = cap2
            continue
        walls.append(wall)
        states = new
    wall = float(np.median(walls))
    rate = n_rep * n * n_frames * stride / wall
    return {"devices": k, "replicas": n_rep, "atoms": n, "steps_per_chunk": n_frames * stride, "chunk_walls_s": walls,
            "atom_steps_per_s": rate, "ns_per_day_per_replica": n_frames * stride * 1e-6 / wall * 86400,
            "first_chunk_s": first, "capacity": str(cap)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, nargs="*", help="device counts (default 1, 2, 4, ... up to all)")
    ap.add_argument("--per-device", type=int, default=8, help="replicas per device")
    ap.add_argument("--n", type=int, default=4, help="supercell of the LYC-like cell (4: 427 atoms)")
    ap.add_argument("--steps", type=int, default=500, help="steps per timed chunk")
    ap.add_argument("--stride", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n_local = len(jax.local_devices())
    counts = args.devices or [k for k in (1, 2, 4, 8, 16) if k <= n_local]
    model = lycb_jax.load_model()
    s = lyc_like(args.n)
    rows = []
    for k in counts:
        row = rate_on(model, s, k, args.per_device, args.steps, args.stride, args.repeats)
        row["efficiency"] = row["atom_steps_per_s"] / (k * rows[0]["atom_steps_per_s"] / rows[0]["devices"]) if rows else 1.0
        rows.append(row)
        print(f"{k} device(s), {row['replicas']} x {row['atoms']} atoms: {row['atom_steps_per_s']:,.0f} atom-steps/s, "
              f"{row['ns_per_day_per_replica']:.2f} ns/day/replica, efficiency {row['efficiency']:.3f}", flush=True)
        with open(os.path.join(os.environ.get("OUT", "."), "bench_scaling.json"), "w") as fh:  # after each row
            json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
