"""Issue 28 checks of the D3(BJ) term, on the CPU: deviations from dftd3, cost against CHGNet on 480 atoms,
memory on 2160 atoms, and the pressure of the shipped model with and without D3 at the CIF and the
experimental cells. Writes benchmarks/results/dispersion/d3_check.json.

    .venv/bin/python benchmarks/dispersion_check.py
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "models")]  # the helpers and test_dispersion
CIFS = ROOT / "benchmarks" / "results" / "lycb_series_cpu"
OUT = ROOT / "benchmarks" / "results" / "dispersion" / "d3_check.json"
MODEL = "chgnet-0.3.0-lycb-pbe"
# experimental lattices (Schlem et al., Chem. Mater. 33 (2021) 327; ../shared/reference): the 60-atom LYC cell is
# a x a x 2c of P-3m1, the 40-atom LYB cell a x b x 2c of C2/m
EXPERIMENT = {"LYC0_x0.0.cif": ((11.209, 11.209, 2 * 6.047, 90, 90, 120), 21.93),
              "LYB0_x6.0.cif": ((6.919, 11.974, 2 * 6.864, 90, 109.78, 90), 26.75)}


def pressure(stress):
    """GPa, positive = compressed (wants to expand); stress in GPa with ASE sign (positive = tensile)."""
    return float(-np.trace(stress) / 3)


def deviations() -> dict:
    from test_dispersion import CASES, SHEAR, _cell, _ours, _reference  # noqa: F401

    out = {}
    cases = {k: _cell(n, shear=s) for k, (n, s) in CASES.items()}
    cases["LYB_6x3x3_2160_atoms"] = _cell("LYB0_x6.0.cif", (6, 3, 3))
    for name, atoms in cases.items():
        e_ref, f_ref, s_ref = _reference(atoms)
        t = time.perf_counter()
        e, f, s = _ours(atoms)
        out[name] = {"atoms": len(atoms), "dE_eV_per_atom": abs(e - e_ref) / len(atoms),
                     "max_dF_eV_per_A": float(np.abs(f - f_ref).max()), "max_dS_GPa": float(np.abs(s - s_ref).max()),
                     "E_D3_eV_per_atom": e_ref / len(atoms), "P_D3_GPa": pressure(s_ref),
                     "float64_call_s_incl_compile": round(time.perf_counter() - t, 2)}
        print(name, out[name], flush=True)
    return out


def timing() -> dict:
    import lycb_jax
    from lycb_jax.models.predict import predict
    from lycb_jax.models.base import energy_forces_stress
    from lycb_jax.models.dispersion import D3BJ
    from test_dispersion import _D3Only

    atoms = read(ROOT / "benchmarks" / "reproduction" / "structures" / "LYC0.cif")
    sp, x, c = jnp.asarray(atoms.numbers), jnp.asarray(atoms.positions, jnp.float32), jnp.asarray(atoms.cell[:],
                                                                                                     jnp.float32)
    mask = jnp.ones(len(atoms), bool)
    d3 = jax.jit(lambda x, c: energy_forces_stress(_D3Only(D3BJ()), None, sp, x, c, mask, None)[:3])

    def best(fn, n=3):
        jax.block_until_ready(fn())
        times = []
        for _ in range(n):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t)
        return min(times)

    m0, m1 = lycb_jax.load_model(MODEL), lycb_jax.load_model(MODEL, dispersion="d3bj")
    out = {"structure": "benchmarks/reproduction/structures/LYC0.cif", "atoms": len(atoms), "dtype": "float32",
           "d3_energy_forces_stress_s": best(lambda: d3(x, c)),
           "chgnet_predict_s": best(lambda: predict(m0, [atoms])[0].energy),
           "chgnet_plus_d3_predict_s": best(lambda: predict(m1, [atoms])[0].energy)}
    print(out, flush=True)
    return out


def memory() -> dict:
    """Peak RSS (GNU time, of a fresh process) of D3 energy+forces+stress (float32) on 2160 atoms (LYB 6x3x3)
    and on the 40-atom cell (the baseline: Python, JAX, the compiled program)."""
    code = ("import sys; sys.path[:0] = ['tests', 'tests/models']; import jax, jax.numpy as jnp; "
            "from lycb_jax.models.base import energy_forces_stress; from lycb_jax.models.dispersion import D3BJ; "
            "from test_dispersion import _D3Only, _cell; a = _cell('LYB0_x6.0.cif', tuple(map(int, sys.argv[1:4]))); "
            "f = jax.jit(lambda x, c: energy_forces_stress(_D3Only(D3BJ()), None, jnp.asarray(a.numbers), x, c, "
            "jnp.ones(len(a), bool), None)[:3]); "
            "jax.block_until_ready(f(jnp.asarray(a.positions, jnp.float32), jnp.asarray(a.cell[:], jnp.float32)))")

    def peak_mb(rep):
        err = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, *map(str, rep)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stderr
        return int(next(ln for ln in err.splitlines() if "Maximum resident" in ln).split()[-1]) / 1024

    big, small = peak_mb((6, 3, 3)), peak_mb((1, 1, 1))
    return {"atoms": 2160, "dtype": "float32", "peak_rss_MB": big, "peak_rss_40_atoms_MB": small,
            "d3_extra_MB": big - small}


def pressures() -> dict:
    import lycb_jax
    from lycb_jax.models.predict import predict

    m0, m1 = lycb_jax.load_model(MODEL), lycb_jax.load_model(MODEL, dispersion="d3bj")
    out = {}
    for name, (cellpar, v_exp) in EXPERIMENT.items():
        atoms = read(CIFS / name)
        exp = atoms.copy()
        exp.set_cell(cellpar, scale_atoms=True)
        for label, a in (("cif_cell", atoms), ("experimental_cell", exp)):
            p0, p1 = predict(m0, [a])[0], predict(m1, [a])[0]
            out[f"{name}:{label}"] = {"atoms": len(a), "volume_A3_per_atom": a.get_volume() / len(a),
                                      "experiment_A3_per_atom": v_exp, "P_model_GPa": pressure(p0.stress),
                                      "P_D3_GPa": pressure(p1.stress) - pressure(p0.stress),
                                      "P_model_plus_D3_GPa": pressure(p1.stress)}
            print(name, label, out[f"{name}:{label}"], flush=True)
    return out


def main():
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": "CPU, 2 cores",
              "host": platform.processor() or platform.machine(), "jax": jax.__version__, "model": MODEL,
              "dispersion": "D3(BJ), PBE (a1 0.4289, s8 0.7875, a2 4.4407 bohr), no ATM, cutoffs 60/40 bohr "
                            "(two-body/CN, dftd3 1.7.0 defaults)",
              "sign": "stress in GPa with ASE sign (positive = tensile); P = -trace/3, positive = the cell wants to "
                      "expand, negative = it wants to contract",
              "reference": "PyPI dftd3 1.7.0, dftd3.ase.DFTD3(method='PBE', damping='d3bj')"}
    result["deviation_vs_dftd3_float64"] = deviations()
    result["pressure"] = pressures()
    result["timing_480_atoms"] = timing()
    result["memory_2160_atoms"] = memory()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(OUT.read_text()) if OUT.exists() else {}
    prev.update(result)
    OUT.write_text(json.dumps(prev, indent=1) + "\n")
    print(OUT)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
