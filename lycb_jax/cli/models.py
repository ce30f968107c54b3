"""`lycb-jax models`: the shipped checkpoints, one line each (architecture, parent, training data, held-out
errors), read from their manifests without loading a model."""

from __future__ import annotations

import json


def describe(manifest: dict) -> str:
    """One line: architecture, parent and the fine-tuned model's held-out E/F/S errors, or the source package;
    for a dispersion checkpoint its base and term."""
    if "base_checkpoint" in manifest:
        return (f"{manifest['base_checkpoint']} + {manifest['dispersion']} at inference (same weights and held-out "
                "errors; NpT volumes in its manifest)")
    arch = manifest.get("architecture", "chgnet")
    if "parent_model" not in manifest:
        return f"{arch}, pretrained ({manifest.get('source_package')} {manifest.get('source_package_version')})"
    data = manifest.get("training_data", {})
    dft = data.get("dft_settings", {})
    err = data.get("heldout_mae", {}).get("fine-tuned", {})
    errors = (f"held-out E {err['energy_mae_meV/atom']:.1f} meV/atom, F {err['force_mae_meV/A']:.0f} meV/A, "
              f"S {err['stress_mae_GPa']:.3f} GPa" if err else "held-out errors not recorded")
    return (f"{arch} fine-tuned from {manifest['parent_model']} on {len(data.get('labels', {}))} label files "
            f"({dft.get('code', '?')} {dft.get('xc', '?')}); {errors}")


def cmd_models(args) -> int:
    from lycb_jax.models.paths import checkpoint_dir, shipped_checkpoints

    width = max(map(len, shipped_checkpoints()), default=0)
    for name in shipped_checkpoints():
        manifest = json.loads((checkpoint_dir() / name / "manifest.json").read_text())
        print(f"{name:{width}s} {describe(manifest)}")
    print(f"(in {checkpoint_dir()}; any model takes --dispersion d3bj at run time)")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("models", help="list the shipped checkpoints (parent, data, held-out errors)")
    p.set_defaults(func=cmd_models)
