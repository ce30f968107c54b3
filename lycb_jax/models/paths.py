"""Where the named checkpoints live (no JAX import, so the command line can list them at once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "chgnet-0.3.0"  # the checkpoint every command and function takes unless told otherwise
# the MD commands' default (md, study, sweep): fine-tuned on LYCB PBE labels plus D3(BJ), whose NpT volume
# matches experiment within 3% at 300 K (docs/results.md); without D3 the cells are 8-28% too large
DEFAULT_MD_MODEL = "chgnet-0.3.0-lycb-pbe-d3"


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


BASE_KEY = "base_checkpoint"  # manifest key of a checkpoint that is another one plus a dispersion term


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoint folders in :func:`checkpoint_dir`: those with a ``params.msgpack``, and
    those whose manifest names a ``base_checkpoint`` and a ``dispersion`` (:func:`dispersion_alias`)."""
    return sorted(p.name for p in checkpoint_dir().glob("*")
                  if (p / "params.msgpack").exists() or dispersion_alias(p) is not None)


def dispersion_alias(path: Path) -> dict | None:
    """The manifest of folder ``path`` if it is a dispersion checkpoint (no weights of its own: a
    ``base_checkpoint`` plus a ``dispersion`` added at inference), else None."""
    import json

    if (path / "params.msgpack").exists() or not (path / "manifest.json").is_file():
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and BASE_KEY in manifest and "dispersion" in manifest else None
