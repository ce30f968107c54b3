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

from lycb_jax.units import EV_A3_TO_GPA
from lycb_jax.predict import System, pack, single_point, to_system

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
    """Sites to decorate: fractional coords, allowed species per site ('X' = vacancy), target counts.

    Optional orbit constraint: ``orbits`` labels every site and ``orbit_counts`` fixes the species
    counts within each label of the mixing sites (e.g. per parent Wyckoff orbit, see
    ``wyckoff_site_model``); symmetry operations that do not keep the constraint are dropped.
    """

    lattice: Lattice
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
        groups = _groups(self)
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
            dist = np.linalg.norm(d @ self.lattice.matrix, axis=-1)
            j = dist.argmin(axis=1)
            if np.all(dist[np.arange(len(j)), j] < 0.05) and len(set(j)) == len(j) and self._keeps_orbits(j):
                perms.append(j)
        return np.unique(np.array(perms), axis=0)

    def _keeps_orbits(self, perm: np.ndarray) -> bool:
        """Whether a permutation maps every constrained orbit onto one with the same counts."""
        if self.orbits is None:
            return True
        lab, groups = np.asarray(self.orbits), _groups(self)
        nonzero = {k: {s: n for s, n in d.items() if n} for k, d in self.orbit_counts.items()}
        for k, idx in groups.items():
            img = perm[idx]
            k2 = int(lab[img[0]])
            if k2 not in groups or nonzero[k2] != nonzero[k] or set(img) != set(groups[k2]):
                return False
        return True


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
                       min_occupancy: float = 0.15) -> SiteModel:
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
    occ_key = [tuple(sorted((s, round(o, 4)) for s, o in occ.items())) + c for _, c, occ in sites]
    codes = {k: j + 1 for j, k in enumerate(sorted(set(occ_key)))}
    data = spglib.get_symmetry_dataset((lattice.matrix, free.frac_coords, [codes[k] for k in occ_key]), symprec=1e-3)
    equiv = [int(e) for e in data.equivalent_atoms]
    orbits = {}
    for i, c in enumerate(free.choices):
        if len(c) > 1:
            orbits.setdefault(equiv[i], []).append(i)
    counts = {k: Counter() for k in orbits}
    for sp in sorted(s for s in free.counts if s != VACANCY):
        have = [k for k in orbits if sp in free.choices[orbits[k][0]]]
        occ = {k: sites[orbits[k][0]][2].get(sp, 0.0) for k in have}
        order = sorted(have, key=lambda k: (-occ[k], k))
        if rule == "majority":
            left = free.counts[sp]
            for k in order:
                counts[k][sp] = min(left, len(orbits[k]) - sum(counts[k].values()))
                left -= counts[k][sp]
        else:
            expect = {k: occ[k] * len(orbits[k]) for k in have}
            expect = {k: e * free.counts[sp] / sum(expect.values()) for k, e in expect.items()}
            for k in have:
                counts[k][sp] = math.floor(expect[k] + 1e-9)
            short = free.counts[sp] - sum(counts[k][sp] for k in have)
            for k in sorted(order, key=lambda k: -(expect[k] - counts[k][sp]) + 1e-9 * order.index(k))[:short]:
                counts[k][sp] += 1
    for k, idx in orbits.items():
        if VACANCY in free.choices[idx[0]]:
            counts[k][VACANCY] = len(idx) - sum(counts[k].values())
        if any(n < 0 for n in counts[k].values()) or sum(counts[k].values()) != len(idx):
            raise ValueError(f"rule {rule!r} overfills the orbit of site {k}: {dict(counts[k])} on {len(idx)} sites")
    labels = [equiv[i] if len(c) > 1 else -1 for i, c in enumerate(free.choices)]
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


def count_labelings(model: SiteModel) -> int:
    """Number of labelings with the target counts (all, not symmetry-reduced)."""
    return int(sum(w for _, w in _group_count_vectors(model, weights=True)))


