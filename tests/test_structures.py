"""Ordered structure models: parents, enumeration counts, batched FIRE vs ASE, ranking, errors."""

import argparse
import numpy as np
import pytest
from pymatgen.core import Composition

from lycb_jax import structures as S


def _c2_lyc_cell():
    """10-atom Li3YCl6 cell (C2, from an LYB ordering with Br -> Cl, volume scaled by 0.85)."""
    cands, _ = S.enumerate_orderings(S.parent_site_model("LYB", (1, 1, 1)))
    prim = [p for p in (c.get_primitive_structure(tolerance=0.05) for c in cands) if len(p) == 10][0]
    prim.replace_species({"Br": "Cl"})
    prim.scale_lattice(prim.volume * 0.85)
    return prim


def test_parents():
    lyc, lyb = S.load_parent("LYC"), S.load_parent("lyb")
    assert lyc.composition.almost_equals(Composition("Li9Y3Cl18"))
    assert lyb.composition.almost_equals(Composition("Li6Y2Br12"), atol=1e-3)
    assert not lyc.is_ordered and not lyb.is_ordered
    # space-group order of the decorated sites: P-3m1 has 12 operations, C2/m (conventional) 4 x 2
    assert len(S.parent_site_model(lyc, (1, 1, 1)).permutations) == 12
    assert len(S.parent_site_model(lyb, (1, 1, 1)).permutations) == 8


@pytest.mark.parametrize("parent,supercell,expected", [("LYC", (1, 1, 1), 124), ("LYB", (1, 1, 2), 160)])
def test_enumeration_count_matches_independent(parent, supercell, expected):
    model = S.parent_site_model(parent, supercell)
    cands, exhaustive = S.enumerate_orderings(model)
    assert exhaustive
    assert len(cands) == S.brute_force_distinct(model) == S.count_distinct(model) == expected


def test_halide_enumeration_count():
    lyb0 = S.enumerate_orderings(S.parent_site_model("LYB", (1, 1, 1)))[0][0]
    model = S.halide_site_model(lyb0, 3)
    cands, _ = S.enumerate_orderings(model)
    assert len(cands) == S.brute_force_distinct(model) == S.count_distinct(model)
    assert all(c.composition["Br"] == 3 and c.composition["Cl"] == 9 for c in cands)


def test_ordered_models_keep_composition_and_framework():
    parent = S.load_parent("LYC")
    model = S.parent_site_model(parent, (1, 1, 2))
    cands, exhaustive = S.enumerate_orderings(model, max_structures=30, seed=3)
    assert not exhaustive and len(cands) == 30
    sup = parent.copy()
    sup.make_supercell((1, 1, 2))
    hal = np.array([s.frac_coords for s in sup if s.species_string == "Cl"])
    cat = np.array([s.frac_coords for s in sup if s.species_string != "Cl"])
    for c in cands:
        assert c.composition.reduced_formula == "Li3YCl6" and len(c) == 60
        cl = np.array([s.frac_coords for s in c if s.specie.symbol == "Cl"])
        assert np.allclose(np.sort(cl, axis=0), np.sort(hal, axis=0), atol=1e-6)
        for s in (s for s in c if s.specie.symbol != "Cl"):  # every cation on a parent cation site
            d = cat - s.frac_coords
            assert np.min(np.linalg.norm(d - np.round(d), axis=1)) < 1e-6
    # sampled orderings are symmetry-distinct
    labels = []
    for c in cands:
        lab = np.zeros(len(model.choices), int)
        for s in c:
            d = model.frac_coords - s.frac_coords
            lab[np.argmin(np.linalg.norm(d - np.round(d), axis=1))] = s.specie.Z
        labels.append(lab)
    canon = S._canonical(np.array(labels), model.permutations)
    assert len(np.unique(canon, axis=0)) == len(cands)


def test_batched_fire_matches_ase(model, tmp_path):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    from lycb_jax.calculator import Calculator

    cell = _c2_lyc_cell()
    rattled = [cell.copy() for _ in range(2)]
    for k, r in enumerate(rattled):
        r.perturb(0.05 * (k + 1), min_distance=0.0)
    # three candidates in two vmapped slots (slot refill), ranked, with CIF and CSV outputs
    rows = S.rank(model, [cell] + rattled, top=1, out=tmp_path, prefix="T", fmax=0.01, max_steps=1500,
                  batch_size=2, progress=False)
    for r in rows:
        assert r["converged"] and r["fmax"] <= 0.01 and r["steps"] > 0
    assert rows[0]["spacegroup"] != "" and (tmp_path / "T_0.cif").exists() and (tmp_path / "T_ranking.csv").exists()
    mine = next(r for r in rows if r["index"] == 0)
    atoms = AseAtomsAdaptor.get_atoms(cell)
    atoms.calc = Calculator(model)
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    assert opt.run(fmax=0.01, steps=1500)
    assert abs(mine["energy_per_atom"] - atoms.get_potential_energy() / len(atoms)) < 1e-3  # eV/atom
    assert abs(mine["volume_per_atom"] * len(atoms) - atoms.get_volume()) / atoms.get_volume() < 5e-3


@pytest.mark.slow
def test_capacity_overflow_regrows(model, monkeypatch):
    """A graph capacity that is too small is detected on device, grown on the host, and the run goes on."""
    from lycb_jax.graph import Capacity

    real_pack = S.pack

    def small_pack(*a, **k):
        b = real_pack(*a, **k)
        c = b.capacity
        return dataclasses.replace(b, capacity=Capacity(c.edges // 2, c.angles // 2, c.short_per_atom, c.images))

    import dataclasses

    monkeypatch.setattr(S, "pack", small_pack)
    res = S.relax(model, [_c2_lyc_cell()], batch_size=1, progress=False)
    assert res[0].converged and res[0].fmax < 0.01


def test_bad_input():
    with pytest.raises(ValueError, match="unknown parent"):
        S.load_parent("LiCl")
    with pytest.raises(ValueError, match="give max_structures"):
        S.enumerate_orderings(S.parent_site_model("LYC", (1, 1, 2)))
    with pytest.raises(ValueError, match="ordered"):
        S.halide_site_model(S.load_parent("LYC"), 3)
    lyb0 = S.enumerate_orderings(S.parent_site_model("LYB", (1, 1, 1)))[0][0]
    with pytest.raises(ValueError, match="outside"):
        S.halide_site_model(lyb0, 13)
    with pytest.raises(ValueError, match="larger cell"):
        S.halide_series(None, lyb0, xs=[0.25])
    with pytest.raises(ValueError, match="partial occupancies"):
        S.relax(None, [S.load_parent("LYC")])
    with pytest.raises(ValueError, match="cannot place"):
        S.SiteModel(lyb0.lattice, lyb0.frac_coords[:2], [("Li", "X"), ("Li", "X")], {"Li": 3, "X": -1})


def test_cli_parses():
    parser = argparse.ArgumentParser()
    S.add_cli(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["structures", "--parent", "LYB", "--supercell", "1", "1", "2", "--top", "3",
                              "--out", "x"])
    assert args.parent == "LYB" and tuple(args.supercell) == (1, 1, 2) and args.top == 3 and callable(args.func)
