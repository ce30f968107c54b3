"""Bad input is refused with a message that names the problem."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import lycb_jax


def _nacl():
    return bulk("NaCl", "rocksalt", 5.6, cubic=True)


@pytest.mark.parametrize("make, message", [
    (lambda: Atoms(numbers=[95, 17], positions=[[0, 0, 0], [2.5, 2.5, 2.5]], cell=np.eye(3) * 5, pbc=True),
     "unknown or dummy species 'Am'"),
    (lambda: Atoms(cell=np.eye(3) * 5, pbc=True), "empty structure"),
    (lambda: Atoms("LiCl", positions=[[0, 0, 0], [0.1, 0, 0]], cell=np.eye(3) * 5, pbc=True), "overlapping atoms"),
    (lambda: Atoms("LiCl", positions=[[0, 0, 0], [np.nan, 0, 0]], cell=np.eye(3) * 5, pbc=True), "NaN"),
    (lambda: Atoms("LiCl", positions=[[0, 0, 0], [1, 1, 0]], cell=[[5, 0, 0], [0, 5, 0], [5, 5, 0]], pbc=True),
     "singular cell"),
    (lambda: Atoms("LiCl", positions=[[0, 0, 0], [2, 2, 2]], cell=np.eye(3) * 5, pbc=False), "periodic"),
])
def test_bad_input_is_refused(model, make, message):
    with pytest.raises(ValueError, match=message):
        lycb_jax.predict(model, [make()])


def test_partial_occupancy_is_refused(model):
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(5), [{"Li": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="partially occupied sites"):
        lycb_jax.predict(model, [s])


def test_unknown_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="no checkpoint 'chgnet-9.9'"):
        lycb_jax.load_model("chgnet-9.9")


def test_good_input_passes(model):
    p = lycb_jax.predict(model, [_nacl()])[0]
    assert np.isfinite(p.energy) and p.forces.shape == (8, 3)


def test_cell_smaller_than_the_cutoff_is_handled_not_refused(model):
    """A 1-atom bcc Li cell (lattice vectors 3 A, half the 6 A atom cutoff) needs several periodic images:
    the capacity's image range covers them, so its energy per atom and stress equal the 2x2x2 supercell's."""
    one = bulk("Li", "bcc", 3.44)
    p1, p8 = lycb_jax.predict(model, [one, one.repeat((2, 2, 2))])
    assert abs(p1.energy_per_atom - p8.energy_per_atom) < 1e-5
    np.testing.assert_allclose(p1.stress, p8.stress, atol=1e-4)
