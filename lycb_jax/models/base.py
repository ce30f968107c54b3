"""The model interface that every workflow takes (prediction, MD, relaxation, fine-tuning).

A *potential* is a hashable object (static under ``jax.jit``; a Flax module is one) with

* ``cutoffs``: a :class:`Cutoffs` (the graph it needs: atom cutoff, and bond cutoff for angles
  or None for none), Angstrom;
* ``energy(params, species, positions, cell, atom_mask, graph)``: total energy (eV) of one
  system and per-atom magnetic moments [N] (muB; zeros if the model has none);
* ``layer_groups()``: :class:`LayerGroups`, the named parameter groups that fine-tuning can freeze.

A :class:`Model` pairs a potential with its parameters; it is a pytree (the parameters are its
leaves), so it crosses ``jax.jit``, ``vmap`` and ``grad`` as it is. Forces and stress come from
:func:`energy_forces_stress` by autodiff for any potential. A second model is one new module
under ``lycb_jax/models/`` that implements the three members and registers its architecture
in :data:`lycb_jax.models.checkpoint.ARCHITECTURES`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.graph import Graph
from lycb_jax.units import EV_A3_TO_GPA


class Cutoffs(NamedTuple):
    """Graph cutoffs of a model, Angstrom; ``bond`` None: the model uses no angles."""

    atom: float
    bond: float | None


@dataclasses.dataclass(frozen=True)
class LayerGroups:
    """Named groups of a model's parameters, for freezing while fine-tuning.

    ``groups``: group name -> parameter names (a parameter belongs to the first group that lists a key
    along its path in the params pytree); ``aliases``: alias -> group names;
    ``default_frozen``: groups or aliases frozen by default."""

    groups: dict[str, tuple[str, ...]]
    aliases: dict[str, tuple[str, ...]]
    default_frozen: tuple[str, ...]


class Potential(Protocol):
    cutoffs: Cutoffs

    def energy(self, params, species, positions, cell, atom_mask, graph: Graph) -> tuple[jax.Array, jax.Array]: ...

    def layer_groups(self) -> LayerGroups: ...


@dataclasses.dataclass(frozen=True, eq=False)
class _StaticMetadata:
    """A model's metadata as static pytree data: hashed and compared by its canonical JSON (sorted keys,
    other values by ``str``, as ``manifest.json`` is written), so that equal manifests are equal."""

    value: dict
    key: str = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "key", json.dumps(self.value, sort_keys=True, default=str))

    def __eq__(self, other) -> bool:
        return isinstance(other, _StaticMetadata) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:  # in treedefs and jit errors: the keys, not a whole manifest
        return f"metadata({', '.join(map(str, self.value))})"


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(frozen=True)
class Model:
    """A potential (``module``) with its parameter pytree, a name and its checkpoint manifest.

    A pytree: ``params`` are the leaves; ``module``, ``name`` and ``metadata`` are static (compared by
    value; ``metadata`` by its canonical JSON). A jitted function that takes a Model therefore compiles
    once per (module, name, metadata, parameter shapes): new parameter arrays of the same shapes reuse
    the program. lycb_jax's own jitted programs take :meth:`bare` models, so that a fine-tuned model
    shares its parent's programs."""

    module: Any  # a Potential
    params: Any
    name: str = "chgnet"
    metadata: dict = dataclasses.field(default_factory=dict)

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("params"), self.params),), (self.module, self.name,
                                                                     _StaticMetadata(self.metadata))

    @classmethod
    def tree_unflatten(cls, static, children) -> Model:
        module, name, metadata = static
        return cls(module, children[0], name, metadata.value)

    def bare(self) -> Model:
        """This model with no name and an empty manifest, to pass to jitted functions: one program per module
        and parameter shapes. The module holds all of the physics (cutoffs, dispersion); name and manifest
        are labels (static pytree data all the same, so that unflattening and jit outputs keep them)."""
        return Model(self.module, self.params, "", {})

    @property
    def cutoffs(self) -> Cutoffs:
        return self.module.cutoffs

    def __repr__(self) -> str:  # the dataclass default would print every parameter array
        n = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(self.params))
        d = self.metadata.get("dispersion")
        extra = f", dispersion={d.get('method', '')}({d.get('damping', '')}, {d.get('functional', '')})" if isinstance(d, dict) else ""
        return f"Model(name={self.name!r}, module={type(self.module).__name__}, parameters={n:,}, cutoffs={tuple(self.cutoffs)}{extra})"

    def check_elements(self, numbers) -> None:
        """InputError naming the elements of ``numbers`` (atomic numbers) that this model was not
        trained on, where its module lists them (``elements``); a model that knows H..Pu accepts all
        that :mod:`lycb_jax.io` lets through."""
        known = getattr(self.module, "elements", None)
        if known is None:
            return
        from ase.data import chemical_symbols

        from lycb_jax.io.errors import InputError

        bad = sorted(set(int(z) for z in np.unique(numbers)) - set(known))
        if bad:
            raise InputError(f"{self.name} does not know element(s) {', '.join(chemical_symbols[z] for z in bad)} "
                             "(not in its training data); use another model or remove those atoms")


def edge_vectors(positions: jax.Array, cell: jax.Array, graph: Graph) -> jax.Array:
    """Half-edge vectors x_j + shift @ cell - x_i (Angstrom), [H, 3]."""
    return positions[graph.edge_dst] + graph.edge_shift @ cell - positions[graph.edge_src]


def potential(module: Potential, params, species, positions, cell, atom_mask, graph: Graph):
    """Total energy (eV) and magmoms [N] (muB) of one system: ``module.energy``."""
    return module.energy(params, species, positions, cell, atom_mask, graph)


def energy_forces_stress(module: Potential, params, species, positions, cell, atom_mask, graph: Graph):
    """Energy (eV), forces (eV/A) [N, 3], stress (GPa, ASE sign) [3, 3] and magmoms [N] of one system.

    Forces are -dE/dx and stress (1/V) dE/d(strain) at zero strain, both by autodiff, with
    positions and cell deformed together as x (I + strain), cell (I + strain). V is |det cell|
    (CHGNet uses the signed volume, which flips the stress of left-handed cells).
    """
    def total(pos, strain):
        deform = jnp.eye(3, dtype=pos.dtype) + strain
        return module.energy(params, species, pos @ deform, cell @ deform, atom_mask, graph)

    strain0 = jnp.zeros((3, 3), positions.dtype)
    (energy, magmom), (de_dx, de_ds) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(positions, strain0)
    stress = de_ds / jnp.abs(jnp.linalg.det(cell)) * EV_A3_TO_GPA
    return energy, -de_dx * atom_mask[:, None], stress, magmom
