"""Layer groups at work: the model's named parameter groups (``model.module.layer_groups()``, a
:class:`lycb_jax.models.LayerGroups`) resolved to names (aliases expanded), to the group of each
parameter, to sizes, and to "frozen" / "trainable" labels of its parameters. Fine-tuning
(:mod:`lycb_jax.train`) freezes with them; sensitivity (:mod:`lycb_jax.sensitivity`) selects and
scales with them.

Frozen groups get ``optax.set_to_zero`` inside ``optax.multi_transform``
(:mod:`lycb_jax.train.optim`) and are carried over unchanged by the train step, so they stay
bit-identical. ``freeze=None`` means the model's ``default_frozen`` groups (for CHGNet those of its
``examples/fine_tuning.ipynb``, which leave 54,082 trainable parameters).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from flax import traverse_util

from lycb_jax.models.base import LayerGroups


def resolve_groups(names: Sequence[str] | None, groups: LayerGroups) -> list[str]:
    """Group names of ``names`` (groups or aliases of ``groups``; None: ``groups.default_frozen``),
    sorted, aliases expanded; raises ValueError naming unknown groups."""
    out: list[str] = []
    for name in groups.default_frozen if names is None else names:
        name = name.strip()
        if not name:
            continue
        if name in groups.aliases:
            out.extend(groups.aliases[name])
        elif name in groups.groups:
            out.append(name)
        else:
            raise ValueError(f"unknown layer group {name!r}; groups: {sorted(groups.groups)}, "
                             f"aliases: {sorted(groups.aliases)}")
    return sorted(set(out))


def group_of(path: tuple[str, ...], groups: LayerGroups) -> str:
    """The group of the parameter at ``path`` (a flattened-dict key): the first key along the path
    that a group lists (for CHGNet ``("chgnet", "mlp_3", "bias")`` -> readout, ``("atom_ref",)``
    -> composition_model). Raises KeyError if none does."""
    for key in path:
        for g, names in groups.groups.items():
            if key in names:
                return g
    raise KeyError(f"parameter {'/'.join(path)} is in no layer group")


def param_labels(params, freeze: Sequence[str] | None, groups: LayerGroups):
    """Pytree like ``params`` with "frozen" / "trainable" leaves (``freeze``: see :func:`resolve_groups`)."""
    frozen = set(resolve_groups(freeze, groups))
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: "frozen" if group_of(k, groups) in frozen else "trainable" for k in flat})


def group_sizes(params, groups: LayerGroups) -> dict[str, int]:
    """Number of parameters per group."""
    sizes = dict.fromkeys(groups.groups, 0)
    for k, v in traverse_util.flatten_dict(params).items():
        sizes[group_of(k, groups)] += int(np.size(v))
    return sizes
