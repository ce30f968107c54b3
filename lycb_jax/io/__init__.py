"""Input and output: the one validation layer. Structures in (:mod:`.structures`), settings files
(:mod:`.config`), fine-tuning labels (:mod:`.labels`); every refusal is an :class:`InputError`."""

from lycb_jax.io.config import check_settings, read_config, settings_from
from lycb_jax.io.errors import InputError
from lycb_jax.io.structures import System, read_structure, read_structures, to_system, validate

__all__ = ["InputError", "System", "check_settings", "read_config", "read_structure", "read_structures",
           "settings_from", "to_system", "validate"]
