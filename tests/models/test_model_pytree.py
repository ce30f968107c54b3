"""``Model`` is a pytree (parameters as leaves; module, name and metadata static): it round-trips through
``tree_flatten``, crosses ``jit``, ``vmap`` and ``grad`` as it is, and an equal Model with new parameter
arrays reuses the compiled program; lycb_jax's programs take ``Model.bare()``, so a renamed model reuses them too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lycb_jax.graph import build_graph
from lycb_jax.graph.batch import pack
from lycb_jax.io.structures import to_system
from lycb_jax.models import Model, potential
from potentials import EPS, argon, lj_model

METADATA = {"architecture": "lj-test", "provenance": {"source": "tests", "steps": [1, 2]}, "functional": "pbe"}


def _inputs():
    """Species, positions, cell, mask and graph capacity of 32-atom rattled fcc argon."""
    b = pack([to_system(argon(2))], cutoffs=lj_model().cutoffs)
    return (jnp.asarray(b.species[0]), jnp.asarray(b.positions[0], jnp.float32), jnp.asarray(b.cells[0], jnp.float32),
            jnp.asarray(b.atom_mask[0]), b.capacity)


def _model(epsilon=EPS, name="lj-argon", metadata=METADATA) -> Model:
    return Model(lj_model().module, {"epsilon": jnp.float32(epsilon)}, name, dict(metadata))


def test_round_trip_through_flatten_and_unflatten():
    model = _model()
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert leaves == [model.params["epsilon"]]  # the parameters are the only leaves
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (back.module, back.name, back.metadata) == (model.module, model.name, model.metadata)
    assert back.params["epsilon"] is model.params["epsilon"]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(model)[0]]
    assert paths == [".params['epsilon']"]
    # static data compares by value: a model rebuilt with equal (not identical) metadata has the same treedef
    assert jax.tree_util.tree_structure(_model(0.02)) == treedef
    assert hash(jax.tree_util.tree_structure(_model(0.02))) == hash(treedef)
    assert jax.tree_util.tree_structure(_model(metadata={**METADATA, "functional": "r2scan"})) != treedef
    assert jax.tree_util.tree_structure(_model(name="other")) != treedef


def test_jit_vmap_grad_take_the_model_as_it_is():
    species, pos, cell, mask, capacity = _inputs()
    graph = build_graph(pos, cell, mask, capacity)
    traces = []

    def energy(m: Model, x):
        traces.append(1)  # runs once per trace
        return potential(m.module, m.params, species, x, cell, mask, graph)[0]

    model = _model()
    eager = float(potential(model.module, model.params, species, pos, cell, mask, graph)[0])
    assert eager < 0  # bound fcc argon near its equilibrium spacing
    jitted = jax.jit(energy)
    assert float(jitted(model, pos)) == pytest.approx(eager, rel=1e-6)
    n_traces = len(traces)
    # an equal model (same module, name and metadata; new parameter arrays of the same shapes): no retrace.
    # The LJ energy is linear in epsilon, so the reference is eager * 0.02 / EPS.
    assert float(jitted(_model(0.02), pos)) == pytest.approx(eager * 0.02 / EPS, rel=1e-5)
    assert len(traces) == n_traces
    # another name is other static data: a new trace (lycb_jax's programs therefore take model.bare())
    jitted(_model(name="other"), pos)
    assert len(traces) == n_traces + 1

    # grad with respect to the whole model: a Model of parameter gradients, dE/d(epsilon) = E / epsilon
    grad = jax.grad(energy)(model, pos)
    assert isinstance(grad, Model) and grad.name == model.name
    assert float(grad.params["epsilon"]) == pytest.approx(eager / EPS, rel=1e-5)

    # vmap over a stack of parameters
    stacked = Model(model.module, {"epsilon": jnp.asarray([EPS, 2 * EPS], jnp.float32)}, model.name, METADATA)
    np.testing.assert_allclose(np.asarray(jax.vmap(energy, in_axes=(0, None))(stacked, pos)), [eager, 2 * eager],
                               rtol=1e-5)


def test_a_reloaded_checkpoint_has_the_same_treedef():
    """Two loads of one checkpoint (equal manifests, distinct dicts) share compiled programs."""
    import lycb_jax

    a, b = lycb_jax.load_model("chgnet-0.3.0"), lycb_jax.load_model("chgnet-0.3.0")
    assert a.metadata is not b.metadata and a.metadata
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)


def test_predict_takes_the_bare_model_so_a_fine_tuned_one_reuses_its_program():
    """bare() keeps module and parameters and drops name and manifest; predict of a model that differs only in
    those and in its parameter values (a fine-tuned one) reuses the program compiled for its parent (MD:
    tests/md/test_md.py; relax: benchmarks/bench_model_retrace.py)."""
    from lycb_jax.models.predict import _predict_batched, predict

    parent, tuned = _model(), _model(0.02, name="lj-argon-ft", metadata={**METADATA, "parent_model": "lj-argon"})
    bare = tuned.bare()
    assert (bare.module, bare.params, bare.name, bare.metadata) == (tuned.module, tuned.params, "", {})
    assert jax.tree_util.tree_structure(bare) == jax.tree_util.tree_structure(parent.bare())
    atoms = argon(2)
    e_parent = predict(parent, [atoms])[0].energy
    n_programs = _predict_batched._cache_size()
    assert predict(tuned, [atoms])[0].energy == pytest.approx(e_parent * 0.02 / EPS, rel=1e-5)
    assert _predict_batched._cache_size() == n_programs
