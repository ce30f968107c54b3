#!/usr/bin/env bash
# GPAW labels on the device machine's CPU cores (it has no registry: GPAW is built there from the sdist and
# the Debian libraries carried in .dftpack/, see README.md). Run from the repository root:
#   bash benchmarks/active_learning/device_label.sh CAND.extxyz... (labels land in $OUT/labels.db)
set -euo pipefail
T0=$(date +%s)
NCPU=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")   # before OMP_NUM_THREADS=1, which nproc obeys
# .dftpack (benchmarks/active_learning/make_dftpack.sh) is all it needs: label.py imports ase, numpy and lycb_jax
[ -d /tmp/dft/wheels ] || { mkdir -p /tmp/dft && tar -xJf .dftpack/dftkit.tar.xz -C /tmp/dft; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_dft /tmp/dft/wheels/*.whl
mkdir -p "$OUT" /tmp/dft/src && cp -r .dftpack/src/. /tmp/dft/src/   # private copies: later calls may re-send the tree without .dftpack
export PYTHONPATH=/tmp/site_dft:/tmp/dft/src   # the committed package, not a tree being edited
if [ ! -d /tmp/site_dft/gpaw ]; then   # built once per machine
(cd /tmp/dft/lib && ln -sf libxc.so.9 libxc.so && ln -sf libfftw3.so.3 libfftw3.so && ln -sf libblas.so.3 libblas.so)
cat > /tmp/dft/siteconfig.py <<'CFG'
compiler = "gcc"
mpi = False
fftw = True
scalapack = False
libraries = ["xc", "fftw3", "blas"]
include_dirs += ["/tmp/dft/include"]
library_dirs += ["/tmp/dft/lib"]
runtime_library_dirs += ["/tmp/dft/lib"]
CFG
GPAW_CONFIG=/tmp/dft/siteconfig.py python3 -m pip install -q --no-index --no-deps --no-build-isolation \
  --target /tmp/site_dft /tmp/dft/gpaw-26.7.0.tar > $OUT/gpaw_build.log 2>&1 || { tail -40 $OUT/gpaw_build.log; exit 1; }
fi
export LD_LIBRARY_PATH=/tmp/dft/lib:${LD_LIBRARY_PATH:-} GPAW_SETUP_PATH=/tmp/dft/setups
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 JAX_PLATFORMS=cpu
echo "gpaw built in $(( $(date +%s) - T0 )) s; $NCPU cores"
[ -f $OUT/labels.db ] || cp benchmarks/active_learning/labels.db $OUT/labels.db   # a second pass continues the first
# control: one structure already labelled here, recomputed there into its own cache
[ "${CONTROL:-1}" = 1 ] && { python3 benchmarks/active_learning/control_label.py $OUT/control.db > $OUT/control.log 2>&1 & }
timeout $(( ${LABEL_BUDGET_S:-560} - ($(date +%s) - T0) )) python3 benchmarks/active_learning/label.py "$@" --workers ${LABEL_WORKERS:-$(( NCPU - 1 ))} --db $OUT/labels.db \
  > $OUT/label.log 2>&1 || echo "labelling stopped (rc $?)"
wait || true
tail -c 600 $OUT/label.log; tail -5 $OUT/control.log 2>/dev/null || true
echo "total $(( $(date +%s) - T0 )) s"
