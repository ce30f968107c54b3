# Copied unchanged (but for this line) from shared/bench/torch_chgnet_baseline.py: the PyTorch CHGNet baseline, run side by side.
"""Baseline: torch CHGNet 0.3.0 speed on the GPU, single-point and ASE-driven NVT MD."""
import os, sys, time, json
import numpy as np
import torch
from pymatgen.core import Structure, Lattice
from chgnet.model import CHGNet
from chgnet.model.dynamics import MolecularDynamics, CHGNetCalculator

def lyc_like(n=3, seed=0):
    # crude Li3YCl6-like model: rocksalt Cl sublattice, 2/3 of octahedral sites filled (Li:Y = 3:1)
    rng = np.random.default_rng(seed)
    a = 5.35
    base = Structure(Lattice.cubic(a), ["Cl"]*4 + ["Li"]*4,
        [[0,0,0],[0.5,0.5,0],[0.5,0,0.5],[0,0.5,0.5],[0.5,0,0],[0,0.5,0],[0,0,0.5],[0.5,0.5,0.5]])
    s = base * (n, n, n)
    cat = [i for i, site in enumerate(s) if site.specie.symbol == "Li"]
    rng.shuffle(cat)
    ncl = len(cat); ny = ncl // 6; nrm = ncl // 3
    for i in cat[:ny]: s.replace(i, "Y")
    s.remove_sites(sorted(cat[ny:ny+nrm]))
    s.perturb(0.05)
    return s

res = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
model = CHGNet.load(model_name="0.3.0", use_device="cuda")
for n in (3, 4, 6):
    s = lyc_like(n)
    N = len(s)
    for _ in range(3): model.predict_structure(s, task="efs")
    torch.cuda.synchronize(); t = time.perf_counter(); k = 10
    for _ in range(k): model.predict_structure(s, task="efs")
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / k
    g = model.graph_converter(s)
    res[f"single_N{N}"] = {"ms_per_call": dt*1e3, "edges_per_atom": g.atom_graph.shape[0]/N, "angles_per_atom": g.bond_graph.shape[0]/N}
    print(res[f"single_N{N}"], flush=True)
# batched predict: 8 copies of 180-atom
s = lyc_like(3); N = len(s)
batch = [lyc_like(3, seed=i) for i in range(8)]
for _ in range(2): model.predict_structure(batch, task="efs", batch_size=8)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(5): model.predict_structure(batch, task="efs", batch_size=8)
torch.cuda.synchronize(); dt = (time.perf_counter() - t)/5
res["batch8_N180"] = {"ms_per_call": dt*1e3, "atom_steps_per_s": 8*N/dt}
print(res["batch8_N180"], flush=True)
# ASE NVT Nose-Hoover MD, 1 fs, as the package does it
for n in (3, 4):
    s = lyc_like(n); N = len(s)
    md = MolecularDynamics(atoms=s, model=model, ensemble="nvt", thermostat="Nose-Hoover", temperature=600, timestep=1.0, trajectory=None, logfile=None, loginterval=100, use_device="cuda")
    md.run(20)
    t = time.perf_counter(); steps = 200
    md.run(steps)
    dt = time.perf_counter() - t
    res[f"md_nvt_N{N}"] = {"s_per_step": dt/steps, "s_per_atom_per_ps": dt/steps*1000/N, "atom_steps_per_s": N*steps/dt}
    print(res[f"md_nvt_N{N}"], flush=True)
print(json.dumps(res, indent=1))
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "torch_baseline.json"), "w"), indent=1)
