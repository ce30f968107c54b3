"""lycb_jax.enable_compilation_cache: compiled programs land on disk and a second process loads them."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys, jax, jax.numpy as jnp, lycb_jax
from jax._src import monitoring
path = lycb_jax.enable_compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this small program
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))
print("hits", len(hits) > 0)
"""


@pytest.mark.parametrize("legacy_entry", [False, True])
def test_second_process_loads_compiled_program(tmp_path, legacy_entry):
    """Also when the folder holds an entry written without a size cap (no access-time file),
    which makes JAX's size-capped cache fail every write unless lycb_jax repairs the folder."""
    if legacy_entry:
        (tmp_path / "xla").mkdir()
        (tmp_path / "xla" / "jit_f-0123abcd-cache").write_bytes(b"written by a process with no size cap")
    run = [sys.executable, "-c", SCRIPT, str(tmp_path / "xla")]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    first = subprocess.run(run, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert any((tmp_path / "xla").iterdir()), "nothing written to the cache folder"
    second = subprocess.run(run, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "hits False" in first.stdout and "hits True" in second.stdout, (first.stdout, second.stdout)
    assert first.stdout.splitlines()[0] == second.stdout.splitlines()[0]  # same result from the loaded program
