"""Relax + rank candidates of the 1x1x2 LYC supercell (60 atoms): lycb_jax batched FIRE vs ASE + PyTorch CHGNet.

Both use FIRE with ASE's parameters on positions and cell (FrechetCellFilter), fmax 0.01 eV/A, at most
--max-steps steps. Candidates are random symmetry-distinct orderings of the 395,596 (same seed for both;
the PyTorch run takes the first --torch-n of them). lycb_jax is compiled first by a warm-up run
(max_steps=1 over the same candidates, same shapes) and its time reported apart; candidates per minute
are given without and with it. The PyTorch run (chgnet's CHGNetCalculator) stops starting new
candidates after --torch-seconds and abandons one still running at twice that; only finished ones count.
Writes a JSON (--json) with both rates and their ratio.

    python benchmarks/bench_relax.py                                  # small, CPU
    python benchmarks/bench_relax.py --n 512 --batch-size 64 --torch-n 20 --torch-seconds 90   # one GPU
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def torch_relax(cands, fmax, max_steps, budget_s, device):
    """ASE FIRE(FrechetCellFilter) with PyTorch CHGNet 0.3.0: per candidate (energy/atom eV, steps, s)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = CHGNetCalculator(CHGNet.load(model_name="0.3.0", verbose=False), use_device=device)
    done, t_start = [], time.perf_counter()
    for k, c in enumerate(cands):
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            break
        atoms = AseAtomsAdaptor.get_atoms(c)
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        t0, finished = time.perf_counter(), True
        for _ in opt.irun(fmax=fmax, steps=max_steps):
            if budget_s is not None and time.perf_counter() - t_start > 2 * budget_s:
                finished = False
                break
        if not finished:
            print(f"  torch candidate {k} abandoned after {opt.nsteps} steps (time budget)")
            break
        done.append(dict(index=k, energy_per_atom=float(atoms.get_potential_energy()) / len(atoms), steps=opt.nsteps,
                         seconds=time.perf_counter() - t0))
        print(f"  torch candidate {k}: {done[-1]['steps']} steps, {done[-1]['seconds']:.1f} s")
    return done


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="candidates for lycb_jax")
    ap.add_argument("--batch-size", type=int, default=8, help="vmapped relaxation slots")
    ap.add_argument("--torch-n", type=int, default=2, help="candidates for ASE + PyTorch CHGNet (GPU: 20)")
    ap.add_argument("--torch-seconds", type=float, default=None, help="time budget of the PyTorch run (s)")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--fmax", type=float, default=0.01, help="eV/A")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--out", default=None, help="folder for CIF + CSV of the ranking")
    ap.add_argument("--json", default=None, help="result file (default benchmarks/results/bench_relax_<platform>.json)")
    return ap.parse_args(argv)


