"""Process-wide settings of lycb_jax: the matrix-product precision of its programs and JAX's
persistent compilation cache. Nothing here runs at import; each setting is chosen explicitly."""

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


def enable_compilation_cache(path: str | None = None, max_size_gb: float = 4.0) -> str:
    """Keep compiled XLA programs on disk (JAX's persistent compilation cache), so that a later
    process with the same shapes (an MD study, a fine-tuning run of the next active-learning
    round) loads them instead of compiling again. Default folder: $LYCB_JAX_CACHE, else
    ~/.cache/lycb_jax/xla. Beyond ``max_size_gb`` the least recently used programs are dropped.
    The ``lycb-jax`` commands call this unless LYCB_JAX_CACHE=off."""
    path = path or os.environ.get("LYCB_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lycb_jax", "xla")
    os.makedirs(path, exist_ok=True)
    _add_missing_atimes(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_compilation_cache_max_size", int(max_size_gb * 2**30))
    return path


def _add_missing_atimes(path: str) -> None:
    """Give every cached program without an access-time file one (its modification time).

    Entries written with no size cap (JAX's default, or a user's own cache settings) have none,
    and JAX's size-capped cache then fails every later write (FileNotFoundError while choosing
    what to evict), so nothing new would be cached."""
    for name in os.listdir(path):
        if name.endswith("-cache"):
            atime = os.path.join(path, name[: -len("-cache")] + "-atime")
            if not os.path.exists(atime):
                with open(atime, "wb") as fh:
                    fh.write(os.stat(os.path.join(path, name)).st_mtime_ns.to_bytes(8, "little"))
