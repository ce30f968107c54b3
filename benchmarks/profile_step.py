"""Issue 31, step 1: where the time of one batched NVT MD step goes (profile_md.py: the force call alone), from JAX's own profiler (no nsys on the GPU
machine). The setup of bench_md.py (R replicas of the baseline's LYC-like cell, pretrained model), one chunk to
compile and settle the capacity, then ``--chunks`` chunks traced with ``jax.profiler.trace``. The trace is read
back with ``jax.profiler.ProfileData``: on each device plane, the events of every line are grouped by name and
ranked by total time (the "XLA Ops" line: one event per HLO op or fusion; stream lines: the kernels). The
per-event statistics the profiler attaches (e.g. bytes accessed, flops) are summed where present.

Bytes per kernel: the profiler of JAX 0.11 attaches none on GPU, so XLA dumps the optimized HLO of every program
(``--xla_dump_to``, added to XLA_FLAGS before JAX starts) and each event gets the bytes of its HLO instruction
(benchmarks/hlo_bytes.py: result + operand sizes, the minimal traffic of XLA's cost model), found by the event's
``hlo_op`` / ``program_id`` statistics or by its name. Each row then has ``hlo_bytes_per_call``,
``hlo_bytes_per_step``, ``achieved_GB_per_s`` and ``pct_of_peak_bw`` (of ``--peak-gbs``), and each line the HLO
bytes of the whole step over its kernel time. The modules used are saved gzipped next to the JSON, and
``--trace FILE.xplane.pb --hlo MODULE.txt.gz`` redoes the tables from saved files.

    python benchmarks/profile_step.py [--n 4] [--replicas 8] [--steps 100] [--chunks 2] [--top 15] [--peak-gbs 3350]

Writes $OUT (or .)/profile_step.json and prints the tables. Units: ms, GB/s, per MD step of the whole batch."""

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

# XLA dumps the optimized HLO of every program it compiles (for the bytes per kernel): the flags must be in the
# environment before JAX starts its backend, so before ``import jax``; appended to any XLA_FLAGS already set.
HLO_DUMP = None
if "--no-hlo" not in sys.argv and "--trace" not in sys.argv:
    HLO_DUMP = tempfile.mkdtemp(prefix="lycb_hlo_dump_")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_dump_to={HLO_DUMP} --xla_dump_hlo_as_text").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import lycb_jax  # noqa: E402
from common import lyc_like, nvt_replicas  # noqa: E402
from hlo_bytes import ModuleIndex, normalise  # noqa: E402
from lycb_jax.md import ChunkInputs, ChunkSpec, default_capacity, run_chunk_checked  # noqa: E402

NUMERIC_STATS = ("bytes_accessed", "flops", "raw_bytes_accessed", "memory_access_breakdown")
PEAKS_GBS = {"H200": 4800.0, "H100": 3350.0}  # HBM bandwidth of the SXM parts, GB/s


def _stats(ev) -> dict:
    try:
        return {k: v for k, v in ev.stats}
    except Exception:
        return {}


