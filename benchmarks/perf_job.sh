#!/usr/bin/env bash
# One GPU call for issue 31 (started in the background through device_job.sh, then packed):
#   bash .gpu/device_job.sh start "bash benchmarks/perf_job.sh" 540; bash .gpu/device_job.sh poll 300
#   tar czf $OUT/perf.tgz -C /tmp/job out log.txt
# Build .whl_perf with benchmarks/perf_wheels.sh. Carry [".whl_perf", ".gpu"]: the cp312 wheels the GPU image lacks
# plus chgnet 0.4.2 and nvidia-ml-py3 for the PyTorch baseline, to stay under the 64 MiB carry. Writes /tmp/job/out/perf/:
#   torch_baseline.json   PyTorch CHGNet 0.3.0 on the same card (shared/bench's script, verbatim copy)
#   bench_md_r{R}.json    lycb_jax NVT, R replicas x 427 atoms: the replica scaling curve
#   profile_step.json     JAX profiler: top kernels of one MD step (8 x 427 atoms) with HLO bytes and GB/s (issue 31),
#                         plus profile_step.log, profile_step.xplane.pb and the chunk's optimized HLO (.txt.gz)
#   ncu_step.csv          Nsight Compute on about one MD step's kernels: time, DRAM bytes, bandwidth
#   bench_md_before_r{R}.json  the same with the lycb_jax of BEFORE (a folder holding an older lycb_jax/, e.g.
#                         mkdir -p .gpu/before && git archive REF lycb_jax | tar -x -C .gpu/before), timed right
#                         after the current one on the same card: issue 31's before/after rule
#   bench_md_{P}.json     8 replicas with matrix products at precision P of PRECISIONS (e.g. "TF32_TF32_F32_X3"),
#                         with the largest force difference against "highest" on this card
#   sweep_programs{,_before}.json  with PROGRAMS=1 (PROGRAMS_BEFORE=folder with an older lycb_jax/): the XLA programs
#                         a short sweep compiles and their compile seconds (benchmarks/sweep_programs.py)
# Knobs: REPLICAS, N, STEPS, *_TIMEOUT; NO_TORCH, NO_BENCH, NO_PROFILE, NO_NCU skip a section;
# PROFILE_ONLY=1: device.txt and the profile only (about 2-3 min).
set -uo pipefail
job=${JOB:-/tmp/job}; out=$job/out/perf src=$job/src
mkdir -p $out $src
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_perf/*.whl
cp -r lycb_jax checkpoints benchmarks $src/
[ -n "${BEFORE:-}" ] && { mkdir -p $job/before && cp -r $BEFORE/lycb_jax $job/before/; }
# PROGRAMS_BEFORE: a folder holding the lycb_jax/ from before the chunk change (git archive f8b5f46 lycb_jax)
[ -n "${PROGRAMS_BEFORE:-}" ] && { mkdir -p $job/programs_before && cp -r $PROGRAMS_BEFORE/lycb_jax $job/programs_before/; }
export PYTHONPATH=/tmp/site:$src MPLBACKEND=Agg PYTHONUNBUFFERED=1 OUT=$out
cd $src
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no GPU"
  python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"; } > $out/device.txt 2>&1
[ -n "${PROFILE_ONLY:-}" ] && { NO_TORCH=1; NO_BENCH=1; NO_NCU=1; }
if [ -z "${NO_TORCH:-}" ]; then
  echo "== torch baseline"; timeout 240 python3 benchmarks/torch_chgnet_baseline.py > $out/torch_baseline.log 2>&1
  tail -3 $out/torch_baseline.log
fi
[ -n "${NO_BENCH:-}" ] && REPLICAS=none
for r in ${REPLICAS:-1 4 8 16 32}; do
  [ "$r" = none ] && continue
  echo "== bench_md replicas $r"
  timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_md.py --n ${N:-4} --replicas $r --steps ${STEPS:-200} --stride 50 > $out/bench_md_r$r.log 2>&1
  [ -f $out/bench_md.json ] && mv $out/bench_md.json $out/bench_md_r$r.json  # bench_md writes $OUT/bench_md.json
  tail -1 $out/bench_md_r$r.log
  if [ -n "${BEFORE:-}" ]; then
    echo "== bench_md replicas $r, before ($BEFORE)"
    PYTHONPATH=/tmp/site:$job/before LYCB_JAX_CHECKPOINTS=$src/checkpoints timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_md.py --n ${N:-4} --replicas $r \
      --steps ${STEPS:-200} --stride 50 > $out/bench_md_before_r$r.log 2>&1
    [ -f $out/bench_md.json ] && mv $out/bench_md.json $out/bench_md_before_r$r.json
    tail -1 $out/bench_md_before_r$r.log
  fi
done
if [ -n "${PROGRAMS:-}" ]; then   # issue 31 step 5: programs a short sweep compiles, and their compile time
  echo "== sweep_programs"
  timeout ${PROGRAMS_TIMEOUT:-400} python3 benchmarks/sweep_programs.py --model $src/checkpoints/chgnet-0.3.0-lycb-pbe \
    --out $out/sweep_programs.json > $out/sweep_programs.log 2>&1; tail -4 $out/sweep_programs.log
  if [ -n "${PROGRAMS_BEFORE:-}" ]; then   # copied above, before the cd
    PYTHONPATH=/tmp/site:$job/programs_before timeout ${PROGRAMS_TIMEOUT:-400} python3 benchmarks/sweep_programs.py \
      --model $src/checkpoints/chgnet-0.3.0-lycb-pbe --out $out/sweep_programs_before.json > $out/sweep_programs_before.log 2>&1
    tail -4 $out/sweep_programs_before.log
  fi
fi
for prec in ${PRECISIONS:-}; do   # cheaper matrix products, 8 replicas, with their force error against "highest"
  echo "== bench_md replicas ${PREC_REPLICAS:-8}, matmul precision $prec"
  LYCB_JAX_MATMUL_PRECISION=$prec timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_md.py --n ${N:-4} --replicas ${PREC_REPLICAS:-8} \
    --steps ${STEPS:-200} --stride 50 > $out/bench_md_$prec.log 2>&1
  [ -f $out/bench_md.json ] && mv $out/bench_md.json $out/bench_md_$prec.json
  tail -1 $out/bench_md_$prec.log; grep vs_highest $out/bench_md_$prec.log
done
if [ -z "${NO_PROFILE:-}" ]; then
  echo "== profile_step (top kernels, HLO bytes, GB/s)"
  timeout ${PROFILE_TIMEOUT:-200} python3 benchmarks/profile_step.py --n ${N:-4} --replicas 8 --steps 100 --chunks 2 --top 15 > $out/profile_step.log 2>&1
  echo "profile_step rc $?"; grep -E "^peak|^== whole step" $out/profile_step.log
fi
[ -n "${NO_NCU:-}" ] && { echo PERF_DONE; exit 0; }
echo "== ncu"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
if [ -x "$ncu" ]; then
  # skip compilation and the first chunk's kernels, then profile about one step's worth (~760 kernels)
  # XLA's autotuner times kernels with a delay kernel that ncu's serialisation times out (segfault at 2026-12-07):
  # autotuning off under ncu (the kernels chosen can differ slightly from an unprofiled run)
  XLA_FLAGS="--xla_gpu_autotune_level=0" timeout ${NCU_TIMEOUT:-200} $ncu --target-processes application-only --launch-skip ${NCU_SKIP:-60000} --launch-count ${NCU_COUNT:-800} \
    --metrics gpu__time_duration.sum,dram__bytes.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
    --csv --page raw python3 benchmarks/bench_md.py --replicas 8 --steps 100 --stride 50 > $out/ncu_step.csv 2> $out/ncu.log
  echo "ncu rc $? lines $(wc -l < $out/ncu_step.csv)"
else
  echo "no ncu" | tee $out/ncu.log
fi
echo PERF_DONE
