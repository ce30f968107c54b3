"""transport.json never carries NaN or inf: a value that cannot be computed is null with a reason."""

import json

import numpy as np

from lycb_jax.analysis.report import write_summary


def test_nan_and_inf_become_null_with_a_reason(tmp_path):
    summary = {"Ea": float("nan"), "Ea_err": np.float32(np.inf), "D0": 1e-3, "D0_err": np.float64(2e-4),
               "T_extrapolate": 300.0, "sigma_extrapolated": np.nan, "sigma_extrapolated_err": None,
               "per_temperature": [{"T": 600.0, "D": np.float32(1e-6)}, {"T": 700.0, "D": float("-inf")}]}
    pj, _ = write_summary(summary, tmp_path)
    text = pj.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)  # strict JSON parses it
    assert back["Ea"] is None and "Ea_null_reason" in back
    assert back["Ea_err"] is None and back["sigma_extrapolated"] is None
    assert back["D0"] == 1e-3 and back["per_temperature"][0]["D"] == float(np.float32(1e-6))
    assert back["per_temperature"][1]["D"] is None and "D_null_reason" in back["per_temperature"][1]
    assert back["sigma_extrapolated_err"] is None and "sigma_extrapolated_err_null_reason" not in back