def ranked(profile, steps: int, top: int, index=None, peak_gbs: float = 3350.0) -> dict:
    """Per device plane and line: the events grouped by name, top ``top`` by total time, in ms per MD step.

    With an :class:`hlo_bytes.ModuleIndex` every event is given the bytes of its HLO instruction (by the event's
    ``hlo_op`` and ``program_id`` statistics where present, else by its name in the default module):
    ``hlo_bytes_per_call``, ``hlo_bytes_per_step``, ``achieved_GB_per_s`` (bytes over the time of the events
    that matched) and ``pct_of_peak_bw``; rows whose events match no instruction (library kernels without an
    ``hlo_op``) have none. Per line: the HLO bytes of the whole step over the kernel time."""
    out = {}
    for plane in profile.planes:
        if "GPU" not in plane.name and "TPU" not in plane.name and "/host:CPU" not in plane.name:
            continue
        for line in plane.lines:
            total = defaultdict(float)
            n_events = 0
            count = defaultdict(int)
            stats = defaultdict(lambda: defaultdict(float))
            stat_keys = Counter()
            hbytes, hns, hcalls = defaultdict(float), defaultdict(float), defaultdict(int)
            hops = defaultdict(Counter)  # kernel name -> HLO op -> events
            op_runs = defaultdict(Counter)  # (module, op) -> kernel name -> events
            op_bytes = {}
            for ev in line.events:
                n_events += 1
                total[ev.name] += ev.duration_ns
                count[ev.name] += 1
                st = _stats(ev)
                stat_keys.update(st.keys())
                for key, value in st.items():
                    if key in NUMERIC_STATS and isinstance(value, (int, float)):
                        stats[ev.name][key] += float(value)
                if index is None:
                    continue
                hlo_op = st.get("hlo_op")
                mod = index.for_program(st.get("program_id"))
                op = None
                for mod in (mod, index.default) if mod is not index.default else (mod,):
                    if mod is None:
                        continue
                    if isinstance(hlo_op, str) and hlo_op:
                        op = mod.lookup(hlo_op)
                    if op is None:
                        op = mod.lookup(ev.name)
                    if op is not None:
                        break
                if op is None:
                    continue
                hbytes[ev.name] += op.bytes
                hns[ev.name] += ev.duration_ns
                hcalls[ev.name] += 1
                hops[ev.name][op.name] += 1
                op_runs[(mod.path, op.name)][ev.name] += 1
                op_bytes[(mod.path, op.name)] = op.bytes
            if not total or sum(total.values()) == 0:
                continue
            line_total = sum(total.values())
            rows = []
            for name, ns in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
                row = dict(name=name[:120], ms_per_step=ns / 1e6 / steps, share=ns / max(line_total, 1.0), calls=count[name])
                for key, value in stats[name].items():
                    row[f"{key}_per_step"] = value / steps
                if "bytes_accessed" in stats[name] and ns > 0:
                    row["profiler_GB_per_s"] = stats[name]["bytes_accessed"] / ns
                if hcalls[name]:
                    row["hlo_bytes_per_call"] = hbytes[name] / hcalls[name]
                    row["hlo_bytes_per_step"] = hbytes[name] / steps
                    row["hlo_matched_calls"] = hcalls[name]
                    if hns[name] > 0:
                        row["achieved_GB_per_s"] = hbytes[name] / hns[name]  # bytes per ns = GB/s
                        row["pct_of_peak_bw"] = 100 * row["achieved_GB_per_s"] / peak_gbs
                    row["hlo_ops"] = dict(hops[name].most_common(5))
                rows.append(row)
            res = dict(ms_per_step=line_total / 1e6 / steps, events=n_events, stat_keys=sorted(stat_keys), top=rows)
            if op_bytes:
                # an HLO op that ran as several kernels (a library GEMM and its reduction) counts once per run:
                # its runs are those of its most frequent kernel
                step_bytes = sum(b * max(op_runs[k].values()) for k, b in op_bytes.items()) / steps
                matched_ns = sum(hns.values())
                res.update(hlo_bytes_per_step=step_bytes, hlo_matched_time_share=matched_ns / line_total,
                           hlo_GB_per_s_over_line_time=step_bytes * steps / line_total,
                           hlo_GB_per_s_over_matched_time=step_bytes * steps / max(matched_ns, 1.0),
                           pct_of_peak_bw=100 * step_bytes * steps / line_total / peak_gbs,
                           hlo_modules=sorted({k[0] for k in op_bytes}))
            out[f"{plane.name} | {line.name}"] = res
    return out


def step_total(lines: dict, peak_gbs: float) -> dict:
    """The whole step: HLO bytes per step over the kernel time. Kernel lines: the stream lines of the device
    planes (GPU / TPU) if there are any (an "XLA Ops" or "XLA Modules" line would count the same time twice),
    else the lines with bytes (on CPU: the host threads that ran the program's ops)."""
    def device(k):
        return "GPU" in k.split("|")[0] or "TPU" in k.split("|")[0]

    streams = {k: v for k, v in lines.items() if device(k) and "Stream" in k.split("|", 1)[-1]}
    use = streams or {k: v for k, v in lines.items() if "hlo_bytes_per_step" in v and (device(k) or not any(
        device(k2) for k2 in lines))}
    if not any("hlo_bytes_per_step" in v for v in use.values()):
        return {}
    ms = sum(v["ms_per_step"] for v in use.values())
    b = sum(v.get("hlo_bytes_per_step", 0.0) for v in use.values())
    matched_ms = sum(v["ms_per_step"] * v.get("hlo_matched_time_share", 0.0) for v in use.values())
    return dict(lines=sorted(use), kernel_ms_per_step=ms, hlo_bytes_per_step=b, achieved_GB_per_s=b / ms / 1e6,
                pct_of_peak_bw=100 * b / ms / 1e6 / peak_gbs, matched_time_share=matched_ms / ms)


def kernel_times(profile) -> dict:
    """Event name (and ``hlo_op``) -> total ns over the device planes (over the host plane if there is none):
    what the default HLO module is chosen by."""
    times = defaultdict(float)
    planes = [p for p in profile.planes if "GPU" in p.name or "TPU" in p.name]
    for plane in planes or [p for p in profile.planes if "/host:CPU" in p.name]:
        for line in plane.lines:
            for ev in line.events:
                times[ev.name] += ev.duration_ns
                op = _stats(ev).get("hlo_op")
                if isinstance(op, str) and op and op != ev.name:
                    times[op] += ev.duration_ns
    return times


