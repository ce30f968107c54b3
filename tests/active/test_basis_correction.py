"""BasisCorrection against DFT itself: GPAW PBE labels of LYB20, two LYC30 frames and a mixed LYCB40 frame at 400 and at
700 eV (k 2.5 per 2 pi/A; tests/data/gpaw_400_700_k2.5.extxyz, the rows of benchmarks/active_learning/labels.db
that convergence.py computed). Fitted on the two pure halides only, the correction must turn the mixed frame's
400 eV label into its 700 eV one."""

from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from lycb_jax.active import BasisCorrection
from lycb_jax.units import EV_A3_TO_GPA

DATA = Path(__file__).parents[1] / "data" / "gpaw_400_700_k2.5.extxyz"


def _pairs():
    frames = read(DATA, index=":")
    low = [a for a in frames if a.info["ecut_eV"] == 400]
    high = [a for a in frames if a.info["ecut_eV"] == 700]
    return low, high


def test_fit_on_pure_halides_predicts_the_mixed_frame():
    low, high = _pairs()
    pure = [i for i, a in enumerate(low) if not {"Cl", "Br"} <= set(a.get_chemical_symbols())]
    (mixed,) = [i for i in range(len(low)) if i not in pure]
    corr = BasisCorrection.fit([low[i] for i in pure], [high[i] for i in pure], elements=("Cl", "Br"))
    got, want, raw = corr.apply(low[mixed]), high[mixed], low[mixed]
    n = len(want)
    # the uncorrected label is 0.12 GPa and 12.5 meV/atom off: the correction must take away >99% of both
    assert np.abs(raw.get_stress() - want.get_stress()).max() * EV_A3_TO_GPA > 0.1
    assert np.abs(got.get_stress() - want.get_stress()).max() * EV_A3_TO_GPA < 0.002  # GPa; DFT's own noise ~1e-3
    assert abs(got.get_potential_energy() - want.get_potential_energy()) / n < 1e-4  # eV/atom
    np.testing.assert_array_equal(got.get_forces(), raw.get_forces())  # forces are left as computed
    assert "basis_correction" in got.info


def test_underdetermined_fit_and_unknown_elements_are_refused():
    low, high = _pairs()
    lyc = [i for i, a in enumerate(low) if "Br" not in a.get_chemical_symbols()]
    with pytest.raises(ValueError, match="do not separate the elements"):
        BasisCorrection.fit([low[i] for i in lyc], [high[i] for i in lyc], elements=("Cl", "Br"))
    corr = BasisCorrection({"Cl": 0.0}, {"Cl": 0.0}, folded=("Li", "Y"))
    with pytest.raises(ValueError, match=r"no coefficient for \['Br'\]"):
        corr.apply(low[0] if "Br" in low[0].get_chemical_symbols() else low[-1])
