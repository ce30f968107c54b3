"""Physical constants and unit conversions, in one place (ASE's CODATA values).

The project's units: energy eV, distance Angstrom, time fs, mass amu, temperature K,
stress GPa (ASE sign: positive = tensile), pressure bar or GPa (named in each variable).
"""

from ase import units as _ase

KB = _ase.kB  # Boltzmann constant, eV/K
E_CHARGE = _ase._e  # elementary charge, C (the value that defines ASE's eV)
KB_J = KB * E_CHARGE  # Boltzmann constant, J/K
EV_A3_TO_GPA = 160.21766208  # 1 eV/A^3 in GPa (the constant CHGNet uses; = 1 / ase.units.GPa)
FS = _ase.fs  # 1 fs in the time unit of (eV, Angstrom, amu), which jax-md integrates in
BAR = _ase.bar  # 1 bar in eV/A^3
GPA_TO_BAR = 1e4  # 1 GPa in bar
