"""Inverse refinement (issue 19, item 4): move layer groups of the shipped LYCB model so that LYC and LYB
at the experimental lattice and 300 K feel 1 bar, by reweighting (lycb_jax.sensitivity.refine), with a
penalty on the PBE force labels; then NpT at 300 K and 1 bar before and after, and the held-out errors.

Rounds (each resumable; a killed run continues from the last finished step):
  1. NVT at 300 K in the experimental cells (LYC30 x 1x1x2 and LYB20 x 3x1x1, 60 atoms each, one batched run)
     with the current parameters; frames of the production part.
  2. Adam steps on ``--select`` until the stress matches (converged) or n_eff / F < 0.5 (re-sample: next round).
NpT check: heat, NVT, then NpT (tri, 1 bar) at 300 K of both cells with the parent and the refined model;
mean volume per atom and cell lengths over the second half vs experiment (Schlem 2021).

    python benchmarks/refine_volume.py OUT [--rounds 3] [--select readout] [--nvt-ps 3] [--npt-ps 10]
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from ase.io import read

from lycb_jax import md
from lycb_jax.md.trajectory import read_trajectory
from lycb_jax.models import load_model, save_checkpoint
from lycb_jax.sensitivity import dft_penalty, frames_from_trajectory, refine_stress, stress_target
from lycb_jax.train.data import as_dataset
from lycb_jax.train.metrics import evaluate

root = Path(__file__).resolve().parents[1]
al = root / "benchmarks" / "active_learning"
EXPERIMENT = {"LYC": 21.93, "LYB": 26.75}  # A^3/atom, Schlem et al. 2021 (../shared/reference)

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--model", default="chgnet-0.3.0-lycb-pbe")
p.add_argument("--select", default="readout", help="comma-separated layer groups to refine")
p.add_argument("--rounds", type=int, default=4)
p.add_argument("--steps", type=int, default=15, help="Adam steps per round at most")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--dft-weight", type=float, default=10.0, help="weight of the DFT loss ratio L/L0 in the objective")
p.add_argument("--energy-weight", type=float, default=0.0, help="energy term of the DFT penalty (forces: 1)")
p.add_argument("--dft-every", type=int, default=2, help="every n-th training label in the penalty (cost)")
p.add_argument("--temperature", type=float, default=300.0)
p.add_argument("--nvt-ps", type=float, default=3.0, help="production frames per round")
p.add_argument("--equil-ps", type=float, default=1.0)
p.add_argument("--every-fs", type=float, default=100.0, help="frame interval used for reweighting")
p.add_argument("--npt-ps", type=float, default=10.0, help="NpT check length (0: skip)")
args = p.parse_args()

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
cells = {"LYC": read(al / "LYC30.cif") * (1, 1, 2), "LYB": read(al / "LYB20.cif") * (3, 1, 1)}
parent = load_model(args.model)
select = [s for s in args.select.split(",") if s]
train = [a for r in ("r0", "r1", "r2") for a in read(al / f"train_{r}.extxyz", index=":")][::args.dft_every]
heldout = as_dataset(read(root / "tests" / "data" / "lycb_pbe_heldout.extxyz", index=":"))
batches, dft_loss = dft_penalty(parent, as_dataset(train), energy_weight=args.energy_weight, force_weight=1.0)
log = (out / "log.txt").open("a")


def say(msg):
    print(msg, flush=True)
    log.write(msg + "\n")
    log.flush()


def model_at(k):
    """The model entering round k: the parent for k = 0, else round k-1's refined checkpoint."""
    return parent if k == 0 else load_model(str(out / f"round{k - 1}" / "refined"))


