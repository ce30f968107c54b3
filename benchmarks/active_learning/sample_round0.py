"""Round-0 candidates for DFT: NVT MD with the pretrained model at 300 and 500 K in the experimental
cell scaled to 0.97, 1.00, 1.03, 1.06 of its volume (the pretrained model's own NpT volume is too
large, so the experimental one and strained copies are used), frames every 100 fs, then farthest-point
sampling on the mean squared difference of positions (after removing each frame's centre-of-mass drift)."""
import sys, warnings
import numpy as np
from ase.io import write
from pymatgen.core import Structure
warnings.simplefilter("ignore")
import lycb_jax
from lycb_jax.md import Protocol, Simulation
from lycb_jax.md.trajectory import read_trajectory

name, n_pick = sys.argv[1], int(sys.argv[2])
base = Structure.from_file(f"{name}.cif")
vols = [0.97, 1.00, 1.03, 1.06]
temps = [300.0, 500.0]
structs, tlist = [], []
for t in temps:
    for v in vols:
        s = base.copy(); s.scale_lattice(base.volume * v); structs.append(s); tlist.append(t)
p = Protocol(temperatures_K=tuple(tlist), dt_fs=2.0, start_K=100.0, heat_ps=0.4, nvt_ps=0.6, npt_ps=0.0,
             production_ps=6.0, save_every_fs=100.0, chunk_ps=1.0, checkpoint_every_ps=2.0, seed=0)
out = f"md_{name}"
Simulation(lycb_jax.load_model("chgnet-0.3.0"), structs, p, out, resume=True, progress=False).run()
with read_trajectory(f"{out}/trajectory.h5") as f:
    pos = f["production"]["positions"][:]  # [R, F, N, 3]
    cell = f["production"]["cell"][:]
    numbers = np.atleast_2d(f.attrs["numbers"])[0]
R, F, N, _ = pos.shape
X = pos.reshape(R * F, N, 3)
C = cell.reshape(R * F, 3, 3)
# descriptor: fractional positions (so strained copies compare by their displacements), drift removed
frac = np.einsum("kni,kij->knj", X, np.linalg.inv(C))
frac -= frac.mean(axis=1, keepdims=True)
dcart = np.einsum("knj,ji->kni", frac, C[0])  # in one reference metric
def msd(a, b): return np.mean(np.sum((a - b) ** 2, -1))
# farthest-point sampling (greedy max-min) with the volume factor as an extra coordinate
volf = np.repeat(np.array(vols * len(temps)), F)
feat = dcart.reshape(len(X), -1) / np.sqrt(N)
chosen = [0]
d = np.array([np.sum((feat - feat[0]) ** 2, 1)]).min(0) + (volf - volf[0]) ** 2 * 100
for _ in range(n_pick - 1):
    k = int(np.argmax(d)); chosen.append(k)
    d = np.minimum(d, np.sum((feat - feat[k]) ** 2, 1) + (volf - volf[k]) ** 2 * 100)
from ase import Atoms
frames = []
for k in chosen:
    a = Atoms(numbers=numbers, positions=X[k], cell=C[k], pbc=True); a.wrap()
    a.info.update(parent=name, T_K=tlist[k // F], volume_factor=volf[k], md_frame=int(k % F), round=0)
    frames.append(a)
write(f"cand_{name}_r0.extxyz", frames)
print(name, "picked", len(frames), "of", R * F)
