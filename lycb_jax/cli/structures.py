"""`lycb-jax structures` (transitional: delegates to the old module until moved)."""

from lycb_jax.structures import add_cli  # noqa: F401
