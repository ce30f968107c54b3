"""D3(BJ) dispersion (lycb_jax.models.dispersion) against the independent s-dftd3 (PyPI ``dftd3``,
its ASE calculator, three-body ATM off on both sides), finite differences, and its wiring into models.

Tolerances (issue 28): energy 1e-5 eV/atom, forces 1e-4 eV/A, stress 1e-4 GPa. float64 on our side.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.io import read
from ase.units import GPa

pytest.importorskip("dftd3")
from dftd3.ase import DFTD3  # noqa: E402

from lycb_jax.models.base import energy_forces_stress  # noqa: E402
from lycb_jax.models.dispersion import FUNCTIONALS, D3BJ  # noqa: E402

CIFS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lycb_series_cpu"


def _cell(name: str, repeat=(1, 1, 1), shear=None):
    atoms = read(CIFS / name) * repeat
    if shear is not None:  # a skewed triclinic cell: x -> x (I + shear), cell likewise
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.asarray(shear)), scale_atoms=True)
    return atoms


def _reference(atoms, functional="pbe", **kw):
    """dftd3's energy (eV), forces (eV/A), stress (GPa, ASE sign, 3x3): D3(BJ), no ATM."""
    atoms = atoms.copy()
    atoms.calc = DFTD3(method=functional, damping="d3bj", **kw)  # method: s9 = 0 (atm=False) in dftd3's loader
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False) / GPa


class _D3Only:
    """A potential that is only the D3 term (for energy_forces_stress)."""

    cutoffs = None

    def __init__(self, d3):
        self.d3 = d3

    def energy(self, params, species, positions, cell, atom_mask, graph):
        return self.d3.energy(species, positions, cell, atom_mask), jnp.zeros(positions.shape[0], positions.dtype)


def _ours(atoms, d3=D3BJ("pbe")):
    """Our energy (eV), forces, stress (GPa) in float64."""
    with jax.enable_x64(True):
        e, f, s, _ = energy_forces_stress(_D3Only(d3), None, jnp.asarray(atoms.numbers),
                                          jnp.asarray(atoms.positions, jnp.float64),
                                          jnp.asarray(atoms.cell[:], jnp.float64), jnp.ones(len(atoms), bool), None)
        return float(e), np.asarray(f), np.asarray(s)


SHEAR = [[0.0, 0.12, 0.08], [0.0, 0.0, -0.1], [0.05, 0.0, 0.0]]
CASES = {"LYC": ("LYC0_x0.0.cif", None), "LYB": ("LYB0_x6.0.cif", None), "LYCB_mixed": ("LYB0_x3.0.cif", None),
         "LYC_triclinic_skewed": ("LYC0_x0.0.cif", SHEAR)}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_matches_dftd3(case):
    name, shear = CASES[case]
    atoms = _cell(name, shear=shear)
    e_ref, f_ref, s_ref = _reference(atoms)
    e, f, s = _ours(atoms)
    assert abs(e - e_ref) / len(atoms) < 1e-5
    assert np.abs(f - f_ref).max() < 1e-4
    assert np.abs(s - s_ref).max() < 1e-4
    assert abs(e_ref) / len(atoms) > 0.1 and np.abs(s_ref).max() > 0.5  # a real test: D3 is large here


def test_other_functional_and_cutoffs_match_dftd3():
    """r2SCAN parameters, and non-default cutoffs (50 bohr two-body, 25 bohr CN) given to both sides."""
    from ase.units import Bohr

    atoms = _cell("LYB0_x3.0.cif")
    e_ref, f_ref, s_ref = _reference(atoms, "r2scan", realspace_cutoff={"disp2": 50 * Bohr, "cn": 25 * Bohr})
    e, f, s = _ours(atoms, D3BJ("r2scan", disp2_cutoff=50.0, cn_cutoff=25.0))
    assert abs(e - e_ref) / len(atoms) < 1e-5
    assert np.abs(f - f_ref).max() < 1e-4 and np.abs(s - s_ref).max() < 1e-4


@pytest.mark.slow
def test_large_cell_matches_dftd3():
    """2160 atoms (LYB 6x3x3): energy and a few force components."""
    atoms = _cell("LYB0_x6.0.cif", (6, 3, 3))
    assert len(atoms) >= 2000
    e_ref, f_ref, _ = _reference(atoms)
    e, f, _ = _ours(atoms)
    assert abs(e - e_ref) / len(atoms) < 1e-5
    pick = [0, 777, 1500, 2159]
    assert np.abs(f[pick] - f_ref[pick]).max() < 1e-4


def test_forces_and_stress_are_finite_differences_of_the_energy():
    atoms = _cell("LYB0_x3.0.cif", shear=SHEAR)
    d3 = D3BJ("pbe")
    with jax.enable_x64(True):
        sp, mask = jnp.asarray(atoms.numbers), jnp.ones(len(atoms), bool)
        x0, c0 = jnp.asarray(atoms.positions, jnp.float64), jnp.asarray(atoms.cell[:], jnp.float64)
        energy = jax.jit(lambda x, c: d3.energy(sp, x, c, mask))
        _, f, s = _ours(atoms, d3)
        h = 1e-4
        for atom, k in [(0, 0), (5, 1), (17, 2), (33, 0)]:
            dx = jnp.zeros_like(x0).at[atom, k].set(h)
            fd = -(energy(x0 + dx, c0) - energy(x0 - dx, c0)) / (2 * h)
            assert abs(float(fd) - f[atom, k]) < 1e-6
        vol = abs(np.linalg.det(atoms.cell[:]))
        h = 1e-7  # a strain moves every pair: small enough that none crosses the hard cutoffs (a jump in E)
        for a, b in [(0, 0), (1, 2), (2, 1), (2, 2)]:
            eps = jnp.zeros((3, 3)).at[a, b].set(h)
            plus, minus = jnp.eye(3) + eps, jnp.eye(3) - eps
            fd = (energy(x0 @ plus, c0 @ plus) - energy(x0 @ minus, c0 @ minus)) / (2 * h) / vol * 160.21766208
            assert abs(float(fd) - s[a, b]) < 1e-5


