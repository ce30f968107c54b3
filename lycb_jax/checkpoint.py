"""Checkpoints: conversion of the PyTorch CHGNet weights, saving and loading.

A checkpoint is a folder with ``params.msgpack`` (flax.serialization of the parameter pytree)
and ``manifest.json`` (architecture, provenance, licence, training metadata).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import serialization

from lycb_jax.model import CHGNet, CHGNetConfig, Model

PRETRAINED = {"chgnet-0.3.0": "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"}
CHGNET_LICENCE = (
    "CHGNet (c) 2023 The Regents of the University of California, through Lawrence Berkeley "
    "National Laboratory; Modified BSD licence (see the LICENSE file of the `chgnet` package). "
    "These weights are a format conversion of the original, unchanged in value."
)


def checkpoint_dir() -> Path:
    """Folder of named checkpoints: $LYCB_JAX_CHECKPOINTS, else ``checkpoints/`` of the repo."""
    env = os.environ.get("LYCB_JAX_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "checkpoints"


def _torch_key_to_path(key: str) -> tuple[str, ...]:
    """Map a CHGNet state_dict key to our flax parameter path."""
    parts = key.split(".")
    leaf = {"weight": "kernel", "bias": "bias", "frequencies": "frequencies"}[parts[-1]]
    if parts[0] == "composition_model":
        return ("atom_ref",)
    if parts[0] == "atom_embedding":
        return ("chgnet", "atom_embedding", "embedding")
    if parts[0] == "bond_basis_expansion":
        return ("chgnet", parts[1].replace("rbf_expansion_", "rbf_"), "frequencies")
    if parts[0] == "angle_basis_expansion":
        return ("chgnet", "fourier", "frequencies")
    if parts[0] in ("bond_embedding", "bond_weights_ag", "bond_weights_bg", "angle_embedding", "site_wise"):
        return ("chgnet", parts[0], leaf)
    if parts[0] == "readout_norm":
        return ("chgnet", "readout_norm", "scale" if leaf == "kernel" else "bias")
    if parts[0] == "mlp":  # mlp.layers.{0,2,4,7}
        return ("chgnet", f"mlp_{[0, 2, 4, 7].index(int(parts[2]))}", leaf)
    # {atom_conv,bond_conv,angle}_layers.L.<block>.<...>
    module = f"{parts[0]}_{parts[1]}"
    if parts[2] == "mlp_out":
        return ("chgnet", f"{module}_mlp_out", leaf)
    block = f"{module}_{parts[2]}"
    if parts[3] in ("bn1", "bn2"):
        return ("chgnet", block, parts[3], "scale" if leaf == "kernel" else "bias")
    # mlp_core.layers.{0,3} (hidden) or mlp_core.layers.1 (no hidden)
    index = {"0": 0, "3": 1, "1": 0}[parts[5]]
    return ("chgnet", block, f"{parts[3]}_{index}", leaf)


def params_from_torch_state_dict(state_dict: dict) -> dict:
    """Flax parameter pytree from a CHGNet 0.3.0 state_dict (arrays or torch tensors)."""
    params: dict = {}
    for key, value in state_dict.items():
        arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        path = _torch_key_to_path(key)
        if path == ("atom_ref",):
            arr = arr.reshape(-1)
        elif path[-1] == "kernel" and path[-2] != "embedding" and arr.ndim == 2:
            arr = arr.T  # torch Linear [out, in] -> flax Dense [in, out]
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        if path[-1] in node:
            raise ValueError(f"two state_dict entries map to {path}")
        node[path[-1]] = arr
    if "atom_ref" not in params:
        params["atom_ref"] = np.zeros(94, np.float32)
    return params


def save_checkpoint(path: str | Path, model: Model, manifest: dict | None = None) -> Path:
    """Write ``params.msgpack`` and ``manifest.json`` into folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    params = jax_to_numpy(model.params)
    (path / "params.msgpack").write_bytes(serialization.msgpack_serialize(params))
    meta = dict(model.metadata)
    meta.update(manifest or {})
    meta["config"] = dataclasses.asdict(model.module.config)
    meta["name"] = model.name
    (path / "manifest.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


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
    config = manifest.get("config", {})
    if "readout_hidden" in config:
        config["readout_hidden"] = tuple(config["readout_hidden"])
    params = serialization.msgpack_restore((path / "params.msgpack").read_bytes())
    params = _to_jnp(params)
    return Model(CHGNet(CHGNetConfig(**config)), params, manifest.get("name", path.name), manifest)


def _to_jnp(tree):
    if isinstance(tree, dict):
        return {k: _to_jnp(v) for k, v in tree.items()}
    return jnp.asarray(tree, jnp.float32)


def convert_pretrained(name: str = "chgnet-0.3.0", out: str | Path | None = None) -> Path:
    """Convert the weights shipped in the installed ``chgnet`` package into a checkpoint folder."""
    import importlib.metadata

    import chgnet
    import torch

    src = Path(chgnet.__file__).parent / PRETRAINED[name]
    state = torch.load(src, map_location="cpu", weights_only=True)
    model_args = state["model"]["model_args"]
    expected = dict(atom_fea_dim=64, num_radial=31, num_angular=31, n_conv=4, atom_graph_cutoff=6,
                    bond_graph_cutoff=3, cutoff_coeff=8, angle_layer_hidden_dim=0, mlp_first=True)
    for k, v in expected.items():
        if model_args.get(k, v) != v:
            raise ValueError(f"{src.name}: model_args[{k!r}] = {model_args[k]!r}, this port supports {v!r}")
    params = params_from_torch_state_dict(state["model"]["state_dict"])
    model = Model(CHGNet(CHGNetConfig()), params, name)
    manifest = {
        "source_package": "chgnet",
        "source_package_version": importlib.metadata.version("chgnet"),
        "source_file": PRETRAINED[name],
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "licence": CHGNET_LICENCE,
        "model_args": {k: v for k, v in model_args.items() if isinstance(v, (int, float, str, bool, list, type(None)))},
    }
    return save_checkpoint(out or checkpoint_dir() / name, model, manifest)
