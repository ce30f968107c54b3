"""lycb_jax: CHGNet in JAX/Flax, batched MD and Li-ion transport analysis for halide electrolytes.

Importing changes no JAX setting: the matrix-product precision of lycb_jax's programs is
:func:`lycb_jax.runtime.set_matmul_precision` (default "highest", full float32), and the persistent
compilation cache is :func:`enable_compilation_cache` (the command line turns it on).
"""

from lycb_jax.models import load_model
from lycb_jax.predict import Prediction, predict
from lycb_jax.runtime import enable_compilation_cache, matmul_precision, set_matmul_precision

__all__ = ["Calculator", "Prediction", "enable_compilation_cache", "load_model", "matmul_precision", "predict",
           "set_matmul_precision"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "Calculator":
        from lycb_jax.calculator import Calculator

        return Calculator
    raise AttributeError(name)
