"""Li diffusion before and after the volume refinement (issue 19, item 4): LYC and LYB 60-atom cells, heat,
NVT, NpT (tri, 1 bar) and NVT production at one temperature in each model's own NpT cell; D with the
analysis's convergence verdict (lycb_jax.analysis.analyse_md).

    python benchmarks/refine_volume_diffusion.py OUT --model chgnet-0.3.0-lycb-pbe [-T 800] [--production-ps 6]
"""
import argparse
import json
import warnings
from pathlib import Path

from ase.io import read

from lycb_jax import md
from lycb_jax.models import load_model
from lycb_jax.workflows.study import analyse

al = Path(__file__).resolve().parent / "active_learning"
p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--model", required=True)
p.add_argument("-T", "--temperature", type=float, default=800.0)
p.add_argument("--npt-ps", type=float, default=3.0)
p.add_argument("--production-ps", type=float, default=6.0)
args = p.parse_args()
out = Path(args.out)
cells = {"LYC": read(al / "LYC30.cif") * (1, 1, 2), "LYB": read(al / "LYB20.cif") * (3, 1, 1)}
proto = md.Protocol(temperatures_K=(args.temperature,) * 2, dt_fs=2.0, heat_ps=0.5, nvt_ps=0.5, npt_ps=args.npt_ps,
                    npt_average_ps=args.npt_ps / 2, production_ps=args.production_ps, save_every_fs=20.0,
                    chunk_ps=0.5, checkpoint_every_ps=0.5, barostat="tri")
sim = md.Simulation(load_model(args.model), list(cells.values()), proto, out,
                    resume=(out / "checkpoint.npz").exists())
sim.run()
rows = {}
for r, name in enumerate(cells):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = analyse(out / "trajectory.h5", out / name, replicas=[r])
            rows[name] = s["per_temperature"][0]
        except ValueError as err:
            rows[name] = {"error": str(err)}
    print(name, json.dumps({k: rows[name].get(k) for k in ("T", "D", "D_err", "converged", "reason", "error")}), flush=True)
(out / "diffusion.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
