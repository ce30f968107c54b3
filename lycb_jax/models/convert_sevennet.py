"""Conversion of the PyTorch SevenNet-0 weights shipped in the ``sevenn`` package into a checkpoint.

The model is built by ``sevenn`` itself (``SevenNetCheckpoint.build_model``, which also patches
checkpoints of older ``sevenn`` versions), and each module's irreps, paths and constants are checked
against what :mod:`lycb_jax.models.sevennet` computes before its weights are copied.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lycb_jax.models.base import Model
from lycb_jax.models.checkpoint import checkpoint_dir, save_checkpoint
from lycb_jax.io.structures import N_ELEMENTS
from lycb_jax.models.sevennet import SevenNet, SevenNetConfig, _muls, gate_input, tp_paths

# our name -> (sevenn's pretrained name, file inside the package)
PRETRAINED = {"sevennet-0": ("7net-0", "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth")}
SEVENNET_LICENCE = (
    "SevenNet-0 (11Jul2024), `sevenn` (c) 2024 Yutack Park (MDIL, Seoul National University); MIT licence "
    "(see the LICENSE file of the `sevenn` package). These weights are a format conversion "
    "of the original, unchanged in value."
)


def _np(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy(), np.float32)


def _linear(module) -> dict:
    """{"w<l>": [mul_in, mul_out]} of an e3nn ``o3.Linear`` with one irrep entry per l (checked)."""
    lin = getattr(module, "linear", module)
    ins, outs = lin.irreps_in, lin.irreps_out
    if len({ir for _, ir in ins}) != len(ins) or len({ir for _, ir in outs}) != len(outs):
        raise ValueError(f"{lin}: irreps with repeated entries are not supported")
    if getattr(lin, "bias", None) is not None and lin.bias.numel():
        raise ValueError(f"{lin}: biases are not supported")
    flat, off, out = _np(lin.weight), 0, {}
    for inst in lin.instructions:
        (mul_in, ir_in), (mul_out, ir_out) = ins[inst.i_in], outs[inst.i_out]
        if ir_in != ir_out or ir_in.p != 1 or inst.path_shape != (mul_in, mul_out):
            raise ValueError(f"{lin}: unexpected instruction {inst}")
        if not np.isclose(inst.path_weight, mul_in ** -0.5):
            raise ValueError(f"{lin}: path weight {inst.path_weight} is not 1/sqrt(fan-in)")
        n = mul_in * mul_out
        out[f"w{ir_in.l}"] = flat[off:off + n].reshape(mul_in, mul_out)
        off += n
    assert off == flat.size, (lin, off, flat.size)
    return out


def _convolution(module, irreps_in: str, irreps_out: str, lmax_sh: int) -> dict:
    """Radial-MLP weights of one ``IrrepsConvolution``, after checking its tensor-product paths."""
    tp = module.convolution
    ours = tp_paths(_muls(irreps_in), lmax_sh, max(_muls(irreps_out)))
    theirs = []
    for inst in tp.instructions:
        (mul, ir1), (_, ir2), (_, ir3) = tp.irreps_in1[inst.i_in1], tp.irreps_in2[inst.i_in2], tp.irreps_out[inst.i_out]
        if inst.connection_mode != "uvu" or not np.isclose(inst.path_weight, np.sqrt(ir3.dim)):
            raise ValueError(f"{tp}: unexpected instruction {inst}")
        theirs.append((ir1.l, ir2.l, ir3.l, mul))
    if theirs != ours:
        raise ValueError(f"{tp}: paths {theirs} differ from this port's {ours}")
    return {f"layer{k}": _np(getattr(module.weight_nn, f"layer{k}").weight) for k in range(len(module.weight_nn))}


def params_and_config(torch_model, config: dict) -> tuple[dict, SevenNetConfig]:
    """Flax parameters and :class:`SevenNetConfig` from a ``sevenn`` model (``AtomGraphSequential``)
    and its checkpoint config (checked for the architecture options this port implements)."""
    expected = {"interaction_type": "nequip", "self_connection_type": "linear", "is_parity": False,
                "use_bias_in_linear": False, "readout_as_fcn": False, "_normalize_sph": True,
                "use_species_wise_shift_scale": True, "act_gate": {"e": "silu", "o": "tanh"},
                "act_scalar": {"e": "silu", "o": "tanh"}, "act_radial": "silu"}
    for k, v in expected.items():
        if config.get(k, v) != v:
            raise ValueError(f"sevenn config[{k!r}] = {config[k]!r}; this port supports {v!r}")
    if config["radial_basis"]["radial_basis_name"] != "bessel" or config["cutoff_function"]["cutoff_function_name"] != "XPLOR":
        raise ValueError("this port supports the Bessel basis with the XPLOR cutoff only")
    mods = torch_model._modules
    n_conv = config["num_convolution_layer"]
    irreps = (str(mods["onehot_to_feature_x"].linear.irreps_out.simplify()),) + tuple(
        str(mods[f"{t}_equivariant_gate"].gate.irreps_out.simplify()) for t in range(n_conv))
    act_norms = {a.cst for t in range(n_conv) for acts in (mods[f"{t}_equivariant_gate"].gate.act_scalars.acts,
                                                           mods[f"{t}_equivariant_gate"].gate.act_gates.acts)
                 for a in acts} | {mods[f"{t}_convolution"].weight_nn.layer0.act.cst for t in range(n_conv)}
    if len(act_norms) != 1:
        raise ValueError(f"activation normalisations differ: {act_norms}")
    type_map = config["_type_map"]  # atomic number -> one-hot index
    species = tuple(sorted(type_map, key=type_map.get))
    cfg = SevenNetConfig(
        species=tuple(int(z) for z in species), cutoff=float(config["cutoff"]),
        cutoff_on=float(config["cutoff_function"]["cutoff_on"]),
        num_basis=int(config["radial_basis"]["bessel_basis_num"]),
        weight_nn_hidden=tuple(int(h) for h in config["weight_nn_hidden_neurons"]), irreps=irreps,
        lmax_sh=int(mods["edge_embedding"].spherical.lmax),
        conv_denominator=tuple(float(mods[f"{t}_convolution"].denominator) for t in range(n_conv)),
        act_norm=float(act_norms.pop()))

    net: dict = {"edge_embedding": _np(mods["edge_embedding"].basis_function.coeffs),
                 "onehot_to_feature_x": _linear(mods["onehot_to_feature_x"])}
    for t in range(n_conv):
        gate_in = mods[f"{t}_equivariant_gate"].gate.irreps_in
        if {ir.l: mul for mul, ir in gate_in} != gate_input(irreps[t + 1]):
            raise ValueError(f"gate {t}: input {gate_in} differs from this port's {gate_input(irreps[t + 1])}")
        net[f"{t}_self_connection_intro"] = _linear(mods[f"{t}_self_connection_intro"])
        net[f"{t}_self_interaction_1"] = _linear(mods[f"{t}_self_interaction_1"])
        net[f"{t}_convolution"] = {"weight_nn": _convolution(mods[f"{t}_convolution"], irreps[t], irreps[t + 1],
                                                             cfg.lmax_sh)}
        net[f"{t}_self_interaction_2"] = _linear(mods[f"{t}_self_interaction_2"])
    net["reduce_input_to_hidden"] = _linear(mods["reduce_input_to_hidden"])
    net["reduce_hidden_to_energy"] = _linear(mods["reduce_hidden_to_energy"])

    rescale = mods["rescale_atomic_energy"]
    shift, scale = _np(rescale.shift), _np(rescale.scale)
    atom_ref, atom_scale = np.zeros(N_ELEMENTS, np.float32), np.ones(N_ELEMENTS, np.float32)
    for z, k in type_map.items():
        atom_ref[z - 1], atom_scale[z - 1] = shift[k], scale[k]
    return {"sevennet": net, "atom_ref": atom_ref, "atom_scale": atom_scale}, cfg


def convert_pretrained(name: str = "sevennet-0", out: str | Path | None = None) -> Path:
    """Convert the weights shipped in the installed ``sevenn`` package into a checkpoint folder."""
    import importlib.metadata

    import sevenn
    import sevenn.util

    pretrained, rel = PRETRAINED[name]
    src = Path(sevenn.__file__).parent / rel
    cp = sevenn.util.load_checkpoint(str(src))
    torch_model = cp.build_model()
    params, cfg = params_and_config(torch_model, cp.config)
    model = Model(SevenNet(cfg), params, name)
    manifest = {
        "source_package": "sevenn",
        "source_package_version": importlib.metadata.version("sevenn"),
        "source_model": f"{pretrained} (SevenNet-0, 11Jul2024; trained on MPtrj, PBE/PBE+U)",
        "source_file": rel,
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "source_checkpoint_version": str(cp.config.get("version")),
        "licence": SEVENNET_LICENCE,
    }
    return save_checkpoint(out or checkpoint_dir() / name, model, manifest)
