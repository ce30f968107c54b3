"""Checkpoints: saving and loading models by name or folder.

A checkpoint is a folder with ``params.msgpack`` (flax.serialization of the parameter pytree)
and ``manifest.json`` (architecture, its config, provenance, licence, training metadata). A dispersion
checkpoint has only a manifest: ``base_checkpoint`` (whose weights it uses) and ``dispersion`` (the term
added at inference), with the evidence for shipping it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import serialization

from lycb_jax.io.durable import atomic_write
from lycb_jax.io.structures import N_ELEMENTS
from lycb_jax.models.paths import BASE_KEY, DEFAULT_MODEL, checkpoint_dir, dispersion_alias, shipped_checkpoints
from lycb_jax.models.base import Model
from lycb_jax.models.chgnet import CHGNet, CHGNetConfig
from lycb_jax.models.sevennet import SevenNet, SevenNetConfig

# manifest "architecture" -> (module class, config dataclass); the module is built as cls(config_cls(**config))
# and keeps it as ``.config``. A new model registers here.
ARCHITECTURES = {"chgnet": (CHGNet, CHGNetConfig), "sevennet": (SevenNet, SevenNetConfig)}


def save_checkpoint(path: str | Path, model: Model, manifest: dict | None = None) -> Path:
    """Write ``params.msgpack`` and then ``manifest.json`` (with ``params_sha256``, the SHA-256 of the
    parameter file) into folder ``path``, each atomically (:func:`lycb_jax.io.durable.atomic_write`: a
    killed write leaves the previous file or none, never a truncated one; the manifest, written last,
    marks a complete checkpoint). CheckpointWriteError naming the folder if it cannot be written."""
    path = Path(path)
    if "dispersion" in model.metadata or hasattr(model.module, "dispersion"):
        raise ValueError(f"{model.name} includes a dispersion term, which is added at inference "
                         "(load_model(name, dispersion=...)), never saved into a checkpoint: save the model without it")
    arch = [k for k, (cls, _) in ARCHITECTURES.items() if isinstance(model.module, cls)]
    if not arch:
        raise ValueError(f"{type(model.module).__name__} is not a registered architecture ({sorted(ARCHITECTURES)}); "
                         "add it to lycb_jax.models.checkpoint.ARCHITECTURES")
    meta = dict(model.metadata)
    meta.update(manifest or {})
    meta.update(config=dataclasses.asdict(model.module.config), architecture=arch[0], name=model.name)
    params = serialization.msgpack_serialize(jax_to_numpy(model.params))
    meta["params_sha256"] = hashlib.sha256(params).hexdigest()
    atomic_write(path / "params.msgpack", lambda fh: fh.write(params), "model_params")
    manifest_bytes = (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode()
    atomic_write(path / "manifest.json", lambda fh: fh.write(manifest_bytes), "model_manifest")
    return path


def jax_to_numpy(tree):
    if isinstance(tree, dict):
        return {k: jax_to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def load_model(name_or_path: str | Path = DEFAULT_MODEL, dispersion: str | None = None) -> Model:
    """Load a checkpoint by name (in :func:`checkpoint_dir`) or by folder path. The manifest is
    validated (JSON mapping, known architecture, config keys of that architecture) and so are the
    parameters (the layers and array shapes the config implies); InputError naming the folder
    otherwise. Nothing in a checkpoint is executed (JSON and msgpack only).

    ``dispersion``: None, or ``"d3bj"`` / ``"d3bj:<functional>"`` to add D3(BJ) to the model's energy
    (:func:`with_dispersion`; functional default the manifest's ``functional``, else PBE). A dispersion
    checkpoint (e.g. ``chgnet-0.3.0-lycb-pbe-d3``) loads as its base checkpoint with its dispersion."""
    from lycb_jax.io.errors import InputError

    path = Path(name_or_path)
    if not (path / "params.msgpack").exists() and dispersion_alias(path) is None:
        path = checkpoint_dir() / str(name_or_path)
    alias = dispersion_alias(path)
    if alias is not None:
        if dispersion is not None:
            raise InputError(f"checkpoint {path.name} already adds {alias['dispersion']}: leave out the dispersion "
                             f"(--dispersion), or give {alias[BASE_KEY]} with it")
        return load_model(alias[BASE_KEY], dispersion=alias["dispersion"])
    if not (path / "params.msgpack").exists():
        known = shipped_checkpoints()
        raise FileNotFoundError(f"no checkpoint {name_or_path!r}: not a checkpoint folder, and not one of {known} "
                                f"in {checkpoint_dir()}")
    manifest = read_manifest(path)
    module_cls, config_cls = ARCHITECTURES[manifest.get("architecture", "chgnet")]
    data = (path / "params.msgpack").read_bytes()
    if manifest.get("params_sha256", hashlib.sha256(data).hexdigest()) != hashlib.sha256(data).hexdigest():
        raise InputError(f"checkpoint {path}: params.msgpack does not match the checksum in manifest.json (truncated "
                         "or corrupted); re-create it (lycb-jax convert / finetune)")
    try:
        config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items()})
        params = serialization.msgpack_restore(data)
    except Exception as err:  # a config the class refuses, or a truncated / corrupted params file
        raise InputError(f"checkpoint {path}: cannot load ({type(err).__name__}: {str(err)[:200]}); "
                         "re-create it (lycb-jax convert / finetune)") from None
    module = module_cls(config)
    check_params(path, module, params)
    model = Model(module, _to_jnp(params), manifest.get("name", path.name), manifest)
    return model if dispersion is None else with_dispersion(model, dispersion)


def with_dispersion(model: Model, dispersion: str) -> Model:
    """``model`` + a dispersion term (:mod:`lycb_jax.models.dispersion`): same parameters, graph and layer
    groups; energy, forces and stress include the term wherever the model is used (predict, MD,
    relaxation). Named ``<name>+<dispersion>``; the manifest gains a ``dispersion`` entry (method,
    damping, functional, parameters, cutoffs, reference data and its sha256). Such a model cannot be
    saved or fine-tuned: the project's models learn DFT alone and D3 is added at inference."""
    from lycb_jax.io.errors import InputError
    from lycb_jax.models.dispersion import WithDispersion, parse_dispersion

    if isinstance(model.module, WithDispersion):
        raise InputError(f"{model.name} already includes dispersion ({model.metadata['dispersion']['method']})")
    try:
        term = parse_dispersion(dispersion, model.metadata.get("functional", "pbe"))
    except ValueError as err:
        raise InputError(str(err)) from None
    label = dispersion.lower()
    return Model(WithDispersion(model.module, term), model.params, f"{model.name}+{label}",
                 {**model.metadata, "dispersion": term.metadata()})


def read_manifest(path: Path) -> dict:
    """``path/manifest.json`` checked: a JSON mapping with a known ``architecture`` (default "chgnet")
    and a ``config`` mapping whose keys are fields of that architecture's config."""
    from lycb_jax.io.errors import InputError

    fix = "re-create the checkpoint (lycb-jax convert / finetune)"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"checkpoint {path}: manifest.json missing or unreadable ({str(err)[:200]}); {fix}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise InputError(f"checkpoint {path}: manifest.json needs a 'config' mapping of the architecture; {fix}")
    arch = manifest.get("architecture", "chgnet")
    if arch not in ARCHITECTURES:
        raise InputError(f"checkpoint {path}: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    fields = {f.name for f in dataclasses.fields(ARCHITECTURES[arch][1])}
    unknown = sorted(set(manifest["config"]) - fields)
    if unknown:
        raise InputError(f"checkpoint {path}: config keys {unknown} are not {arch} settings ({sorted(fields)}); {fix}")
    return manifest


def check_params(path, module, params) -> None:
    """InputError unless ``params`` holds the layers of ``module.layer_groups()`` and, where the
    architecture registers them (:data:`PARAM_SHAPES`), arrays of the shapes its config implies."""
    from lycb_jax.io.errors import InputError

    if not isinstance(params, dict):
        raise InputError(f"checkpoint {path}: params.msgpack holds no parameter tree")
    names = set(params) | {k for v in params.values() if isinstance(v, dict) for k in v}
    expected = {layer for layers in module.layer_groups().groups.values() for layer in layers}
    missing = sorted(expected - names)
    if missing:
        raise InputError(f"checkpoint {path}: params.msgpack lacks layers {missing[:4]} that the manifest's config "
                         f"implies ({module.config}); the files do not belong together")
    for keys, shape in PARAM_SHAPES.get(type(module), lambda c: {})(module.config).items():
        leaf = params
        for k in keys:
            leaf = leaf.get(k) if isinstance(leaf, dict) else None
        if leaf is None or tuple(np.shape(leaf)) != shape:
            raise InputError(f"checkpoint {path}: parameter {'/'.join(keys)} has shape "
                             f"{None if leaf is None else tuple(np.shape(leaf))}, but the manifest's config implies "
                             f"{shape}; the files do not belong together")


def _chgnet_shapes(cfg: CHGNetConfig) -> dict:
    """Shapes of CHGNet arrays fixed by its config (embeddings, basis, readout, composition model)."""
    f, n_el = cfg.feature_dim, N_ELEMENTS
    widths = (f, *cfg.readout_hidden, 1)
    out = {("chgnet", "atom_embedding", "embedding"): (n_el, f),
           ("chgnet", "bond_embedding", "kernel"): (cfg.num_radial, f),
           ("chgnet", "angle_embedding", "kernel"): (cfg.num_angular, f),
           ("chgnet", "rbf_ag", "frequencies"): (cfg.num_radial,),
           ("chgnet", "site_wise", "kernel"): (f, 1),
           ("atom_ref",): (n_el,)}
    out.update({("chgnet", f"mlp_{k}", "kernel"): (widths[k], widths[k + 1]) for k in range(len(widths) - 1)})
    return out


PARAM_SHAPES = {CHGNet: _chgnet_shapes}  # module class -> config -> {key path: shape}; optional per architecture


def _to_jnp(tree):
    if isinstance(tree, dict):
        return {k: _to_jnp(v) for k, v in tree.items()}
    return jnp.asarray(tree, jnp.float32)


