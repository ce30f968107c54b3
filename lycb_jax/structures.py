"""Ordered structure models of Li3YCl6-xBrx: experimental parents, enumeration, batched relaxation, ranking.

The paper's section 2.1: the disordered experimental structures (LYC P-3m1, LYB C2/m, partial Li and
Y occupancies) are turned into ordered models by enumerating the symmetry-distinct orderings of a
supercell (Hart-Forcade, via icet), relaxing every candidate (FIRE on positions and cell, as ASE's
FIRE + FrechetCellFilter, jit-compiled and vmapped over candidates) and ranking by energy per atom.
Units: Angstrom, eV, eV/A, GPa.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import spglib
from pymatgen.core import Lattice, Structure

PARENTS = {"LYC": "Li3YCl6_P-3m1_Schlem2021.cif", "LYB": "Li3YBr6_C2m_Schlem2021.cif"}
HALIDES = ("Cl", "Br")
VACANCY = "X"

# ---------------------------------------------------------------------------------------------
# 1. Experimental disordered parents


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


# ---------------------------------------------------------------------------------------------
# 2. Site models and enumeration


@dataclasses.dataclass
class SiteModel:
    """Sites to decorate: fractional coords, allowed species per site ('X' = vacancy), target counts."""

    lattice: Lattice
    frac_coords: np.ndarray  # [S, 3]
    choices: list[tuple[str, ...]]  # allowed species of each site
    counts: dict[str, int]  # exact number of each mixing species over all sites

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

    def structure(self, labeling: Sequence[str]) -> Structure:
        """Ordered pymatgen Structure of one labeling, vacancies removed."""
        keep = [i for i, s in enumerate(labeling) if s != VACANCY]
        return Structure(self.lattice, [labeling[i] for i in keep], self.frac_coords[keep])

    @functools.cached_property
    def permutations(self) -> np.ndarray:
        """[G, S] site permutations of the space-group operations (spglib) that keep the site model."""
        codes = {c: k + 1 for k, c in enumerate(sorted(set(self.choices)))}
        numbers = [codes[c] for c in self.choices]
        cell = (self.lattice.matrix, self.frac_coords, numbers)
        sym = spglib.get_symmetry(cell, symprec=1e-3)
        perms = []
        for rot, tr in zip(sym["rotations"], sym["translations"]):
            new = self.frac_coords @ rot.T + tr
            d = new[:, None, :] - self.frac_coords[None, :, :]
            d -= np.round(d)
            dist = np.linalg.norm(d @ self.lattice.matrix, axis=-1)
            j = dist.argmin(axis=1)
            if np.all(dist[np.arange(len(j)), j] < 0.05) and len(set(j)) == len(j):
                perms.append(j)
        return np.unique(np.array(perms), axis=0)


def parent_site_model(parent: Structure | str, supercell=(1, 1, 2), min_occupancy: float = 0.15) -> SiteModel:
    """Site model of a disordered parent in a supercell: species with occupancy >= min_occupancy are
    allowed on a site (plus a vacancy if they do not fill it); sites with none are dropped.

    Target counts keep the charge-balanced composition Li3YX6: Y = halides / 6, Li = 3 Y.
    """
    if isinstance(parent, str):
        parent = load_parent(parent)
    sup = parent.copy()
    sup.make_supercell(supercell)
    choices, coords = [], []
    for site in sup:
        occ = {el.symbol: float(o) for el, o in site.species.items()}
        kept = tuple(sorted(s for s, o in occ.items() if o >= min_occupancy))
        if not kept:
            continue
        if sum(occ[s] for s in kept) < 1 - 1e-3:
            kept = kept + (VACANCY,)
        choices.append(kept)
        coords.append(site.frac_coords)
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
    return SiteModel(sup.lattice, np.array(coords), choices, counts)


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


def count_labelings(model: SiteModel) -> int:
    """Number of labelings with the target counts (all, not symmetry-reduced)."""
    return int(sum(w for _, w in _group_count_vectors(model, weights=True)))


def _groups(model: SiteModel) -> dict[tuple[str, ...], list[int]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(model.choices):
        if len(c) > 1:
            groups.setdefault(c, []).append(i)
    return groups


def _compositions(n: int, k: int):
    """All k-tuples of non-negative ints summing to n."""
    if k == 1:
        yield (n,)
        return
    for first in range(n + 1):
        for rest in _compositions(n - first, k - 1):
            yield (first,) + rest


def _group_count_vectors(model: SiteModel, weights: bool = False):
    """Yield per-group species counts that meet the totals (and their number of labelings)."""
    groups = _groups(model)
    options = [[dict(zip(c, v)) for v in _compositions(len(idx), len(c))] for c, idx in groups.items()]
    for combo in itertools.product(*options):
        tot = Counter()
        for d in combo:
            tot.update(d)
        if all(tot[s] == n for s, n in model.counts.items()):
            w = math.prod(math.factorial(len(idx)) // math.prod(math.factorial(v) for v in d.values())
                          for d, idx in zip(combo, groups.values()))
            yield (combo, w) if weights else combo


def count_distinct(model: SiteModel) -> int:
    """Number of symmetry-distinct orderings by Burnside's lemma (independent of icet): the mean over
    the group of the number of labelings each operation leaves unchanged."""
    species = sorted(model.counts)
    target = tuple(model.counts[s] for s in species)
    total = 0
    for perm in model.permutations:
        seen = np.zeros(len(perm), bool)
        poly = {tuple(0 for _ in species): 1}  # count vector -> number of fixed labelings
        for start in range(len(perm)):
            if seen[start]:
                continue
            cycle, j = [], start
            while not seen[j]:
                seen[j] = True
                cycle.append(j)
                j = perm[j]
            allowed = model.choices[start]
            if len(allowed) == 1:
                continue
            new: dict[tuple, int] = {}
            for vec, n in poly.items():
                for s in allowed:
                    k = species.index(s)
                    v = list(vec)
                    v[k] += len(cycle)
                    if v[k] <= target[k]:
                        new[tuple(v)] = new.get(tuple(v), 0) + n
            poly = new
        total += poly.get(target, 0)
    return total // len(model.permutations)


def _canonical(labels: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Lexicographically smallest image of each labeling [B, S] under the permutations [G, S]."""
    images = labels[:, perms]  # [B, G, S]
    best = images[:, 0]
    for g in range(1, perms.shape[0]):
        cand = images[:, g]
        diff = cand != best
        first = diff.argmax(axis=1)
        rows = np.arange(len(best))
        smaller = diff.any(axis=1) & (cand[rows, first] < best[rows, first])
        best = np.where(smaller[:, None], cand, best)
    return best


