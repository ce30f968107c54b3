"""Gradient of the short-time MSD w.r.t. the LJ epsilon by jax.grad through checkpointed Langevin MD
(lycb_jax.sensitivity.msd_and_grad), against central finite differences with common random numbers, and
its spread across independent windows as the window grows (chaos: the per-window gradient grows
exponentially with the window, so its variance does too).

    nice -n 5 .venv/bin/python benchmarks/sensitivity_msd_gradient.py --temperature 40 --windows-ps 0.1 0.25 0.5 1 2
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from potentials import EPS, argon, lj_model

import lycb_jax.graph.capacity as caps
from lycb_jax.md import masses_of
from lycb_jax.sensitivity import langevin_checked, maxwell_boltzmann, msd_and_grad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, default=40.0, help="K")
    ap.add_argument("--windows-ps", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--n-windows", type=int, default=16)
    ap.add_argument("--dt-fs", type=float, default=5.0)
    ap.add_argument("--gamma-per-ps", type=float, default=1.0, help="Langevin friction, 1/ps (0: NVE)")
    ap.add_argument("--skin", type=float, default=2.0, help="Angstrom; atoms must move < skin/2 per window")
    ap.add_argument("--cells", type=int, default=2, help="fcc argon n x n x n conventional cells (4 n^3 atoms)")
    args = ap.parse_args()

    jax.config.update("jax_enable_x64", True)
    atoms = argon(args.cells, seed=1)
    module = lj_model().module
    species = jnp.asarray(atoms.numbers)
    mask = species > 0
    cell = jnp.asarray(atoms.cell[:])
    masses = jnp.asarray(masses_of(atoms.numbers), jnp.float64)
    cap = caps.estimate_capacity(atoms.positions, atoms.cell[:], headroom=1.5, skin=args.skin, cutoffs=(6.0, None),
                                 with_list=True)
    t_k, dt = args.temperature, args.dt_fs
    params = {"epsilon": jnp.float64(EPS)}

    # equilibrate, then take start states 1 ps apart
    x, v = jnp.asarray(atoms.positions), maxwell_boltzmann(jax.random.PRNGKey(0), masses, mask, temperature_K=t_k)
    key = jax.random.PRNGKey(1)
    steps_1ps = round(1000 / dt)
    starts = []
    for i in range(args.n_windows + 5):
        key, sub = jax.random.split(key)
        _, _, (x, v), *_ = langevin_checked(params, module, species, positions=x, velocities=v, cell=cell,
                                            atom_mask=mask, masses=masses, temperature_K=t_k, dt_fs=dt,
                                            gamma_per_ps=args.gamma_per_ps, key=sub, capacity=cap,
                                            n_saves=steps_1ps // 10, save_every=10)
        if i >= 5:
            starts.append((x, v))
    print(f"LJ argon, {len(atoms)} atoms, T = {t_k} K, dt = {dt} fs, gamma = {args.gamma_per_ps}/ps, "
          f"{args.n_windows} windows")
    print(f"{'window_ps':>9} {'MSD_A2':>9} {'dMSD/deps':>12} {'std':>10} {'rel_sem':>8} {'AD-FD rel':>10} "
          f"{'moved_A':>8} {'s/window':>8}")
    for w_ps in args.windows_ps:
        n_steps = round(w_ps * 1000 / dt)
        vals, grads, moved = [], [], 0.0
        t0 = time.time()
        for k, (x0, v0) in enumerate(starts):
            wkey = jax.random.PRNGKey(100 + k)
            val, g, mv, ov = msd_and_grad(params, module, species, positions=x0, velocities=v0, cell=cell,
                                          atom_mask=mask, masses=masses, temperature_K=t_k, dt_fs=dt,
                                          gamma_per_ps=args.gamma_per_ps, key=wkey, capacity=cap, n_steps=n_steps)
            if bool(ov) or float(mv) >= args.skin / 2:
                raise SystemExit(f"window {w_ps} ps: graph overflow or an atom moved {float(mv):.2f} A >= skin/2; "
                                 "raise --skin")
            vals.append(float(val))
            grads.append(float(g["epsilon"]))
            moved = max(moved, float(mv))
        per = (time.time() - t0) / len(starts)
        # central finite differences of the first window, common random numbers
        x0, v0 = starts[0]
        h = 1e-5 * EPS

        def f(eps, x0=x0, v0=v0, n_steps=n_steps):
            return float(msd_and_grad({"epsilon": jnp.float64(eps)}, module, species, positions=x0, velocities=v0,
                                      cell=cell, atom_mask=mask, masses=masses, temperature_K=t_k, dt_fs=dt,
                                      gamma_per_ps=args.gamma_per_ps, key=jax.random.PRNGKey(100), capacity=cap,
                                      n_steps=n_steps)[0])
        fd = (f(EPS + h) - f(EPS - h)) / (2 * h)
        g = np.asarray(grads)
        rel_sem = g.std(ddof=1) / np.sqrt(len(g)) / abs(g.mean())
        print(f"{w_ps:9.3g} {np.mean(vals):9.4g} {g.mean():12.5g} {g.std(ddof=1):10.4g} {rel_sem:8.3f} "
              f"{abs(grads[0] - fd) / abs(fd):10.2e} {moved:8.3f} {per:8.2f}")


if __name__ == "__main__":
    main()
