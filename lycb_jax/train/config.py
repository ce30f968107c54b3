"""Fine-tuning hyperparameters: :class:`FinetuneConfig`, read from JSON, YAML or TOML, written to JSON or YAML."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lycb_jax.io.config import check_settings, read_config
from lycb_jax.models.paths import DEFAULT_MODEL

TRAIN_STATE = "train_state.npz"  # in the output folder while training; removed once the checkpoint is written


@dataclasses.dataclass
class FinetuneConfig:
    """Hyperparameters (defaults: CHGNet's ``Trainer``/``CombinedLoss`` and its fine-tuning notebook).

    Units: learning rate per optimiser step; loss weights are dimensionless multipliers of
    losses in eV/atom, eV/A, GPa and muB.
    """

    parent: str = DEFAULT_MODEL  # checkpoint name or folder to start from
    epochs: int = 5
    batch_size: int = 8
    learning_rate: float = 1e-3  # CHGNet Trainer default (its notebook uses 1e-2)
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float | None = None  # None: 0 for adam, 1e-2 for adamw (torch/CHGNet defaults)
    scheduler: str = "cos"  # "cos" (CHGNet CosLR) | "constant"
    decay_fraction: float = 0.01  # eta_min = decay_fraction * learning_rate
    criterion: str = "mse"  # "mse" | "huber" | "mae"
    huber_delta: float = 0.1
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.1
    magmom_weight: float = 0.1
    freeze: list[str] | None = None  # layer groups / aliases; None: the parent's default (LayerGroups.default_frozen)
    # least-squares refit of the per-element reference energies (atom_ref) on the training split: on by default, since
    # labels from another code or functional (GPAW, other pseudopotentials) differ from the parent's by per-element offsets
    refit_composition: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0  # split and shuffling
    patience: int | None = None  # early stopping: epochs without a better validation loss
    restore_best: bool = True  # keep the parameters of the best validation epoch
    evaluate_initial: bool = True  # metrics of the starting model as epoch 0
    max_buckets: int | None = None  # distinct padded atom counts (compilations); None: 1 on GPU, 3 on CPU
    energy_key: str = "energy"  # ASE result to use: "energy" or "free_energy"

    def __post_init__(self):
        check_settings(dataclasses.asdict(self), type(self), "FinetuneConfig")  # InputError: types, signs

    @classmethod
    def from_file(cls, path: str | Path) -> "FinetuneConfig":
        """Read a JSON, YAML or TOML file (keys = field names); InputError naming the file and the key for
        unknown keys (with the closest field), wrong types or values."""
        return cls(**check_settings(read_config(path), cls, str(path)))

    def save(self, path: str | Path) -> None:
        """Write as JSON (or YAML if the name ends in .yaml/.yml)."""
        data = dataclasses.asdict(self)
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            Path(path).write_text(json.dumps(data, indent=2) + "\n")

    def with_freeze_resolved(self, default_frozen) -> "FinetuneConfig":
        """This config with ``freeze`` None replaced by the model's ``default_frozen`` groups, so that
        manifests, saved configs and resume checks record the groups actually frozen."""
        return self if self.freeze is not None else dataclasses.replace(self, freeze=list(default_frozen))