def _groups(model: SiteModel) -> dict:
    """Mixing sites grouped by their constraint label (orbit model) or by their allowed species."""
    groups: dict = {}
    for i, c in enumerate(model.choices):
        if len(c) > 1:
            groups.setdefault(c if model.orbits is None else int(model.orbits[i]), []).append(i)
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
    if model.orbits is not None:  # one fixed count vector per orbit
        options = [[{s: n for s, n in model.orbit_counts[k].items()}] for k in groups]
    else:
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
    the group of the number of labelings each operation leaves unchanged. Counts are tracked per
    (orbit, species) for an orbit-constrained model, per species otherwise."""
    key = (lambda i: 0) if model.orbits is None else (lambda i: int(model.orbits[i]))
    if model.orbits is None:
        target_d = {(0, s): n for s, n in model.counts.items()}
    else:
        target_d = {(k, s): n for k, d in model.orbit_counts.items() for s, n in d.items()}
    slots = {ks: j for j, ks in enumerate(sorted(target_d))}
    target = tuple(target_d[ks] for ks in sorted(target_d))
    total = 0
    for perm in model.permutations:
        seen = np.zeros(len(perm), bool)
        poly = {tuple(0 for _ in target): 1}  # count vector -> number of fixed labelings
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
                for s in allowed:  # the whole cycle carries species s
                    v = list(vec)
                    ok = True
                    for i in cycle:
                        k = slots.get((key(i), s))
                        if k is None:
                            ok = False
                            break
                        v[k] += 1
                        ok = v[k] <= target[k]
                        if not ok:
                            break
                    if ok:
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


def _all_labelings(model: SiteModel) -> np.ndarray:
    """[L, S] int8 codes (into the sorted alphabet of all choices) of every labeling with the counts."""
    alphabet = sorted({s for c in model.choices for s in c})
    base = np.array([alphabet.index(c[0]) for c in model.choices], np.int8)
    groups = list(_groups(model).values())
    blocks = []
    for combo in _group_count_vectors(model):
        per_group = [np.array([[alphabet.index(s) for s in a] for a in _arrangements(d, len(idx))], np.int8)
                     for d, idx in zip(combo, groups)]
        grid = np.indices([len(a) for a in per_group]).reshape(len(per_group), -1)
        labs = np.tile(base, (grid.shape[1], 1))
        for a, idx, pick in zip(per_group, groups, grid):
            labs[:, idx] = a[pick]
        blocks.append(labs)
    return np.concatenate(blocks) if blocks else np.zeros((0, len(base)), np.int8)


def _distinct_labelings(model: SiteModel, chunk: int = 8192) -> np.ndarray:
    """Canonical forms [D, S] (int8 codes) of all symmetry-distinct labelings, by brute force."""
    labs = _all_labelings(model)
    canon = np.concatenate([_canonical(labs[i:i + chunk], model.permutations)
                            for i in range(0, len(labs), chunk)] or [labs])
    return np.unique(canon, axis=0)


def brute_force_distinct(model: SiteModel) -> int:
    """Distinct orderings by brute force (all labelings, canonical form under spglib operations)."""
    return len(_distinct_labelings(model))


def enumerate_orderings(model: SiteModel, max_structures: int | None = None, max_labelings: int = 300_000,
                        seed: int = 0) -> tuple[list[Structure], bool]:
    """Symmetry-distinct orderings of a site model as ordered Structures (vacancies removed).

    Exhaustive with icet (Hart-Forcade) when the number of labelings is at most ``max_labelings``
    (orbit-constrained models, or icet not installed: canonical forms of all labelings,
    ``_distinct_labelings``); otherwise (icet is pure Python and holds all labelings in memory)
    ``max_structures`` distinct orderings are drawn at random. At most ``max_structures`` are returned (a random subset with
    ``seed``). Returns (structures, exhaustive).
    """
    if not model.counts:  # nothing to order
        return [model.structure([c[0] for c in model.choices])], True
    n_lab = count_labelings(model)
    if n_lab <= max_labelings:
        if model.orbits is None and _have_icet():
            labelings = _icet_labelings(model)
        else:  # orbit counts (icet cannot restrict them) or no icet: all labelings, canonical forms (numpy)
            alphabet = sorted({s for c in model.choices for s in c})
            labelings = [[alphabet[i] for i in lab] for lab in _distinct_labelings(model)]
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


def _have_icet() -> bool:
    """Whether icet can be imported; without it exhaustive enumeration uses the brute-force canonical
    forms (``_distinct_labelings``, same orderings, fine up to ``max_labelings``)."""
    try:
        import icet.tools  # noqa: F401
    except ImportError:
        return False
    return True


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


# ---------------------------------------------------------------------------------------------
# 3. Batched FIRE relaxation of positions and cell (ASE FIRE + FrechetCellFilter, on device)

# ASE's FIRE defaults (ase/optimize/fire.py; maxstep from Optimizer.defaults).
FIRE = dict(dt=0.1, maxstep=0.2, dtmax=1.0, nmin=5, finc=1.1, fdec=0.5, astart=0.1, fa=0.99)


@dataclasses.dataclass
class Relaxed:
    """One relaxed candidate: structure, energy (eV), energy_per_atom (eV/atom), fmax (eV/A, the ASE
    FrechetCellFilter criterion incl. cell rows), converged (fmax < target), steps (FIRE steps)."""

    structure: Structure
    energy: float
    energy_per_atom: float
    fmax: float
    converged: bool
    steps: int


def _frechet_forces(module, params, species, mask, n, x, ref_cell, capacity):
    """Energy (eV), generalised forces [N+3, 3] and overflow of one system at FrechetCellFilter DOFs x.

    x[:N] are positions in the reference cell frame (A), x[N:] = n * logm(F) with F the deformation
    gradient (cell = ref_cell @ F.T); the cell rows are -dE/dx[N:] (eV), as in ase.filters.
    """
    n_pad = species.shape[0]
    f_def = jax.scipy.linalg.expm(x[n_pad:] / n)
    cell = ref_cell @ f_def.T
    e, f, s, _, ovf = single_point(module, params, species, x[:n_pad] @ f_def.T, cell, mask, capacity)
    virial = -jnp.abs(jnp.linalg.det(cell)) * s / EV_A3_TO_GPA  # eV
    ucf_grad = virial @ jnp.linalg.inv(f_def.T)
    _, vjp = jax.vjp(jax.scipy.linalg.expm, x[n_pad:] / n)  # Frechet derivative of expm, transposed
    return e, jnp.concatenate([f @ f_def, vjp(ucf_grad)[0] / n]), ovf


def _fire_update(x, v, g, dt, a, nsteps, first, maxstep, p=FIRE):
    """One ase.optimize.FIRE step on one system's DOF array x with forces g."""
    vf, g2, v2 = jnp.vdot(g, v), jnp.vdot(g, g), jnp.vdot(v, v)
    up = vf > 0.0
    grow = up & (nsteps > p["nmin"])
    mixed = (1.0 - a) * v + a * g / jnp.sqrt(jnp.maximum(g2, 1e-30)) * jnp.sqrt(v2)
    v_n = jnp.where(up, mixed, 0.0)
    dt_n = jnp.where(up, jnp.where(grow, jnp.minimum(dt * p["finc"], p["dtmax"]), dt), dt * p["fdec"])
    a_n = jnp.where(up, jnp.where(grow, a * p["fa"], a), p["astart"])
    ns_n = jnp.where(up, nsteps + 1, 0)
    # ASE's first step starts from zero velocity without the mixing branch
    v_n, dt_n, a_n, ns_n = (jnp.where(first, o, nw) for o, nw in ((v, v_n), (dt, dt_n), (a, a_n), (nsteps, ns_n)))
    v_n = v_n + dt_n * g
    dr = dt_n * v_n
    norm = jnp.sqrt(jnp.vdot(dr, dr))
    dr = jnp.where(norm > maxstep, dr * maxstep / jnp.maximum(norm, 1e-30), dr)
    return x + dr, v_n, dt_n, a_n, ns_n


