"""Deprecated: use :mod:`lycb_jax.models.checkpoint` and :mod:`lycb_jax.models.convert_chgnet` (kept for one release)."""

from lycb_jax.models.checkpoint import checkpoint_dir, jax_to_numpy, load_model, save_checkpoint  # noqa: F401
from lycb_jax.models.convert_chgnet import (CHGNET_LICENCE, PRETRAINED, convert_pretrained,  # noqa: F401
                                            params_from_torch_state_dict)
