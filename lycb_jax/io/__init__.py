"""Input and output: structures in (:mod:`.structures`)."""

from lycb_jax.io.structures import System, read_structure, read_structures, to_system, validate

__all__ = ["System", "read_structure", "read_structures", "to_system", "validate"]