def _fnorm(g):
    return jnp.max(jnp.linalg.norm(g, axis=-1), axis=-1)


@functools.partial(jax.jit, static_argnames=("module", "capacity"))
def _evaluate(module, params, st, capacity):
    e, g, ovf = jax.vmap(_frechet_forces, in_axes=(None, None, 0, 0, 0, 0, 0, None))(
        module, params, st["species"], st["mask"], st["n"], st["x"], st["ref_cell"], capacity)
    return dict(st, e=e, g=g, overflow=ovf, done=_fnorm(g) < st["fmax"])


@functools.partial(jax.jit, static_argnames=("module", "capacity"))
def _fire_loop(module, params, st, max_steps, min_active, capacity):
    """FIRE steps inside one while_loop until fewer than min_active systems are still running,
    or a graph overflowed (the caller grows the capacity and re-evaluates)."""
    force_fn = jax.vmap(_frechet_forces, in_axes=(None, None, 0, 0, 0, 0, 0, None))

    def running(s):
        return ~s["done"] & ~s["idle"] & (s["step"] < max_steps)

    def cond(s):
        return (jnp.sum(running(s)) >= min_active) & ~jnp.any(s["overflow"])

    def body(s):
        act = running(s)
        x, v, dt, a, ns = jax.vmap(_fire_update, in_axes=(0, 0, 0, 0, 0, 0, 0, None))(
            s["x"], s["v"], s["g"], s["dt"], s["a"], s["ns"], s["first"], FIRE["maxstep"])
        e, g, ovf = force_fn(module, params, s["species"], s["mask"], s["n"], x, s["ref_cell"], capacity)
        keep = lambda new, old: jnp.where(act.reshape(act.shape + (1,) * (new.ndim - 1)), new, old)
        out = dict(s, x=keep(x, s["x"]), v=keep(v, s["v"]), dt=keep(dt, s["dt"]), a=keep(a, s["a"]),
                   ns=keep(ns, s["ns"]), e=keep(e, s["e"]), g=keep(g, s["g"]))
        out["first"] = s["first"] & ~act
        out["step"] = s["step"] + act
        out["done"] = jnp.where(act, _fnorm(g) < s["fmax"], s["done"])
        out["overflow"] = ovf & act
        return out

    return jax.lax.while_loop(cond, body, st)


