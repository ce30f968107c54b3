"""Conversion of the PyTorch CHGNet weights shipped in the ``chgnet`` package into a checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lycb_jax.io.structures import N_ELEMENTS
from lycb_jax.models.base import Model
from lycb_jax.models.checkpoint import checkpoint_dir, save_checkpoint
from lycb_jax.models.chgnet import CHGNet, CHGNetConfig

PRETRAINED = {"chgnet-0.3.0": "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"}
CHGNET_LICENCE = (
    "CHGNet (c) 2023 The Regents of the University of California, through Lawrence Berkeley "
    "National Laboratory; Modified BSD licence (see the LICENSE file of the `chgnet` package). "
    "These weights are a format conversion of the original, unchanged in value."
)


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
        params["atom_ref"] = np.zeros(N_ELEMENTS, np.float32)
    return params


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
