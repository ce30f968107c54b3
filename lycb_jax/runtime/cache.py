"""JAX's persistent compilation cache for lycb_jax's programs (chosen explicitly; nothing runs at import)."""

from __future__ import annotations

import os

import jax


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