def relax(model, structures: Sequence, fmax: float = 0.01, max_steps: int = 3000, batch_size: int = 32,
          refill_fraction: float = 0.25, progress: bool = True, min_pad: int = 0) -> list[Relaxed]:
    """Relax positions and cell of many structures with FIRE (ASE parameters) on device.

    Equivalent to ``FIRE(FrechetCellFilter(atoms)).run(fmax, max_steps)`` per structure (fmax in
    eV/A). Structures of one padded size (at least ``min_pad`` atoms: one size for all saves
    compilations) share a jit-compiled, vmapped while_loop over ``batch_size`` slots; finished
    slots are refilled with new candidates when ``refill_fraction`` of them are done. Graph capacity
    overflow is detected, the capacity grown and the step redone; within a process, later calls
    reuse a capacity compiled before when it is large enough. Unconverged results are returned
    with ``converged=False`` and a warning.
    """
    from tqdm.auto import tqdm

    from lycb_jax.capacity import bucket_size as _bucket

    systems = [to_system(s) for s in structures]
    results: list[Relaxed | None] = [None] * len(systems)
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(systems):
        by_size.setdefault(max(_bucket(len(s)), min_pad), []).append(i)
    bar = tqdm(total=len(systems), desc="relax", unit="cand", disable=not progress)
    for n_pad, idx in sorted(by_size.items()):
        _relax_group(model, [systems[i] for i in idx], idx, results, n_pad, fmax, max_steps,
                     batch_size, refill_fraction, bar)
    bar.close()
    bad = sum(not r.converged for r in results)
    if bad:
        warnings.warn(f"{bad} of {len(results)} relaxations did not reach fmax < {fmax} eV/A in {max_steps} steps")
    return results  # type: ignore[return-value]


