"""Grimme D3 dispersion with Becke-Johnson (rational) damping as a JAX energy term, and its sum with any model.

    E = -1/2 sum_{i, j, T}' C6_ij [s6 / (r^6 + R0^6) + s8 Q_ij / (r^8 + R0^8)],   r = |x_j + T - x_i| < disp2
    Q_ij = 3 r4r2_i r4r2_j (C8 = C6 Q_ij),  R0 = a1 sqrt(Q_ij) + a2,
    C6_ij = sum_ab w_ia w_jb C6ref[Z_i, Z_j, a, b],  w_ia = exp(-4 (CN_i - CNref_ia)^2) / sum_a (...)
    CN_i = sum_{j, T}' 1 / (1 + exp(-16 ((rcov_i + rcov_j) / r - 1))),  r < cn cutoff (rcov: D3 radii x 4/3)

the two-body D3(BJ) of s-dftd3 (PyPI ``dftd3``), which the tests check it against. The three-body
ATM term is not implemented (``s9`` must be 0; s-dftd3 leaves it off unless asked). Reference data
(C6ref, CNref, r4r2, rcov): ``checkpoints/d3/d3_reference.npz``, converted from tad-dftd3 by
:mod:`lycb_jax.models.convert_d3`. Cutoffs default to s-dftd3's own (60 bohr two-body, 40 bohr CN).

Units: positions and cell Angstrom, energy eV (internally bohr and Hartree, ASE's constants, as
``dftd3.ase`` converts). Forces and stress come by autodiff (:func:`lycb_jax.models.energy_forces_stress`).

Periodic images: a lattice sum over every atom pair and every image of the (wrapped) cell within the
cutoff, in blocks of images of about ``pairs_per_block`` pair terms (memory O(block), time O(N^2 images)
= O(N x atoms in the image box), within a small factor of O(N x neighbours) while the cell is at most a
few cutoffs wide). Not the project's graph builders: build_edges holds [N, N, images, 3] at once (~1 GB
at 2000 atoms for 32 A) and build_edges_binned needs cells 3 cutoffs (95 A) wide, and both need static
capacities from the host, which a term inside ``energy()`` does not get. The image count follows the cell
at run time (a ``while_loop``; NpT cells may change); its gradient is a ``custom_vjp`` that runs the same
loop over the vector-Jacobian products. So: jit, vmap and first derivatives (forces, stress, and their
use in training losses); no second derivatives of the D3 term.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.units import Bohr, Hartree

from lycb_jax.graph.edges import images_needed


class D3Params(NamedTuple):
    """Rational-damping parameters: s6, s8, a1 (dimensionless), a2 (bohr), s9 (ATM, must be 0)."""

    s6: float
    s8: float
    a1: float
    a2: float
    s9: float = 0.0


# D3(BJ) parameters per functional, from parameters.toml of s-dftd3 as shipped in PyPI dftd3 1.7.0
# ([parameter.<name>] d3.bj; s6 = 1 from [default.parameter] d3.bj); the tests compare them with that file.
FUNCTIONALS: dict[str, D3Params] = {
    "pbe": D3Params(s6=1.0, s8=0.7875, a1=0.4289, a2=4.4407),  # doi 10.1002/jcc.21759
    "pbesol": D3Params(s6=1.0, s8=2.9491, a1=0.4466, a2=6.1742),  # doi 10.1039/c0cp02984j
    "r2scan": D3Params(s6=1.0, s8=0.78981345, a1=0.49484001, a2=5.73083694),  # doi 10.1063/5.0041008
    "revpbe": D3Params(s6=1.0, s8=2.3550, a1=0.5238, a2=3.5016),  # doi 10.1002/jcc.21759
}

KCN = 16.0  # steepness of the D3 counting function
WEIGHT_FACTOR = 4.0  # Gaussian weight exp(-4 dCN^2) of the reference systems
DISP2_CUTOFF = 60.0  # bohr, two-body cutoff (s-dftd3's default realspace_cutoff disp2)
CN_CUTOFF = 40.0  # bohr, coordination-number cutoff (s-dftd3's default realspace_cutoff cn)


class D3Reference(NamedTuple):
    """Reference data (atomic units), rows by atomic number 0..94: c6 [95, 95, 7, 7] Hartree bohr^6,
    cn [95, 7] (-1: no reference), r4r2 [95], rcov [95] bohr."""

    c6: np.ndarray
    cn: np.ndarray
    r4r2: np.ndarray
    rcov: np.ndarray


@functools.lru_cache(maxsize=1)
def load_reference() -> D3Reference:
    """``checkpoints/d3/d3_reference.npz``, checked against the SHA-256 in its README.json."""
    from lycb_jax.models.paths import checkpoint_dir

    folder = checkpoint_dir() / "d3"
    data = (folder / "d3_reference.npz").read_bytes()
    expected = json.loads((folder / "README.json").read_text())["sha256"]
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"{folder / 'd3_reference.npz'} does not match the sha256 of its README.json; "
                         "re-create it (python -m lycb_jax.models.convert_d3)")
    with np.load(folder / "d3_reference.npz") as z:
        return D3Reference(*(np.asarray(z[k], np.float64) for k in D3Reference._fields))


@dataclasses.dataclass(frozen=True)
class D3BJ:
    """D3(BJ) dispersion of one functional (hashable: static under jit). Cutoffs in bohr."""

    functional: str = "pbe"
    disp2_cutoff: float = DISP2_CUTOFF
    cn_cutoff: float = CN_CUTOFF
    pairs_per_block: int = 1 << 22  # pair terms (atoms^2 x images) evaluated at once

    def __post_init__(self):
        if self.functional not in FUNCTIONALS:
            raise ValueError(f"no D3(BJ) parameters for functional {self.functional!r}; known: {sorted(FUNCTIONALS)}")

    @property
    def params(self) -> D3Params:
        return FUNCTIONALS[self.functional]

    def metadata(self) -> dict:
        """What the manifest records about this term."""
        folder_readme = _reference_readme()
        return {"method": "D3", "damping": "bj", "functional": self.functional, "three_body": False,
                "params": self.params._asdict(), "cutoffs_bohr": {"disp2": self.disp2_cutoff, "cn": self.cn_cutoff},
                "reference_data": {"file": "checkpoints/d3/d3_reference.npz", "sha256": folder_readme.get("sha256"),
                                   "source": folder_readme.get("source")},
                "implementation": "lycb_jax.models.dispersion (checked against PyPI dftd3 1.7.0)"}

    def energy(self, species, positions, cell, atom_mask) -> jax.Array:
        """D3(BJ) energy (eV) of one periodic system: species [N] atomic numbers, positions [N, 3] and
        cell [3, 3] (rows) in Angstrom, atom_mask [N]."""
        return d3_energy(species, positions, cell, atom_mask, params=self.params, disp2_cutoff=self.disp2_cutoff,
                         cn_cutoff=self.cn_cutoff, pairs_per_block=self.pairs_per_block)


@functools.lru_cache(maxsize=1)
def _reference_readme() -> dict:
    from lycb_jax.models.paths import checkpoint_dir

    try:
        return json.loads((checkpoint_dir() / "d3" / "README.json").read_text())
    except OSError:
        return {}


def d3_energy(species, positions, cell, atom_mask, *, params: D3Params, disp2_cutoff: float = DISP2_CUTOFF,
              cn_cutoff: float = CN_CUTOFF, pairs_per_block: int = 1 << 22) -> jax.Array:
    """D3(BJ) two-body energy (eV); see the module docstring. Cutoffs in bohr."""
    if params.s9 != 0.0:
        raise NotImplementedError("the three-body ATM term (s9 != 0) is not implemented")
    ref = load_reference()
    dtype = positions.dtype
    n = positions.shape[0]
    block = int(max(1, min(512, pairs_per_block // (n * n))))
    x = positions / Bohr
    lat = cell / Bohr
    frac = x @ jnp.linalg.inv(lat)
    x = x - jax.lax.stop_gradient(jnp.floor(frac)) @ lat  # wrapped: fractional coordinates in [0, 1)
    z = jnp.where(atom_mask, species, 0)
    pair = atom_mask[:, None] & atom_mask[None, :]

    rcov = jnp.asarray(ref.rcov, dtype)[z]
    cn = _image_sum(_cn_term, block, (x, lat), (_n_images(lat, cn_cutoff), rcov[:, None] + rcov[None, :], pair,
                                               jnp.asarray(cn_cutoff**2, dtype)))
    c6 = _c6(z, cn, ref, dtype)
    r4r2 = jnp.asarray(ref.r4r2, dtype)[z]
    q = 3.0 * r4r2[:, None] * r4r2[None, :]
    r0 = params.a1 * jnp.sqrt(q) + params.a2
    coef = _PairCoef(c6 * params.s6, c6 * q * params.s8, r0**6, r0**8)
    e = _image_sum(_disp_term, block, (x, lat, coef), (_n_images(lat, disp2_cutoff), pair,
                                                       jnp.asarray(disp2_cutoff**2, dtype)))
    return e * Hartree


class _PairCoef(NamedTuple):
    """[N, N] pair coefficients of the damped two-body sum (atomic units)."""

    c6: jax.Array  # s6 C6
    c8: jax.Array  # s8 C8
    r0_6: jax.Array  # R0^6
    r0_8: jax.Array  # R0^8


def _n_images(lat, cutoff: float) -> jax.Array:
    """Images each side along each axis that reach ``cutoff`` (bohr) from a wrapped cell [3]."""
    return images_needed(jax.lax.stop_gradient(lat), cutoff)


def _c6(z, cn, ref: D3Reference, dtype) -> jax.Array:
    """CN-interpolated C6 [N, N] (Hartree bohr^6): P M P^T with P[i, (e, a)] = [Z_i = e] w_ia and
    M[(e, a), (f, b)] = C6ref[e, f, a, b], so no [N, N, 7, 7] gather is formed."""
    refcn = jnp.asarray(ref.cn, dtype)[z]  # [N, 7]
    valid = refcn >= 0
    valid = valid.at[:, 0].set(True)  # padding atoms (Z = 0) get a harmless weight
    logits = jnp.where(valid, -WEIGHT_FACTOR * (cn[:, None] - refcn) ** 2, -jnp.inf)
    # normalised Gaussian weights; where all underflow, the reference nearest in CN takes it all (s-dftd3:
    # the one of largest CN, which is the nearest whenever CN exceeds every reference)
    w = jax.nn.softmax(logits, axis=-1)
    n_el, n_ref = ref.cn.shape
    p = (jax.nn.one_hot(z, n_el, dtype=dtype)[:, :, None] * w[:, None, :]).reshape(-1, n_el * n_ref)
    m = jnp.asarray(ref.c6.transpose(0, 2, 1, 3).reshape(n_el * n_ref, n_el * n_ref), dtype)
    return (p @ m) @ p.T


def _pair_d2(x, lat, shifts):
    """Squared distances [B, N, N] of x_j + T - x_i for the image shifts [B, 3] (integers as floats)."""
    vec = x[None, None, :, :] + (shifts @ lat)[:, None, None, :] - x[None, :, None, :]
    return jnp.sum(vec * vec, -1)


def _cn_term(shifts, ok, origin, args, const):
    """CN contributions [N] of images T (and -T: the column sums) in atomic units."""
    x, lat = args
    _, rcov2, pair, cut2 = const
    d2 = _pair_d2(x, lat, shifts)
    keep = ok[:, None, None] & pair[None] & (d2 > 1e-8) & (d2 <= cut2)
    r = jnp.sqrt(jnp.where(keep, d2, 1.0))
    count = jnp.where(keep, 1.0 / (1.0 + jnp.exp(-KCN * (rcov2[None] / r - 1.0))), 0.0)
    return jnp.sum(count, axis=(0, 2)) + jnp.sum(jnp.where(origin[:, None, None], 0.0, count), axis=(0, 1))


def _disp_term(shifts, ok, origin, args, const):
    """Two-body energy (Hartree) of images T and -T."""
    x, lat, coef = args
    _, pair, cut2 = const
    d2 = _pair_d2(x, lat, shifts)
    keep = ok[:, None, None] & pair[None] & (d2 > 1e-8) & (d2 <= cut2)
    d2 = jnp.where(keep, d2, 1.0)
    d6 = d2 * d2 * d2
    e = coef.c6[None] / (d6 + coef.r0_6[None]) + coef.c8[None] / (d6 * d2 + coef.r0_8[None])
    return -jnp.sum(jnp.where(keep, e, 0.0) * jnp.where(origin, 0.5, 1.0)[:, None, None])


def _loop(fn, n_images, block: int, init, dtype):
    """Sum of ``fn(shifts [block, 3], ok [block], origin [block])`` over the images T = 0 and T > 0
    (lexicographically) of the box [-n, n]^3, ``block`` at a time: the terms of -T are those of T with
    i and j swapped, which ``fn`` adds itself (``origin``: T = 0, counted once)."""
    width = 2 * n_images + 1
    total = jnp.prod(width)
    centre = total // 2  # the flat index of T = 0; larger indices are the T > 0

    def body(carry):
        k, acc = carry
        idx = centre + k * block + jnp.arange(block)
        shifts = jnp.stack([idx // (width[1] * width[2]), (idx // width[2]) % width[1], idx % width[2]], -1)
        out = fn((shifts - n_images).astype(dtype), idx < total, idx == centre)
        return k + 1, jax.tree.map(jnp.add, acc, out)

    return jax.lax.while_loop(lambda c: centre + c[0] * block < total, body, (jnp.int32(0), init))[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _image_sum(term, block: int, args, const):
    """Sum over the images of ``term(shifts, ok, args, const)`` (``const[0]``: images each side [3]);
    reverse-differentiable in ``args`` (float arrays), not in ``const``."""
    dtype = args[0].dtype
    flags = jnp.ones(block, bool)
    out = jax.eval_shape(lambda: term(jnp.zeros((block, 3), dtype), flags, flags, args, const))
    return _loop(lambda s, ok, o: term(s, ok, o, args, const), const[0], block, jnp.zeros(out.shape, out.dtype), dtype)


def _image_sum_fwd(term, block, args, const):
    return _image_sum(term, block, args, const), (args, const)


def _image_sum_bwd(term, block, res, g):
    args, const = res

    def vjp(shifts, ok, origin):
        return jax.vjp(lambda a: term(shifts, ok, origin, a, const), args)[1](g)[0]

    grads = _loop(vjp, const[0], block, jax.tree.map(jnp.zeros_like, args), args[0].dtype)
    return grads, jax.tree.map(lambda _: None, const)


_image_sum.defvjp(_image_sum_fwd, _image_sum_bwd)


@dataclasses.dataclass(frozen=True)
class WithDispersion:
    """A potential plus a dispersion term: same ``cutoffs``, graph, parameters and layer groups as
    ``base``; ``energy`` is base energy + ``dispersion.energy`` (eV), magmoms from ``base``."""

    base: Any  # a lycb_jax.models.base.Potential
    dispersion: D3BJ

    @property
    def cutoffs(self):
        return self.base.cutoffs

    @property
    def config(self):
        return self.base.config

    @property
    def elements(self):
        return getattr(self.base, "elements", None)

    def layer_groups(self):
        return self.base.layer_groups()

    def energy(self, params, species, positions, cell, atom_mask, graph):
        e, magmom = self.base.energy(params, species, positions, cell, atom_mask, graph)
        return e + self.dispersion.energy(species, positions, cell, atom_mask).astype(e.dtype), magmom


DISPERSIONS = ("d3bj",)


def parse_dispersion(spec: str, default_functional: str = "pbe") -> D3BJ:
    """``"d3bj"`` (the model's functional, default PBE) or ``"d3bj:<functional>"`` -> :class:`D3BJ`."""
    kind, _, functional = spec.lower().partition(":")
    if kind not in DISPERSIONS:
        raise ValueError(f"unknown dispersion {spec!r}; known: {', '.join(DISPERSIONS)} (optionally ':<functional>', "
                         f"functionals {sorted(FUNCTIONALS)})")
    return D3BJ(functional or default_functional)
