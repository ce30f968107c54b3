#!/usr/bin/env bash
# Builds .whl_perf/ (ignored) for benchmarks/perf_job.sh from .whl/ (shared/bench/fetch_wheels.sh): the same cp312
# wheels without those the GPU image already has (matplotlib, fonttools, h5py, kiwisolver, contourpy, rich, einops,
# toolz, zipp; /work/.library/device/KINDS.md) or that bench_md and the baseline never import (orbax,
# uncertainties, bibtexparser, frozendict), plus chgnet 0.4.2 and nvidia-ml-py3 for the baseline: about 26 MB, so
# that tree + carry stay under 64 MiB.
#   bash benchmarks/perf_wheels.sh
set -euo pipefail
dest=.whl_perf
mkdir -p $dest
grep -qx "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
for f in .whl/*.whl; do
  case $(basename $f) in h5py*|orbax*|uncertainties*|bibtexparser*|simplejson*|fonttools*|narwhals*|tzdata*|matplotlib*|kiwisolver*|contourpy*|rich*|markdown_it*|mdurl*|einops*|toolz*|zipp*|frozendict*) ;; *) cp $f $dest/;; esac
done
plat="--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d $dest chgnet==0.4.2
python3 -m pip wheel -q --no-deps -w $dest nvidia-ml-py3  # chgnet imports nvidia_smi
du -sh $dest
