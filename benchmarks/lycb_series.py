"""Ordered LYC/LYB models from Wyckoff-restricted enumeration, then the Li3YCl6-xBrx series from both.

1. Parents (paper section 2.1, issue #6): LYC 1x1x2 orderings with the counts per parent Wyckoff
   orbit fixed by the 'majority' rule (55 models; the only space of this kind holding a P-3c1
   model, the paper's LYC0), optionally plus a random sample of the 'nearest' (experimental-ratio)
   space, and LYB 1x1x2 orderings (all 160, or the Wyckoff-restricted ones), all relaxed in one
   batched FIRE run and ranked by energy per atom. Unrelaxed and relaxed space groups (spglib,
   symprec 0.1 A) are recorded.
2. Series: Cl/Br substitution in the lowest LYC model (LYC0) and LYB model (LYB0), x = 0..6 step 0.5,
   up to --per-x random Cl/Br orderings per x, all relaxed in one run; the lowest per (parent, x)
   gives the 13 ordered models per parent, their relaxed volume per atom (A^3/atom) vs x.

With --bases LYC0=a.cif LYB0=b.cif the parents step is skipped and the series starts from those
relaxed models (e.g. the CIFs of an earlier parents run); --note LABEL=text records why a base was
chosen (summary.json, series.csv).

Writes to --out: {LYC,LYB}_ranking.csv + top CIFs, parents.json (after step 1), {LYC0,LYB0}_series.csv,
{label}_x{x}.cif, series.csv, series_volume.png and summary.json.

    python benchmarks/lycb_series.py --per-x 2 --max-steps 20 --lyb wyckoff --xs 0 3 6 --batch-size 4   # CPU check
    python benchmarks/lycb_series.py --per-x 8 --batch-size 64              # one GPU
    python benchmarks/lycb_series.py --per-x 1 --bases LYC0=r/LYC_0.cif LYB0=r/LYB_4.cif   # series only
"""

import argparse
import csv
import json
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def candidates(S, args):
    """(structures, info rows) of both parents: parent, space, unrelaxed space group."""
    sets = [("LYC", "majority", S.enumerate_orderings(S.wyckoff_site_model("LYC", (1, 1, 2), "majority"))[0])]
    if args.lyc_nearest:
        model = S.wyckoff_site_model("LYC", (1, 1, 2), "nearest")
        sets.append(("LYC", "nearest", S.enumerate_orderings(model, max_structures=args.lyc_nearest, seed=args.seed)[0]))
    if args.lyb == "all":
        sets.append(("LYB", "all", S.enumerate_orderings(S.parent_site_model("LYB", (1, 1, 2)))[0]))
    else:
        for rule in ("majority", "nearest"):
            sets.append(("LYB", rule, S.enumerate_orderings(S.wyckoff_site_model("LYB", (1, 1, 2), rule))[0]))
    structs, info = [], []
    for parent, space, cands in sets:
        for c in cands:
            structs.append(c)
            info.append(dict(parent=parent, space=space, spacegroup_unrelaxed=S.spacegroup(c, 0.1)))
    return structs, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/lycb_series")
    ap.add_argument("--per-x", type=int, default=8, help="Cl/Br orderings relaxed per parent and x")
    ap.add_argument("--xs", type=float, nargs="+", default=list(np.arange(0, 6.01, 0.5)))
    ap.add_argument("--lyb", choices=("all", "wyckoff"), default="all",
                    help="LYB orderings: all 160, or the majority + nearest Wyckoff-restricted ones (14 + 28)")
    ap.add_argument("--lyc-nearest", type=int, default=0, help="also this many random 'nearest'-rule LYC models")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--fmax", type=float, default=0.01, help="eV/A")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=10, help="relaxed space groups and CIFs of the N lowest per parent")
    ap.add_argument("--bases", nargs="+", metavar="LABEL=CIF",
                    help="series bases from CIFs (skips the parents step), e.g. LYC0=LYC_0.cif LYB0=LYB_4.cif")
    ap.add_argument("--note", nargs="+", metavar="LABEL=TEXT", default=[],
                    help="why a base was chosen, recorded in summary.json and series.csv")
    args = ap.parse_args(argv)
    pairs = [p.split("=", 1) for p in (args.bases or []) + args.note]
    if any(len(p) != 2 or not all(p) for p in pairs):
        ap.error("--bases LABEL=CIF ... and --note LABEL=TEXT ...")
    bases_cif, notes = dict(pairs[:len(args.bases or [])]), dict(pairs[len(args.bases or []):])
    if set(notes) - set(bases_cif or ("LYC0", "LYB0")):
        ap.error("--bases LABEL=CIF ...; --note LABEL=TEXT for a label of --bases (LYC0/LYB0 without --bases)")

    import jax

    import lycb_jax
    from lycb_jax import structures as S

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = lycb_jax.load_model("chgnet-0.3.0")
    kw = dict(fmax=args.fmax, max_steps=args.max_steps, batch_size=args.batch_size, min_pad=64)
    summary = dict(device=jax.devices()[0].device_kind, platform=jax.devices()[0].platform, fmax=args.fmax,
                   max_steps=args.max_steps, batch_size=args.batch_size, per_x=args.per_x, xs=list(map(float, args.xs)))
    if bases_cif:
        from pymatgen.core import Structure

        bases = {label: Structure.from_file(path) for label, path in bases_cif.items()}
        summary["bases"] = {label: dict(cif=path, spacegroup=S.spacegroup(bases[label], 0.1),
                                        volume_per_atom=bases[label].volume / len(bases[label]),
                                        formula=bases[label].composition.formula, note=notes.get(label, ""))
                            for label, path in bases_cif.items()}
        print(f"series bases from CIFs (parents step skipped); device {summary['device']}")
        for label, b in summary["bases"].items():
            print(f"  {label}: {b['cif']} {b['formula']} {b['spacegroup']} V/atom {b['volume_per_atom']:.3f} A^3"
                  + (f" ({b['note']})" if b["note"] else ""))
    else:
        bases = parents(S, model, args, kw, out, summary)
    series_step(S, model, args, kw, out, summary, bases, notes, t_start)


