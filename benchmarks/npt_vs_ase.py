"""lycb_jax's full-cell MTK NpT against ASE's MTKNPT (the long version of tests/md/test_npt.py's check).

hcp argon (force-shifted Lennard-Jones, tests/potentials.py; 36 atoms, hexagonal cell) at
--temperature K and --pressure bar: lycb_jax ``tri`` (--replicas vmapped runs) and ASE's MTKNPT
(--ase-runs serial runs, full 3x3 cell), each equilibrated then sampled. Prints and writes (--json)
the average cell parameters, volume and stress tensor with block standard errors, the
conserved-quantity drift (meV/atom/ps) and the temperatures. CPU is enough:

    python benchmarks/npt_vs_ase.py --sample-ps 100 --json benchmarks/results/npt_vs_ase.json

Units: K, bar, fs, ps, Angstrom, degrees, GPa (ASE sign: positive = tensile).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import npt_reference as ref


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temperature", type=float, default=20.0)
    ap.add_argument("--pressure", type=float, default=100.0)
    ap.add_argument("--equilibrate-ps", type=float, default=5.0)
    ap.add_argument("--sample-ps", type=float, default=100.0)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--ase-runs", type=int, default=2)
    ap.add_argument("--barostat", default="tri")
    ap.add_argument("--json")
    args = ap.parse_args()
    atoms = ref.hcp_argon()
    s = ref.RunSettings(temperature_K=args.temperature, pressure_bar=args.pressure, equilibrate_ps=args.equilibrate_ps,
                        sample_ps=args.sample_ps, chunk_ps=5.0 if args.sample_ps % 5 == 0 else 1.0)
    t = time.perf_counter()
    ours = ref.run_lycb(atoms, s, args.barostat, replicas=args.replicas)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    runs = [ref.run_ase(atoms, s, seed=k) for k in range(args.ase_runs)]
    t_ase = time.perf_counter() - t
    ase = {k: np.concatenate([r[k] for r in runs]) for k in runs[0] if k != "time_ps"}
    ase["time_ps"] = runs[0]["time_ps"]
    out = {}
    for name, res in (("lycb_jax", ours), ("ase", ase)):
        sm = ref.summary(res, len(atoms))
        out[name] = {k: np.asarray(v).tolist() for k, v in sm.items()}
        print(f"{name:9s} a b c alpha beta gamma = {np.round(sm['cellpar'], 3)} +- {np.round(sm['cellpar_err'], 3)}")
        print(f"{'':9s} V = {sm['volume']:.2f} +- {sm['volume_err']:.2f} A^3, T = {sm['temperature']:.2f} K, "
              f"drift max |{np.abs(sm['drift']).max():.2e}| meV/atom/ps")
        print(f"{'':9s} stress (GPa) diag {np.round(np.diag(sm['stress']), 5)} +- "
              f"{np.round(np.diag(sm['stress_err']), 5)}, off-diag {np.round(sm['stress'][[1, 0, 0], [2, 2, 1]], 5)}")
    o, a = out["lycb_jax"], out["ase"]
    z = (np.array(o["cellpar"]) - a["cellpar"]) / np.hypot(o["cellpar_err"], a["cellpar_err"])
    print("difference / combined error (a b c alpha beta gamma):", np.round(z, 2))
    out.update(settings=vars(args), z_cellpar=z.tolist(), seconds=dict(lycb_jax=t_ours, ase=t_ase))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
