"""`lycb-jax structures`: ordered LYC/LYB models (enumerate, relax with FIRE, rank) and the Cl/Br series."""

from __future__ import annotations

from pathlib import Path

from lycb_jax.cli import add_model_argument


def add_cli(subparsers) -> None:
    """Add the ``structures`` subcommand to an argparse subparsers object."""
    from lycb_jax import structures

    p = subparsers.add_parser("structures", help="ordered LYC/LYB models: enumerate, relax (FIRE), rank",
                              description=structures.__doc__)
    p.add_argument("--parent", choices=sorted(structures.PARENTS), default="LYC")
    p.add_argument("--supercell", type=int, nargs=3, default=(1, 1, 2), metavar=("NA", "NB", "NC"))
    p.add_argument("--top", type=int, default=5, help="keep the N lowest models as CIF")
    p.add_argument("--out", required=True, help="output folder")
    add_model_argument(p)
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
    p.set_defaults(func=cmd_structures)


def cmd_structures(args) -> None:
    """Order the parent, relax and rank (CIF + CSV in --out), print the top rows; with --series also the
    Cl/Br series from the lowest model and its volume plot."""
    from lycb_jax import structures as S
    from lycb_jax.models import load_model

    model = load_model(args.model)
    kw = dict(fmax=args.fmax, max_steps=args.max_steps, batch_size=args.batch_size)
    rows = S.order_parent(model, args.parent, tuple(args.supercell), top=args.top, max_candidates=args.max_candidates,
                          min_occupancy=args.min_occupancy, seed=args.seed, out=args.out, wyckoff=args.wyckoff, **kw)
    for r in rows[:args.top]:
        print(f"{r['rank']:3d}  {r['energy_per_atom']:.5f} eV/atom  +{r['de_meV_atom']:.2f} meV/atom  "
              f"{r['spacegroup']:14s} V/atom {r['volume_per_atom']:.3f} A^3  converged={r['converged']}")
    if args.series:
        best = rows[0]["structure"]
        series = S.halide_series(model, {args.parent: best}, max_candidates=args.series_candidates,
                                 seed=args.seed, out=args.out, **kw)
        S.plot_series(series, Path(args.out) / f"{args.parent}_series_volume.png")
        for r in series[args.parent]:
            print(f"x={r['x']:.1f}  {r['energy_per_atom']:.5f} eV/atom  V/atom {r['volume_per_atom']:.3f} A^3  "
                  f"{r['spacegroup']}  ({r['n_candidates']} candidates)")
