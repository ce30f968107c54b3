"""Relax + rank candidates of the 1x1x2 LYC supercell (60 atoms): lycb_jax batched FIRE vs ASE + PyTorch CHGNet.

Both use FIRE with ASE's parameters on positions and cell (FrechetCellFilter), fmax 0.01 eV/A.
    python benchmarks/bench_relax.py                  # small, CPU
    python benchmarks/bench_relax.py --n 1000 --batch-size 128 --torch-n 20   # one GPU
"""

import argparse
import json
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=8, help="candidates for lycb_jax")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--torch-n", type=int, default=2, help="candidates for ASE + PyTorch CHGNet (GPU: 20)")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--fmax", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--out", default=None, help="folder for CIF + CSV of the ranking")
    args = ap.parse_args()

    import jax

    import lycb_jax
    from lycb_jax import structures as S

    site_model = S.parent_site_model("LYC", (1, 1, 2))
    n_distinct = S.count_distinct(site_model)
    cands, _ = S.enumerate_orderings(site_model, max_structures=max(args.n, args.torch_n), seed=args.seed)
    print(f"LYC 1x1x2: {n_distinct} symmetry-distinct orderings (Burnside); {len(cands)} sampled, "
          f"{len(cands[0])} atoms; device {jax.devices()[0].device_kind}")

    model = lycb_jax.load_model("chgnet-0.3.0")
    t0 = time.perf_counter()
    rows = S.rank(model, cands[:args.n], top=args.top, out=args.out, prefix="LYC", fmax=args.fmax,
                  max_steps=args.max_steps, batch_size=args.batch_size)
    t_jax = time.perf_counter() - t0
    steps = [r["steps"] for r in rows]
    print(f"lycb_jax: {args.n} candidates in {t_jax:.1f} s (incl. compilation) = {60 * args.n / t_jax:.2f} cand/min; "
          f"steps median {np.median(steps):.0f} max {max(steps)}; converged {sum(r['converged'] for r in rows)}/{args.n}")
    for r in rows[:args.top]:
        print(f"  #{r['rank']} cand {r['index']}: {r['energy_per_atom']:.5f} eV/atom (+{r['de_meV_atom']:.2f} meV) "
              f"{r['spacegroup']} V/atom {r['volume_per_atom']:.3f}")

    res = dict(n=args.n, jax_seconds=t_jax, jax_cand_per_min=60 * args.n / t_jax, jax_steps_median=float(np.median(steps)))
    if args.torch_n:
        from chgnet.model import CHGNet, StructOptimizer

        opt = StructOptimizer(model=CHGNet.load(model_name="0.3.0", verbose=False), optimizer_class="FIRE")
        t0 = time.perf_counter()
        e_torch, torch_steps = [], []
        for c in cands[:args.torch_n]:
            out = opt.relax(c, fmax=args.fmax, steps=args.max_steps, relax_cell=True, ase_filter="FrechetCellFilter",
                            verbose=False)
            e_torch.append(out["trajectory"].energies[-1] / len(c))
            torch_steps.append(len(out["trajectory"].energies))
        t_torch = time.perf_counter() - t0
        by_index = {r["index"]: r for r in rows}
        de = [1000 * abs(by_index[i]["energy_per_atom"] - e) for i, e in enumerate(e_torch) if i in by_index]
        print(f"ASE + PyTorch CHGNet: {args.torch_n} candidates in {t_torch:.1f} s = {60 * args.torch_n / t_torch:.2f} cand/min; "
              f"steps median {np.median(torch_steps):.0f}; |E_jax - E_torch| max {max(de) if de else float('nan'):.2f} meV/atom")
        res.update(torch_n=args.torch_n, torch_seconds=t_torch, torch_cand_per_min=60 * args.torch_n / t_torch,
                   max_abs_de_meV_atom=max(de) if de else None)
        print(f"side by side (cand/min): lycb_jax {res['jax_cand_per_min']:.2f} | ASE+torch {res['torch_cand_per_min']:.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
