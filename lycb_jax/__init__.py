"""lycb_jax: CHGNet in JAX/Flax, batched MD and Li-ion transport analysis for halide electrolytes.

Importing changes no JAX setting: the matrix-product precision of lycb_jax's programs is
:func:`lycb_jax.runtime.precision.set_matmul_precision` (default "highest", full float32), and the persistent
compilation cache is :func:`enable_compilation_cache` (the command line turns it on).
"""

import importlib

__version__ = "0.1.0"
# name -> module; imported on first use, so that `import lycb_jax` (and `lycb-jax --help`) stays fast
_LAZY = {"load_model": "lycb_jax.models", "Prediction": "lycb_jax.models.predict", "predict": "lycb_jax.models.predict",
         "enable_compilation_cache": "lycb_jax.runtime.cache", "matmul_precision": "lycb_jax.runtime.precision",
         "set_matmul_precision": "lycb_jax.runtime.precision", "Calculator": "lycb_jax.models.calculator"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:  # subpackages: lycb_jax.analysis, lycb_jax.md, ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'lycb_jax' has no attribute {name!r}") from None

