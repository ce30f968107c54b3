"""The matrix-product precision of lycb_jax's programs, a process-wide setting. Nothing here runs at
import; the precision is chosen explicitly."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import jax

PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32",
              "TF32_TF32_F32_X3", "BF16_BF16_F32_X3", "BF16_BF16_F32_X6", "ANY_F32_F32")
_precision: str | None = None


def set_matmul_precision(name: str) -> None:
    """Matrix-product precision of every lycb_jax program traced from now on (prediction, MD,
    relaxation, fine-tuning). Default ``"highest"``: full float32, except fine-tuning on a GPU, which
    uses three-pass TF32 (float32 accuracy) unless a precision was chosen here or in the environment.
    On NVIDIA GPUs JAX's own default may use TF32 (10-bit mantissa), which moves positions
    (shift @ cell) by ~1e-3 A and forces by ~1e-3 relative. Also settable as
    $LYCB_JAX_MATMUL_PRECISION. Programs already compiled keep the precision they were traced with."""
    global _precision
    if name not in PRECISIONS:
        raise ValueError(f"unknown matmul precision {name!r}; one of {PRECISIONS}")
    _precision = name


def chosen_matmul_precision() -> str | None:
    """The precision the user chose (:func:`set_matmul_precision` or $LYCB_JAX_MATMUL_PRECISION), else None."""
    return _precision or os.environ.get("LYCB_JAX_MATMUL_PRECISION") or None


def matmul_precision() -> str:
    """The precision set by :func:`set_matmul_precision`, else $LYCB_JAX_MATMUL_PRECISION, else "highest"."""
    return chosen_matmul_precision() or "highest"


def precision_scope(name: str | None = None) -> contextlib.AbstractContextManager:
    """Context in which traced matrix products use ``name`` (default :func:`matmul_precision`)."""
    return jax.default_matmul_precision(name or matmul_precision())


def with_precision(fn):
    """Decorate a function that jit traces: its body traces under :func:`precision_scope`, and without
    JAX's "float64 ... truncated to float32" warning, which jax-md's high-precision sums raise on every
    trace when x64 is off (float32 sums are what lycb_jax runs on device by design)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with precision_scope(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64", category=UserWarning)
            return fn(*args, **kwargs)

    return wrapped
