"""Ordered 30-atom LYC (the shipped C2 model on the experimental P-3m1 cell) and an ordered 20-atom
LYB (Li3ScCl6-type ordering of the C2/m Schlem 2021 cell: Y 2a, Li 4h + 2d, Br 8j + 4i)."""
import warnings
from pymatgen.core import Lattice, Structure
warnings.simplefilter("ignore")
lyc = Structure.from_file("../../lycb_jax/data/Li3YCl6_P-3m1_ordered30.cif")
lat = Lattice.from_parameters(6.9188, 11.9742, 6.8635, 90, 109.78, 90)
lyb = Structure.from_spacegroup("C2/m", lat, ["Y", "Li", "Li", "Br", "Br"],
                                [[0, 0, 0], [0, 0.21498, 0.5], [0, 0.5, 0.5], [0.23668, 0.34473, 0.76033],
                                 [0.24683, 0.5, 0.23872]])
for name, s in (("LYC30", lyc), ("LYB20", lyb)):
    d = s.distance_matrix + 100 * __import__("numpy").eye(len(s))
    print(name, s.composition, len(s), round(s.volume / len(s), 3), s.get_space_group_info(), "dmin", d.min().round(3))
    s.to(filename=f"{name}.cif")
