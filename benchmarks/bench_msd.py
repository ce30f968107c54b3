"""Benchmark: MSD of N Li atoms x T frames x R temperatures, lycb_jax vs pymatgen DiffusionAnalyzer,
the full D analysis (window + GLS), and the streaming (order-n) MSD accumulator per update.

CPU default: 100 Li x 10,000 frames x 8 temperatures.  ``--full``: 100 Li x 100,000 frames x 8
temperatures (the GPU target of issue 4).  Random-walk data (float32), 4 framework atoms added
so that both codes remove the framework drift.  lycb_jax times: compile (``lower().compile()``)
reported separately from the run (median of ``--repeat`` runs, ``block_until_ready``).
DiffusionAnalyzer (CPU, float64, smoothed='max', which computes the all-origin MSD by FFT and
fits D) runs on ``--da-temps`` of the temperatures (default: all on CPU sizes, 1 with --full);
its total is extrapolated linearly to all temperatures when a subset is used (said in the output).

``--md-chunk``: instead, the cost of the streaming MSD inside the MD (lycb_jax.md.run_chunk with and
without the accumulator; CHGNet NVT, ``--replicas`` x the LYC-like cell of bench_md.py, 427 atoms
with ``--cell 4``), the same chunk from the same states, the two variants interleaved, median of
``--repeat``.  The accumulator is updated every ``--msd-every`` steps (1: every step, the worst case).

    python benchmarks/bench_msd.py            # CPU size
    python benchmarks/bench_msd.py --full     # GPU size
    python benchmarks/bench_msd.py --md-chunk --replicas 8 --cell 4 --steps 1000 --msd-every 10   # GPU
    python benchmarks/bench_msd.py --md-chunk --replicas 2 --cell 2 --steps 20 --msd-every 1 --repeat 2  # CPU smoke
"""

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax import analysis as A
from lycb_jax.md.observables import streaming_init, streaming_update


def timed(fn, *args, repeat=3):
    compiled_start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t_compile = time.perf_counter() - compiled_start
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t)
    return t_compile, statistics.median(runs)


