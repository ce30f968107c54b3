"""Site models: the disordered experimental parents (LYC P-3m1, LYB C2/m) and the sites of a supercell
to decorate, with the species allowed on each, the target counts and the symmetry operations that keep
them. Fractional coordinates; lattices in Angstrom."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections import Counter
from importlib import resources
from typing import Sequence

import numpy as np
import spglib
from pymatgen.core import Lattice, Structure

PARENTS = {"LYC": "Li3YCl6_P-3m1_Schlem2021.cif", "LYB": "Li3YBr6_C2m_Schlem2021.cif"}
HALIDES = ("Cl", "Br")
VACANCY = "X"


def load_parent(name: str) -> Structure:
    """Disordered experimental structure 'LYC' (Li3YCl6, P-3m1) or 'LYB' (Li3YBr6, C2/m), Angstrom.

    Written from Schlem et al., Chem. Mater. 33 (2021) 327 (see the CIF headers in lycb_jax/data).
    """
    key = name.upper()
    if key not in PARENTS:
        raise ValueError(f"unknown parent {name!r}: choose one of {sorted(PARENTS)}")
    path = resources.files("lycb_jax") / "data" / PARENTS[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about rounded special positions
        return Structure.from_file(str(path), merge_tol=0.01)


@dataclasses.dataclass
class SiteModel:
    """Sites to decorate: fractional coords, allowed species per site ('X' = vacancy), target counts.

    Optional orbit constraint: ``orbits`` labels every site and ``orbit_counts`` fixes the species
    counts within each label of the mixing sites (e.g. per parent Wyckoff orbit, see
    ``wyckoff_site_model``); symmetry operations that do not keep the constraint are dropped.
    """

    lattice: Lattice  # Angstrom
    frac_coords: np.ndarray  # [S, 3]
    choices: list[tuple[str, ...]]  # allowed species of each site
    counts: dict[str, int]  # exact number of each mixing species over all sites
    orbits: list[int] | None = None  # [S] constraint label of each site (fixed sites: ignored)
    orbit_counts: dict[int, dict[str, int]] | None = None  # label -> exact species counts there

    def __post_init__(self):
        for sp, n in self.counts.items():
            n_allowed = sum(sp in c for c in self.choices)
            if not 0 <= n <= n_allowed:
                raise ValueError(f"cannot place {n} {sp} on {n_allowed} allowed sites")
        fixed = sum(len(c) == 1 for c in self.choices)
        mixing = {sp for c in self.choices if len(c) > 1 for sp in c}
        if set(self.counts) != mixing:
            raise ValueError(f"counts must be given for exactly the mixing species {sorted(mixing)}")
        if fixed + sum(self.counts.values()) != len(self.choices):
            raise ValueError(f"counts {self.counts} do not fill the {len(self.choices) - fixed} mixing sites")
        if (self.orbits is None) != (self.orbit_counts is None):
            raise ValueError("give both orbits and orbit_counts, or neither")
        if self.orbits is not None:
            self._check_orbits()

    def _check_orbits(self):
        if len(self.orbits) != len(self.choices):
            raise ValueError(f"{len(self.orbits)} orbit labels for {len(self.choices)} sites")
        groups = mixing_groups(self)
        if set(groups) != set(self.orbit_counts):
            raise ValueError(f"orbit_counts labels {sorted(self.orbit_counts)} != mixing-site labels {sorted(groups)}")
        total = Counter()
        for k, idx in groups.items():
            ch, d = {self.choices[i] for i in idx}, self.orbit_counts[k]
            if len(ch) > 1 or not set(d) <= set(next(iter(ch))) or min(d.values()) < 0 or sum(d.values()) != len(idx):
                raise ValueError(f"orbit {k}: counts {d} do not fill its {len(idx)} sites with {sorted(ch)}")
            total.update(d)
        if any(total[s] != n for s, n in self.counts.items()):
            raise ValueError(f"orbit counts sum to {dict(total)}, not {self.counts}")

    def structure(self, labeling: Sequence[str]) -> Structure:
        """Ordered pymatgen Structure of one labeling, vacancies removed."""
        keep = [i for i, s in enumerate(labeling) if s != VACANCY]
        return Structure(self.lattice, [labeling[i] for i in keep], self.frac_coords[keep])

    @functools.cached_property
    def permutations(self) -> np.ndarray:
        """[G, S] site permutations of the space-group operations (spglib) that keep the site model
        (and the orbit constraint, if any): site i goes to site perm[i]."""
        codes = {c: k + 1 for k, c in enumerate(sorted(set(self.choices)))}
        numbers = [codes[c] for c in self.choices]
        cell = (self.lattice.matrix, self.frac_coords, numbers)
        sym = spglib.get_symmetry(cell, symprec=1e-3)
        perms = []
        for rot, tr in zip(sym["rotations"], sym["translations"]):
            new = self.frac_coords @ rot.T + tr
            d = new[:, None, :] - self.frac_coords[None, :, :]
            d -= np.round(d)
            dist = np.linalg.norm(d @ self.lattice.matrix, axis=-1)  # Angstrom
            j = dist.argmin(axis=1)
            if np.all(dist[np.arange(len(j)), j] < 0.05) and len(set(j)) == len(j) and self._keeps_orbits(j):
                perms.append(j)
        return np.unique(np.array(perms), axis=0)

    def _keeps_orbits(self, perm: np.ndarray) -> bool:
        """Whether a permutation maps every constrained orbit onto one with the same counts."""
        if self.orbits is None:
            return True
        lab, groups = np.asarray(self.orbits), mixing_groups(self)
        nonzero = {k: {s: n for s, n in d.items() if n} for k, d in self.orbit_counts.items()}
        for k, idx in groups.items():
            img = perm[idx]
            k2 = int(lab[img[0]])
            if k2 not in groups or nonzero[k2] != nonzero[k] or set(img) != set(groups[k2]):
                return False
        return True


def mixing_groups(model: SiteModel) -> dict:
    """Mixing sites (more than one allowed species) grouped by their constraint label (orbit model)
    or by their allowed species: key -> site indices."""
    groups: dict = {}
    for i, c in enumerate(model.choices):
        if len(c) > 1:
            groups.setdefault(c if model.orbits is None else int(model.orbits[i]), []).append(i)
    return groups


def _parent_sites(parent: Structure | str, supercell, min_occupancy: float):
    """Supercell of a disordered parent and its decorated sites: (lattice, [(frac, choices, occupancy dict)])."""
    if isinstance(parent, str):
        parent = load_parent(parent)
    sup = parent.copy()
    sup.make_supercell(supercell)
    sites = []
    for site in sup:
        occ = {el.symbol: float(o) for el, o in site.species.items()}
        kept = tuple(sorted(s for s, o in occ.items() if o >= min_occupancy))
        if not kept:
            continue
        if sum(occ[s] for s in kept) < 1 - 1e-3:
            kept = kept + (VACANCY,)
        sites.append((site.frac_coords, kept, occ))
    return sup.lattice, sites


def parent_site_model(parent: Structure | str, supercell=(1, 1, 2), min_occupancy: float = 0.15) -> SiteModel:
    """Site model of a disordered parent in a supercell: species with occupancy >= min_occupancy are
    allowed on a site (plus a vacancy if they do not fill it); sites with none are dropped.

    Target counts keep the charge-balanced composition Li3YX6: Y = halides / 6, Li = 3 Y.
    """
    lattice, sites = _parent_sites(parent, supercell, min_occupancy)
    choices = [c for _, c, _ in sites]
    n_hal = sum(1 for c in choices if len(c) == 1 and c[0] in HALIDES)
    if n_hal % 6:
        raise ValueError(f"{n_hal} halide sites: not a whole number of Li3YX6 formula units")
    n_y = n_hal // 6
    mixing = {s for c in choices if len(c) > 1 for s in c}
    fixed = Counter(c[0] for c in choices if len(c) == 1)
    counts = {"Li": 3 * n_y - fixed["Li"], "Y": n_y - fixed["Y"]}
    counts = {s: n for s, n in counts.items() if s in mixing}
    if VACANCY in mixing:
        counts[VACANCY] = sum(len(c) > 1 for c in choices) - sum(counts.values())
    return SiteModel(lattice, np.array([f for f, _, _ in sites]), choices, counts)


def wyckoff_site_model(parent: Structure | str, supercell=(1, 1, 2), rule: str = "nearest",
                       *, min_occupancy: float = 0.15) -> SiteModel:
    """Site model of a parent with the species counts fixed on every parent Wyckoff orbit.

    Orbits are the sites of the supercell that the parent's space group (spglib, with the
    experimental occupancies as site labels) makes equivalent. Per orbit of n sites, species s
    (not vacancies) gets
      rule="nearest":  n * occupancy(s), scaled so that the orbits add up to the charge-balanced
                       total, rounded by largest remainder (ties: higher occupancy first), i.e.
                       the experimental occupancy ratio between the orbits;
      rule="majority": orbits filled completely in order of decreasing occupancy(s), the last one
                       partly: the most ordered decoration that keeps the experimental ranking.
    The rest of each orbit is vacant. Li/vacancy and Y/vacancy then only mix within each orbit.
    """
    if rule not in ("nearest", "majority"):
        raise ValueError(f"unknown rule {rule!r}: 'nearest' or 'majority'")
    free = parent_site_model(parent, supercell, min_occupancy)
    lattice, sites = _parent_sites(parent, supercell, min_occupancy)
    orbits = _wyckoff_orbits(lattice, free, sites)
    counts = {k: Counter() for k in orbits}
    for sp in sorted(s for s in free.counts if s != VACANCY):
        have = [k for k in orbits if sp in free.choices[orbits[k][0]]]
        occ = {k: sites[orbits[k][0]][2].get(sp, 0.0) for k in have}
        if rule == "majority":
            got = _fill_majority(free.counts[sp], {k: len(orbits[k]) - sum(counts[k].values()) for k in have}, occ)
        else:
            got = _fill_nearest(free.counts[sp], {k: len(orbits[k]) for k in have}, occ)
        for k, n in got.items():
            counts[k][sp] = n
    for k, idx in orbits.items():
        if VACANCY in free.choices[idx[0]]:
            counts[k][VACANCY] = len(idx) - sum(counts[k].values())
        if any(n < 0 for n in counts[k].values()) or sum(counts[k].values()) != len(idx):
            raise ValueError(f"rule {rule!r} overfills the orbit of site {k}: {dict(counts[k])} on {len(idx)} sites")
    orbit_of = {i: k for k, idx in orbits.items() for i in idx}
    labels = [orbit_of.get(i, -1) for i in range(len(free.choices))]
    return SiteModel(lattice, free.frac_coords, free.choices, free.counts, labels,
                     {k: {s: counts[k][s] for s in free.choices[idx[0]]} for k, idx in orbits.items()})



def halide_site_model(ordered: Structure, n_br: int) -> SiteModel:
    """Cl/Br substitution on every halide site of an ordered structure: n_br Br, the rest Cl."""
    if not ordered.is_ordered:
        raise ValueError("halide substitution needs an ordered structure")
    syms = [s.specie.symbol for s in ordered]
    hal = [i for i, s in enumerate(syms) if s in HALIDES]
    if not 0 <= n_br <= len(hal):
        raise ValueError(f"n_br = {n_br} outside 0..{len(hal)} halide sites")
    choices = [HALIDES if i in set(hal) else (s,) for i, s in enumerate(syms)]
    counts = {"Cl": len(hal) - n_br, "Br": n_br}
    if n_br in (0, len(hal)):  # nothing mixes
        choices = [(("Br",) if n_br else ("Cl",)) if len(c) > 1 else c for c in choices]
        counts = {}
    return SiteModel(ordered.lattice, ordered.frac_coords.copy(), choices, counts)

def _wyckoff_orbits(lattice: Lattice, free: SiteModel, sites) -> dict[int, list[int]]:
    """Mixing sites grouped by the parent orbit (spglib equivalent atoms, with the experimental
    occupancies and allowed species as site labels): first site of the orbit -> site indices."""
    occ_key = [tuple(sorted((s, round(o, 4)) for s, o in occ.items())) + c for _, c, occ in sites]
    codes = {k: j + 1 for j, k in enumerate(sorted(set(occ_key)))}
    data = spglib.get_symmetry_dataset((lattice.matrix, free.frac_coords, [codes[k] for k in occ_key]), symprec=1e-3)
    equiv = [int(e) for e in data.equivalent_atoms]
    orbits: dict[int, list[int]] = {}
    for i, c in enumerate(free.choices):
        if len(c) > 1:
            orbits.setdefault(equiv[i], []).append(i)
    return orbits


def _fill_majority(total: int, room: dict[int, int], occ: dict[int, float]) -> dict[int, int]:
    """``total`` atoms of one species into orbits with ``room`` free sites each, the orbits of highest
    occupancy ``occ`` filled completely first (ties: lower orbit key)."""
    out, left = {}, total
    for k in sorted(room, key=lambda k: (-occ[k], k)):
        out[k] = min(left, room[k])
        left -= out[k]
    return out


def _fill_nearest(total: int, sizes: dict[int, int], occ: dict[int, float]) -> dict[int, int]:
    """``total`` atoms of one species over orbits of ``sizes`` sites in the ratio size x occupancy,
    rounded by largest remainder (ties: higher occupancy, then lower orbit key, first)."""
    order = sorted(sizes, key=lambda k: (-occ[k], k))
    expect = {k: occ[k] * sizes[k] for k in sizes}
    expect = {k: e * total / sum(expect.values()) for k, e in expect.items()}
    out = {k: math.floor(expect[k] + 1e-9) for k in sizes}
    short = total - sum(out.values())
    for k in sorted(order, key=lambda k: -(expect[k] - out[k]) + 1e-9 * order.index(k))[:short]:
        out[k] += 1
    return out
