"""Canonical KE check with an independent integrator: ASE NoseHooverChainNVT on the LJ argon cell of
tests/md/test_md.py::test_nvt_kinetic_energy_is_canonical (32 atoms, 60 K, dt 4 fs, tdamp 200 fs, 8 replicas,
4 ps equilibration, 20 ps sampled every 20 fs). Prints var(K) / ((3N-3)/2 kT^2) scaled by the mean (ASE counts 3N
degrees of freedom).   python benchmarks/nvt_canonical_ase.py 60 3   (T in K, chain length; ~3 min on one core)"""
import sys
from pathlib import Path

import numpy as np
from ase import units
from ase.calculators.lj import LennardJones
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from potentials import argon  # noqa: E402

T = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
res = []
for r in range(8):
    a = argon(2)
    a.calc = LennardJones(epsilon=0.0104, sigma=3.40, rc=6.0, smooth=True)
    MaxwellBoltzmannDistribution(a, temperature_K=T, rng=np.random.default_rng(r)); Stationary(a)
    dyn = NoseHooverChainNVT(a, 4.0 * units.fs, T, tdamp=200 * units.fs, tchain=int(sys.argv[2]), tloop=1)
    dyn.run(1000)
    ke = []
    for _ in range(1000):
        dyn.run(5); ke.append(a.get_kinetic_energy())
    res.append(np.array(ke))
ke = np.array(res); dof = 3 * len(a) - 3; kt = T * units.kB
print("ASE NHC T", T, "mean/ref(3N-3)", ke.mean() / (dof / 2 * kt), "var/ref", (ke.var(1).mean()) / (dof / 2 * kt**2),
      "+-", ke.var(1).std(ddof=1) / np.sqrt(8) / (dof / 2 * kt**2), "var/mean^2*dof/2", (ke.var(1) / ke.mean(1)**2).mean() * dof / 2)
