"""Active learning pieces: farthest-point sampling against a brute-force reference and the k-center
bound, k-point grids against ASE, the GPAW labeller against GPAW run directly, the label cache."""

import itertools

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import kptdensity2monkhorstpack
from scipy.spatial.distance import cdist

from lycb_jax.active import farthest_point_sampling, gpaw_labeller, kpoint_grid, label_structures, position_features


def test_labellers_import_no_jax():
    """The DFT labelling kit (benchmarks/active_learning/device_label.sh) has ase and numpy, not JAX."""
    import subprocess
    import sys

    code = ("import sys, lycb_jax.active.labellers; "
            "heavy = sorted(m for m in ('jax', 'flax', 'jax_md') if m in sys.modules); print(heavy); sys.exit(bool(heavy))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def brute_force_fps(x, n, first=0):
    chosen = [first]
    while len(chosen) < n:
        d = cdist(x, x[chosen], "sqeuclidean").min(axis=1)  # distance of every point to the chosen set
        chosen.append(int(np.flatnonzero(d == d.max())[0]))
    return chosen


def test_fps_equals_brute_force_and_is_a_2_approximation():
    rng = np.random.default_rng(0)
    for trial in range(5):
        x = rng.normal(size=(12, 4))
        n = 4
        fps = farthest_point_sampling(x, n, first=trial % 12)
        assert fps.tolist() == brute_force_fps(x, n, trial % 12)
        assert len(set(fps.tolist())) == n
        # greedy max-min is a 2-approximation of the best k-center spread: its smallest pairwise distance
        # is at least half the best smallest pairwise distance over all n-subsets (Gonzalez 1985)
        def spread(idx):
            d = cdist(x[list(idx)], x[list(idx)])
            return d[np.triu_indices(len(idx), 1)].min()
        best = max(spread(c) for c in itertools.combinations(range(len(x)), n))
        assert spread(fps) >= 0.5 * best - 1e-12


def test_fps_avoids_already_selected_structures():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [10.0]])
    assert farthest_point_sampling(x, 2, selected=np.array([[10.0]])).tolist() == [0, 2]


def test_position_features_distance_is_mean_squared_displacement():
    rng = np.random.default_rng(1)
    cell = np.diag([8.0, 9.0, 10.0])
    a = rng.uniform(0, 8, (6, 3))
    b = a + rng.normal(0, 0.1, (6, 3))
    shift = np.array([0.3, -0.2, 0.1])  # a rigid drift is not a difference
    f = position_features(np.stack([a, b + shift]), np.stack([cell, cell]))
    d = (b - b.mean(0)) - (a - a.mean(0))
    assert np.isclose(np.sum((f[0] - f[1]) ** 2), np.mean(np.sum(d**2, -1)))
    # a uniformly strained copy compares equal to its unstrained frame
    f2 = position_features(np.stack([a, a * 1.03]), np.stack([cell, cell * 1.03]))
    assert np.allclose(f2[0], f2[1])


@pytest.mark.parametrize("density", [1.0, 1.5, 3.0])
def test_kpoint_grid_equals_ase_density_rule(density):
    for atoms in (bulk("LiCl", "rocksalt", a=5.13), bulk("Y", "hcp", a=3.65, c=5.73) * (2, 1, 1)):
        assert kpoint_grid(atoms.cell[:], density) == tuple(kptdensity2monkhorstpack(atoms, density, even=False))


@pytest.mark.slow
def test_gpaw_labeller_equals_gpaw_run_directly(tmp_path):
    from gpaw import GPAW, PW

    atoms = bulk("LiCl", "rocksalt", a=5.13)
    atoms.rattle(0.05, seed=1)
    labeller = gpaw_labeller(ecut_eV=250.0, kpoint_density=1.0)
    (got,) = label_structures([atoms], labeller, tmp_path / "labels.db", progress=False)
    ref = atoms.copy()
    ref.calc = GPAW(mode=PW(250.0), xc="PBE", kpts={"size": kpoint_grid(atoms.cell[:], 1.0), "gamma": True},
                    occupations={"name": "fermi-dirac", "width": 0.05}, symmetry="off", txt=None)
    assert np.isclose(got.get_potential_energy(), ref.get_potential_energy(), rtol=0, atol=1e-8)
    assert np.allclose(got.get_forces(), ref.get_forces(), atol=1e-8)
    assert np.allclose(got.get_stress(), ref.get_stress(), atol=1e-9)
    assert np.abs(got.get_forces()).max() > 1e-3  # rattled: the forces are not trivially zero
    # a second call reads the cache instead of recomputing
    import time
    t0 = time.perf_counter()
    (again,) = label_structures([atoms], labeller, tmp_path / "labels.db", progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert again.get_potential_energy() == got.get_potential_energy()
    assert np.array_equal(again.get_stress(), got.get_stress()) and again.get_stress().shape == (6,)
    from ase.io import read, write
    write(tmp_path / "labelled.extxyz", [again])  # the fine-tuning reader gets the same labels back
    back = read(tmp_path / "labelled.extxyz")
    assert np.allclose(back.get_stress(), got.get_stress()) and np.allclose(back.get_forces(), got.get_forces())
    # other settings are another cache entry, never mixed
    other = gpaw_labeller(ecut_eV=300.0, kpoint_density=1.0)
    from lycb_jax.active import LabelCache
    assert LabelCache(tmp_path / "labels.db").get(atoms, other.settings) is None


def test_a_label_from_the_cache_writes_the_same_extxyz_as_a_fresh_one(tmp_path):
    """A resumed active-learning run rebuilds its labelled file from the cache: the bytes must equal the
    fresh labels' (extxyz reads integers such as md_frame back as numpy.int64, which the cache must keep)."""
    import io

    from ase.io import read, write
    from potentials import argon, ase_lj_labeller

    atoms = argon(1)
    atoms.info.update(parent="Ar_a", T_K=80.0, md_frame=3)
    write(tmp_path / "cand.extxyz", [atoms])

    def as_text(frames):
        out = io.StringIO()
        write(out, frames, format="extxyz")
        return out.getvalue()

    labeller = ase_lj_labeller()
    fresh = as_text(label_structures(read(tmp_path / "cand.extxyz", ":"), labeller, tmp_path / "labels.db", progress=False))
    cached = as_text(label_structures(read(tmp_path / "cand.extxyz", ":"), labeller, tmp_path / "labels.db", progress=False))
    assert "md_frame=3" in fresh and cached == fresh
