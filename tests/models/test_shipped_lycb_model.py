"""The shipped fine-tuned LYCB model (issue 17) against GPAW PBE labels it never saw.

The held-out set (tests/data/lycb_pbe_heldout.extxyz: every 5th structure of each labelled file of
rounds r0-r2, 300-800 K frames of 30-atom LYC and 20-atom LYB) was excluded from its training by
benchmarks/active_learning/finetune_round.py. Errors are computed here with numpy from the ASE
batched predictions (lycb_jax.predict), against the DFT numbers in the file.
"""
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from lycb_jax.models import load_model
from lycb_jax.models.predict import predict
from lycb_jax.units import EV_A3_TO_GPA

HELDOUT = Path(__file__).parents[1] / "data" / "lycb_pbe_heldout.extxyz"


def _errors(model, frames):
    """MAE of energy (meV/atom), forces (meV/A) and stress (GPa, 6 Voigt components) against the DFT labels."""
    preds = predict(model, frames)  # batched: one compiled call per padded size
    voigt = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
    de = [abs(p.energy - a.get_potential_energy()) / len(a) for p, a in zip(preds, frames)]
    df = [np.abs(p.forces - a.get_forces()).mean() for p, a in zip(preds, frames)]
    ds = [np.abs(p.stress[voigt] - a.get_stress() * EV_A3_TO_GPA).mean() for p, a in zip(preds, frames)]
    return 1000 * np.mean(de), 1000 * np.mean(df), np.mean(ds)


@pytest.fixture(scope="module")
def heldout():
    frames = read(HELDOUT, index=":")
    assert len(frames) == 32 and {len(a) for a in frames} == {20, 30}
    return frames


@pytest.mark.parametrize("name", ["chgnet-0.3.0-lycb-pbe", "sevennet-0-lycb-pbe"])
def test_shipped_model_loads_by_name_and_records_its_dft_reference(name):
    model = load_model(name)
    data = model.metadata["training_data"]
    assert data["dft_settings"]["code"] == "gpaw" and data["dft_settings"]["xc"] == "PBE"
    assert len(data["labels"]) == 6  # LYC30 and LYB20 at rounds r0, r1, r2


@pytest.mark.slow
def test_shipped_model_beats_the_pretrained_one_on_heldout_pbe_labels(heldout):
    """Measured here (CPU, float32; per-structure means, stress over 6 Voigt components): E 4.84 meV/atom,
    F 60.2 meV/A, S 0.094 GPa (the trainer's metric, pooled over components, gave 4.8 / 58 / 0.085); CHGNet
    0.3.0 with only its composition refitted: F 120 meV/A, S 0.17 GPa."""
    e, f, s = _errors(load_model("chgnet-0.3.0-lycb-pbe"), heldout)
    assert e < 6.0 and f < 67.0 and s < 0.10, (e, f, s)
    print(f"held-out MAE: E {e:.2f} meV/atom, F {f:.1f} meV/A, S {s:.3f} GPa")
    _, f0, s0 = _errors(load_model("chgnet-0.3.0"), heldout)
    assert f < 0.6 * f0 and s < 0.6 * s0, (f, f0, s, s0)


@pytest.mark.slow
def test_shipped_sevennet_model_meets_the_papers_thresholds_on_heldout_pbe_labels(heldout):
    """SevenNet-0 fine-tuned on the same labels (issue 20): the paper's fine-tuned-CHGNet thresholds
    (E < 3 meV/atom, F < 50 meV/A, S < 85 MPa) on structures it never saw, and half the pretrained force error.
    Trainer's metric when shipped: 1.88 / 25.6 / 0.044; SevenNet-0 with its composition refitted: 3.3 / 50.5 / 0.077."""
    e, f, s = _errors(load_model("sevennet-0-lycb-pbe"), heldout)
    print(f"held-out MAE: E {e:.2f} meV/atom, F {f:.1f} meV/A, S {s:.3f} GPa")
    assert e < 3.0 and f < 50.0 and s < 0.085, (e, f, s)
    _, f0, _ = _errors(load_model("sevennet-0"), heldout)
    assert f < 0.6 * f0, (f, f0)
