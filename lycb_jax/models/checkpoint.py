"""Checkpoints: saving and loading models by name or folder.

A checkpoint is a folder with ``params.msgpack`` (flax.serialization of the parameter pytree)
and ``manifest.json`` (architecture, its config, provenance, licence, training metadata).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import serialization

from lycb_jax.models.base import Model
from lycb_jax.models.chgnet import CHGNet, CHGNetConfig

# manifest "architecture" -> (module class, config dataclass); the module is built as cls(config_cls(**config))
# and keeps it as ``.config``. A new model registers here.
ARCHITECTURES = {"chgnet": (CHGNet, CHGNetConfig)}


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


def save_checkpoint(path: str | Path, model: Model, manifest: dict | None = None) -> Path:
    """Write ``params.msgpack`` and ``manifest.json`` into folder ``path`` (each atomically: a killed
    write leaves the previous file or none, never a truncated one)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arch = [k for k, (cls, _) in ARCHITECTURES.items() if isinstance(model.module, cls)]
    if not arch:
        raise ValueError(f"{type(model.module).__name__} is not a registered architecture ({sorted(ARCHITECTURES)}); "
                         "add it to lycb_jax.models.checkpoint.ARCHITECTURES")
    meta = dict(model.metadata)
    meta.update(manifest or {})
    meta.update(config=dataclasses.asdict(model.module.config), architecture=arch[0], name=model.name)
    _write_atomic(path / "params.msgpack", serialization.msgpack_serialize(jax_to_numpy(model.params)))
    _write_atomic(path / "manifest.json", (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def jax_to_numpy(tree):
    if isinstance(tree, dict):
        return {k: jax_to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def load_model(name_or_path: str | Path = "chgnet-0.3.0") -> Model:
    """Load a checkpoint by name (in :func:`checkpoint_dir`) or by folder path."""
    path = Path(name_or_path)
    if not (path / "params.msgpack").exists():
        path = checkpoint_dir() / str(name_or_path)
    if not (path / "params.msgpack").exists():
        known = sorted(p.name for p in checkpoint_dir().glob("*") if (p / "params.msgpack").exists())
        raise FileNotFoundError(f"no checkpoint {name_or_path!r}: not a checkpoint folder, and not one of {known} "
                                f"in {checkpoint_dir()}")
    manifest = json.loads((path / "manifest.json").read_text())
    arch = manifest.get("architecture", "chgnet")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    module_cls, config_cls = ARCHITECTURES[arch]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest.get("config", {}).items()}
    params = serialization.msgpack_restore((path / "params.msgpack").read_bytes())
    params = _to_jnp(params)
    return Model(module_cls(config_cls(**config)), params, manifest.get("name", path.name), manifest)


def _to_jnp(tree):
    if isinstance(tree, dict):
        return {k: _to_jnp(v) for k, v in tree.items()}
    return jnp.asarray(tree, jnp.float32)


