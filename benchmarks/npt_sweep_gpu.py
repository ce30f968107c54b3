"""Issue 16 on one GPU: the LYC0 2x2x2 (P-3c1, 480 atoms) and LYB0 3x2x2 (C2/c Li3YBr6, 480 atoms)
sweep at 4 temperatures in one batched run with the full-cell (``tri``) MTK barostat, pretrained model.

Reports, per replica: the NpT average volume (A^3/atom) and cell parameters (a, b, c in A; alpha,
beta, gamma in degrees) over the last ``--npt-average-ps``, the conserved-quantity drift of each
stage (meV/atom/ps) and whether it was flagged; for the run: effective ns/day (all wall time,
compilations included) against steady ns/day (median chunk), the chunks that recompiled, and the
cost per MD step of ``tri`` against ``iso`` NpT (same states, compiled programs timed alone).
Writes ``<out>/npt_sweep.json``; the trajectory is ``<out>/trajectory.h5``.

    python benchmarks/npt_sweep_gpu.py --out benchmarks/results/npt_sweep_h200

About 7 minutes on an H200 with the defaults (12 ps of MD for 8 x 480 atoms at ~10 ms per step,
and ~8 compilations of ~30 s); ``--npt-ps`` etc. shorten or lengthen it, ``--cost-steps 0`` skips
the tri/iso timing (2 more compilations). Units: ps, fs, K, bar, Angstrom, eV.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SERIES = ROOT / "benchmarks" / "results" / "lycb_series_cpu"
FILES = {"LYC0": SERIES / "LYC0_x0.0.cif", "LYB0": SERIES / "LYB0_x6.0.cif"}  # P-3c1 Li3YCl6, C2/c Li3YBr6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/npt_sweep_h200")
    ap.add_argument("--model", default="chgnet-0.3.0")
    ap.add_argument("--dispersion", help="d3bj[:FUNCTIONAL]: add D3(BJ) to the model (issue 28)")
    ap.add_argument("-T", "--temperatures", type=float, nargs="+", default=[600.0, 800.0, 1000.0, 1200.0])
    ap.add_argument("--heat-ps", type=float, default=1.0)
    ap.add_argument("--nvt-ps", type=float, default=2.0)
    ap.add_argument("--dt-fs", type=float, default=1.0)
    ap.add_argument("--npt-ps", type=float, default=8.0)
    ap.add_argument("--npt-average-ps", type=float, default=4.0)
    ap.add_argument("--production-ps", type=float, default=1.0)
    ap.add_argument("--pressure-bar", type=float, default=1.0)
    ap.add_argument("--barostat", default="tri")
    ap.add_argument("--cost-steps", type=int, default=200, help="steps of the timed tri and iso NpT chunks")
    ap.add_argument("--supercells", nargs=2, default=["2,2,2", "3,2,2"], metavar=("LYC0", "LYB0"),
                    help="supercells of LYC0 (60 atoms) and LYB0 (40 atoms); equal atom counts (a CPU smoke test: "
                         "2,1,1 3,1,1)")
    args = ap.parse_args()
    t_start = time.perf_counter()

    from ase.geometry.cell import cell_to_cellpar
    from pymatgen.core import Structure

    import lycb_jax
    import lycb_jax.md.simulation as simulation_module
    from lycb_jax.md import Protocol

    lycb_jax.enable_compilation_cache()
    model = lycb_jax.load_model(args.model, dispersion=args.dispersion)
    mults = {name: tuple(int(x) for x in m.split(",")) for name, m in zip(FILES, args.supercells)}
    structures = {name: Structure.from_file(path) * mults[name] for name, path in FILES.items()}
    sizes = {name: len(s) for name, s in structures.items()}
    assert len(set(sizes.values())) == 1, f"the replicas need equal atom counts: {sizes}"
    temps = tuple(args.temperatures)
    replicas = [structures[name] for name in structures for _ in temps]
    labels = [(name, t) for name in structures for t in temps]
    protocol = Protocol(
        temperatures_K=temps * len(structures), dt_fs=args.dt_fs, heat_ps=args.heat_ps, nvt_ps=args.nvt_ps,
        npt_ps=args.npt_ps, npt_average_ps=args.npt_average_ps, production_ps=args.production_ps,
        pressure_bar=args.pressure_bar, barostat=args.barostat, save_every_fs=50.0, chunk_ps=0.5,
        checkpoint_every_ps=5.0)

    chunks = []  # (stage ensemble, steps, wall seconds, capacity in, capacity out) per chunk
    real_run = simulation_module.run_chunk_checked

    def timed(*a, **k):
        t = time.perf_counter()
        out, cap = real_run(*a, **k)
        np.asarray(out.alive)  # wait for the device
        chunks.append(dict(ensemble=k["settings"].ensemble, steps=k["n_frames"] * k["stride"],
                           seconds=time.perf_counter() - t, capacity_changed=cap != k["capacity"]))
        print(f"chunk {len(chunks)}: {chunks[-1]}", flush=True)  # a call cut short keeps the timings
        return out, cap

    simulation_module.run_chunk_checked = timed
    out = Path(args.out)
    t_md = time.perf_counter()
    summary = simulation_module.Simulation(model, replicas, protocol, out, progress=False).run()
    md_seconds = time.perf_counter() - t_md
    simulation_module.run_chunk_checked = real_run

    n_atoms = next(iter(sizes.values()))
    total_ps = sum(c["steps"] for c in chunks) * protocol.dt_fs / 1000
    rates = [c["steps"] * protocol.dt_fs / 1000 / c["seconds"] for c in chunks]  # ps/s of each chunk
    steady = statistics.median(rates)
    slow = [i for i, r in enumerate(rates) if r < steady / 2]
    to_ns_day = 86400 / 1000
    result = dict(structures={k: f"{v.relative_to(ROOT)} x {mults[k]}" for k, v in FILES.items()},
                  atoms=n_atoms, replicas=len(replicas), protocol=dict(vars(args)), alive=summary["alive"],
                  failed=summary["failed"], drift_flagged=summary.get("drift_flagged", {}),
                  md_wall_s=md_seconds, simulated_ps_per_replica=total_ps,
                  effective_ns_day_per_replica=total_ps / md_seconds * to_ns_day,
                  steady_ns_day_per_replica=steady * to_ns_day,
                  steady_fraction_of_wall=sum(c["seconds"] for i, c in enumerate(chunks) if i not in slow) / md_seconds,
                  slow_chunks=[dict(index=i, **chunks[i]) for i in slow],
                  capacity_changes=sum(c["capacity_changed"] for c in chunks), chunks=len(chunks))

    from lycb_jax.md.trajectory import read_trajectory

    per_replica = []
    with read_trajectory(out / "trajectory.h5") as f:
        avg = f["npt"].attrs["average_cell"] if "npt" in f and "average_cell" in f["npt"].attrs else None
        for r, (name, t) in enumerate(labels):
            row = dict(structure=name, T_K=t, alive=bool(summary["alive"][r]))
            if avg is not None:
                par = cell_to_cellpar(avg[r])
                row.update(npt_volume_A3_per_atom=float(abs(np.linalg.det(avg[r]))) / n_atoms,
                           input_volume_A3_per_atom=structures[name].volume / n_atoms,
                           cell_abc_A=[round(float(x), 3) for x in par[:3]],
                           cell_angles_deg=[round(float(x), 2) for x in par[3:]],
                           input_abc_A=[round(float(x), 3) for x in structures[name].lattice.abc],
                           input_angles_deg=[round(float(x), 2) for x in structures[name].lattice.angles])
            if "npt" in f:  # is the cell settled? the volume over the averaging window, its halves and slope
                t_ps = f["npt/time_fs"][:] / 1000
                vol = f["npt/volume"][r] / n_atoms
                win = t_ps >= t_ps[-1] - args.npt_average_ps
                half = np.array_split(np.flatnonzero(win), 2)
                row.update(npt_window_halves_A3_per_atom=[round(float(vol[h].mean()), 3) for h in half],
                           npt_window_slope_A3_per_atom_per_ps=float(np.polyfit(t_ps[win], vol[win], 1)[0]),
                           npt_window_std_A3_per_atom=float(vol[win].std()))
            for stage in f:
                if "conserved_drift_meV_per_atom_ps" in f[stage].attrs:
                    row[f"drift_{stage}_meV_atom_ps"] = float(f[stage].attrs["conserved_drift_meV_per_atom_ps"][r])
            per_replica.append(row)
    result["per_replica"] = per_replica
    (out / "npt_sweep.json").write_text(json.dumps(result, indent=1, default=str))  # before the cost timing
    if args.cost_steps:
        result["cost_per_step"] = cost_per_step(model, replicas, protocol, args.cost_steps)
    result["total_wall_s"] = time.perf_counter() - t_start
    (out / "npt_sweep.json").write_text(json.dumps(result, indent=1, default=str))
    for row in per_replica:
        print(row)
    print({k: v for k, v in result.items() if k not in ("per_replica", "chunks", "slow_chunks")})


def cost_per_step(model, replicas, protocol, steps: int) -> dict:
    """ms per MD step of the whole batch for NpT ``iso`` and ``tri``, each program compiled first and
    then timed alone on the same initial states."""
    import jax
    import jax.numpy as jnp
    from ase import units

    from lycb_jax.md import (ChunkInputs, ChunkSpec, IntegratorSettings, default_capacity, init_replica, masses_of,
                             run_chunk_checked)

    species = jnp.asarray(np.stack([[site.specie.Z for site in s] for s in replicas]), jnp.int32)
    pos = jnp.asarray(np.stack([s.cart_coords for s in replicas]), jnp.float32)
    cell = jnp.asarray(np.stack([s.lattice.matrix for s in replicas]), jnp.float32)
    masses = jnp.asarray(np.stack([masses_of(np.asarray(sp)) for sp in species]))
    kT = jnp.asarray(np.asarray(protocol.temperatures_K) * units.kB, jnp.float32)
    cap = max((default_capacity(np.asarray(p), np.asarray(c, np.float64), cutoffs=model.cutoffs) for p, c in
               zip(pos, cell)), key=lambda c: c.angles)
    keys = jax.random.split(jax.random.PRNGKey(0), len(replicas))
    alive = jnp.ones(len(replicas), bool)
    res = {}
    for label, settings in (("npt_iso", IntegratorSettings("npt", barostat="iso")),
                            ("npt_tri", IntegratorSettings("npt", barostat="tri"))):
        states = jax.vmap(lambda sp, x, c, m, t, k: init_replica(model, sp, x, cell=c, masses=m, kT=t, key=k,
                                                                 settings=settings, capacity=cap)[0])(
            species, pos, cell, masses, kT, keys)
        inputs = ChunkInputs(species, cell, states, kT, kT, alive)
        out, cap = run_chunk_checked(model, inputs, ChunkSpec(settings, cap, n_frames=1, stride=steps),
                                     mesh=None)  # compile (and grow if needed)
        np.asarray(out.alive)
        t = time.perf_counter()
        out, _ = run_chunk_checked(model, inputs, ChunkSpec(settings, cap, n_frames=1, stride=steps), mesh=None)
        np.asarray(out.alive)
        res[f"{label}_ms_per_step"] = (time.perf_counter() - t) / steps * 1000
    res["tri_over_iso"] = res["npt_tri_ms_per_step"] / res["npt_iso_ms_per_step"]
    return res


if __name__ == "__main__":
    main()
