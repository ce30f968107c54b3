"""A sensitivity study of one stored MD run (``lycb-jax sensitivity``): which layer groups the static
observables and the short-time Li MSD depend on most, and how the MSD moves with an applied strain.

Layer-group sensitivity: every parameter of group g is scaled by (1 + s_g); the study reports
dA/ds_g at s = 0, the change of A per relative change of the whole group (same units as A), so groups
of different size and units compare directly. One reverse pass gives all groups.

* static (reweighting of the stored frames, :mod:`.reweight`): <U> (eV/atom), <P_virial> (GPa),
  and in an NpT stage <V> (A^3/atom) through the weights;
* fluctuations (:mod:`.fluctuations`): C_v in NVT/production, compressibility and thermal expansion in NpT;
* dynamics (:mod:`.dynamics`): MSD of the mobile species after ``msd_window_fs`` of Langevin MD started
  from stored frames (velocities drawn at T), averaged over windows, d MSD / d s_g and
  d ln MSD / d epsilon for a hydrostatic and a uniaxial (c axis) strain epsilon of cell and positions,
  by reverse mode through the checkpointed scan. Window-to-window spread gives the errors.
Units: eV, Angstrom, K, fs, GPa.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lycb_jax.sensitivity.dynamics import langevin, maxwell_boltzmann, msd
from lycb_jax.sensitivity.fluctuations import heat_capacity_nvt, npt_response
from lycb_jax.sensitivity.reweight import (
    Frames,
    frame_graphs,
    frame_map,
    frames_from_trajectory,
    potential_energy,
    reweighted_mean,
    virial_pressure,
    volume,
)
from lycb_jax.units import KB

STRAINS = {"hydrostatic": np.eye(3), "uniaxial_c": np.diag([0.0, 0.0, 1.0])}  # strain directions (cell rows)


def group_index(params, layer_groups) -> tuple[list[str], dict]:
    """(group names, {flat param path: group index}) of a model's parameters."""
    from lycb_jax.models.groups import group_of

    names = list(layer_groups.groups)
    flat = traverse_util.flatten_dict(params)
    return names, {k: names.index(group_of(k, layer_groups)) for k in flat}


