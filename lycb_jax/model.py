"""Deprecated: use :mod:`lycb_jax.models` (kept for one release)."""

from lycb_jax.models.base import Model, edge_vectors, energy_forces_stress, potential  # noqa: F401
from lycb_jax.models.chgnet import N_ELEMENTS, CHGNet, CHGNetConfig, GatedMLP  # noqa: F401
from lycb_jax.units import EV_A3_TO_GPA  # noqa: F401
