"""Ordered structure models: parents, enumeration counts, batched FIRE vs ASE, ranking, errors."""

import argparse
from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Composition

from lycb_jax import structures as S
from lycb_jax.structures.enumeration import _canonical
from lycb_jax.cli import structures as cli_structures
from lycb_jax.structures import enumeration, relaxation


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


def _labeling(model, structure):
    """Species on each site of a site model ('X' where the structure has no atom)."""
    lab = [S.VACANCY] * len(model.choices)
    for site in structure:
        d = model.frac_coords - site.frac_coords
        lab[int(np.argmin(np.linalg.norm(d - np.round(d), axis=1)))] = site.specie.symbol
    return lab


@pytest.mark.parametrize("parent,supercell,rule,expected", [("LYC", (1, 1, 1), "nearest", 30),
                                                             ("LYC", (1, 1, 1), "majority", 3),
                                                             ("LYB", (1, 1, 2), "nearest", 28),
                                                             ("LYB", (1, 1, 2), "majority", 14)])
def test_wyckoff_enumeration_matches_brute_force(parent, supercell, rule, expected):
    """Orderings with fixed counts per Wyckoff orbit: numpy enumeration = Burnside = the unrestricted
    icet enumeration filtered by the orbit counts (the constraint keeps the whole space group here)."""
    free = S.parent_site_model(parent, supercell)
    model = S.wyckoff_site_model(parent, supercell, rule)
    assert len(model.permutations) == len(free.permutations)
    cands, exhaustive = S.enumerate_orderings(model)
    assert exhaustive and len(cands) == S.count_distinct(model) == expected
    lab = np.array(model.orbits)

    def keeps(c):
        got = _labeling(model, c)
        return all(Counter(got[i] for i in np.flatnonzero(lab == k)) == Counter({s: n for s, n in d.items() if n})
                   for k, d in model.orbit_counts.items())

    all_cands, _ = S.enumerate_orderings(free)
    assert sum(keeps(c) for c in all_cands) == expected
    assert all(keeps(c) for c in cands)
    assert all(c.composition.reduced_formula == ("Li3YCl6" if parent == "LYC" else "Li3YBr6") for c in cands)


def test_wyckoff_orbits_of_lyc():
    """LYC 1x1x2: 'nearest' keeps the experimental ratio (6h 0.875 -> 11 of 12 Li, 6g 0.625 -> 7 of 12,
    Y 2+2 on the two 2d orbits); 'majority' fills 6h and the Y2 2d orbit and holds the one P-3c1 model."""
    near = S.wyckoff_site_model("LYC", (1, 1, 2), "nearest")
    assert sorted(tuple(sorted((s, n) for s, n in d.items() if n)) for d in near.orbit_counts.values()) == sorted(
        [(("Li", 11), ("X", 1)), (("Li", 7), ("X", 5)), (("X", 2), ("Y", 2)), (("X", 2), ("Y", 2))])
    assert S.count_labelings(near) == 12 * 792 * 6 * 6 and S.count_distinct(near) == 14256
    major = S.wyckoff_site_model("LYC", (1, 1, 2), "majority")
    cands, _ = S.enumerate_orderings(major)
    groups = Counter(S.spacegroup(c, 0.1) for c in cands)
    assert len(cands) == 55 and groups["P-3c1 (165)"] == 1
    with pytest.raises(ValueError, match="unknown rule"):
        S.wyckoff_site_model("LYC", (1, 1, 1), "random")


def test_halide_enumeration_count():
    lyb0 = S.enumerate_orderings(S.parent_site_model("LYB", (1, 1, 1)))[0][0]
    model = S.halide_site_model(lyb0, 3)
    cands, _ = S.enumerate_orderings(model)
    assert len(cands) == S.brute_force_distinct(model) == S.count_distinct(model)
    assert all(c.composition["Br"] == 3 and c.composition["Cl"] == 9 for c in cands)


