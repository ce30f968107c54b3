# GPAW build settings for a plain Debian machine (serial, FFTW, libxc, OpenBLAS): GPAW_CONFIG=.ci/gpaw_siteconfig.py
compiler = "g++"
mpi = False
fftw = True
scalapack = False
libraries = ["xc", "fftw3", "blas"]