def nvt_frames(model, folder):
    proto = md.Protocol(temperatures_K=(args.temperature,) * 2, dt_fs=2.0, heat_ps=0.5, nvt_ps=args.equil_ps,
                        npt_ps=0.0, production_ps=args.nvt_ps, save_every_fs=args.every_fs, chunk_ps=0.5,
                        checkpoint_every_ps=0.5)
    md.Simulation(model, list(cells.values()), proto, folder, resume=(folder / "checkpoint.npz").exists()).run()
    return [frames_from_trajectory(folder / "trajectory.h5", "production", replica=r) for r in range(len(cells))]


dft_parent = sum(float(jax.jit(dft_loss)(parent.params, b)) for b in batches)  # the penalty is relative to the parent
say(f"# refine_volume {vars(args)}; {len(train)} PBE training labels in the penalty, {len(heldout)} held out")
k = 0
while k < args.rounds:
    rdir = out / f"round{k}"
    if (rdir / "refined" / "manifest.json").exists():
        k += 1
        continue
    model = model_at(k)
    t0 = time.time()
    frames = nvt_frames(model, rdir / "nvt")
    t_md = time.time() - t0
    targets = [stress_target(model, f, args.temperature) for f in frames]
    res = refine_stress(model, targets, batches, dft_loss=dft_loss, select=select, steps=args.steps,
                        learning_rate=args.lr, dft_weight=args.dft_weight, dft_reference=dft_parent, log=say)
    refined = dataclasses.replace(model, params=res.params, name=f"{parent.name}-refined")
    save_checkpoint(rdir / "refined", refined, {"parent": args.model, "refined_groups": select, "round": k,
                                                "refine": {"reason": res.reason, "args": vars(args)}})
    (rdir / "history.json").write_text(json.dumps({"reason": res.reason, "md_s": t_md,
                                                   "refine_s": time.time() - t0 - t_md, "history": res.history}, indent=1))
    say(f"round {k}: {res.reason} after {len(res.history)} steps (MD {t_md:.0f} s, refinement {time.time() - t0 - t_md:.0f} s)")
    k += 1
    if res.reason == "converged":
        break
final = model_at(k)


def npt_check(model, folder):
    proto = md.Protocol(temperatures_K=(args.temperature,) * 2, dt_fs=2.0, heat_ps=1.0, nvt_ps=1.0, npt_ps=args.npt_ps,
                        npt_average_ps=args.npt_ps / 2, production_ps=0.0, save_every_fs=50.0, chunk_ps=1.0,
                        checkpoint_every_ps=1.0, barostat="tri")
    md.Simulation(model, list(cells.values()), proto, folder, resume=(folder / "checkpoint.npz").exists()).run()
    with read_trajectory(folder / "trajectory.h5") as f:
        vol = np.asarray(f["npt"]["volume"]) / len(cells["LYC"])
        cell = np.asarray(f["npt"]["cell"])
    half = vol.shape[1] // 2
    rows = {}
    for r, name in enumerate(cells):
        ref = np.linalg.norm(cells[name].cell[:], axis=1)
        lengths = np.linalg.norm(cell[r, half:], axis=-1).mean(0)
        v = vol[r, half:]
        rows[name] = {"volume_A3_per_atom": float(v.mean()), "volume_sem": float(v.std() / np.sqrt(len(v) / 10)),
                      "vs_experiment_pct": float(100 * (v.mean() / EXPERIMENT[name] - 1)),
                      "lengths_vs_experiment_pct": [float(x) for x in 100 * (lengths / ref - 1)]}
    return rows


table = {"args": vars(args), "rounds": k, "models": {}}
for label, model in (("before", parent), ("after", final)):
    row = {"heldout_mae": {n: v for n, v in evaluate(model, heldout).items() if "mae" in n}}
    if args.npt_ps > 0:
        t0 = time.time()
        row["npt_300K"] = npt_check(model, out / f"npt_{label}")
        row["npt_wall_s"] = time.time() - t0
    table["models"][label] = row
    say(f"{label}: " + json.dumps(row))
(out / "refine_volume.json").write_text(json.dumps(table, indent=1))
