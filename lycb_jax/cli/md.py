"""`lycb-jax md`, `study` and `sweep` (transitional: delegates to the old modules until moved)."""

from lycb_jax.md import add_cli as _add_md
from lycb_jax.study import add_cli as _add_study


def add_cli(sub) -> None:
    _add_md(sub)
    _add_study(sub)
