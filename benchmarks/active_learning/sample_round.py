"""Candidates of a later round of the iterative fine-tuning (issue 17), with the library's own loop step
(lycb_jax.active.loop.sample_md): MD of a parent with the current model at T (heat from 100 K, NpT at
1 bar for the volume, NVT in the NpT-averaged cell), then farthest-point sampling of the NVT frames,
pooled over independent runs (seeds).

    python sample_round.py r1 LYC30 --model models/r0_default -T 600 --n 20 [--seeds 0 1] [--barostat aniso]

Writes cand_<parent>_<round>.extxyz next to this script.
"""
import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from lycb_jax.active.loop import sample_md, sampling_protocol
from lycb_jax.active.sampling import farthest_point_sampling, position_features
from lycb_jax.md import Protocol
from lycb_jax.md.trajectory import read_trajectory
from lycb_jax.models import load_model

here = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument("round")
p.add_argument("parent", help="LYC30 or LYB20 (the .cif next to this script)")
p.add_argument("--model", required=True)
p.add_argument("-T", "--temperature", type=float, required=True, help="K")
p.add_argument("--n", type=int, default=20, help="structures to pick")
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one independent MD run per seed")
p.add_argument("--npt-ps", type=float, default=6.0)
p.add_argument("--sample-ps", type=float, default=8.0)
p.add_argument("--pressure-bar", type=float, default=1.0)
p.add_argument("--barostat", default="aniso", help="iso|aniso|tri: 'aniso' (no shear) by default, as the shape of a "
               "20-30 atom cell fluctuates too much under 'tri' for its average to be a good production cell")
p.add_argument("--work", default=str(here / "md_rounds"))
p.add_argument("--md-only", action="store_true", help="run (or resume) the MD and stop (one process per seed)")
args = p.parse_args()

model = load_model(args.model)
parent = read(here / f"{args.parent}.cif")
pos, cells = [], []
for seed in args.seeds:
    md = sampling_protocol(npt_ps=args.npt_ps, npt_average_ps=args.npt_ps * 2 / 3, production_ps=args.sample_ps,
                           save_every_fs=50.0, pressure_bar=args.pressure_bar, barostat=args.barostat, seed=seed)
    work = Path(args.work) / f"{args.round}_{args.parent}_T{args.temperature:.0f}_s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        # runs (or resumes) the MD
        sample_md(model, parent, name=args.parent, temperature_K=args.temperature, md=md, out=work, n=1)
    except RuntimeError as err:  # the model failed at T: the frames before the failure are still candidates
        print(f"seed {seed}: {err}")
    with read_trajectory(work / f"md_{args.parent}" / "trajectory.h5") as f:
        if "production" not in f:
            continue
        temperature, x = f["production"]["temperature"][0], f["production"]["positions"][0]
        # not after a runaway: the protocol's own limit, and a stopped replica's frozen frames
        frozen = np.r_[False, np.all(x[1:] == x[:-1], axis=(1, 2))]
        ok = np.isfinite(temperature) & (temperature < Protocol.max_temperature_factor * args.temperature) & ~frozen
        ok &= np.cumsum(~ok) == 0
        pos.append(x[ok])  # [F, N, 3] unwrapped, A
        cells.append(f["production"]["cell"][0][ok])
        numbers = np.atleast_2d(f.attrs["numbers"])[0]
        if not ok.all():
            print(f"seed {seed}: {ok.sum()} of {ok.size} production frames before the temperature ran away")
if args.md_only:
    raise SystemExit(0)
if not pos:
    raise SystemExit(f"{args.parent}: no production frames to sample from")
pos, cells = np.concatenate(pos), np.concatenate(cells)
# FPS over the pooled runs (all start from the same parent, so unwrapped positions compare; cells mapped to the first)
pick = farthest_point_sampling(position_features(pos, cells), args.n)
frames = []
for k in pick:
    a = Atoms(numbers=numbers, positions=pos[k], cell=cells[k], pbc=True)
    a.wrap()
    a.info.update(parent=args.parent, T_K=args.temperature, md_frame=int(k), round=args.round, model=str(args.model),
                  volume_A3_per_atom=a.get_volume() / len(a))
    frames.append(a)
write(here / f"cand_{args.parent}_{args.round}.extxyz", frames)
vols = [a.info["volume_A3_per_atom"] for a in frames]
print(f"{args.parent} {args.round}: picked {len(frames)} of {len(pos)} frames at {args.temperature:.0f} K, "
      f"NVT cell {min(vols):.2f}-{max(vols):.2f} A^3/atom (NpT-averaged)")
