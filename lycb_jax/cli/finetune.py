"""`lycb-jax finetune` (transitional: delegates to the old module until moved)."""

from lycb_jax.finetune import add_cli  # noqa: F401