def _arrangements(counts: dict[str, int], n: int):
    """All distinct sequences of length n with the given species counts."""
    (s, k), *rest = counts.items()
    if not rest:
        yield (s,) * n
        return
    for pos in itertools.combinations(range(n), k):
        others = [i for i in range(n) if i not in pos]
        for tail in _arrangements(dict(rest), n - k):
            seq = [None] * n
            for i in pos:
                seq[i] = s
            for i, t in zip(others, tail):
                seq[i] = t
            yield tuple(seq)


def brute_force_distinct(model: SiteModel) -> int:
    """Distinct orderings by brute force (all labelings, canonical form under spglib operations)."""
    alphabet = sorted({s for c in model.choices for s in c})
    base = np.array([alphabet.index(c[0]) for c in model.choices])
    groups = _groups(model)
    labs = []
    for combo in _group_count_vectors(model):
        per_group = [list(_arrangements(d, len(idx))) for d, idx in zip(combo, groups.values())]
        for assignment in itertools.product(*per_group):
            lab = base.copy()
            for idx, sp in zip(groups.values(), assignment):
                lab[idx] = [alphabet.index(s) for s in sp]
            labs.append(lab)
    if not labs:
        return 0
    canon = _canonical(np.array(labs), model.permutations)
    return len(np.unique(canon, axis=0))


