"""lycb_jax: CHGNet in JAX/Flax, batched MD and Li-ion transport analysis for halide electrolytes."""

from lycb_jax.checkpoint import load_model
from lycb_jax.predict import Prediction, predict

__all__ = ["load_model", "predict", "Prediction", "Calculator"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "Calculator":
        from lycb_jax.calculator import Calculator

        return Calculator
    raise AttributeError(name)