def print_lines(lines: dict, peak_gbs: float, show: int = 0):
    for key, line in lines.items():
        print(f"\n== {key}: {line['ms_per_step']:.3f} ms/step over {line['events']} events")
        if "hlo_bytes_per_step" in line:
            print(f"   HLO bytes {line['hlo_bytes_per_step'] / 1e6:.3f} MB/step; over all {line['ms_per_step']:.3f} ms of "
                  f"this line {line['hlo_GB_per_s_over_line_time']:.1f} GB/s ({line['pct_of_peak_bw']:.1f}% of "
                  f"{peak_gbs:.0f}); matched events are {100 * line['hlo_matched_time_share']:.1f}% of the time "
                  f"({line['hlo_GB_per_s_over_matched_time']:.1f} GB/s over them)")
        print(f"  {'ms/step':>8s} {'share':>6s} {'calls':>6s} {'MB/call':>9s} {'MB/step':>9s} {'GB/s':>8s} "
              f"{'%peak':>6s}  name")
        for row in line["top"][:show or None]:
            if "hlo_bytes_per_call" in row:
                hb = f"{row['hlo_bytes_per_call'] / 1e6:9.4f} {row['hlo_bytes_per_step'] / 1e6:9.4f} " + (
                    f"{row['achieved_GB_per_s']:8.1f} {row['pct_of_peak_bw']:6.1f}" if "achieved_GB_per_s" in row
                    else f"{'':8s} {'':6s}")
            else:
                hb = f"{'-':>9s} {'-':>9s} {'-':>8s} {'-':>6s}"
            ops = ""
            if "hlo_ops" in row and [normalise(o) for o in row["hlo_ops"]] != [normalise(row["name"])]:
                ops = "  <- " + ", ".join(list(row["hlo_ops"])[:3])
            extra = "".join(f"  {k}={v:.3g}" for k, v in row.items()
                            if k.endswith("per_step") and k not in ("ms_per_step", "hlo_bytes_per_step")
                            or k == "profiler_GB_per_s")
            print(f"  {row['ms_per_step']:8.3f} {100 * row['share']:5.1f}% {row['calls']:6d} {hb}  "
                  f"{row['name'][:70]}{ops}{extra}")


def print_total(total: dict, peak_gbs: float):
    if total:
        print(f"\n== whole step ({len(total['lines'])} lines): {total['hlo_bytes_per_step'] / 1e6:.3f} MB of HLO bytes "
              f"in {total['kernel_ms_per_step']:.3f} ms of kernels: {total['achieved_GB_per_s']:.1f} GB/s, "
              f"{total['pct_of_peak_bw']:.1f}% of {peak_gbs:.0f} GB/s (events with bytes: "
              f"{100 * total['matched_time_share']:.1f}% of the kernel time)")
    else:
        print("\n== whole step: no HLO bytes matched")


def peak_for(device_kind: str, given: float) -> tuple[float, str]:
    if given > 0:
        return given, "--peak-gbs"
    for key, gbs in PEAKS_GBS.items():
        if key in device_kind:
            return gbs, f"{key} SXM HBM, from the device kind {device_kind!r}"
    return 3350.0, f"H100 SXM HBM3 (default; device kind {device_kind!r})"


def save_modules(lines: dict, out_dir):
    """The HLO modules the bytes came from, gzipped next to the JSON (for a second look without the GPU)."""
    saved = []
    for path in sorted({m for line in lines.values() for m in line.get("hlo_modules", [])}):
        try:
            p = Path(path)
            dest = Path(out_dir) / ("profile_step_hlo_" + p.name.replace(".gz", "") + ".gz")
            data = p.read_bytes()
            dest.write_bytes(data if p.suffix == ".gz" else gzip.compress(data))
            saved.append(str(dest))
        except Exception as exc:
            print(f"could not save {path}: {exc}")
    return saved


