"""Test structures built with pymatgen/ASE: LYC/LYB-like, thin, skewed, strained, rattled, other chemistries."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor


def lyc_like(n=(1, 1, 1), anion="Cl", seed=0, noise=0.05, br_fraction=0.0) -> Structure:
    """Rocksalt anion lattice with 2/3 of the octahedral sites filled, Li:Y = 3:1 (Li3YX6-like)."""
    rng = np.random.default_rng(seed)
    a = 5.35 if anion == "Cl" else 5.65
    base = Structure(Lattice.cubic(a), [anion] * 4 + ["Li"] * 4,
                     [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
    s = base * n
    cat = [i for i, site in enumerate(s) if site.specie.symbol == "Li"]
    rng.shuffle(cat)
    ny, nrm = len(cat) // 6, len(cat) // 3
    for i in cat[:ny]:
        s.replace(i, "Y")
    s.remove_sites(sorted(cat[ny:ny + nrm]))
    if br_fraction:
        an = [i for i, site in enumerate(s) if site.specie.symbol == anion]
        for i in rng.choice(an, int(round(br_fraction * len(an))), replace=False):
            s.replace(int(i), "Br")
    if noise:
        s.perturb(noise, seed=seed)  # seeded: pymatgen's default is a fresh unseeded generator
    return s


def lyc_trigonal(seed=0) -> Structure:
    """A 30-atom Li9Y3Cl18 cell of the P-3m1 LYC framework (c = 6.05 A, thinner than 12 A)."""
    from pymatgen.core import Lattice

    lat = Lattice.hexagonal(11.209, 6.047)
    cl = [[0.1084, 0.2168, 0.7765], [0.1255, 0.56275, 0.7506], [0.2102, 0.4204, 0.2784]]  # Schlem 2021 Cl sites
    s = Structure.from_spacegroup("P-3m1", lat, ["Cl"] * 3 + ["Y", "Y", "Li", "Li"],
                                  cl + [[0, 0, 0], [1 / 3, 2 / 3, 0.487], [0, 0.3256, 0.5], [0, 0.3261, 0.0]])
    # keep 9 Li of 12 and 3 Y: a fixed, charge-balanced choice
    li = [i for i, x in enumerate(s) if x.specie.symbol == "Li"]
    y = [i for i, x in enumerate(s) if x.specie.symbol == "Y"]
    s.remove_sites(sorted(li[:3] + y[:0]))
    s = Structure.from_sites(s.sites)
    assert s.composition.reduced_formula == "Li3YCl6", s.composition
    s.perturb(0.05, min_distance=0.01, seed=seed)
    return s


def skewed(s: Structure, shear=0.6) -> Structure:
    """Same crystal in a strongly skewed (triclinic) but equivalent cell: a' = a + shear*b, b' = b + shear*c."""
    m = np.array([[1, int(round(shear * 2)), 0], [0, 1, 1], [0, 0, 1]])
    t = s.copy()
    t.make_supercell(m)
    assert np.linalg.det(t.lattice.matrix) > 0
    return t


def strained(s: Structure, eps, seed=0) -> Structure:
    rng = np.random.default_rng(seed)
    e = np.eye(3) + eps * (rng.standard_normal((3, 3)) + rng.standard_normal((3, 3)).T) / 2
    t = s.copy()
    t.lattice = Lattice(s.lattice.matrix @ e)
    return t


def rattled(s: Structure, sigma, seed=0) -> Structure:
    atoms = AseAtomsAdaptor.get_atoms(s)
    atoms.rattle(sigma, seed=seed)
    return AseAtomsAdaptor.get_structure(atoms)


def others():
    """Unrelated chemistries: oxides, sulfides, intermetallics (ASE bulk builders)."""
    out = {
        "MgO": bulk("MgO", "rocksalt", 4.21),
        "Li2O": bulk("Li2O", "fluorite", 4.61),
        "NiO_afm_like": bulk("NiO", "rocksalt", 4.17, cubic=True),
        "ZnS": bulk("ZnS", "zincblende", 5.41, cubic=True),
        "Li2S": bulk("Li2S", "fluorite", 5.70),
        "NiAl": bulk("NiAl", "cesiumchloride", 2.88),
        "Cu3Au": bulk("Cu", "fcc", 3.75, cubic=True),
        "Fe_bcc": bulk("Fe", "bcc", 2.87, cubic=True),
    }
    out["Cu3Au"].numbers[0] = 79
    out["LiCoO2_like"] = bulk("CoO", "rocksalt", 4.0, cubic=True)
    out["LiCoO2_like"].numbers[[0, 2]] = 3
    for k, a in out.items():
        a.rattle(0.03, seed=1)
    return {k: AseAtomsAdaptor.get_structure(a) for k, a in out.items()}


def parity_set() -> dict[str, Structure]:
    """The >= 30 structures of the parity test."""
    out: dict[str, Structure] = {}
    out["LYC_rs_222"] = lyc_like((2, 2, 2), seed=1)
    out["LYB_rs_222"] = lyc_like((2, 2, 2), anion="Br", seed=2)
    out["LYCB_rs_222_x3"] = lyc_like((2, 2, 2), seed=3, br_fraction=0.5)
    out["LYCB_rs_221_x1"] = lyc_like((2, 2, 1), seed=4, br_fraction=1 / 6)
    out["LYC_rs_thin_211"] = lyc_like((2, 1, 1), seed=5)
    out["LYB_rs_thin_121"] = lyc_like((1, 2, 1), anion="Br", seed=6)
    out["LYC_rs_111"] = lyc_like((1, 1, 1), seed=7, noise=0.1)
    out["LYC_trig_30"] = lyc_trigonal(0)
    out["LYC_trig_30_rattle0.2"] = rattled(lyc_trigonal(1), 0.2, seed=1)
    out["LYC_trig_strained"] = strained(lyc_trigonal(2), 0.04, seed=2)
    for k, sig in enumerate((0.1, 0.2, 0.3)):
        out[f"LYC_rattled_{sig}"] = rattled(lyc_like((2, 1, 1), seed=10 + k), sig, seed=k)
        out[f"LYB_rattled_{sig}"] = rattled(lyc_like((1, 1, 2), anion="Br", seed=20 + k), sig, seed=k)
    for k, eps in enumerate((-0.05, 0.03, 0.08)):
        out[f"LYC_strained_{eps}"] = strained(lyc_like((2, 1, 1), seed=30 + k), eps, seed=k)
    out["LYCB_strained_0.05"] = strained(lyc_like((1, 2, 1), seed=40, br_fraction=0.5), 0.05, seed=4)
    out["LYC_skewed"] = skewed(lyc_like((1, 1, 1), seed=50), 0.6)
    out["LYB_skewed"] = skewed(lyc_like((1, 1, 1), anion="Br", seed=51), 1.0)
    out["LYC_trig_skewed"] = skewed(lyc_trigonal(3), 0.5)
    out["LYCB_skewed_rattled"] = rattled(skewed(lyc_like((1, 1, 1), seed=52, br_fraction=0.5), 1.0), 0.15)
    out.update(others())
    out["MgO_strained"] = strained(out["MgO"], 0.05)
    out["NiAl_skewed"] = skewed(out["NiAl"] * (2, 2, 2), 1.0)
    return out