def run_jax(args):
    """Sample, compile (warm-up), relax and rank with lycb_jax: (result dict, ranking rows, candidates)."""
    import jax

    import lycb_jax
    from lycb_jax import structures as S

    device = jax.devices()[0]
    site_model = S.parent_site_model("LYC", (1, 1, 2))
    n_distinct = S.count_distinct(site_model)
    cands, _ = S.enumerate_orderings(site_model, max_structures=max(args.n, args.torch_n), seed=args.seed)
    print(f"LYC 1x1x2: {n_distinct} symmetry-distinct orderings (Burnside); {len(cands)} sampled, "
          f"{len(cands[0])} atoms; device {device.device_kind}")

    model = lycb_jax.load_model("chgnet-0.3.0")
    kw = dict(fmax=args.fmax, batch_size=args.batch_size, min_pad=64)
    t0 = time.perf_counter()
    S.relax(model, cands[:args.n], max_steps=1, progress=False, **kw)  # compiles the same programs
    t_compile = time.perf_counter() - t0
    programs = S.compiled_programs()
    t0 = time.perf_counter()
    rows = S.rank(model, cands[:args.n], top=args.top, out=args.out, prefix="LYC", max_steps=args.max_steps, **kw)
    t_jax = time.perf_counter() - t0
    recompiles = S.compiled_programs() - programs  # > 0: graph capacity regrown during the run
    steps = [r["steps"] for r in rows]
    n_conv = sum(r["converged"] for r in rows)
    rate = 60 * args.n / t_jax
    print(f"lycb_jax: compile (warm-up) {t_compile:.1f} s; {args.n} candidates in {t_jax:.1f} s = {rate:.1f} cand/min "
          f"({60 * args.n / (t_jax + t_compile):.1f} incl. compile); steps median {np.median(steps):.0f} max {max(steps)}; "
          f"converged {n_conv}/{args.n}; recompilations {recompiles}")
    for r in rows[:args.top]:
        print(f"  #{r['rank']} cand {r['index']}: {r['energy_per_atom']:.5f} eV/atom (+{r['de_meV_atom']:.2f} meV) "
              f"{r['spacegroup']} V/atom {r['volume_per_atom']:.3f}")
    res = dict(device=device.device_kind, platform=device.platform, structure="LYC 1x1x2 (60 atoms)",
               fmax=args.fmax, max_steps=args.max_steps, n=args.n, batch_size=args.batch_size,
               jax_compile_seconds=t_compile, jax_seconds=t_jax, jax_recompilations=recompiles,
               jax_cand_per_min=rate, jax_cand_per_min_incl_compile=60 * args.n / (t_jax + t_compile),
               jax_steps_median=float(np.median(steps)), jax_converged=n_conv,
               lowest=dict(index=rows[0]["index"], energy_per_atom=rows[0]["energy_per_atom"],
                           spacegroup=rows[0]["spacegroup"]))
    return res, rows, cands


def run_torch(args, res, rows, cands):
    """ASE + PyTorch CHGNet on the first --torch-n candidates; adds its rate and the ratio to res."""
    cuda = "cuda" if res["platform"] == "gpu" else "cpu"
    t0 = time.perf_counter()
    done = torch_relax(cands[:args.torch_n], args.fmax, args.max_steps, args.torch_seconds, cuda)
    res.update(torch_requested=args.torch_n, torch_n=len(done), torch_device=cuda,
               torch_wall_seconds=time.perf_counter() - t0)
    if not done:
        return res
    by_index = {r["index"]: r for r in rows}
    t_torch = sum(d["seconds"] for d in done)
    de = [1000 * abs(by_index[d["index"]]["energy_per_atom"] - d["energy_per_atom"]) for d in done if d["index"] in by_index]
    res.update(torch_seconds=t_torch, torch_seconds_per_candidate=t_torch / len(done),
               torch_cand_per_min=60 * len(done) / t_torch,
               torch_steps_median=float(np.median([d["steps"] for d in done])),
               speedup=res["jax_cand_per_min"] / (60 * len(done) / t_torch),
               speedup_incl_compile=res["jax_cand_per_min_incl_compile"] / (60 * len(done) / t_torch),
               max_abs_de_meV_atom=max(de) if de else None, torch_candidates=done)
    print(f"ASE + PyTorch CHGNet ({cuda}): {len(done)} candidates in {t_torch:.1f} s = {res['torch_cand_per_min']:.2f} "
          f"cand/min ({t_torch / len(done):.1f} s each); steps median {res['torch_steps_median']:.0f}; "
          f"|E_jax - E_torch| max {res['max_abs_de_meV_atom']:.2f} meV/atom")
    print(f"side by side (cand/min): lycb_jax {res['jax_cand_per_min']:.1f} | ASE+torch {res['torch_cand_per_min']:.2f} "
          f"| ratio {res['speedup']:.0f}x ({res['speedup_incl_compile']:.0f}x incl. compile)")
    return res


def write(args, res):
    path = Path(args.json or f"benchmarks/results/bench_relax_{res['platform']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {path}")


def main(argv=None):
    args = parse(argv)
    res, rows, cands = run_jax(args)
    write(args, res)
    if args.torch_n:
        write(args, run_torch(args, res, rows, cands))
    return res


if __name__ == "__main__":
    main()