def hlo_index(paths, profile):
    """The ModuleIndex of the dumped (or given) modules, its default chosen by the trace's names; None if none."""
    try:
        index = ModuleIndex.from_paths(paths)
        if not index.entries:
            print(f"no optimized HLO module found in {paths}: no bytes")
            return None
        mod = index.choose_default(kernel_times(profile))
        print(f"HLO: {len(index.entries)} optimized modules; default for events without a program id: "
              f"{mod.name if mod else None} ({mod.path if mod else '-'})")
        return index
    except Exception as exc:  # the time table still comes out
        print(f"HLO bytes unavailable: {type(exc).__name__}: {exc}")
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="supercell of the baseline's LYC-like cell (4: 427 atoms)")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100, help="steps per chunk")
    ap.add_argument("--chunks", type=int, default=2, help="chunks traced")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--peak-gbs", type=float, default=0.0,
                    help="peak memory bandwidth for pct_of_peak_bw, GB/s (default: 4800 on an H200, else 3350, "
                         "the H100 SXM's HBM3)")
    ap.add_argument("--no-hlo", action="store_true", help="no HLO dump, no bytes")
    ap.add_argument("--keep-dump", action="store_true", help="keep XLA's dump folder (else deleted at the end)")
    ap.add_argument("--trace", help="analyse this saved .xplane.pb instead of running (with --hlo; steps = "
                                    "--steps x --chunks)")
    ap.add_argument("--hlo", nargs="*", default=[], help="with --trace: optimized HLO files or dump folders")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT", ".")
    steps = args.chunks * args.steps
    if args.trace:
        profile = jax.profiler.ProfileData.from_file(args.trace)
        peak, why = peak_for("", args.peak_gbs)
        index = hlo_index(args.hlo, profile) if args.hlo else None
        res = dict(trace=args.trace, steps_traced=steps, peak_GB_per_s=peak, peak_from=why,
                   lines=ranked(profile, steps, args.top, index, peak))
        print(f"peak bandwidth {peak:.0f} GB/s ({why})")
        print_lines(res["lines"], peak)
        res["step_total"] = total = step_total(res["lines"], peak)
        print_total(total, peak)
        with open(os.path.join(out_dir, "profile_step_reanalysed.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        return
    try:  # a persistent-cache hit would compile nothing, and dump nothing
        jax.config.update("jax_enable_compilation_cache", False)
    except Exception:
        pass
    model = lycb_jax.load_model()
    s = lyc_like(args.n)
    r = args.replicas
    cap = default_capacity(s.cart_coords, s.lattice.matrix, skin=1.0, cutoffs=model.cutoffs)
    species, cell, states, kT, integ = nvt_replicas(model, s, r, cap)
    alive = jnp.ones(r, bool)

    def chunk(st, capacity, fit=False):
        return run_chunk_checked(model, ChunkInputs(species, cell, st, kT, kT, alive),
                                 ChunkSpec(integ, capacity, n_frames=1, stride=args.steps), fit=fit, mesh=None)

    out, cap = chunk(states, cap, fit=True)  # compile, fit the capacity
    out, cap = chunk(out.states, cap)  # compile the fitted shape
    jax.block_until_ready(out.states)
    trace_dir = tempfile.mkdtemp(prefix="lycb_profile_")
    t = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        st = out.states
        for _ in range(args.chunks):
            out, cap2 = chunk(st, cap)
            assert cap2 == cap, "the capacity grew while tracing; rerun"
            st = out.states
        jax.block_until_ready(st)
    wall = time.perf_counter() - t
    files = sorted(Path(trace_dir).rglob("*.xplane.pb"))
    profile = jax.profiler.ProfileData.from_file(str(files[-1]))
    if os.environ.get("OUT"):  # the raw trace too, for a second look (TensorBoard / xprof)
        shutil.copy(files[-1], Path(os.environ["OUT"]) / "profile_step.xplane.pb")
    device = jax.devices()[0].device_kind
    peak, why = peak_for(device, args.peak_gbs)
    index = hlo_index([HLO_DUMP], profile) if HLO_DUMP else None
    res = dict(device=device, atoms=len(s), replicas=r, steps_traced=steps,
               capacity=str(cap), wall_ms_per_step_while_tracing=wall / steps * 1e3,
               peak_GB_per_s=peak, peak_from=why, hlo_dump=HLO_DUMP,
               planes=[p.name for p in profile.planes])
    json_path = os.path.join(out_dir, "profile_step.json")
    try:  # the time table first, in case the byte counts fail or run out of time
        with open(json_path, "w") as fh:
            json.dump(dict(res, lines=ranked(profile, steps, args.top), partial="times only"), fh, indent=1)
    except Exception as exc:
        print(f"time table failed: {type(exc).__name__}: {exc}")
    try:
        res["lines"] = ranked(profile, steps, args.top, index, peak)
    except Exception as exc:  # never lose the time table to the byte counts
        print(f"ranking with HLO bytes failed ({type(exc).__name__}: {exc}); without them")
        res["hlo_error"] = f"{type(exc).__name__}: {exc}"
        res["lines"] = ranked(profile, steps, args.top)
    if index is not None and index.errors:
        res["hlo_parse_errors"] = index.errors[:20]
    print(f"\npeak bandwidth for %peak: {peak:.0f} GB/s ({why})")
    print_lines(res["lines"], peak)
    res["step_total"] = total = step_total(res["lines"], peak)
    print_total(total, peak)
    res["hlo_saved"] = save_modules(res["lines"], out_dir)
    with open(json_path, "w") as fh:
        json.dump(res, fh, indent=1)
    if HLO_DUMP and not args.keep_dump:  # every program's HLO, LLVM IR and objects: the used modules are saved
        shutil.rmtree(HLO_DUMP, ignore_errors=True)


if __name__ == "__main__":
    main()
