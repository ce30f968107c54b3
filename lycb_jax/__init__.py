"""lycb_jax: CHGNet in JAX/Flax, batched MD and Li-ion transport analysis for halide electrolytes."""

import os

import jax

# float32 matrix products in full float32 precision: on NVIDIA GPUs JAX's default may use TF32
# (10-bit mantissa), which moves positions (shift @ cell) by ~1e-3 A and forces by ~1e-3 relative.
# Set JAX_DEFAULT_MATMUL_PRECISION yourself to choose otherwise.
if "JAX_DEFAULT_MATMUL_PRECISION" not in os.environ:
    jax.config.update("jax_default_matmul_precision", "highest")

from lycb_jax.checkpoint import load_model  # noqa: E402
from lycb_jax.predict import Prediction, predict  # noqa: E402

__all__ = ["load_model", "predict", "Prediction", "Calculator"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "Calculator":
        from lycb_jax.calculator import Calculator

        return Calculator
    raise AttributeError(name)
