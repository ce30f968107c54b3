#!/usr/bin/env bash
# Round 1 of the iterative fine-tuning on the device (issue 17), one call. From the repository root:
#   ROUND=r1 MODEL=benchmarks/active_learning/models/r0_default T=600 bash benchmarks/active_learning/device_round1.sh
# GPU: round candidates (sample_round.py, LYC30 and LYB20 in parallel), then NpT validation of the
# models in NPT_MODELS; CPU: GPAW labels of the candidates (device_label.sh) as soon as they exist.
# Everything is packed into $OUT/results.tar.gz (a call returns at most 8 files), also after a timeout.
set -uo pipefail
RES=$(mktemp -d); FINAL_OUT=$OUT; export OUT=$RES
pack() { cp benchmarks/active_learning/cand_*_${ROUND}.extxyz $RES/ 2>/dev/null; tar -czf "$FINAL_OUT/results.tar.gz" -C "$RES" . ; }
trap pack EXIT TERM
T0=$(date +%s); left() { echo $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whlmd/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD/.dftpack/src LYCB_JAX_CHECKPOINTS=$PWD/checkpoints XLA_PYTHON_CLIENT_PREALLOCATE=false
AL=benchmarks/active_learning
for P in LYC30 LYB20; do
  timeout $(left) python3 $AL/sample_round.py $ROUND $P --model $MODEL -T $T --n ${NPICK:-20} --work $RES/md_rounds \
    > $RES/sample_$P.log 2>&1 &
done
# NpT validation starts at once (the small-cell sampling leaves the GPU mostly idle)
( for M in ${NPT_MODELS:-}; do
    timeout $(left) python3 $AL/npt_validation.py $RES/npt --model $M --npt-ps ${NPT_PS:-16} > $RES/npt_$(basename $M).log 2>&1
  done ) &
NPT=$!
wait %1 %2; tail -2 $RES/sample_*.log; echo "candidates at $(( $(date +%s) - T0 )) s"
ls $AL/cand_*_${ROUND}.extxyz >/dev/null 2>&1 && \
  CONTROL=0 LABEL_WORKERS=${LABEL_WORKERS:-13} LABEL_BUDGET_S=$(( $(left) - 10 )) bash $AL/device_label.sh $AL/cand_*_${ROUND}.extxyz > $RES/label_driver.log 2>&1
tail -4 $RES/label_driver.log; echo "labels at $(( $(date +%s) - T0 )) s"
wait $NPT; tail -8 $RES/npt_*.log; echo "total $(( $(date +%s) - T0 )) s"
