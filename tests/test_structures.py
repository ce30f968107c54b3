"""Ordered structure models: parents, enumeration counts, batched FIRE vs ASE, ranking, errors."""

import argparse
import warnings

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
    canon = S._canonical(np.array([[s.specie.Z for s in c] for c in cands]), np.arange(1)[None] * 0)  # noqa
    sup = parent.copy()
    sup.make_supercell((1, 1, 2))
    hal = np.array([s.frac_coords for s in sup if s.species_string == "Cl"])
    cat = np.array([s.frac_coords for s in sup if s.species_string != "Cl"])
    keys = set()
    for c in cands:
        assert c.composition.reduced_formula == "Li3YCl6" and len(c) == 60
        cl = np.array([s.frac_coords for s in c if s.specie.symbol == "Cl"])
        assert np.allclose(np.sort(cl, axis=0), np.sort(hal, axis=0), atol=1e-6)
        for s in c:  # every cation on a parent cation site
            d = cat - s.frac_coords
            assert np.min(np.linalg.norm(d - np.round(d), axis=1)) < 1e-6
        keys.add(tuple(S._canonical(np.array([[model.choices.index(ch) for ch in model.choices]]),
                                    model.permutations)[0]))
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


def test_batched_fire_matches_ase(model):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    from lycb_jax.calculator import Calculator

    cell = _c2_lyc_cell()
    rattled = cell.copy()
    rattled.perturb(0.05, min_distance=0.0)
    expanded = cell.copy()
    expanded.scale_lattice(cell.volume * 1.25)  # the cell shrinks while relaxing: graph grows
    # three candidates in two slots: exercises vmap, slot refill and capacity regrowth
    res = S.relax(model, [cell, rattled, expanded], fmax=0.01, max_steps=1500, batch_size=2, progress=False)
    for r in res:
        assert r.converged and r.fmax <= 0.01 and r.steps > 0
    atoms = AseAtomsAdaptor.get_atoms(cell)
    atoms.calc = Calculator(model)
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    assert opt.run(fmax=0.01, steps=1500)
    e_ase = atoms.get_potential_energy() / len(atoms)
    assert abs(res[0].energy_per_atom - e_ase) < 1e-3
    assert abs(res[0].structure.volume - atoms.get_volume()) / atoms.get_volume() < 5e-3
    # ranking of the three (same composition, nearly the same minimum) and its outputs
    assert abs(res[2].energy_per_atom - res[0].energy_per_atom) < 0.02


def test_rank_writes_outputs(model, tmp_path):
    cell = _c2_lyc_cell()
    rows = S.rank(model, [cell], top=1, out=tmp_path, prefix="T", progress=False)
    assert rows[0]["converged"] and rows[0]["spacegroup"].startswith("C2")
    assert (tmp_path / "T_0.cif").exists() and (tmp_path / "T_ranking.csv").exists()


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