def parents(S, model, args, kw, out, summary):
    """Step 1: relax and rank both parents' candidates; returns {'LYC0': lowest LYC, 'LYB0': lowest LYB}."""
    structs, info = candidates(S, args)
    print(f"{len(structs)} parent candidates: " + ", ".join(
        f"{p} {s} {sum(i['parent'] == p and i['space'] == s for i in info)}"
        for p, s in dict.fromkeys((i["parent"], i["space"]) for i in info)) + f"; device {summary['device']}")
    t0, programs = time.perf_counter(), S.compiled_programs()
    relaxed = S.relax(model, structs, **kw)
    t_parents = time.perf_counter() - t0
    summary.update(lyb=args.lyb, parents_relax_seconds=t_parents,
                   parents_compilations=S.compiled_programs() - programs, parents={})
    bases = {}
    for parent in ("LYC", "LYB"):
        idx = [k for k, i in enumerate(info) if i["parent"] == parent]
        rows = S.rank_relaxed([relaxed[k] for k in idx], top=args.top)
        for r in rows:
            r.update({k: v for k, v in info[idx[r["index"]]].items() if k != "parent"})
        S.write_ranking(rows, out, parent, top=args.top)
        bases[f"{parent}0"] = rows[0]["structure"]
        p3c1 = [dict(rank=r["rank"], de_meV_atom=r["de_meV_atom"], spacegroup=S.spacegroup(r["structure"], 0.1))
                for r in rows if r["spacegroup_unrelaxed"].startswith("P-3c1")]
        summary["parents"][parent] = dict(
            n=len(rows), converged=sum(r["converged"] for r in rows),
            lowest=[{k: r[k] for k in ("rank", "space", "spacegroup_unrelaxed", "spacegroup", "energy_per_atom",
                                       "de_meV_atom", "volume_per_atom", "converged")} for r in rows[:args.top]],
            unrelaxed_p3c1_candidates=p3c1)
        print(f"{parent}: {len(rows)} relaxed ({summary['parents'][parent]['converged']} converged); lowest:")
        for r in rows[:5]:
            print(f"  #{r['rank']} +{r['de_meV_atom']:.2f} meV/atom {r['spacegroup']:14s} (unrelaxed "
                  f"{r['spacegroup_unrelaxed']}, {r['space']}) V/atom {r['volume_per_atom']:.3f} A^3")
        if p3c1:
            print(f"  P-3c1 (unrelaxed) candidates: {p3c1}")
    (out / "parents.json").write_text(json.dumps(summary, indent=1))
    print(f"parents: {t_parents:.1f} s relaxation, {summary['parents_compilations']} compilations")
    return bases


def series_step(S, model, args, kw, out, summary, bases, notes, t_start):
    """Step 2: Cl/Br series of every base, one relax call; series.csv, plot and summary.json."""
    t0, programs = time.perf_counter(), S.compiled_programs()
    series = S.halide_series(model, bases, xs=args.xs, max_candidates=args.per_x, seed=args.seed, out=out, **kw)
    summary["series_relax_seconds"] = time.perf_counter() - t0
    if args.per_x == 1:
        summary["ranking_note"] = ("1 Cl/Br ordering per (parent, x): the 'lowest' model per x is that one "
                                   "candidate, no ranking among orderings")
    summary["series_compilations"] = S.compiled_programs() - programs
    S.plot_series(series, out / "series_volume.png")
    keys = ("x", "n_br", "n_candidates", "n_converged", "energy_per_atom", "volume_per_atom", "spacegroup", "converged",
            "steps", "fmax")
    with open(out / "series.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("parent",) + keys + ("note",))
        for label, rows in series.items():
            w.writerows([(label,) + tuple(r[k] for k in keys) + (notes.get(label, ""),) for r in rows])
    summary["series"] = {}
    for label, rows in series.items():
        v = np.array([r["volume_per_atom"] for r in rows])
        x = np.array([r["x"] for r in rows])
        summary["series"][label] = dict(
            base_spacegroup=S.spacegroup(bases[label], 0.1), note=notes.get(label, ""),
            n_models=len(rows), converged_models=sum(r["converged"] for r in rows),
            n_candidates=sum(r["n_candidates"] for r in rows), converged_candidates=sum(r["n_converged"] for r in rows),
            rows=[{k: r[k] for k in keys} for r in rows],
            volume_increases_with_x=bool(np.all(np.diff(v) > 0)), n_volume_decreases=int(np.sum(np.diff(v) <= 0)),
            slope_A3_per_atom_per_x=float(np.polyfit(x, v, 1)[0]) if len(x) > 1 else None)
        print(f"{label} (base {summary['series'][label]['base_spacegroup']}): x, V/atom (A^3), E/atom (eV), space group")
        for r in rows:
            print(f"  {r['x']:.1f}  {r['volume_per_atom']:.3f}  {r['energy_per_atom']:.5f}  {r['spacegroup']:14s} "
                  f"({r['n_candidates']} cand., {r['n_converged']} converged)")
        print(f"  volume increases with x: {summary['series'][label]['volume_increases_with_x']} "
              f"(slope {summary['series'][label]['slope_A3_per_atom_per_x'] or float('nan'):.3f} A^3/atom per x)")
    summary["total_seconds"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"series: {summary['series_relax_seconds']:.1f} s; total {summary['total_seconds']:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
