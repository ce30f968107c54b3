"""Where the named checkpoints live (no JAX import, so the command line can list them at once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "chgnet-0.3.0"  # the checkpoint every command and function takes unless told otherwise


def checkpoint_dir() -> Path:
    """Folder of named checkpoints: $LYCB_JAX_CHECKPOINTS, else ``checkpoints/`` of the source tree
    (a checkout or an editable install), else the copy an installed wheel carries
    (``<prefix>/share/lycb_jax/checkpoints``)."""
    env = os.environ.get("LYCB_JAX_CHECKPOINTS")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[2] / "checkpoints"
    installed = Path(sys.prefix) / "share" / "lycb_jax" / "checkpoints"
    return source if source.is_dir() or not installed.is_dir() else installed


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoint folders in :func:`checkpoint_dir` (those with a ``params.msgpack``)."""
    return sorted(p.name for p in checkpoint_dir().glob("*") if (p / "params.msgpack").exists())
