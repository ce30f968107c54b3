#!/usr/bin/env bash
# One reproduction run on a GPU machine (issue 27): a batched sweep with configs/gpu.toml, then the
# independent numpy cross-check (xcheck.py), into /tmp/job/out/<name>/; then pack.sh packs it for the trip
# back. Started in the background through device_job.sh:
#   bash .gpu/device_job.sh start "bash benchmarks/reproduction/run_sweep.sh NAME MODEL PRESSURE_BAR 'T1 T2 ..' S1.cif S2.cif" 560
# .whl: shared/bench/fetch_wheels.sh's cp312 wheels less those the GPU image has (matplotlib, fonttools, h5py,
# kiwisolver, contourpy; /work/.library/device/KINDS.md): the tree plus .whl must stay under 64 MiB.
# SWEEP_ARGS: more sweep options, e.g. SWEEP_ARGS='--production-ps 250' for low temperatures.
# Local CPU rehearsal: JOB=/tmp/tiny NO_WHEELS=1 CONFIG=tiny.toml with .venv/bin first on PATH.
# Runs from a private copy of the source (/tmp/job/src), so later calls that re-send the tree cannot change it.
set -euo pipefail
name=$1 model=$2 pressure=$3 temps=$4; shift 4
job=${JOB:-/tmp/job}
src=$job/src out=$job/out/$name
mkdir -p $src $out
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
cp -r lycb_jax configs checkpoints benchmarks $src/
structs=(); names=()
for s in "$@"; do cp "$s" $out/; structs+=("$out/$(basename $s)"); names+=("$(basename ${s%.*})"); done
export PYTHONPATH=/tmp/site:$src PYTHONUNBUFFERED=1
cmd="python3 -m lycb_jax.cli sweep ${structs[*]} -T $temps --config ${CONFIG:-$src/configs/gpu.toml} --pressure-bar $pressure --model $model --out $out/sweep ${SWEEP_ARGS:-}"
{ echo "command: $cmd"; echo "start: $(date -u +%FT%TZ)"; (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no GPU")
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; git -C $OLDPWD rev-parse HEAD 2>/dev/null || true; } > $out/run_info.txt
cp ${CONFIG:-$src/configs/gpu.toml} $out/config.toml
t0=$(date +%s)
$cmd 2>&1 | tee $out/sweep_log.txt
echo "end: $(date -u +%FT%TZ) wall_s: $(( $(date +%s) - t0 ))" >> $out/run_info.txt
(IFS=,; python3 $src/benchmarks/reproduction/xcheck.py $out/sweep $out/xcheck.json "${names[*]}") > $out/xcheck.txt 2>&1
echo RUN_DONE
