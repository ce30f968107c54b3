"""Autodiff forces and stresses against central finite differences of the energy (float64)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lycb_jax
from lycb_jax.graph.batch import pack
from lycb_jax.io.structures import to_system
from lycb_jax.models.predict import single_point
from cells import lyc_trigonal, rattled, skewed, strained


def _energy_fn(model64, s):
    b = pack([to_system(s)], cutoffs=model64.cutoffs)
    n = len(s)
    pad = b.species.shape[1] - n
    species, mask = jnp.asarray(b.species[0]), jnp.asarray(b.atom_mask[0])

    point = jax.jit(single_point, static_argnums=(0, 6))

    def efsm(pos, cell):
        pos = np.concatenate([pos, np.repeat(pos[:1], pad, 0)])
        e, f, st, m, ov = point(model64.module, model64.params, species, jnp.asarray(pos), jnp.asarray(cell),
                                       mask, b.capacity)
        assert not bool(ov)
        return float(e), np.asarray(f)[:n], np.asarray(st)

    return efsm


@pytest.mark.parametrize("kind", ["rattled", "skewed_strained", "left_handed"])
@pytest.mark.slow
def test_forces_and_stress_equal_finite_differences(model, kind):
    s = rattled(lyc_trigonal(4), 0.15, seed=4)
    if kind == "skewed_strained":
        s = strained(skewed(lyc_trigonal(5), 0.5), 0.03)
    pos, cell = np.asarray(s.cart_coords), np.asarray(s.lattice.matrix)
    if kind == "left_handed":  # swap two lattice vectors: same crystal, det < 0
        cell = cell[[1, 0, 2]]
        assert np.linalg.det(cell) < 0
    with jax.enable_x64(True):
        m64 = dataclasses.replace(model, params=jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), model.params))
        efsm = _energy_fn(m64, s)
        e0, f, stress = efsm(pos, cell)
        h = 1e-4
        rng = np.random.default_rng(0)
        for atom in rng.choice(len(s), 4, replace=False):
            for k in range(3):
                dp = np.zeros_like(pos)
                dp[atom, k] = h
                fd = -(efsm(pos + dp, cell)[0] - efsm(pos - dp, cell)[0]) / (2 * h)
                assert abs(fd - f[atom, k]) < 1e-6 + 1e-6 * abs(fd), (atom, k, fd, f[atom, k])
        vol = abs(np.linalg.det(cell))
        for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = h / 2 if i != j else h
            d = np.eye(3) + eps
            d_m = np.eye(3) - eps
            de = efsm(pos @ d, cell @ d)[0] - efsm(pos @ d_m, cell @ d_m)[0]
            fd = de / (2 * h) / vol * 160.21766208  # GPa, symmetric strain
            assert abs(fd - stress[i, j]) < 1e-5 + 1e-5 * abs(fd), (i, j, fd, stress[i, j])
    assert np.abs(f).max() > 0.1 and np.abs(stress).max() > 0.05


def test_energy_is_invariant_to_wrapping_and_translation(model):
    s = rattled(lyc_trigonal(6), 0.1, seed=6)
    moved = s.copy()
    moved.translate_sites(list(range(len(s))), [0.3, -0.7, 1.4], frac_coords=True, to_unit_cell=False)
    a, b = lycb_jax.predict(model, [s, moved])
    assert abs(a.energy - b.energy) < 1e-4
    np.testing.assert_allclose(a.forces, b.forces, atol=2e-4)


@pytest.mark.slow
def test_batch_equals_single_calls(model):
    structs = [rattled(lyc_trigonal(k), 0.1, seed=k) for k in range(3)]
    batch = lycb_jax.predict(model, structs)
    for s, p in zip(structs, batch):
        single = lycb_jax.predict(model, [s])[0]
        assert abs(single.energy - p.energy) < 1e-4
        np.testing.assert_allclose(single.forces, p.forces, atol=1e-4)
