#!/usr/bin/env bash
# Round-0 fine-tuning and NpT validation on the device (issue 17). From the repository root:
#   bash benchmarks/active_learning/device_round0.sh   (results in $OUT)
set -uo pipefail
# a call returns at most 8 files: everything is packed into $OUT/results.tar.gz on exit (also after a timeout kill)
RES=$(mktemp -d); FINAL_OUT=$OUT; OUT=$RES
pack() { tar -czf "$FINAL_OUT/results.tar.gz" -C "$RES" . ; }
trap pack EXIT TERM
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whlmd/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD/.dftpack/src LYCB_JAX_CHECKPOINTS=$PWD/checkpoints
cd benchmarks/active_learning
T0=$(date +%s)
python3 finetune_round.py r0 --epochs 60 --out-dir $OUT --tag _default > $OUT/ft_default.log 2>&1
python3 finetune_round.py r0 --epochs 60 --freeze embeddings,basis_expansions --out-dir $OUT --tag _interactions \
  > $OUT/ft_interactions.log 2>&1
grep -h -A3 "^parent " $OUT/ft_*.log
echo "fine-tuning done at $(( $(date +%s) - T0 )) s"
# (the run tool kills at its limit without a trap: every step is bounded by BUDGET_S so the archive is written)
# the model with the lower best validation loss (never the held-out test set) goes on to NpT
BEST=$(python3 - <<PY
import json
best = min(["ft_r0_default", "ft_r0_interactions"],
           key=lambda n: min(r["val_loss"] for r in json.load(open(f"$OUT/{n}/manifest.json"))["finetune"]["history"] if "val_loss" in r))
print(best)
PY
)
echo "NpT with $BEST"
timeout $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )) python3 npt_validation.py $OUT/npt --model $OUT/$BEST --npt-ps ${FT_NPT_PS:-36} > $OUT/npt_ft.log 2>&1; tail -7 $OUT/npt_ft.log
echo "fine-tuned NpT done at $(( $(date +%s) - T0 )) s"
timeout $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )) python3 npt_validation.py $OUT/npt_pre --model chgnet-0.3.0 --npt-ps ${PRE_NPT_PS:-16} > $OUT/npt_pre.log 2>&1; tail -7 $OUT/npt_pre.log
echo "total $(( $(date +%s) - T0 )) s"