def scale_groups(params, scales, index: dict):
    """``params`` with every leaf of group i multiplied by (1 + scales[i])."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: v * (1.0 + scales[index[k]]).astype(v.dtype) for k, v in flat.items()})


def static_sensitivity(model, frames: Frames, temperature_K: float, *, npt: bool, batch_size: int | None = 8) -> dict:
    """<U>, <P_virial> (and <V> if ``npt``) over ``frames`` and their d/ds_g per layer group (see module doc)."""
    names, index = group_index(model.params, model.module.layer_groups())
    graphs, _ = frame_graphs(frames, model.module.cutoffs)
    module, n = model.module, int(np.sum(np.asarray(frames.atom_mask)))
    ref = frame_map(potential_energy, module, model.params, frames=frames, graphs=graphs, batch_size=batch_size)
    kT = jnp.asarray(KB * temperature_K, frames.positions.dtype)
    observables = {"potential_energy_eV_per_atom": (potential_energy, 1.0 / n), "virial_pressure_GPa": (virial_pressure, 1.0)}
    if npt:
        observables["volume_A3_per_atom"] = (volume, 1.0 / n)

    def stacked(*args):
        return jnp.stack([obs(*args) for obs, _ in observables.values()])

    def means(s):  # all observables in one program: one compilation, one reverse pass per observable
        mean = reweighted_mean(scale_groups(model.params, s, index), module, frames, graphs=graphs, ref_energies=ref,
                               kT=kT, observable=stacked, batch_size=batch_size)[0]
        return mean, mean

    jac, values = jax.jit(jax.jacrev(means, has_aux=True))(jnp.zeros(len(names), frames.positions.dtype))
    out = {}
    for i, (key, (_, factor)) in enumerate(observables.items()):
        out[key] = {"value": float(values[i]) * factor,
                    "d_ds": {g: float(x) * factor for g, x in zip(names, np.asarray(jac[i]))}}
    return out


def msd_sensitivity(model, frames: Frames, temperature_K: float, *, mobile, window_fs: float = 500.0,
                    dt_fs: float = 1.0, gamma_per_ps: float = 1.0, n_windows: int = 4, seed: int = 0,
                    skin: float = 2.0) -> dict:
    """Mean MSD (A^2) of the ``mobile`` atoms after ``window_fs`` of Langevin MD from ``n_windows`` stored
    frames, d MSD / d s_g per layer group and d ln MSD / d epsilon per strain of :data:`STRAINS`, each with the
    standard error over windows. The Verlet list is rebuilt every 10 steps with ``skin`` (A): the largest
    displacement within 10 steps must stay below skin / 2 (RuntimeError otherwise)."""
    import lycb_jax.graph.capacity as caps
    from lycb_jax.md import masses_of

    names, index = group_index(model.params, model.module.layer_groups())
    species, mask = frames.species, frames.atom_mask
    masses = jnp.asarray(masses_of(np.asarray(species)), frames.positions.dtype)
    mobile = jnp.asarray(mobile)
    block = 10  # steps per graph rebuild (the graph is built without gradient at each block start)
    n_blocks = max(1, int(round(window_fs / dt_fs / block)))
    window_fs = n_blocks * block * dt_fs
    starts = np.linspace(0, len(frames.positions) - 1, n_windows).round().astype(int)
    cap = caps.estimate([caps._Geometry(np.asarray(frames.positions[i]), np.asarray(frames.cells[i])) for i in starts],
                        tuple(model.module.cutoffs), headroom=1.5, skin=skin, with_list=True)
    dirs = jnp.asarray(np.stack(list(STRAINS.values())), frames.positions.dtype)

    def window_msd(params, x, cell, v0, key):
        xs, _, _, moved, overflow = langevin(params, model.module, species, positions=x, velocities=v0, cell=cell,
                                             atom_mask=mask, masses=masses, temperature_K=temperature_K, dt_fs=dt_fs,
                                             gamma_per_ps=gamma_per_ps, key=key, capacity=cap, n_saves=n_blocks,
                                             save_every=block)
        return msd(xs[-1][mobile], x[mobile]), (moved, overflow)

    def one(x0, cell0, v0, key):
        # one reverse pass for all groups and strains: the strain is linear in eps, so d/d eps_d at 0 of
        # the summed strain I + sum_d eps_d dir_d is the derivative along dir_d alone
        def f(s, eps):
            m = jnp.eye(3, dtype=x0.dtype) + jnp.tensordot(eps, dirs, 1)
            return window_msd(scale_groups(model.params, s, index), x0 @ m, cell0 @ m, v0, key)

        (value, aux), (g_s, g_eps) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
            jnp.zeros(len(names), x0.dtype), jnp.zeros(len(dirs), x0.dtype))
        return value, g_s, g_eps, aux

    one = jax.jit(one)
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * n_windows)
    values, gs, ge = [], [], []
    for i, start in enumerate(starts):
        v0 = maxwell_boltzmann(keys[2 * i], masses, mask, temperature_K=temperature_K)
        value, g_s, g_e, (moved, overflow) = one(frames.positions[start], frames.cells[start], v0, keys[2 * i + 1])
        if bool(overflow) or float(moved) >= skin / 2:
            raise RuntimeError(f"MSD window {i}: an atom moved {float(moved):.2f} A (graph skin/2 = {skin / 2} A) or "
                               "the graph overflowed: shorten --msd-window-fs or raise the skin")
        values.append(float(value))
        gs.append(np.asarray(g_s))
        ge.append(np.asarray(g_e) / float(value))  # d ln MSD / d eps

    def mean_err(a):
        a = np.asarray(a, np.float64)
        return a.mean(0), a.std(0, ddof=1) / math.sqrt(len(a)) if len(a) > 1 else np.full(a.shape[1:], np.nan)

    m, e = mean_err(values)
    gm, ge_ = mean_err(gs)
    sm, se = mean_err(ge)
    return {"window_fs": window_fs, "n_windows": n_windows, "msd_A2": float(m), "msd_err_A2": float(e),
            "d_ds": {g: (float(a), float(b)) for g, a, b in zip(names, gm, ge_)},
            "dlnmsd_dstrain": {k: (float(a), float(b)) for k, a, b in zip(STRAINS, sm, se)},
            "per_window": {"msd_A2": values, "dlnmsd_dstrain": {k: [float(g[i]) for g in ge] for i, k in enumerate(STRAINS)}}}


def sensitivity_study(model, trajectory, stage: str = "production", *, replica: int = 0, every: int = 10,
                      species: str = "Li", msd_window_fs: float = 500.0, n_windows: int = 4) -> dict:
    """The whole study of one replica of a ``trajectory.h5`` (see the module doc); a JSON-able dict."""
    from lycb_jax.md.trajectory import read_trajectory
    from ase.data import atomic_numbers

    with read_trajectory(trajectory) as f:
        temperature = float(np.asarray(f.attrs["temperatures_K"])[replica])
        g = f[stage]
        energies = np.asarray(g["potential_energy"][replica], np.float64)
        kinetic = np.asarray(g["kinetic_energy"][replica], np.float64)
        volumes = np.asarray(g["volume"][replica], np.float64)
    protocol = Path(trajectory).parent / "protocol.json"  # the target pressure of the NpT stage
    pressure = json.loads(protocol.read_text()).get("pressure_bar", 1.0) if protocol.exists() else 1.0
    frames = frames_from_trajectory(trajectory, stage, replica, every=every)
    n = int(np.sum(np.asarray(frames.atom_mask)))
    npt = stage == "npt"
    out = {"trajectory": str(trajectory), "stage": stage, "replica": replica, "temperature_K": temperature,
           "model": model.name, "frames_reweighted": int(len(frames.positions)), "atoms": n}
    out["static"] = static_sensitivity(model, frames, temperature, npt=npt)
    blocks = max(2, min(20, len(volumes) // 5))  # jackknife blocks of >= 5 frames
    if npt:
        r = npt_response(volumes, energies + kinetic, temperature, pressure_bar=pressure, n_blocks=blocks)
        out["fluctuations"] = {k: list(map(float, v)) for k, v in r.items()}
    else:
        c, e = heat_capacity_nvt(energies, temperature, kinetic_dof=3 * n - 3, n_blocks=blocks)
        out["fluctuations"] = {"heat_capacity_kB_per_atom": [c / KB / n, e / KB / n]}
    mobile = np.asarray(frames.species) == atomic_numbers[species]
    out["dynamics"] = msd_sensitivity(model, frames, temperature, mobile=mobile, window_fs=msd_window_fs,
                                      n_windows=n_windows)
    return out
