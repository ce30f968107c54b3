"""Batched NVT MD speed: R temperatures of a ~430-atom LYC-like cell in one vmapped program.

Reports atom-steps/s, ns/day per replica, s/atom/ps (the paper's unit), compile time, peak device
memory, and where the time goes: the pieces of one step timed alone (Verlet-list rebuild by brute
force, exact graph from the list, model energy+forces, energy+forces+stress), and how often the
list was rebuilt.
Run torch_chgnet_baseline.py in the same device session for the side-by-side numbers.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, time_call  # noqa: E402
from lycb_jax.graph import capacity as caps  # noqa: E402
from lycb_jax.graph import refine_graph  # noqa: E402
from lycb_jax.md import (ChunkInputs, ChunkSpec, IntegratorSettings, default_capacity, init_replica,  # noqa: E402
                         masses_of, run_chunk, run_chunk_checked)
from lycb_jax.graph import verlet_list  # noqa: E402
from lycb_jax.models import energy_forces_stress, potential  # noqa: E402
from lycb_jax.runtime.precision import matmul_precision, with_precision  # noqa: E402


T_START = time.perf_counter()


def phase(what: str) -> None:
    """One line per phase with the seconds since start: a run cut by a time limit still shows how far it got."""
    print(f"[{time.perf_counter() - T_START:6.1f} s] {what}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4, help="supercell of the baseline's LYC-like cell (4: 427 atoms)")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500, help="steps per timed chunk")
    ap.add_argument("--stride", type=int, default=50, help="steps between recorded frames")
    ap.add_argument("--skin", type=float, default=1.0, help="Verlet-list skin, Angstrom")
    args = ap.parse_args()
    model = lycb_jax.load_model()
    s = lyc_like(args.n)
    n = len(s)
    temps = np.linspace(500, 1200, args.replicas)
    integ = IntegratorSettings("nvt", dt_fs=1.0)
    cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=args.skin, cutoffs=model.cutoffs)
    species = jnp.asarray(np.tile(np.array([x.specie.Z for x in s]), (args.replicas, 1)), jnp.int32)
    pos = jnp.asarray(np.tile(s.cart_coords, (args.replicas, 1, 1)), jnp.float32)
    cell = jnp.asarray(np.tile(s.lattice.matrix, (args.replicas, 1, 1)), jnp.float32)
    masses = jnp.asarray(np.tile(masses_of(species[0]), (args.replicas, 1)))
    kT = jnp.asarray(temps * units.kB, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), args.replicas)
    states = jax.vmap(lambda sp, x, c, m, t, k: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                             settings=integ, capacity=cap)[0])(
        species, pos, cell, masses, kT, keys)
    alive = jnp.ones(args.replicas, bool)
    n_frames = args.steps // args.stride

    phase(f"{args.replicas} x {n} atoms: compiling and running the first chunk")
    t0 = time.perf_counter()  # first chunk: compilation, and capacity growth if the graph overflows
    out, cap = run_chunk_checked(model, ChunkInputs(species, cell, states, kT, kT, alive),
                                 ChunkSpec(integ, cap, n_frames, args.stride), fit=True,
                                 mesh=None)  # capacity fitted, as Simulation does
    first = time.perf_counter() - t0
    # compile the fitted shape, untimed; run_chunk_checked grows it here if the next chunk needs more
    out, cap = run_chunk_checked(model, ChunkInputs(species, cell, out.states, kT, kT, alive),
                                 ChunkSpec(integ, cap, n_frames, args.stride), mesh=None)
    states = out.states

    def chunk(st):  # model.bare(), as run_chunk_checked passes it: the program compiled above, not a second one
        return run_chunk(model.bare(), ChunkInputs(species, cell, st, kT, kT, alive),
                         ChunkSpec(integ, cap, n_frames, args.stride))

    phase(f"first chunk {first:.1f} s; timing 3 chunks of {args.steps} steps")
    walls, regrown = [], 0
    while len(walls) < 3:
        t = time.perf_counter()
        out = jax.block_until_ready(chunk(states))
        wall = time.perf_counter() - t
        if not bool(out.ok.all()):  # the graph grew while heating up: grow, recompile (untimed), redo the chunk
            need = np.asarray(out.need).max(0)
            print(f"regrowing {cap}: needed {need.tolist()}", flush=True)
            cap = caps.grow(cap, caps.Need.from_vector(need), cells=np.asarray(cell))
            regrown += 1
            assert regrown < 5, "capacity keeps growing"
            continue
        walls.append(wall)
        states = out.states
    wall = float(np.median(walls))
    rebuilds = int(out.rebuilds)
    steps = n_frames * args.stride
    atom_steps = args.replicas * n * steps / wall
    res = {"device": jax.devices()[0].device_kind, "atoms": n, "replicas": args.replicas, "capacity": str(cap), "regrown_while_timing": regrown,
           "compile_s": first - wall, "s_per_step_all_replicas": wall / steps, "atom_steps_per_s": atom_steps,
           "ns_per_day_per_replica": steps * 1e-6 / wall * 86400, "s_per_atom_per_ps": 1000 / atom_steps,
           "final_T": np.asarray(out.frames.temperature[:, -1]).round(0).tolist()}
    try:
        stats = jax.devices()[0].memory_stats()
        res["peak_device_memory_GB"] = stats.get("peak_bytes_in_use", 0) / 1e9
    except Exception:  # CPU backends have no memory stats
        pass
    phase(f"chunks {walls} s; timing the pieces of one step")
    # where the time goes: the pieces of one step, vmapped over replicas
    x = jax.vmap(lambda st: st.position)(states)
    mask = species > 0
    # the pieces traced with the matrix-product precision of run_chunk (lycb_jax.runtime)
    list_fn = jax.jit(with_precision(jax.vmap(lambda p, c, m: verlet_list(p, c, m, cap))))
    _, t_list = time_call(list_fn, x, cell, mask)
    edges = list_fn(x, cell, mask)
    refine_fn = jax.jit(with_precision(jax.vmap(lambda e, p, c: refine_graph(e, p, c, cap))))
    _, t_refine = time_call(refine_fn, edges, x, cell)
    g = refine_fn(edges, x, cell)

    def energy_forces(sp, p, c, m, gr):
        return jax.value_and_grad(lambda q: potential(model.module, model.params, sp, q, c, m, gr)[0])(p)

    ef = jax.jit(with_precision(jax.vmap(energy_forces)))
    _, t_ef = time_call(ef, species, x, cell, mask, g)
    efs = jax.jit(with_precision(jax.vmap(
        lambda sp, p, c, m, gr: energy_forces_stress(model.module, model.params, sp, p, c, m, gr))))
    _, t_efs = time_call(efs, species, x, cell, mask, g)
    res["matmul_precision"] = matmul_precision()  # $LYCB_JAX_MATMUL_PRECISION, else "highest"
    if matmul_precision() != "highest":  # what the cheaper products cost in accuracy, on this card
        e_p, f_p = ef(species, x, cell, mask, g)
        with jax.default_matmul_precision("highest"):
            e_h, f_h = jax.jit(jax.vmap(energy_forces))(species, x, cell, mask, g)
        res["vs_highest_max_force_diff_eV_per_A"] = float(jnp.max(jnp.abs(f_p - f_h)))
        res["vs_highest_max_energy_diff_meV_per_atom"] = float(jnp.max(jnp.abs(e_p - e_h))) / n * 1e3
    res["ms_verlet_list_rebuild"] = t_list * 1e3
    res["list_rebuilds_per_100_steps"] = 100 * rebuilds / (n_frames * args.stride)
    res["ms_exact_graph_from_list"] = t_refine * 1e3
    res["ms_energy_forces"] = t_ef * 1e3
    res["ms_energy_forces_stress"] = t_efs * 1e3
    res["ms_per_step"] = wall / steps * 1e3
    res["list_edges_per_atom"] = float(np.asarray(edges.n_edges).mean() / n * 2)
    res["edges_per_atom"] = float(np.asarray(g.n_edges).mean() / n * 2)
    res["angles_per_atom"] = float(np.asarray(g.n_angles).mean() / n)
    print(json.dumps(res, indent=1))
    print(f"\n{args.replicas} x {n} atoms NVT: {atom_steps:,.0f} atom-steps/s, {res['ns_per_day_per_replica']:.2f} "
          f"ns/day/replica, {res['s_per_atom_per_ps']:.4f} s/atom/ps; step {res['ms_per_step']:.2f} ms: exact graph "
          f"{t_refine * 1e3:.2f} + model E,F {t_ef * 1e3:.2f} + list rebuilds (each {t_list * 1e3:.2f}) + integrator/records; "
          f"compile {res['compile_s']:.1f} s")
    with open(os.path.join(os.environ.get("OUT", "."), "bench_md.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
