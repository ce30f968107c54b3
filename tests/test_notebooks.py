"""The notebooks run as shipped, and what they show holds."""

import json
from pathlib import Path

import jax
import numpy as np

from lycb_jax.units import EV_A3_TO_GPA

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str) -> dict:
    """Execute the code cells of a notebook in order; return its namespace."""
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    ns: dict = {}
    for k, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{name}[{k}]", "exec"), ns)
    return ns


def test_quickstart_runs_and_its_derivative_is_the_stress():
    ns = run_notebook("quickstart.ipynb")
    # the notebook's claim: dE/ds of an isotropic scaling (x s) at s = 1 equals V tr(stress) = -3 V p
    dE_ds = float(jax.grad(ns["energy_at_scale"])(1.0))
    volume = ns["lyc"].volume
    assert np.isclose(dE_ds, volume * np.trace(ns["pred"].stress) / EV_A3_TO_GPA, rtol=2e-3, atol=1e-3)
    assert abs(dE_ds) > 1.0  # a strained demo cell: not a trivially zero derivative


def test_finetune_notebook_lowers_held_out_errors():
    ns = run_notebook("finetune.ipynb")
    before, after = ns["before"], ns["after"]
    assert after["energy_mae_meV/atom"] < 0.5 * before["energy_mae_meV/atom"]
    assert after["force_mae_meV/A"] < before["force_mae_meV/A"]
    assert abs(ns["pred"].energy - ns["data"].energy[ns["result"].split["test"][0]]) < 0.05 * len(ns["atoms"])