def test_parameters_are_dftd3s():
    """Our per-functional parameters are those of the parameters.toml that dftd3 ships."""
    import dftd3

    table = tomllib.loads((Path(dftd3.__file__).parent / "parameters.toml").read_text())
    s6 = table["default"]["parameter"]["d3"]["bj"]["s6"]
    for name, p in FUNCTIONALS.items():
        bj = table["parameter"][name]["d3"]["bj"]
        assert (p.s6, p.s8, p.a1, p.a2) == (bj.get("s6", s6), bj["s8"], bj["a1"], bj["a2"]), name
        assert p.s9 == 0.0


def test_jit_vmap_and_padding():
    """vmap over two differently sized systems padded to one shape (float32) = each alone."""
    a, b = _cell("LYB0_x6.0.cif"), _cell("LYC0_x0.0.cif")
    n = 64
    d3 = D3BJ("pbe")

    def padded(atoms):
        sp = np.zeros(n, np.int32)
        x = np.tile(atoms.positions[:1], (n, 1))
        sp[:len(atoms)], x[:len(atoms)] = atoms.numbers, atoms.positions
        return sp, x.astype(np.float32), atoms.cell[:].astype(np.float32), sp > 0

    batch = [np.stack(t) for t in zip(padded(a), padded(b))]
    e = jax.jit(jax.vmap(d3.energy))(*map(jnp.asarray, batch))
    for k, atoms in enumerate((a, b)):
        e_ref = _reference(atoms)[0]
        assert abs(float(e[k]) - e_ref) / len(atoms) < 1e-5


@pytest.mark.slow
def test_model_with_dispersion_is_the_sum_and_recorded():
    import lycb_jax
    from lycb_jax.io.errors import InputError
    from lycb_jax.models import save_checkpoint
    from lycb_jax.models.predict import predict

    atoms = _cell("LYB0_x6.0.cif")
    plain = lycb_jax.load_model("chgnet-0.3.0")
    with_d3 = lycb_jax.load_model("chgnet-0.3.0", dispersion="d3bj")
    assert with_d3.name == "chgnet-0.3.0+d3bj" and with_d3.cutoffs == plain.cutoffs
    meta = with_d3.metadata["dispersion"]
    assert meta["functional"] == "pbe" and meta["damping"] == "bj" and meta["params"]["a2"] == 4.4407
    assert len(meta["reference_data"]["sha256"]) == 64
    p0, p1 = predict(plain, [atoms])[0], predict(with_d3, [atoms])[0]
    e_ref, f_ref, s_ref = _reference(atoms)
    assert abs((p1.energy - p0.energy) - e_ref) / len(atoms) < 1e-5  # float32
    assert np.abs((p1.forces - p0.forces) - f_ref).max() < 1e-4
    assert np.abs((p1.stress - p0.stress) - s_ref).max() < 1e-3  # float32 stress of two models subtracted
    with pytest.raises(ValueError, match="dispersion"):
        save_checkpoint("/nonexistent/never_written", with_d3)
    with pytest.raises(InputError, match="unknown dispersion"):
        lycb_jax.load_model("chgnet-0.3.0", dispersion="d4")
    calc = lycb_jax.Calculator("chgnet-0.3.0", dispersion="d3bj:r2scan")
    assert calc.model.metadata["dispersion"]["functional"] == "r2scan"


@pytest.mark.slow
def test_dispersion_checkpoint_is_its_base_plus_dftd3():
    """chgnet-0.3.0-lycb-pbe-d3 (a manifest without weights) = the fine-tuned model + dftd3's D3(BJ)-PBE; giving
    a dispersion on top of it is refused, and `lycb-jax models` lists it."""
    import lycb_jax
    from lycb_jax.io.errors import InputError
    from lycb_jax.models.paths import shipped_checkpoints

    atoms = _cell("LYC0_x0.0.cif")
    base = lycb_jax.load_model("chgnet-0.3.0-lycb-pbe")
    d3 = lycb_jax.load_model("chgnet-0.3.0-lycb-pbe-d3")
    assert "chgnet-0.3.0-lycb-pbe-d3" in shipped_checkpoints()
    assert d3.name.startswith("chgnet-0.3.0-lycb-pbe+d3bj") and d3.metadata["dispersion"]["functional"] == "pbe"
    p0, p1 = lycb_jax.predict(base, [atoms])[0], lycb_jax.predict(d3, [atoms])[0]
    e_ref, f_ref, s_ref = _reference(atoms)
    assert abs((p1.energy - p0.energy) - e_ref) / len(atoms) < 1e-5  # float32
    assert np.abs((p1.forces - p0.forces) - f_ref).max() < 1e-4
    assert np.abs((p1.stress - p0.stress) - s_ref).max() < 1e-3
    with pytest.raises(InputError, match="already adds d3bj"):
        lycb_jax.load_model("chgnet-0.3.0-lycb-pbe-d3", dispersion="d3bj")
