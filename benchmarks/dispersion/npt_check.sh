#!/usr/bin/env bash
# Issue 28's GPU check, one job: the cost of D3(BJ) per force call (bench_dispersion.py), then NpT at 1 bar
# (tri, 480 atoms, dt 2 fs: 1 ps heating, 2 ps NVT, 20 ps NpT averaged over the last 12 ps) of the shipped
# fine-tuned model with and without D3 at 300, 500 and 700 K for LYC0 and LYB0, into /tmp/job/out/.
#   bash .gpu/device_job.sh start "bash benchmarks/dispersion/npt_check.sh" 560
# CPU rehearsal: JOB=/tmp/tiny NO_WHEELS=1 TINY=1 with .venv/bin first on PATH.
set -euo pipefail
job=${JOB:-/tmp/job}; src=$job/src; out=$job/out
mkdir -p $src $out
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
cp -r lycb_jax configs checkpoints benchmarks $src/
export PYTHONPATH=/tmp/site:$src PYTHONUNBUFFERED=1 OUT=$out
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo "no GPU"; git -C $OLDPWD rev-parse HEAD || true; } > $out/run_info.txt
if [ -n "${TINY:-}" ]; then
  proto="--heat-ps 0.02 --nvt-ps 0.02 --npt-ps 0.1 --npt-average-ps 0.05 --production-ps 0.02 --supercells 2,1,1 3,1,1"
  python3 $src/benchmarks/bench_dispersion.py --replicas 1
else
  proto="--heat-ps 1 --nvt-ps 2 --npt-ps 20 --npt-average-ps 12 --production-ps 0.5"
  python3 $src/benchmarks/bench_dispersion.py --replicas 8
fi
for d in d3bj none; do
  disp=$([ $d = none ] || echo "--dispersion $d")
  python3 $src/benchmarks/npt_sweep_gpu.py --model chgnet-0.3.0-lycb-pbe $disp -T 300 500 700 --dt-fs 2 $proto \
    --cost-steps 0 --out $out/npt_$d 2>&1 | tee $out/npt_$d.log
  python3 $src/benchmarks/reproduction/extract.py $out/npt_$d/trajectory.h5 $out/npt_$d || true
  rm -f $out/npt_$d/trajectory.h5 $out/npt_$d/li_production_positions.npy
done
echo "end $(date -u +%FT%TZ)" >> $out/run_info.txt
echo JOB_DONE
