"""Ranking relaxed candidates by energy per atom, the whole parent workflow (enumerate, relax, rank),
and the Li3YCl(6-x)Brx series of Cl/Br orderings. Energies in eV/atom (differences meV/atom),
volumes in Angstrom^3/atom, symmetry tolerances (symprec) in Angstrom."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from pymatgen.core import Structure

from lycb_jax.structures.enumeration import enumerate_orderings
from lycb_jax.structures.relaxation import Relaxed, relax
from lycb_jax.structures.sites import halide_site_model, parent_site_model, wyckoff_site_model


def spacegroup(structure: Structure, symprec: float = 0.1) -> str:
    """Space-group symbol and number, e.g. 'P-3c1 (165)', by spglib via pymatgen (symprec in A)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"


def rank(model, structures: Sequence, top: int = 5, *, out: str | Path | None = None, prefix: str = "model",
         symprec: float = 0.1, **relax_kw) -> list[dict]:
    """Relax every candidate, rank by energy per atom (converged first) and return one row per candidate.

    Rows: see ``rank_relaxed``. With ``out``, writes ``{prefix}_{rank}.cif`` for the top models and
    ``{prefix}_ranking.csv`` for all. ``relax_kw``: options of :func:`relax`.
    """
    rows = rank_relaxed(relax(model, structures, **relax_kw), top, symprec)
    if out is not None:
        write_ranking(rows, out, prefix, top=top)
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


def write_ranking(rows: list[dict], out: str | Path, prefix: str, *, top: int) -> None:
    """CIF files of the ``top`` rows and a CSV table of all rows (without structures), each written
    atomically (:func:`lycb_jax.io.durable.atomic_write`; the CSV last). CheckpointWriteError naming the
    folder if it cannot be written."""
    import csv
    import io

    from pymatgen.io.cif import CifWriter

    from lycb_jax.io.durable import atomic_write

    out = Path(out)
    for row in rows[:top]:
        cif = str(CifWriter(row["structure"])).encode()
        atomic_write(out / f"{prefix}_{row['rank']}.cif", lambda fh, cif=cif: fh.write(cif), "ranking_cif")
    keys = [k for k in rows[0] if k != "structure"]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, keys)
    w.writeheader()
    w.writerows({k: row[k] for k in keys} for row in rows)
    atomic_write(out / f"{prefix}_ranking.csv", lambda fh: fh.write(text.getvalue().encode()), "ranking_csv")


def order_parent(model, parent: str = "LYC", supercell=(1, 1, 2), *, top: int = 5, max_candidates: int | None = 1000,
                 min_occupancy: float = 0.15, seed: int = 0, out=None, wyckoff: str | None = None,
                 **relax_kw) -> list[dict]:
    """Enumerate the orderings of a disordered parent in a supercell, relax and rank them (see ``rank``).

    ``wyckoff`` ('nearest' or 'majority') restricts them to fixed counts per Wyckoff orbit
    (``wyckoff_site_model``); None enumerates all orderings."""
    if wyckoff is None:
        site_model = parent_site_model(parent, supercell, min_occupancy)
    else:
        site_model = wyckoff_site_model(parent, supercell, wyckoff, min_occupancy=min_occupancy)
    cands, _ = enumerate_orderings(site_model, max_structures=max_candidates, seed=seed)
    return rank(model, cands, top=top, out=out, prefix=parent.upper(), **relax_kw)


def halide_series(model, bases: dict[str, Structure], xs=tuple(np.arange(0, 6.01, 0.5)), *, max_candidates: int = 50,
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
    cands, meta = _series_candidates(bases, xs, max_candidates, seed, max_labelings)
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
            write_ranking([dict(r, rank=f"x{r['x']:.1f}") for r in rows], out, label, top=len(rows))
            (out / f"{label}_ranking.csv").replace(out / f"{label}_series.csv")
    return series


def _series_candidates(bases: dict[str, Structure], xs, max_candidates: int, seed: int, max_labelings: int):
    """Cl/Br orderings of every base and x, and per candidate (label, x, n_br, candidates of that x,
    exhaustive)."""
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
    return cands, meta
