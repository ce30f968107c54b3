"""Process-wide machinery, chosen explicitly (nothing here runs at import): the matrix-product precision
(:mod:`.precision`), JAX's persistent compilation cache (:mod:`.cache`), replicas over the local devices
(:mod:`.devices`), runs over several processes (:mod:`.distributed`), and lazy package attributes
(:mod:`.lazy`), so that importing a package (and ``lycb-jax --help``) does not start JAX."""

from lycb_jax.runtime import lazy

_LAZY = {name: "lycb_jax.runtime.precision" for name in ("PRECISIONS", "chosen_matmul_precision", "matmul_precision",
                                                         "precision_scope", "set_matmul_precision", "with_precision")}
_LAZY["enable_compilation_cache"] = "lycb_jax.runtime.cache"
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy.attributes(__name__, _LAZY)