_CAPACITIES: dict = {}  # (padded atoms, slots) -> graph capacity last compiled for that shape


def compiled_programs() -> int:
    """Relaxation loops jit-compiled so far in this process (a new shape or capacity adds one)."""
    return getattr(_fire_loop, "_cache_size", lambda: 0)()


def _shared_capacity(key, need):
    """The capacity compiled before for this shape, grown elementwise to ``need`` where short (equal
    to the old one, so the jit cache hits, whenever that suffices)."""
    old = _CAPACITIES.get(key)
    if old is not None:
        need = dataclasses.replace(old, edges=max(old.edges, need.edges), angles=max(old.angles, need.angles),
                                   short_per_atom=max(old.short_per_atom, need.short_per_atom),
                                   images=tuple(max(a, b) for a, b in zip(old.images, need.images)))
    _CAPACITIES[key] = need
    return need


def _relax_group(model, systems, idx, results, n_pad, fmax, max_steps, batch_size, refill_fraction, bar):
    n_slots = min(batch_size, len(systems))
    allb = pack(systems, headroom=1.25, n_atoms=n_pad, n_systems=len(systems))  # cells change: 25% headroom
    capacity = _shared_capacity((n_pad, n_slots), allb.capacity)
    queue = list(range(len(systems)))
    slot_of = [-1] * n_slots
    x0 = np.zeros((n_slots, n_pad + 3, 3), np.float32)
    st = dict(species=np.zeros((n_slots, n_pad), np.int32), mask=np.zeros((n_slots, n_pad), bool),
              n=np.ones(n_slots, np.float32), x=x0, ref_cell=np.tile(allb.cells[:1], (n_slots, 1, 1)),
              v=np.zeros_like(x0), dt=np.full(n_slots, FIRE["dt"], np.float32),
              a=np.full(n_slots, FIRE["astart"], np.float32), ns=np.zeros(n_slots, np.int32),
              first=np.ones(n_slots, bool), step=np.zeros(n_slots, np.int32), idle=np.zeros(n_slots, bool),
              fmax=np.float32(fmax))

    def load(slot, k):
        for key in ("v", "x"):
            st[key][slot] = 0.0
        st["species"][slot] = allb.species[k]
        st["mask"][slot] = allb.atom_mask[k]
        st["n"][slot] = allb.counts[k]
        st["x"][slot, :n_pad] = allb.positions[k]
        st["ref_cell"][slot] = allb.cells[k]
        st["dt"][slot], st["a"][slot], st["ns"][slot] = FIRE["dt"], FIRE["astart"], 0
        st["first"][slot], st["step"][slot] = True, 0
        slot_of[slot] = k

    for slot in range(n_slots):
        load(slot, queue.pop(0))
    st = _evaluate(model.module, model.params, {k: jnp.asarray(v) for k, v in st.items()}, capacity)
    while True:
        if bool(jnp.any(st["overflow"])):
            capacity = _shared_capacity((n_pad, n_slots), _grow(capacity, st, n_pad))
            st = _evaluate(model.module, model.params, st, capacity)
            continue
        min_active = max(1, math.ceil(n_slots * (1 - refill_fraction))) if queue else 1
        st = _fire_loop(model.module, model.params, st, max_steps, min_active, capacity)
        if bool(jnp.any(st["overflow"])):
            continue
        host = {k: np.array(v) for k, v in st.items()}
        finished = [s for s in range(n_slots) if not host["idle"][s] and (host["done"][s] or host["step"][s] >= max_steps)]
        for s in finished:
            k = slot_of[s]
            results[idx[k]] = _result(host, s, systems[k], n_pad, fmax)
            slot_of[s] = -1
            bar.update(1)
        if not queue and all(k < 0 for k in slot_of):
            return
        st = host
        for s in finished:
            if queue:
                load(s, queue.pop(0))
            else:  # no candidates left: the slot idles (frozen)
                st["idle"][s] = True
        st = _evaluate(model.module, model.params, {k: jnp.asarray(v) for k, v in st.items()}, capacity)


