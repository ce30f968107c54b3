"""Counting and enumerating the symmetry-distinct orderings of a site model.

Counting: all labelings with the target counts (multinomials), and the symmetry-distinct ones by
Burnside's lemma (Polya's cycle counting, independent of any enumeration). Enumeration: icet
(Hart-Forcade) when installed and the model has no orbit constraint; otherwise the lexicographically
smallest image of every labeling under the site permutations (numpy, "canonical forms"); beyond
``max_labelings`` a random sample of distinct orderings.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
from pymatgen.core import Structure

from lycb_jax.structures.sites import SiteModel, mixing_groups


def count_labelings(model: SiteModel) -> int:
    """Number of labelings with the target counts (all, not symmetry-reduced)."""
    return int(sum(w for _, w in _group_count_vectors(model, weights=True)))


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
    groups = mixing_groups(model)
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
    if model.orbits is None:
        target_d = {(0, s): n for s, n in model.counts.items()}
    else:
        target_d = {(k, s): n for k, d in model.orbit_counts.items() for s, n in d.items()}
    slots = {ks: j for j, ks in enumerate(sorted(target_d))}
    target = tuple(target_d[ks] for ks in sorted(target_d))
    total = sum(_fixed_labelings(model, perm, slots, target) for perm in model.permutations)
    return total // len(model.permutations)


def _cycles(perm: np.ndarray) -> list[list[int]]:
    """The cycles of a permutation (site i goes to perm[i])."""
    seen = np.zeros(len(perm), bool)
    cycles = []
    for start in range(len(perm)):
        cycle, j = [], start
        while not seen[j]:
            seen[j] = True
            cycle.append(j)
            j = perm[j]
        if cycle:
            cycles.append(cycle)
    return cycles


def _fixed_labelings(model: SiteModel, perm: np.ndarray, slots: dict, target: tuple) -> int:
    """Labelings with the target counts that ``perm`` leaves unchanged: every cycle carries one species.

    A polynomial over count vectors (count vector -> number of partial labelings) is multiplied
    cycle by cycle; ``slots`` maps (orbit label or 0, species) to a position of the vector."""
    key = (lambda i: 0) if model.orbits is None else (lambda i: int(model.orbits[i]))
    poly = {tuple(0 for _ in target): 1}
    for cycle in _cycles(perm):
        allowed = model.choices[cycle[0]]
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
    return poly.get(target, 0)


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


def _alphabet(model: SiteModel) -> list[str]:
    """Sorted species of all choices: label codes are indices into it."""
    return sorted({s for c in model.choices for s in c})


def _all_labelings(model: SiteModel) -> np.ndarray:
    """[L, S] int8 codes (into the sorted alphabet of all choices) of every labeling with the counts."""
    alphabet = _alphabet(model)
    base = np.array([alphabet.index(c[0]) for c in model.choices], np.int8)
    groups = list(mixing_groups(model).values())
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
                        *, seed: int = 0) -> tuple[list[Structure], bool]:
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
            alphabet = _alphabet(model)
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
    """Every symmetry-distinct labeling of the supercell, by icet's enumerate_structures."""
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
    alphabet = _alphabet(model)
    base = np.array([alphabet.index(c[0]) for c in model.choices])
    groups = list(mixing_groups(model).values())
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
