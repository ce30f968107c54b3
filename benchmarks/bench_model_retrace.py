"""Programs compiled per model (issue 30): MD (init_batch, run_chunk), predict and relax with the pretrained
CHGNet, then with the fine-tuned chgnet-0.3.0-lycb-pbe (the same module and parameter shapes; another name and
manifest). Prints each call's wall time and the jit cache sizes after it: equal sizes after the second model
mean its calls reused the first model's programs.
  python benchmarks/bench_model_retrace.py [--disk-cache]   (--disk-cache: JAX's persistent cache on, as in tests)"""

import sys
import tempfile
import time
from importlib import resources

from ase.io import read

import lycb_jax
from lycb_jax.md import Protocol, Simulation, chunk, integrators
from lycb_jax.models import predict as predict_module
from lycb_jax.structures import relaxation


def programs() -> dict[str, int]:
    jitted = dict(init_batch=integrators.init_batch, run_chunk=chunk.run_chunk,
                  predict=predict_module._predict_batched, relax=relaxation._fire_loop)
    return {k: f._cache_size() for k, f in jitted.items()}


def main():
    if "--disk-cache" in sys.argv:
        from lycb_jax.runtime.cache import enable_compilation_cache

        enable_compilation_cache(tempfile.mkdtemp(prefix="retrace_xla_"))
    atoms = read(str(resources.files("lycb_jax") / "data" / "Li3YCl6_P-3m1_ordered30.cif"))
    protocol = Protocol(temperatures_K=(300.0, 400.0), dt_fs=2.0, start_K=300.0, heat_ps=0.02, nvt_ps=0.0,
                        production_ps=0.02, save_every_fs=4.0, chunk_ps=0.02, checkpoint_every_ps=0.02)
    for name in ("chgnet-0.3.0", "chgnet-0.3.0-lycb-pbe"):
        model = lycb_jax.load_model(name)
        times = {}
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            Simulation(model, atoms, protocol, out, progress=False).run()
            times["md"] = time.perf_counter() - t
        t = time.perf_counter()
        lycb_jax.predict(model, [atoms])
        times["predict"] = time.perf_counter() - t
        t = time.perf_counter()
        relaxation.relax(model, [atoms], fmax=0.05, max_steps=5, progress=False)
        times["relax"] = time.perf_counter() - t
        print(f"{name:24s}", "  ".join(f"{k} {v:5.1f} s" for k, v in times.items()), "| programs", programs(),
              flush=True)


if __name__ == "__main__":
    main()