def enumerate_orderings(model: SiteModel, max_structures: int | None = None, max_labelings: int = 300_000,
                        seed: int = 0) -> tuple[list[Structure], bool]:
    """Symmetry-distinct orderings of a site model as ordered Structures (vacancies removed).

    Exhaustive with icet (Hart-Forcade) when the number of labelings is at most ``max_labelings``;
    otherwise (icet is pure Python and holds all labelings in memory) ``max_structures`` distinct
    orderings are drawn at random. At most ``max_structures`` are returned (a random subset with
    ``seed``). Returns (structures, exhaustive).
    """
    if not model.counts:  # nothing to order
        return [model.structure([c[0] for c in model.choices])], True
    n_lab = count_labelings(model)
    if n_lab <= max_labelings:
        labelings = _icet_labelings(model)
        exhaustive = True
        if max_structures is not None and len(labelings) > max_structures:
            pick = np.random.default_rng(seed).choice(len(labelings), max_structures, replace=False)
            labelings = [labelings[i] for i in sorted(pick)]
    else:
        if max_structures is None:
            raise ValueError(f"{n_lab} labelings (about {count_distinct(model)} distinct): too many for "
                             f"exhaustive enumeration (max_labelings={max_labelings}); give max_structures")
        labelings = _sample_labelings(model, max_structures, seed)
        exhaustive = False
    return [model.structure(lab) for lab in labelings], exhaustive


def _icet_labelings(model: SiteModel) -> list[list[str]]:
    from ase import Atoms
    from icet.tools import enumerate_structures

    # The supercell is enumerated as a size-1 "primitive" cell, so every ordering inside it is kept
    # (also those with a smaller period) and equivalence is under the operations that keep the cell.
    codes = {c: k + 1 for k, c in enumerate(sorted(set(model.choices)))}
    atoms = Atoms(numbers=[codes[c] for c in model.choices], cell=model.lattice.matrix,
                  scaled_positions=model.frac_coords, pbc=True)
    n = len(atoms)
    fixed = Counter(c[0] for c in model.choices if len(c) == 1)  # icet counts fixed sites too
    restr = {s: ((k + fixed[s] - 0.5) / n, (k + fixed[s] + 0.5) / n) for s, k in model.counts.items()}
    out = []
    for a in enumerate_structures(atoms, [1], [list(c) for c in model.choices], concentration_restrictions=restr,
                                  niggli_reduce=False, symprec=1e-3, position_tolerance=1e-3):
        out.append(list(a.get_chemical_symbols()))
    return out


def _sample_labelings(model: SiteModel, n: int, seed: int, max_tries: int = 50) -> list[list[str]]:
    """n distinct orderings drawn at random (labelings uniform given the counts, then deduplicated)."""
    rng = np.random.default_rng(seed)
    alphabet = sorted({s for c in model.choices for s in c})
    base = np.array([alphabet.index(c[0]) for c in model.choices])
    groups = list(_groups(model).values())
    combos = list(_group_count_vectors(model, weights=True))
    w = np.array([c[1] for c in combos], float)
    seen: dict[bytes, np.ndarray] = {}
    for _ in range(max_tries):
        batch = max(64, 2 * (n - len(seen)))
        labs = np.tile(base, (batch, 1))
        for b, k in enumerate(rng.choice(len(combos), batch, p=w / w.sum())):
            for d, idx in zip(combos[k][0], groups):
                labs[b, idx] = rng.permutation([alphabet.index(s) for s, m in d.items() for _ in range(m)])
        for lab in _canonical(labs, model.permutations):
            seen.setdefault(lab.tobytes(), lab)
            if len(seen) == n:
                return [[alphabet[i] for i in lab] for lab in seen.values()]
    return [[alphabet[i] for i in lab] for lab in seen.values()]
