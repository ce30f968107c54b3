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


@pytest.mark.slow
def test_predict_groups_within_budgets_and_results_do_not_depend_on_the_company(model, monkeypatch):
    """A dense metal among halides gets its own call (it would otherwise pad every halide to its ~200 angles per
    atom: 3.6 GB of XLA temporaries for the 27 small cells of the parity set, now 1.7 GB); every call stays
    within both budgets, each structure is predicted once, and its result equals the one it gets alone."""
    from lycb_jax.graph import capacity as cap
    from lycb_jax.models import predict as predict_module

    halides = [_nacl().repeat((1, 1, k)) for k in (1, 2)] + [_nacl()]
    metal = bulk("Ni", "fcc", 3.52, cubic=True).repeat((2, 1, 1))  # 8 atoms, 12 bonds within 3 A: 132 angles/atom
    structures = [halides[0], metal, halides[1], halides[2]]
    calls = []
    real = predict_module.predict_batch
    monkeypatch.setattr(predict_module, "predict_batch", lambda m, b: calls.append(b) or real(m, b))
    together = lycb_jax.predict(model, structures, max_angles_per_batch=4096, max_edges_per_batch=4096)
    assert sorted(sum((list(b.counts) for b in calls), [])) == sorted(len(s) for s in structures)
    for b in calls:
        padded = len(b.species)  # the batch is padded to a power of two
        assert padded * b.species.shape[1] <= 8192 and padded * max(b.capacity.angles, b.capacity.edges) <= 4096, b.capacity
    metal_calls = [b for b in calls if 28 in b.species]
    assert len(metal_calls) == 1 and len(metal_calls[0].counts) == 1  # the metal alone
    assert (cap.count_edges(metal.positions, metal.cell, cutoff=6.0, bond_cutoff=3.0)[1]
            > 4 * cap.count_edges(_nacl().positions, _nacl().cell, cutoff=6.0, bond_cutoff=3.0)[1])
    for s, p in zip(structures, together):
        alone = lycb_jax.predict(model, [s])[0]
        assert abs(p.energy_per_atom - alone.energy_per_atom) < 1e-6
        np.testing.assert_allclose(p.forces, alone.forces, atol=2e-5)