def md_chunk_cost(args):
    """ms per MD step with and without the streaming MSD in the scan (CHGNet, R x LYC-like cell)."""
    import os
    import sys

    from ase import units

    import lycb_jax
    from lycb_jax.md import (
        ChunkInputs,
        ChunkSpec,
        IntegratorSettings,
        default_capacity,
        init_replica,
        masses_of,
        run_chunk,
        run_chunk_checked,
    )

    sys.path.insert(0, os.path.dirname(__file__))
    from common import lyc_like

    model = lycb_jax.load_model()
    s = lyc_like(args.cell)
    n, n_rep = len(s), args.replicas
    numbers = np.array([x.specie.Z for x in s])
    integ = IntegratorSettings("nvt", dt_fs=1.0)
    cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=1.0, cutoffs=model.cutoffs)
    species = jnp.asarray(np.tile(numbers, (n_rep, 1)), jnp.int32)
    cell = jnp.asarray(np.tile(s.lattice.matrix, (n_rep, 1, 1)), jnp.float32)
    kT = jnp.asarray(np.linspace(500, 1200, n_rep) * units.kB, jnp.float32)
    states = jax.vmap(lambda sp, x, c, m, t, k: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                             settings=integ, capacity=cap)[0])(
        species, jnp.asarray(np.tile(s.cart_coords, (n_rep, 1, 1)), jnp.float32), cell,
        jnp.asarray(np.tile(masses_of(numbers), (n_rep, 1))), kT, jax.random.split(jax.random.PRNGKey(0), n_rep))
    alive = jnp.ones(n_rep, bool)
    stride = min(args.stride, args.steps)
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)  # noqa: E731  (a cut call keeps its progress)
    log(f"{jax.devices()[0].device_kind}: {n_rep} x {n} atoms, {args.steps} steps per chunk; fitting the capacity")
    n_frames = args.steps // stride
    mobile = jnp.asarray(numbers == 3)
    msd0 = jax.vmap(lambda _: streaming_init(n, args.levels, args.block, mobile=mobile))(jnp.arange(n_rep))
    # the capacity this chunk needs (fitted, as Simulation does); both variants then run the same steps
    inputs = ChunkInputs(species, cell, states, kT, kT, alive)
    out, cap = run_chunk_checked(model, inputs, ChunkSpec(integ, cap, n_frames, stride), fit=True, mesh=None)
    out, cap = run_chunk_checked(model, inputs, ChunkSpec(integ, cap, n_frames, stride), mesh=None)
    log(f"capacity {cap}")

    def chunk(msd):
        return run_chunk(model, ChunkInputs(species, cell, states, kT, kT, alive, msd=msd),
                         ChunkSpec(integ, cap, n_frames, stride, msd_stride=args.msd_every if msd is not None else 0))

    t_compile = {}
    for key, msd in (("without", None), ("with", msd0)):
        t = time.perf_counter()
        out = jax.block_until_ready(chunk(msd))
        t_compile[key] = time.perf_counter() - t
        log(f"compiled and ran '{key}' in {t_compile[key]:.1f} s")
        assert bool(np.all(out.ok)), "graph capacity overflow in the timed chunk"
    walls = {"without": [], "with": []}
    for _ in range(args.repeat):  # interleaved, so that clock or thermal drifts hit both alike
        for key, msd in (("without", None), ("with", msd0)):
            t = time.perf_counter()
            jax.block_until_ready(chunk(msd))
            walls[key].append(time.perf_counter() - t)
            log(f"{key}: {walls[key][-1]:.3f} s")
    ms = {k: statistics.median(v) / args.steps * 1e3 for k, v in walls.items()}
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); {n_rep} replicas x {n} atoms "
          f"({int(mobile.sum())} Li), NVT 1 fs, {args.steps} steps per chunk, frame every {stride} steps; streaming "
          f"MSD {args.levels} levels x {args.block}, updated every {args.msd_every} steps")
    print(f"ms per MD step (all replicas): without {ms['without']:.3f}, with {ms['with']:.3f}; overhead "
          f"{100 * (ms['with'] / ms['without'] - 1):+.2f}% (median of {args.repeat}; runs without "
          f"{np.round(walls['without'], 4).tolist()} s, with {np.round(walls['with'], 4).tolist()} s); first call "
          f"(compile unless cached) {t_compile['without']:.1f} / {t_compile['with']:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="100 Li x 100,000 frames x 8 T (GPU size)")
    ap.add_argument("--atoms", type=int, default=100)
    ap.add_argument("--frames", type=int, default=None, help="default 10,000 (100,000 with --full)")
    ap.add_argument("--temps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--da-temps", type=int, default=None, help="temperatures run with DiffusionAnalyzer")
    ap.add_argument("--no-da", action="store_true", help="skip DiffusionAnalyzer")
    ap.add_argument("--md-chunk", action="store_true", help="time an MD chunk with and without the streaming MSD")
    ap.add_argument("--replicas", type=int, default=8, help="--md-chunk: replicas")
    ap.add_argument("--cell", type=int, default=4, help="--md-chunk: LYC-like supercell (4: 427 atoms)")
    ap.add_argument("--steps", type=int, default=1000, help="--md-chunk: MD steps per timed chunk")
    ap.add_argument("--stride", type=int, default=100, help="--md-chunk: steps between recorded frames")
    ap.add_argument("--msd-every", type=int, default=10, help="--md-chunk: steps between accumulator updates")
    ap.add_argument("--levels", type=int, default=5, help="--md-chunk: accumulator levels")
    ap.add_argument("--block", type=int, default=10, help="--md-chunk: accumulator block")
    args = ap.parse_args()
    if args.md_chunk:
        return md_chunk_cost(args)
    frames = args.frames or (100_000 if args.full else 10_000)
    n_fw = 4
    n = args.atoms + n_fw
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{args.atoms} Li + {n_fw} framework atoms x {frames} frames x {args.temps} temperatures")

    key = jax.random.PRNGKey(0)
    steps = 0.05 * jax.random.normal(key, (args.temps, frames, n, 3), jnp.float32)
    pos = jax.block_until_ready(jnp.cumsum(steps, axis=1))
    del steps
    mobile = np.arange(n) < args.atoms

    rows = []
    msd = jax.vmap(partial(A.msd_fft, mobile=mobile, framework=~mobile))
    c, r = timed(msd, pos, repeat=args.repeat)
    rows.append(("lycb_jax msd_fft (tracer + collective)", args.temps, c, r))

    def window_and_gls(p):  # MSD + diffusive window + GLS D with the MSD covariance, as diffusion_coefficient
        return A.diffusion_coefficient(p, 1.0, mobile, framework=~mobile, mesh=None)

    jax.block_until_ready(pos)
    window_and_gls(pos[:1, : min(frames, 2000)])  # compile the small-shape programs once
    t = time.perf_counter()
    window_and_gls(pos)
    rows.append(("lycb_jax full D analysis (MSD, window, GLS; first call incl. compile)", args.temps, 0.0,
                 time.perf_counter() - t))

    # streaming (order-n) accumulators: cost of one update on R x N atoms, in a scan of `frames` updates
    n_rep = args.temps
    init = jax.vmap(lambda _: streaming_init(n, levels=5, block=10))(jnp.arange(n_rep))

    def stream(state, p):  # p [T, R, N, 3]
        return jax.lax.scan(lambda s, x: (jax.vmap(streaming_update)(s, x), None), state, p)[0]

    c, r = timed(stream, init, jnp.swapaxes(pos, 0, 1), repeat=args.repeat)
    rows.append((f"streaming MSD update, per frame x {frames} frames (5 levels x 10)", args.temps, c, r))
    print(f"streaming MSD: {r / frames * 1e6:.2f} us per update of {n_rep} x {n} atoms "
          "(compare with one MD step of bench_md.py on the same device)")

    if not args.no_da:
        from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
        from pymatgen.core import Lattice, Structure

        n_da = args.da_temps or (1 if args.full else args.temps)
        n_da = min(n_da, args.temps)
        box = 20.0
        p0 = np.asarray(pos[0, 0], np.float64) % box
        structure = Structure(Lattice.cubic(box), ["Li"] * args.atoms + ["Cl"] * n_fw, p0,
                              coords_are_cartesian=True)
        times = []
        for k in range(n_da):
            disp = np.transpose(np.asarray(pos[k], np.float64) - np.asarray(pos[k, :1], np.float64), (1, 0, 2))
            t = time.perf_counter()
            DiffusionAnalyzer(structure, disp, "Li", 600.0, 1, 1, smoothed="max")
            times.append(time.perf_counter() - t)
        total = sum(times) / n_da * args.temps
        note = "" if n_da == args.temps else f" [ran {n_da} of {args.temps} T, total extrapolated]"
        rows.append(("pymatgen DiffusionAnalyzer (CPU, max)" + note, args.temps, 0.0, total))

    print(f"\n{'method':<72} {'T':>3} {'compile s':>10} {'run s':>10} {'per T s':>9}")
    for name, nt, c, r in rows:
        print(f"{name:<72} {nt:>3} {c:>10.3f} {r:>10.4f} {r / nt:>9.4f}")


if __name__ == "__main__":
    main()
