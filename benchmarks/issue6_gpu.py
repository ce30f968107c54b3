"""Issue #6 on one GPU in one process (the relax programs compile once and are reused):

1. bench_relax: --n random LYC 1x1x2 candidates with lycb_jax, then up to --torch-n with ASE + PyTorch
   CHGNet (no new one after --torch-seconds, abandoned at twice that) -> <results>/bench_relax_gpu.json
2. lycb_series: Wyckoff-restricted LYC/LYB parents (P-3c1 check) and the Cl/Br series, sized from the
   throughput measured in 1 so that it ends before --deadline (seconds after start) -> <results>/lycb_series/

    python benchmarks/issue6_gpu.py --deadline 500 --n 256 --batch-size 64 --torch-n 20 --torch-seconds 60
"""

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
T_START = time.perf_counter()

import bench_relax
import lycb_series

LYC_MAJORITY, LYB_ALL, LYB_WYCKOFF, N_X = 55, 160, 42, 11  # candidates (see lycb_series); x with 0 < x < 6


def series_sizes(rate_per_s: float, seconds: float, batch: int) -> list[str]:
    """lycb_series arguments that relax about rate_per_s * seconds candidates (at least batch per call)."""
    n = rate_per_s * seconds
    lyb = "all" if n >= LYC_MAJORITY + LYB_ALL + 2 * (N_X * 6 + 2) else "wyckoff"
    parents = LYC_MAJORITY + (LYB_ALL if lyb == "all" else LYB_WYCKOFF)
    per_x = int((n - parents - 4) // (2 * N_X))
    per_x = max(per_x, -(-(batch - 4) // (2 * N_X)), 2)  # the series call fills the batch: no new compilation
    return ["--lyb", lyb, "--per-x", str(min(per_x, 16))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deadline", type=float, default=500, help="seconds after start by which the series should end")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--torch-n", type=int, default=20)
    ap.add_argument("--torch-seconds", type=float, default=60)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--series-args", nargs=argparse.REMAINDER, default=[], help="passed on to lycb_series")
    args = ap.parse_args()

    common = ["--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps)]
    bargs = bench_relax.parse(common + ["--n", str(args.n), "--torch-n", str(args.torch_n), "--torch-seconds",
                                        str(args.torch_seconds), "--json", f"{args.results}/bench_relax_gpu.json",
                                        "--out", f"{args.results}/bench_relax_ranking"])
    res, rows, cands = bench_relax.run_jax(bargs)
    bench_relax.write(bargs, res)
    if args.torch_n:
        try:
            bench_relax.write(bargs, bench_relax.run_torch(bargs, res, rows, cands))
        except Exception:
            traceback.print_exc()
    left = args.deadline - (time.perf_counter() - T_START) - 30  # 30 s: enumeration, spglib, files
    sizes = series_sizes(args.n / res["jax_seconds"], left, args.batch_size)
    print(f"{left:.0f} s left for the series: {' '.join(sizes)}", flush=True)
    lycb_series.main(common + sizes + ["--out", f"{args.results}/lycb_series"] + args.series_args)
    print(f"issue6_gpu: total {time.perf_counter() - T_START:.0f} s")


if __name__ == "__main__":
    main()
