#!/usr/bin/env bash
# Builds .whl_perf/ (ignored) for benchmarks/perf_job.sh from .whl/ (shared/bench/fetch_wheels.sh): the same cp312
# wheels without h5py, orbax, uncertainties, bibtexparser, simplejson and fonttools (not imported by bench_md or the
# PyTorch baseline), plus chgnet 0.4.2 and nvidia-ml-py3 for the baseline, plus the 5 fontTools modules matplotlib
# imports (.whl_perf/site/fontTools): about 38 MB, so that tree + carry stay under 64 MiB.
#   bash benchmarks/perf_wheels.sh
set -euo pipefail
dest=.whl_perf
mkdir -p $dest/site
grep -qx "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
for f in .whl/*.whl; do
  case $(basename $f) in h5py*|orbax*|uncertainties*|bibtexparser*|simplejson*|fonttools*|narwhals*|tzdata*) ;; *) cp $f $dest/;; esac
done
plat="--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d $dest chgnet==0.4.2
python3 -m pip wheel -q --no-deps -w $dest nvidia-ml-py3  # chgnet imports nvidia_smi
tmp=$(mktemp -d)
(cd $tmp && unzip -q "$OLDPWD"/.whl/fonttools*.whl 'fontTools/__init__.py' 'fontTools/agl.py' 'fontTools/misc/__init__.py' \
  'fontTools/misc/loggingTools.py' 'fontTools/misc/textTools.py')
rm -rf $dest/site/fontTools && cp -r $tmp/fontTools $dest/site/ && rm -rf $tmp
du -sh $dest
