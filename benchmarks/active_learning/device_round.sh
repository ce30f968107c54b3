#!/usr/bin/env bash
# One round of the iterative fine-tuning on the device (issue 17), in one call. From the repository root:
#   ROUND=r1 MODEL=benchmarks/active_learning/models/r0_default T=600 SAMPLE="LYC30 LYB20" \
#   FT_ROUNDS="r0 r1" NPT_MODELS="FT chgnet-0.3.0" bash benchmarks/active_learning/device_round.sh
# 1. GPU: candidates of ROUND for each parent in SAMPLE (sample_round.py; one process per seed);
#    (EARLY_LABEL: candidate files labelled on the CPU cores meanwhile)
# 2. CPU: GPAW labels of every cand_*_ROUND.extxyz not yet labelled (device_label.sh, 15 processes);
# 3. GPU: fine-tuning on FT_ROUNDS (finetune_round.py) once the labels are complete;
# 4. GPU: NpT validation (npt_validation.py) of NPT_MODELS ("FT": the model of step 3).
# Carry [".whl", ".dftpack"] (the MD wheels of shared/bench/fetch_wheels.sh; make_dftpack.sh).
# Every step is optional (empty variable) and bounded by BUDGET_S; everything is packed into
# $OUT/results.tar.gz (a call returns at most 8 files), also after a timeout.
set -uo pipefail
RES=$(mktemp -d); FINAL_OUT=$OUT; export OUT=$RES
AL=benchmarks/active_learning
pack() { cp $AL/cand_*_${ROUND}.extxyz $AL/labelled_*_${ROUND}.extxyz $RES/ 2>/dev/null; tar -czf "$FINAL_OUT/results.tar.gz" -C "$RES" . ; }
trap pack EXIT TERM
T0=$(date +%s); left() { echo $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null  # shared/bench/fetch_wheels.sh
export PYTHONPATH=/tmp/site:$PWD/.dftpack/src LYCB_JAX_CHECKPOINTS=$PWD/checkpoints XLA_PYTHON_CLIENT_PREALLOCATE=false
npt_validation() {
  for M in ${NPT_MODELS:-}; do
    [ "$M" = FT ] && M=$FT
    [ -n "$M" ] && timeout $(left) python3 $AL/npt_validation.py $RES/npt --model $M --npt-ps ${NPT_PS:-16} > $RES/npt_$(basename $M).log 2>&1
    grep "A^3/atom" $RES/npt_$(basename $M).log
  done
}
FT=""
# NPT_PARALLEL=1: NpT validation of models that exist already, on the GPU while the rest runs
[ "${NPT_PARALLEL:-0}" = 1 ] && { npt_validation > $RES/npt_parallel.log 2>&1 & }
SEEDS=${SEEDS:-0 1}
for P in ${SAMPLE:-}; do
  for S in $SEEDS; do
    timeout $(left) python3 $AL/sample_round.py $ROUND $P --model $MODEL -T $T --seeds $S --md-only --work $RES/md_rounds \
      --barostat ${BAROSTAT:-aniso} > $RES/sample_${P}_s$S.log 2>&1 &
    SAMPLERS="${SAMPLERS:-} $!"
  done
done
# candidates already there (EARLY_LABEL) are labelled on the idle CPU cores meanwhile
[ -n "${EARLY_LABEL:-}" ] && CONTROL=0 LABEL_WORKERS=${EARLY_WORKERS:-10} LABEL_BUDGET_S=$(left) \
  bash $AL/device_label.sh $EARLY_LABEL > $RES/label_early.log 2>&1 &
EARLY=$!
[ -n "${SAMPLERS:-}" ] && wait $SAMPLERS; [ -n "${EARLY_LABEL:-}" ] && wait $EARLY
tail -2 $RES/label_early.log 2>/dev/null
for P in ${SAMPLE:-}; do
  python3 $AL/sample_round.py $ROUND $P --model $MODEL -T $T --seeds $SEEDS --n ${NPICK:-20} --work $RES/md_rounds \
    --barostat ${BAROSTAT:-aniso} 2>&1 | tail -1
done
echo "candidates at $(( $(date +%s) - T0 )) s"
if ls $AL/cand_*_${ROUND}.extxyz >/dev/null 2>&1; then
  CONTROL=0 LABEL_BUDGET_S=$(( $(left) - ${FT_RESERVE_S:-0} )) bash $AL/device_label.sh $AL/cand_*_${ROUND}.extxyz > $RES/label_driver.log 2>&1
  tail -3 $RES/label_driver.log
  (cd $AL && for c in cand_*_${ROUND}.extxyz; do ls ${c/cand_/labelled_} 2>/dev/null; done)
fi
echo "labels at $(( $(date +%s) - T0 )) s"
if [ -n "${FT_ROUNDS:-}" ]; then
  timeout $(left) python3 $AL/finetune_round.py $FT_ROUNDS --epochs ${FT_EPOCHS:-80} --out-dir $RES --tag ${FT_TAG:-} \
    ${FT_FREEZE:+--freeze $FT_FREEZE} > $RES/finetune.log 2>&1
  FT=$RES/ft_${FT_ROUNDS##* }${FT_TAG:-}; tail -12 $RES/finetune.log
  echo "fine-tuning at $(( $(date +%s) - T0 )) s"
fi
if [ "${NPT_PARALLEL:-0}" = 1 ]; then wait; cat $RES/npt_parallel.log; else npt_validation; fi
echo "total $(( $(date +%s) - T0 )) s"
