#!/usr/bin/env bash
# After run_sweep.sh on the GPU machine: pack /tmp/job/out into $OUT/results.tgz (reports, logs, thermo.h5 and
# the checkpoint, from which a later call could extend the production) and the Li production positions as
# separate .npy files (one per run, < 16 MiB). The full trajectory stays on the machine.
#   bash benchmarks/reproduction/pack.sh
set -euo pipefail
export PYTHONPATH=/tmp/site:${JOB:-/tmp/job}/src:${PYTHONPATH:-}  # extract.py reads through lycb_jax.md.trajectory
for traj in ${JOB:-/tmp/job}/out/*/sweep/md/trajectory.h5; do
  run=$(basename "$(dirname "$(dirname "$(dirname "$traj")")")")
  python3 ${JOB:-/tmp/job}/src/benchmarks/reproduction/extract.py "$traj" "$(dirname "$traj")"
  mv "$(dirname "$traj")/li_production_positions.npy" "$OUT/${run}_li_positions.npy"
done
tar czf $OUT/results.tgz --exclude='trajectory.h5' --exclude='*.prev.npz' -C ${JOB:-/tmp/job} out $( [ -f ${JOB:-/tmp/job}/log.txt ] && echo log.txt)
ls -la $OUT
