"""Sharding the replica axis over 4 (forced host) devices equals the unsharded run (issue 7, CPU part)."""

import os
import pytest
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, "TESTS")
    import jax, jax.numpy as jnp, numpy as np
    assert len(jax.devices()) == 4, jax.devices()
    from ase import units
    import lycb_jax.md.chunk as lycb_md
    from lycb_jax.md import (ChunkInputs, ChunkSpec, IntegratorSettings, default_capacity, init_replica, masses_of,
                             run_chunk_checked)
    import dataclasses
    from potentials import argon, lj_model
    model = lj_model()
    atoms = argon(2)
    integ = IntegratorSettings("nvt", dt_fs=2.0)
    cap = default_capacity(atoms.positions, atoms.cell[:], skin=0.5, cutoffs=model.cutoffs)
    cap = dataclasses.replace(cap, edges=cap.edges * 2, angles=8192, short_per_atom=32, list_edges=cap.list_edges * 2)
    programs = []  # compiled programs of the sharded chunk after each replica count
    for n_rep in (3, 4, 6):
        temps = np.linspace(40, 120, n_rep)
        species = jnp.asarray(np.tile(atoms.numbers, (n_rep, 1)), jnp.int32)
        pos = jnp.asarray(np.tile(atoms.positions, (n_rep, 1, 1)), jnp.float32)
        cell = jnp.asarray(np.tile(atoms.cell[:], (n_rep, 1, 1)), jnp.float32)
        masses = jnp.asarray(np.tile(masses_of(atoms.numbers), (n_rep, 1)))
        kT = jnp.asarray(temps * units.kB, jnp.float32)
        keys = jax.random.split(jax.random.PRNGKey(n_rep), n_rep)
        states = jax.vmap(lambda s, x, c, m, t, k: init_replica(model, s, x, cell=c, masses=m, kT=t, key=k,
                                                                settings=integ, capacity=cap)[0])(
            species, pos, cell, masses, kT, keys)
        alive = np.ones(n_rep, bool)
        inputs, spec = ChunkInputs(species, cell, states, kT, kT, alive), ChunkSpec(integ, cap, n_frames=4, stride=10)
        (s1, f1, a1, ok1, _), _ = run_chunk_checked(model, inputs, spec, mesh=None)
        (s4, f4, a4, ok4, _), _ = run_chunk_checked(model, inputs, spec, mesh="auto")
        assert f4.positions.shape[0] == n_rep and bool(ok4.all()) and bool(a4.all())
        assert lycb_md._sharded_run_chunk.cache_info().currsize == 1  # one sharded function for the one mesh
        programs.append(lycb_md._sharded_run_chunk(lycb_md.replica_mesh())._cache_size())
        np.testing.assert_allclose(np.asarray(f4.positions), np.asarray(f1.positions), atol=1e-5)
        np.testing.assert_allclose(np.asarray(f4.temperature), np.asarray(f1.temperature), rtol=1e-5)
        print("replicas", n_rep, "sharded == unsharded")
    # the shard_map program ran (compiled on first use) and was reused: 3 and 4 replicas both pad to 4 over
    # the 4 devices (one program, no recompilation in the second loop); 6 pad to 8 (a second program)
    assert programs == [1, 1, 2], programs
    print("sharded programs", programs)

    # the MSD / diffusion analysis with its replica axis sharded over the 4 devices
    from lycb_jax.analysis import diffusion_coefficient
    rng = np.random.default_rng(0)
    for n_rep in (3, 6):
        steps = rng.normal(0, 0.05, (n_rep, 400, 12, 3)) * np.arange(1, n_rep + 1)[:, None, None, None]
        pos = np.cumsum(steps, axis=1)
        mobile = np.arange(12) < 8
        kw = dict(mobile=mobile, framework=~mobile, temperature=np.linspace(500, 800, n_rep), volume_A3=1000.0)
        one = diffusion_coefficient(pos, 2.0, mesh=None, **kw)
        four = diffusion_coefficient(pos, 2.0, mesh="auto", **kw)
        assert len(four) == n_rep
        for a, b in zip(one, four):
            np.testing.assert_allclose(b.msd, a.msd, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose([b.D, b.D_err, b.D_collective, b.sigma], [a.D, a.D_err, a.D_collective, a.sigma], rtol=1e-5)
        print("msd", n_rep, "sharded == unsharded")
''')


@pytest.mark.slow
def test_sharded_replicas_equal_unsharded():
    tests = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", SCRIPT.replace("TESTS", tests)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for n in (3, 4, 6):
        assert f"replicas {n} sharded == unsharded" in res.stdout
    assert "sharded programs [1, 1, 2]" in res.stdout
    for n in (3, 6):
        assert f"msd {n} sharded == unsharded" in res.stdout
