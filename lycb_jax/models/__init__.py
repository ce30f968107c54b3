"""Models: the interface (:mod:`.base`), CHGNet 0.3.0 (:mod:`.chgnet`), checkpoints (:mod:`.checkpoint`)
and the conversion of the PyTorch weights (:mod:`.convert_chgnet`)."""

from lycb_jax.models.base import Cutoffs, LayerGroups, Model, Potential, energy_forces_stress, potential
from lycb_jax.models.checkpoint import ARCHITECTURES, checkpoint_dir, load_model, save_checkpoint, with_dispersion

__all__ = ["ARCHITECTURES", "Cutoffs", "LayerGroups", "Model", "Potential", "checkpoint_dir", "energy_forces_stress",
           "load_model", "potential", "save_checkpoint", "with_dispersion"]