def _grow(capacity, st, n_pad):
    """Capacity for the current geometries (host neighbour count, 30% headroom), at least 1.5x the old."""
    from lycb_jax.capacity import Capacity

    x, n = np.asarray(st["x"], np.float64), np.asarray(st["n"])
    sys_now = []
    for s in range(len(n)):
        f_def = _expm(x[s, n_pad:] / n[s])
        k = int(n[s])
        sys_now.append(System(np.asarray(st["species"][s][:k]), x[s, :k] @ f_def.T,
                              np.asarray(st["ref_cell"][s], np.float64) @ f_def.T))
    new = pack(sys_now, headroom=1.3, n_atoms=n_pad).capacity
    return Capacity(max(new.edges, int(1.5 * capacity.edges)), max(new.angles, int(1.5 * capacity.angles)),
                    max(new.short_per_atom, capacity.short_per_atom),
                    tuple(max(a, b) for a, b in zip(new.images, capacity.images)))


def _expm(a):
    from scipy.linalg import expm

    return expm(a)


def _result(host, s, system, n_pad, fmax) -> Relaxed:
    n = len(system)
    x = host["x"][s].astype(np.float64)
    f_def = _expm(x[n_pad:] / n)
    cell = host["ref_cell"][s].astype(np.float64) @ f_def.T
    pos = x[:n] @ f_def.T
    struct = Structure(Lattice(cell), [int(z) for z in system.numbers], pos, coords_are_cartesian=True)
    fm = float(np.max(np.linalg.norm(host["g"][s][np.r_[0:n, n_pad:n_pad + 3]], axis=-1)))
    e = float(host["e"][s])
    return Relaxed(struct, e, e / n, fm, bool(fm < fmax), int(host["step"][s]))


# ---------------------------------------------------------------------------------------------
# 4. Ranking


