"""Deprecated: the fine-tuning code is the package :mod:`lycb_jax.train` (one module per concept)
and its command line is :mod:`lycb_jax.cli.finetune`. This module re-exports the old names for
existing scripts, with CHGNet's layer groups and cutoffs where the new functions take the model's."""

from __future__ import annotations

import warnings
from typing import Sequence

from lycb_jax.capacity import ATOM_CUTOFF, BOND_CUTOFF
from lycb_jax.models import Cutoffs, LayerGroups
from lycb_jax.models.chgnet import chgnet_layer_groups
from lycb_jax.train import *  # noqa: F401,F403
from lycb_jax.train import __all__ as _train_all
from lycb_jax.train import groups as _groups
from lycb_jax.train import pack as _pack
from lycb_jax.train.metrics import accumulate as _accumulate  # noqa: F401
from lycb_jax.train.metrics import summarize as _metrics  # noqa: F401
from lycb_jax.train.programs import loss_key as _loss_key  # noqa: F401
from lycb_jax.train.programs import make_eval_step as _eval_step  # noqa: F401
from lycb_jax.train.programs import make_steps as _make_steps  # noqa: F401
from lycb_jax.train.state import load_train_state as _load_train_state  # noqa: F401
from lycb_jax.train.state import save_train_state as _save_train_state  # noqa: F401

warnings.warn("lycb_jax.finetune is deprecated: use lycb_jax.train (and lycb_jax.cli.finetune for the command line)",
              DeprecationWarning, stacklevel=2)

_CHGNET: LayerGroups = chgnet_layer_groups()
GROUPS: dict[str, tuple[str, ...]] = _CHGNET.groups
ALIASES: dict[str, tuple[str, ...]] = _CHGNET.aliases
DEFAULT_FREEZE: tuple[str, ...] = _CHGNET.default_frozen


def resolve_groups(names: Sequence[str] | None, groups: LayerGroups = _CHGNET) -> list[str]:
    """:func:`lycb_jax.train.groups.resolve_groups`, CHGNet's groups by default."""
    return _groups.resolve_groups(names, groups)


def _group_of(path: tuple[str, ...], groups: LayerGroups = _CHGNET) -> str:
    return _groups.group_of(path, groups)


def param_labels(params, freeze: Sequence[str] | None, groups: LayerGroups = _CHGNET):
    """:func:`lycb_jax.train.groups.param_labels`, CHGNet's groups by default."""
    return _groups.param_labels(params, freeze, groups)


def group_sizes(params, groups: LayerGroups = _CHGNET) -> dict[str, int]:
    """:func:`lycb_jax.train.groups.group_sizes`, CHGNet's groups by default."""
    return _groups.group_sizes(params, groups)


def pack_dataset(ds, buckets: Sequence[int], cutoffs: Cutoffs = Cutoffs(ATOM_CUTOFF, BOND_CUTOFF)):
    """:func:`lycb_jax.train.pack.pack_dataset`, CHGNet's cutoffs by default."""
    return _pack.pack_dataset(ds, buckets, cutoffs)


__all__ = [*_train_all, "ALIASES", "DEFAULT_FREEZE", "GROUPS"]
