"""Models: the interface (:mod:`.base`; its layer groups resolved, sized and labelled: :mod:`.groups`), CHGNet 0.3.0 (:mod:`.chgnet`), SevenNet (:mod:`.sevennet`), D3(BJ)
dispersion (:mod:`.dispersion`), checkpoints (:mod:`.checkpoint`, folders: :mod:`.paths`) and the conversion of
the PyTorch weights (:mod:`.convert_chgnet`, :mod:`.convert_sevennet`)."""

from lycb_jax.runtime import lazy

_LAZY = {name: "lycb_jax.models.base" for name in ("Cutoffs", "LayerGroups", "Model", "Potential",
                                                   "energy_forces_stress", "potential")}
_LAZY.update({name: "lycb_jax.models.checkpoint" for name in ("ARCHITECTURES", "load_model", "save_checkpoint",
                                                              "with_dispersion")})
_LAZY.update({name: "lycb_jax.models.groups" for name in ("group_of", "group_sizes", "param_labels",
                                                          "resolve_groups")})
_LAZY.update(DEFAULT_MODEL="lycb_jax.models.paths", checkpoint_dir="lycb_jax.models.paths",
             shipped_checkpoints="lycb_jax.models.paths")
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy.attributes(__name__, _LAZY)