def spacegroup(structure: Structure, symprec: float = 0.1) -> str:
    """Space-group symbol and number, e.g. 'P-3c1 (165)', by spglib via pymatgen (symprec in A)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"


def rank(model, structures: Sequence, top: int = 5, out: str | Path | None = None, prefix: str = "model",
         symprec: float = 0.1, **relax_kw) -> list[dict]:
    """Relax every candidate, rank by energy per atom (converged first) and return one row per candidate.

    Rows: see ``rank_relaxed``. With ``out``, writes ``{prefix}_{rank}.cif`` for the top models and
    ``{prefix}_ranking.csv`` for all.
    """
    rows = rank_relaxed(relax(model, structures, **relax_kw), top, symprec)
    if out is not None:
        write_ranking(rows, out, prefix, top)
    return rows


def rank_relaxed(relaxed: Sequence[Relaxed], top: int = 5, symprec: float = 0.1) -> list[dict]:
    """Rows sorted by energy per atom, converged first: rank, index (input order), energy_per_atom
    (eV/atom), de_meV_atom (above the lowest), volume_per_atom (A^3/atom), spacegroup (the ``top``
    lowest only; symprec in A), converged, steps, fmax (eV/A), and ``structure`` (relaxed)."""
    order = sorted(range(len(relaxed)), key=lambda i: (not relaxed[i].converged, relaxed[i].energy_per_atom))
    e0 = relaxed[order[0]].energy_per_atom
    rows = []
    for r, i in enumerate(order):
        res = relaxed[i]
        rows.append(dict(rank=r, index=i, energy_per_atom=res.energy_per_atom,
                         de_meV_atom=1000 * (res.energy_per_atom - e0),
                         volume_per_atom=res.structure.volume / len(res.structure),
                         spacegroup=spacegroup(res.structure, symprec) if r < top else "",
                         converged=res.converged, steps=res.steps, fmax=res.fmax, structure=res.structure))
    return rows


def write_ranking(rows: list[dict], out: str | Path, prefix: str, top: int) -> None:
    """CIF files of the ``top`` rows and a CSV table of all rows (without structures)."""
    import csv

    from pymatgen.io.cif import CifWriter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for row in rows[:top]:
        CifWriter(row["structure"]).write_file(out / f"{prefix}_{row['rank']}.cif")
    keys = [k for k in rows[0] if k != "structure"]
    with open(out / f"{prefix}_ranking.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows({k: row[k] for k in keys} for row in rows)


def order_parent(model, parent: str = "LYC", supercell=(1, 1, 2), top: int = 5, max_candidates: int | None = 1000,
                 min_occupancy: float = 0.15, seed: int = 0, out=None, wyckoff: str | None = None,
                 **relax_kw) -> list[dict]:
    """Enumerate the orderings of a disordered parent in a supercell, relax and rank them (see ``rank``).

    ``wyckoff`` ('nearest' or 'majority') restricts them to fixed counts per Wyckoff orbit
    (``wyckoff_site_model``); None enumerates all orderings."""
    if wyckoff is None:
        site_model = parent_site_model(parent, supercell, min_occupancy)
    else:
        site_model = wyckoff_site_model(parent, supercell, wyckoff, min_occupancy)
    cands, _ = enumerate_orderings(site_model, max_structures=max_candidates, seed=seed)
    return rank(model, cands, top=top, out=out, prefix=parent.upper(), **relax_kw)


# ---------------------------------------------------------------------------------------------
# 5. The Li3YCl6-xBrx series


def halide_series(model, bases: dict[str, Structure], xs=tuple(np.arange(0, 6.01, 0.5)), max_candidates: int = 50,
                  seed: int = 0, out=None, symprec: float = 0.1, max_labelings: int = 20_000,
                  **relax_kw) -> dict[str, list[dict]]:
    """Cl/Br orderings of ordered Li3YX6 models for each x in Li3YCl(6-x)Brx, relaxed and ranked.

    ``bases`` maps a label (e.g. 'LYC0') to an ordered model; its halides are first set to Cl. Per
    label and x, up to ``max_candidates`` symmetry-distinct Cl/Br orderings (all if fewer) are
    relaxed, all labels and x in one ``relax`` call (exhaustive enumeration up to ``max_labelings``
    labelings, random distinct orderings beyond). Returns {label: one row per x with the lowest
    model}: x, n_br, n_candidates, exhaustive, n_converged, energy_per_atom (eV/atom),
    volume_per_atom (A^3/atom), spacegroup (symprec in A), converged, steps, fmax (eV/A), structure. With ``out``,
    writes {label}_x{x}.cif and {label}_series.csv.
    """
    cands, meta = [], []
    for label, ordered in bases.items():
        base = ordered.copy()
        base.replace_species({el: "Cl" for el in base.composition.elements if el.symbol == "Br"})
        n_hal = sum(s.specie.symbol == "Cl" for s in base)
        for x in xs:
            n_br = x * n_hal / 6
            if abs(n_br - round(n_br)) > 1e-6:
                raise ValueError(f"x = {x} needs {n_br:g} Br of {n_hal} halide sites: use a larger cell")
            got, exhaustive = enumerate_orderings(halide_site_model(base, int(round(n_br))),
                                                  max_structures=max_candidates, seed=seed,
                                                  max_labelings=max_labelings)
            cands += got
            meta += [(label, float(x), int(round(n_br)), len(got), exhaustive)] * len(got)
    relaxed = relax(model, cands, **relax_kw)
    series: dict[str, list[dict]] = {label: [] for label in bases}
    for key in dict.fromkeys(meta):  # (label, x, n_br, n, exhaustive) in input order
        label, x, n_br, n, exhaustive = key
        mine = [r for r, m in zip(relaxed, meta) if m == key]
        best = min(mine, key=lambda r: (not r.converged, r.energy_per_atom))
        series[label].append(dict(x=x, n_br=n_br, n_candidates=n, exhaustive=exhaustive,
                                  n_converged=sum(r.converged for r in mine), energy_per_atom=best.energy_per_atom,
                                  volume_per_atom=best.structure.volume / len(best.structure),
                                  spacegroup=spacegroup(best.structure, symprec), converged=best.converged,
                                  steps=best.steps, fmax=best.fmax, structure=best.structure))
    if out is not None:
        out = Path(out)
        for label, rows in series.items():
            write_ranking([dict(r, rank=f"x{r['x']:.1f}") for r in rows], out, label, len(rows))
            (out / f"{label}_ranking.csv").replace(out / f"{label}_series.csv")
    return series


def plot_series(series: dict[str, list[dict]], path: str | Path) -> None:
    """Relaxed volume per atom (A^3/atom) vs x for each parent label, saved with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, rows in series.items():
        ax.plot([r["x"] for r in rows], [r["volume_per_atom"] for r in rows], "o-", label=label)
    ax.set_xlabel("x in Li$_3$YCl$_{6-x}$Br$_x$")
    ax.set_ylabel("relaxed volume per atom (Å$^3$)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# 6. Command line


def add_cli(subparsers) -> None:
    """Add the ``structures`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("structures", help="ordered LYC/LYB models: enumerate, relax (FIRE), rank",
                              description=__doc__)
    p.add_argument("--parent", choices=sorted(PARENTS), default="LYC")
    p.add_argument("--supercell", type=int, nargs=3, default=(1, 1, 2), metavar=("NA", "NB", "NC"))
    p.add_argument("--top", type=int, default=5, help="keep the N lowest models as CIF")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="chgnet-0.3.0")
    p.add_argument("--max-candidates", type=int, default=1000, help="cap on candidates (random subset)")
    p.add_argument("--min-occupancy", type=float, default=0.15, help="drop species below this occupancy")
    p.add_argument("--wyckoff", choices=("nearest", "majority"), default=None,
                   help="fix the counts per parent Wyckoff orbit (experimental ratio, or filled by rank)")
    p.add_argument("--fmax", type=float, default=0.01, help="eV/A")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series", action="store_true", help="also the Cl/Br series x = 0..6 from the lowest model")
    p.add_argument("--series-candidates", type=int, default=50)
    p.set_defaults(func=_cli)


def _cli(args) -> None:
    from lycb_jax.models import load_model

    model = load_model(args.model)
    kw = dict(fmax=args.fmax, max_steps=args.max_steps, batch_size=args.batch_size)
    rows = order_parent(model, args.parent, tuple(args.supercell), top=args.top, max_candidates=args.max_candidates,
                        min_occupancy=args.min_occupancy, seed=args.seed, out=args.out, wyckoff=args.wyckoff, **kw)
    for r in rows[:args.top]:
        print(f"{r['rank']:3d}  {r['energy_per_atom']:.5f} eV/atom  +{r['de_meV_atom']:.2f} meV/atom  "
              f"{r['spacegroup']:14s} V/atom {r['volume_per_atom']:.3f} A^3  converged={r['converged']}")
    if args.series:
        best = rows[0]["structure"]
        series = halide_series(model, {args.parent: best}, max_candidates=args.series_candidates,
                               seed=args.seed, out=args.out, **kw)
        plot_series(series, Path(args.out) / f"{args.parent}_series_volume.png")
        for r in series[args.parent]:
            print(f"x={r['x']:.1f}  {r['energy_per_atom']:.5f} eV/atom  V/atom {r['volume_per_atom']:.3f} A^3  "
                  f"{r['spacegroup']}  ({r['n_candidates']} candidates)")