def test_enumeration_without_icet(monkeypatch):
    """No icet installed: the same symmetry-distinct orderings by brute force (site models without orbits)."""
    model = S.parent_site_model("LYB", (1, 1, 1))
    with_icet = {frozenset(c.composition.items()) for c in S.enumerate_orderings(model)[0]}
    monkeypatch.setattr(enumeration, "_have_icet", lambda: False)
    monkeypatch.setattr(enumeration, "_icet_labelings", None)  # would raise if called
    cands, exhaustive = S.enumerate_orderings(model)
    assert exhaustive and len(cands) == S.count_distinct(model) == len(S.enumerate_orderings(model)[0])
    assert {frozenset(c.composition.items()) for c in cands} == with_icet


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
    canon = _canonical(np.array(labels), model.permutations)
    assert len(np.unique(canon, axis=0)) == len(cands)


@pytest.mark.slow
def test_batched_fire_matches_ase(model, tmp_path):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    from lycb_jax.models.calculator import Calculator

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


def test_halide_series_in_one_relax_call(model, tmp_path):
    """Both bases and every x in one relax call that reuses the compiled program; rows, files, compositions."""
    base = _c2_lyc_cell()  # 6 halide sites: x = 3 -> 3 Br
    S.relax(model, [base, base], max_steps=2, batch_size=2, progress=False, min_pad=16)
    programs = S.compiled_programs()
    series = S.halide_series(model, {"A": base, "B": base}, xs=[0, 3, 6], max_candidates=2, out=tmp_path,
                             max_steps=2, batch_size=2, progress=False, min_pad=16)
    assert S.compiled_programs() == programs  # same shapes, capacity reused: no new compilation
    assert list(series) == ["A", "B"]
    for rows in series.values():
        assert [(r["x"], r["n_br"], r["n_candidates"]) for r in rows] == [(0.0, 0, 1), (3.0, 3, 2), (6.0, 6, 1)]
        for r in rows:
            comp = r["structure"].composition
            assert comp["Br"] == r["n_br"] and comp["Cl"] == 6 - r["n_br"] and r["volume_per_atom"] > 0
    assert (tmp_path / "A_series.csv").exists() and (tmp_path / "B_x3.0.cif").exists()
    S.plot_series(series, tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 0


@pytest.mark.slow
def test_capacity_overflow_regrows(model, monkeypatch):
    """A graph capacity that is too small is detected on device, grown on the host, and the run goes on."""

    real_pack = relaxation.pack

    def small_pack(*a, **k):
        b = real_pack(*a, **k)
        c = b.capacity
        return dataclasses.replace(b, capacity=dataclasses.replace(c, edges=c.edges // 2, angles=c.angles // 2))

    import dataclasses

    monkeypatch.setattr(relaxation, "pack", small_pack)
    monkeypatch.setattr(relaxation, "_CAPACITIES", {})  # no capacity reused from earlier relax calls
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
        S.halide_series(None, {"LYB0": lyb0}, xs=[0.25])
    with pytest.raises(ValueError, match="partially occupied sites"):
        S.relax(None, [S.load_parent("LYC")])
    with pytest.raises(ValueError, match="do not fill its"):
        S.SiteModel(lyb0.lattice, lyb0.frac_coords[:2], [("Li", "X"), ("Li", "X")], {"Li": 1, "X": 1},
                    [0, 0], {0: {"Li": 2, "X": 1}})
    with pytest.raises(ValueError, match="both orbits"):
        S.SiteModel(lyb0.lattice, lyb0.frac_coords[:2], [("Li", "X"), ("Li", "X")], {"Li": 1, "X": 1}, [0, 0])
    with pytest.raises(ValueError, match="cannot place"):
        S.SiteModel(lyb0.lattice, lyb0.frac_coords[:2], [("Li", "X"), ("Li", "X")], {"Li": 3, "X": -1})


def test_cli_parses():
    parser = argparse.ArgumentParser()
    cli_structures.add_cli(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["structures", "--parent", "LYB", "--supercell", "1", "1", "2", "--top", "3",
                              "--out", "x", "--wyckoff", "majority"])
    assert args.parent == "LYB" and tuple(args.supercell) == (1, 1, 2) and args.top == 3 and callable(args.func)
    assert args.wyckoff == "majority"
