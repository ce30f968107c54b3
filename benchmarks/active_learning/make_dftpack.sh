#!/usr/bin/env bash
# Rebuilds the ignored .dftpack/ that device_label.sh carries to the device machine, which has no registry: GPAW
# is built there from the sdist against Debian's libraries. Run here (Debian 12, whose libxc9 it takes; apt-get,
# dpkg-deb, binutils, pip, git, xz), from anywhere in the repository:   bash benchmarks/active_learning/make_dftpack.sh
# (about 1 min on one core; 13.7 MiB). On the device: carry [".dftpack"] (device_round.sh: also ".whl").
#   .dftpack/dftkit.tar.xz  unpacks into /tmp/dft:
#       lib/      libxc.so.9, libfftw3.so.3, libblas.so.3 (OpenBLAS, pthreads) and what these need beyond glibc
#                 and libgcc_s (libopenblas.so.0, libgfortran.so.5, libquadmath.so.0); Debian amd64
#       include/  xc*.h, fftw3.h
#       setups/   the gpaw-data PBE PAW setups of Li, Y, Cl, Br (GPAW_SETUP_PATH=/tmp/dft/setups)
#       wheels/   what the labelling needs beyond the device image (ase; KINDS.md's package list), re-zipped
#                 uncompressed: xz packs it 1.2 MB smaller
#       gpaw-26.7.0.tar  the PyPI sdist, un-gzipped (same bytes inside; xz packs it 0.9 MB smaller)
#   .dftpack/src/lycb_jax   the committed package (git $REF, default HEAD), not a tree being edited
#   .dftpack/MANIFEST.txt   versions and sha256 of what went in
set -euo pipefail
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel); cd "$ROOT"
REF=${REF:-HEAD}
PY=${PYTHON:-python3}
DEST=$ROOT/.dftpack
rm -rf "$DEST.new"; W=$(mktemp -d); trap 'rm -rf "$W" "$DEST.new"' EXIT
export XZ_DEFAULTS="-T1"

# 1. Debian packages (amd64 whatever this machine is; lists kept apart from the system's)
mkdir -p "$W/lists/partial" "$W/cache/archives/partial" "$W/deb" "$W/x"
o=(-q -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$W/lists" -oDir::Cache="$W/cache"
   -oAPT::Sandbox::User=root)
apt-get "${o[@]}" update >/dev/null
(cd "$W/deb" && apt-get "${o[@]}" download libxc9 libxc-dev libfftw3-double3 libfftw3-dev libopenblas0-pthread \
   libgfortran5 libquadmath0 >/dev/null)
for f in "$W"/deb/*.deb; do dpkg-deb -x "$f" "$W/x"; done
L=$W/x/usr/lib/x86_64-linux-gnu
K=$W/kit; mkdir -p "$K/lib" "$K/include" "$K/setups" "$W/pip" "$DEST.new/src"
cp -L "$L/libxc.so.9" "$L/libfftw3.so.3" "$L/libgfortran.so.5" "$L/libquadmath.so.0" \
      "$L/openblas-pthread/libblas.so.3" "$L/openblas-pthread/libopenblas.so.0" "$K/lib/"
(cd "$K/lib" && ln -s libxc.so.9 libxc.so && ln -s libfftw3.so.3 libfftw3.so && ln -s libblas.so.3 libblas.so)
cp "$W"/x/usr/include/xc*.h "$W/x/usr/include/fftw3.h" "$K/include/"
# every library a carried one needs is carried too, or is glibc / libgcc_s (on any image with Python)
for f in "$K"/lib/*.so.*; do
  for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $n in libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|ld-linux-x86-64.so.2|libgcc_s.so.1) ;;
      *) [ -e "$K/lib/$n" ] || { echo "$(basename "$f") needs $n, which is not carried" >&2; exit 1; } ;;
    esac
  done
done

# 2. PyPI: the GPAW sdist, gpaw-data (for its setups) and ase, pinned by hash
cat > "$W/req.txt" <<'REQ'
gpaw==26.7.0 --hash=sha256:1509af00cfcd032bbbce197a5b3e37edb82bf458db5e200f6a105ec74efbca15
gpaw-data==1.2.1 --hash=sha256:5ded7ef43ca9b53332ad2fe9d7951dd36e6fba221662227fd24abf748b904c27
ase==3.29.0 --hash=sha256:7b9dd103f007810339c24acfee2f6b677c0c48443b21d3c98e52959246cf4ebf
REQ
"$PY" -m pip download -q --no-deps --require-hashes --no-binary gpaw -r "$W/req.txt" -d "$W/pip"
gunzip -c "$W/pip/gpaw-26.7.0.tar.gz" > "$K/gpaw-26.7.0.tar"
"$PY" - "$W/pip/gpaw_data-1.2.1-py3-none-any.whl" "$K/setups" <<'PYX'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for el in ("Li", "Y", "Cl", "Br"):
    with open(f"{sys.argv[2]}/{el}.PBE.gz", "wb") as f:
        f.write(z.read(f"gpaw_data/setups/{el}.PBE.gz"))
PYX
# ase, the one package the labelling needs beyond the device image (KINDS.md's list): its wheel re-zipped
# uncompressed (same files and RECORD), so that xz packs it to 1.8 MB instead of the wheel's 3.0
mkdir -p "$K/wheels"
"$PY" - "$W/pip/ase-3.29.0-py3-none-any.whl" "$K/wheels/ase-3.29.0-py3-none-any.whl" <<'PYX'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        data = src.read(info)
        info.compress_type = zipfile.ZIP_STORED
        dst.writestr(info, data)
PYX

# 3. pack
tar -C "$K" --owner=0 --group=0 --sort=name -cf - lib include setups wheels gpaw-26.7.0.tar | nice -n 10 xz -9e -T1 \
  > "$DEST.new/dftkit.tar.xz"
git -C "$ROOT" archive "$REF" lycb_jax | tar -x -C "$DEST.new/src"
{ echo "made $(date -u +%FT%TZ) by make_dftpack.sh; lycb_jax from $(git -C "$ROOT" rev-parse "$REF")"
  for f in "$W"/deb/*.deb; do dpkg-deb -f "$f" Package Version | paste -sd' '; done
  (cd "$W/pip" && sha256sum ./*); (cd "$K" && sha256sum lib/*.so.* setups/*)
  echo "newest glibc symbol needed: $(for f in "$K"/lib/*.so.*; do objdump -T "$f"; done | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
} > "$DEST.new/MANIFEST.txt"
rm -rf "$DEST"; mv "$DEST.new" "$DEST"
git check-ignore -q .dftpack/x || echo "/.dftpack/" >> "$(git rev-parse --git-path info/exclude)"
du -sh "$DEST"/*; du -sh "$DEST"
