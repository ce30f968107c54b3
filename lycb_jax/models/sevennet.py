"""SevenNet-0 (Park et al., J. Chem. Theory Comput. 2024; the NequIP architecture) as a Flax module on
e3nn-jax, implementing the model interface of :mod:`lycb_jax.models.base`.

The layers follow ``sevenn`` (0.13; checkpoint format of 0.9) one to one, with its module names
(``0_convolution``, ``reduce_input_to_hidden``, ...) so that layer groups freeze by name:

* edge embedding: Bessel basis (2/rc) sin(c_n r)/r with trainable c_n, times the XPLOR switch
  (1 below ``cutoff_on``, smooth to 0 at ``cutoff``), and real spherical harmonics l <= 2 of the
  edge direction (e3nn "component" normalisation; e3nn-jax computes them);
* one-hot species -> linear embedding; then per interaction block: self-connection (linear),
  linear, convolution (tensor product of neighbour features with the harmonics, "uvu" paths
  weighted per edge by an MLP of the radial basis, Clebsch-Gordan coefficients from e3nn-jax,
  summed over neighbours and divided by a constant), linear, residual, gate;
* readout: two linears to one scalar per atom, then per-element scale and shift.

Every linear is e3nn's ``o3.Linear`` (no bias; weights divided by sqrt(fan-in) in the forward pass)
and the activations are e3nn's second-moment-normalised SiLU, so trained weights carry over
unchanged. Features are held per angular momentum l as arrays [atoms or edges, multiplicity, 2l+1].
Parity is not used (SevenNet-0 is trained with all irreps even, like ``sevenn``'s is_parity=False).

Units: positions and cells in Angstrom, energies in eV, forces in eV/A, stress in GPa with ASE's
sign (positive = tensile). SevenNet-0 has no magnetic moments (zeros are returned).
"""

from __future__ import annotations

import dataclasses
import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from lycb_jax.graph import Graph
from lycb_jax.io.structures import N_ELEMENTS  # the length of the per-element tables atom_ref and atom_scale
from lycb_jax.models.base import Cutoffs, LayerGroups, edge_vectors


def _sevennet0_species() -> tuple[int, ...]:
    """SevenNet-0's 89 elements (H..Pu without Po..Ra) in its one-hot order (alphabetical by symbol)."""
    known = [z for z in range(1, N_ELEMENTS + 1) if not 84 <= z <= 88]
    return tuple(sorted(known, key=lambda z: chemical_symbols[z]))


@dataclasses.dataclass(frozen=True)
class SevenNetConfig:
    """Architecture hyperparameters (SevenNet-0, 11Jul2024, as defaults).

    ``species``: atomic number of each one-hot index; ``irreps``: node features before the first and
    after each interaction block (e3nn notation, even parity only); ``conv_denominator``: the
    constant that each convolution's neighbour sum is divided by (sqrt of the training set's mean
    neighbour count); ``act_norm``: e3nn's normalisation constant of SiLU (its ``normalize2mom``,
    a Monte Carlo estimate that ``sevenn`` uses as is, so copied rather than recomputed)."""

    species: tuple[int, ...] = dataclasses.field(default_factory=_sevennet0_species)
    cutoff: float = 5.0  # Angstrom
    cutoff_on: float = 4.5  # Angstrom, start of the XPLOR switch
    num_basis: int = 8
    weight_nn_hidden: tuple[int, ...] = (64, 64)
    irreps: tuple[str, ...] = ("128x0e", "128x0e+64x1e+32x2e", "128x0e+64x1e+32x2e", "128x0e+64x1e+32x2e",
                               "128x0e+64x1e+32x2e", "128x0e")
    lmax_sh: int = 2
    conv_denominator: tuple[float, ...] = (35.989574432373047,) * 5
    act_norm: float = 1.6791767923989418


def _muls(irreps: str) -> dict[int, int]:
    """{l: multiplicity} of an irreps string with at most one entry per l, all even parity."""
    out: dict[int, int] = {}
    for mul, ir in e3nn.Irreps(irreps).simplify():
        if ir.p != 1 or ir.l in out:
            raise ValueError(f"irreps {irreps!r}: this port supports even-parity irreps, one entry per l")
        out[ir.l] = mul
    return out


def gate_input(irreps_out: str) -> dict[int, int]:
    """{l: multiplicity} entering the gate that outputs ``irreps_out``: its scalars, then one gate
    scalar per gated l > 0 channel (e3nn's ``Gate`` input, sorted and simplified), then those channels."""
    muls = _muls(irreps_out)
    return {0: muls.get(0, 0) + sum(m for l, m in muls.items() if l > 0), **{l: m for l, m in muls.items() if l > 0}}


def tp_paths(irreps_in: dict[int, int], lmax_sh: int, lmax_out: int) -> list[tuple[int, int, int, int]]:
    """The convolution's tensor-product paths (l_in, l_sh, l_out, multiplicity) in ``sevenn``'s weight
    order: created over input irreps, harmonics and l_out, then stably sorted by l_out."""
    paths = [(l1, l2, l3, mul) for l1, mul in sorted(irreps_in.items()) for l2 in range(lmax_sh + 1)
             for l3 in range(abs(l1 - l2), l1 + l2 + 1) if l3 <= lmax_out]
    return sorted(paths, key=lambda p: p[2])


def _normal(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype)  # e3nn initialises every weight N(0, 1)


class IrrepsLinear(nn.Module):
    """e3nn ``o3.Linear`` without bias between features with one block per l:
    out_l = x_l W_l / sqrt(mul_in_l); an output l without input is zero (e3nn has no path for it)."""

    muls_out: tuple[tuple[int, int], ...]  # (l, multiplicity)

    @nn.compact
    def __call__(self, x: dict[int, jax.Array]) -> dict[int, jax.Array]:
        out = {}
        for l, mul in self.muls_out:
            if l not in x:
                n = next(iter(x.values())).shape[0]
                out[l] = jnp.zeros((n, mul, 2 * l + 1), next(iter(x.values())).dtype)
                continue
            w = self.param(f"w{l}", _normal, (x[l].shape[1], mul))
            out[l] = jnp.einsum("nui,uw->nwi", x[l], w / math.sqrt(x[l].shape[1]))
        return out


class RadialMLP(nn.Module):
    """e3nn ``FullyConnectedNet``: no biases, weights / sqrt(fan-in), normalised SiLU between layers."""

    widths: tuple[int, ...]  # hidden and output widths
    act_norm: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for k, width in enumerate(self.widths):
            w = self.param(f"layer{k}", _normal, (x.shape[-1], width))
            x = x @ (w / math.sqrt(x.shape[-1]))
            if k < len(self.widths) - 1:
                x = jax.nn.silu(x) * self.act_norm
        return x


class Convolution(nn.Module):
    """Equivariant convolution: for each centre atom, sum over neighbours of the "uvu" tensor product
    of the neighbour's features with the edge harmonics, each path and channel weighted by the radial
    MLP, path weight sqrt(2 l_out + 1) (e3nn "component" normalisation), divided by ``denominator``."""

    lmax_out: int
    lmax_sh: int
    hidden: tuple[int, ...]
    denominator: float
    act_norm: float

    @nn.compact
    def __call__(self, x, sh, radial, nbr, centre, n_atoms):
        paths = tp_paths({l: v.shape[1] for l, v in x.items()}, self.lmax_sh, self.lmax_out)
        weights = RadialMLP((*self.hidden, sum(p[3] for p in paths)), self.act_norm, name="weight_nn")(radial)
        gathered = {l: v[nbr] for l, v in x.items()}  # [E, mul, 2l+1], neighbour features
        chunks: dict[int, list] = {}
        off = 0
        for l1, l2, l3, mul in paths:
            cg = jnp.asarray(e3nn.clebsch_gordan(l1, l2, l3), radial.dtype)  # [2l1+1, 2l2+1, 2l3+1]
            s = jnp.einsum("ej,ijk->eik", sh[l2], cg)
            msg = jnp.einsum("eui,eik->euk", gathered[l1], s) * (weights[:, off:off + mul, None] * math.sqrt(2 * l3 + 1))
            chunks.setdefault(l3, []).append(msg)
            off += mul
        return {l: jax.ops.segment_sum(jnp.concatenate(c, axis=1), centre, num_segments=n_atoms) / self.denominator
                for l, c in chunks.items()}


def _gate(x: dict[int, jax.Array], irreps_out: str, act_norm: float) -> dict[int, jax.Array]:
    """e3nn ``Gate``: SiLU on the scalars; each l > 0 channel times SiLU of its own gate scalar."""
    muls = _muls(irreps_out)
    n0 = muls.get(0, 0)

    def act(v):
        return jax.nn.silu(v) * act_norm

    out = {0: act(x[0][:, :n0])}
    off = n0
    for l in sorted(k for k in muls if k > 0):
        out[l] = x[l] * act(x[0][:, off:off + muls[l]])
        off += muls[l]
    return out


class SevenNet(nn.Module):
    """SevenNet body: per-atom energies before the per-element scale and shift (eV).

    ``__call__`` takes species (atomic numbers, 0 for padding) and half-edge vectors that the caller
    computed from positions and cells, so that derivatives flow through the vectors.
    """

    config: SevenNetConfig = SevenNetConfig()

    @nn.compact
    def __call__(self, species: jax.Array, edge_vec: jax.Array, graph: Graph) -> jax.Array:
        cfg = self.config
        n_atoms = species.shape[0]
        mask = graph.edge_mask

        # ---- edge embedding on half edges (NaN-safe for padding: double where)
        d2 = jnp.sum(edge_vec * edge_vec, axis=-1)
        r = jnp.sqrt(jnp.where(mask, d2, 1.0))
        inside = mask & (r < cfg.cutoff)  # the graph may hold edges up to cutoff + skin
        coeffs = self.param("edge_embedding", lambda _: jnp.pi / cfg.cutoff * jnp.arange(1, cfg.num_basis + 1,
                                                                                          dtype=jnp.float32))
        ur = r[:, None]
        bessel = (2.0 / cfg.cutoff) * jnp.sin(coeffs * ur) / ur
        rc2, ron2, r2 = cfg.cutoff**2, cfg.cutoff_on**2, r * r
        xplor = jnp.where(r < cfg.cutoff_on, 1.0, (rc2 - r2) ** 2 * (rc2 + 2 * r2 - 3 * ron2) / (rc2 - ron2) ** 3)
        radial = jnp.where(inside[:, None], bessel * xplor[:, None], 0.0)
        safe_vec = jnp.where(mask[:, None], edge_vec, jnp.asarray([0.0, 0.0, 1.0], edge_vec.dtype))
        sh_half = e3nn.spherical_harmonics(list(range(cfg.lmax_sh + 1)), e3nn.IrrepsArray("1o", safe_vec),
                                           normalize=True, normalization="component")
        # directed edges: the half edges (centre src, neighbour dst), then reversed; Y_l(-v) = (-1)^l Y_l(v)
        sh = {l: jnp.concatenate([c[:, 0], (-1) ** l * c[:, 0]]) for l, c in enumerate(sh_half.chunks)}
        radial = jnp.concatenate([radial, radial])
        centre = jnp.concatenate([graph.edge_src, graph.edge_dst])
        nbr = jnp.concatenate([graph.edge_dst, graph.edge_src])

        # ---- species embedding
        table = np.full(max(N_ELEMENTS, *cfg.species) + 1, 0, np.int32)
        table[list(cfg.species)] = np.arange(len(cfg.species))
        onehot = jax.nn.one_hot(jnp.asarray(table)[species], len(cfg.species), dtype=edge_vec.dtype)
        x = IrrepsLinear(tuple(_muls(cfg.irreps[0]).items()), name="onehot_to_feature_x")({0: onehot[:, :, None]})

        # ---- interaction blocks
        for t in range(len(cfg.irreps) - 1):
            gate_in = tuple(gate_input(cfg.irreps[t + 1]).items())
            sc = IrrepsLinear(gate_in, name=f"{t}_self_connection_intro")(x)
            x = IrrepsLinear(tuple((l, v.shape[1]) for l, v in x.items()), name=f"{t}_self_interaction_1")(x)
            x = Convolution(max(_muls(cfg.irreps[t + 1])), cfg.lmax_sh, cfg.weight_nn_hidden, cfg.conv_denominator[t],
                            cfg.act_norm, name=f"{t}_convolution")(x, sh, radial, nbr, centre, n_atoms)
            x = IrrepsLinear(gate_in, name=f"{t}_self_interaction_2")(x)
            x = _gate({l: v + sc[l] for l, v in x.items()}, cfg.irreps[t + 1], cfg.act_norm)

        # ---- readout
        hidden = _muls(cfg.irreps[-1])[0] // 2
        x = IrrepsLinear(((0, hidden),), name="reduce_input_to_hidden")({0: x[0]})
        return IrrepsLinear(((0, 1),), name="reduce_hidden_to_energy")(x)[0][:, 0, 0]

    # ---- the model interface (lycb_jax.models.base.Potential)
    @property
    def elements(self) -> tuple[int, ...]:
        """Atomic numbers SevenNet-0 was trained on (its one-hot table)."""
        return self.config.species

    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs(self.config.cutoff, None)

    def energy(self, params, species, positions, cell, atom_mask, graph: Graph):
        """Total energy (eV) and magmoms [N] (zeros: SevenNet has none) of one system.

        ``params``: ``{"sevennet": <flax params>, "atom_scale": [94], "atom_ref": [94]}`` (per element
        Z - 1; atom energy = scaled * atom_scale + atom_ref, ``sevenn``'s SpeciesWiseRescale). The
        energy is NaN if a real atom is of an element SevenNet-0 was not trained on (Po..Ra)."""
        vec = edge_vectors(positions, cell, graph)
        scaled = self.apply({"params": params["sevennet"]}, species, vec, graph)
        z = jnp.clip(species - 1, 0, N_ELEMENTS - 1)
        atom_e = scaled * params["atom_scale"][z] + params["atom_ref"][z]
        known = np.zeros(max(N_ELEMENTS, *self.config.species) + 1, bool)
        known[list(self.config.species)] = True
        unknown = jnp.any(atom_mask & ~jnp.asarray(known)[species])
        total = jnp.sum(jnp.where(atom_mask, atom_e, 0.0))
        return jnp.where(unknown, jnp.nan, total), jnp.zeros(species.shape[0], positions.dtype)

    def layer_groups(self) -> LayerGroups:
        return sevennet_layer_groups(len(self.config.irreps) - 1)


def sevennet_layer_groups(n_interactions: int = 5) -> LayerGroups:
    """SevenNet's parameter groups (names under ``params["sevennet"]``; ``atom_ref``/``atom_scale`` are
    the per-element shift and scale). Default frozen: the shift and scale only, as ``sevenn`` trains
    (``train_shift_scale: False``; its convolution denominators are constants here)."""
    g = {"embedding": ("onehot_to_feature_x",), "radial_basis": ("edge_embedding",)}
    for t in range(n_interactions):
        g[f"interaction_{t}"] = (f"{t}_self_connection_intro", f"{t}_self_interaction_1", f"{t}_convolution",
                                 f"{t}_self_interaction_2")
    g["readout"] = ("reduce_input_to_hidden", "reduce_hidden_to_energy")
    g["composition_model"] = ("atom_ref", "atom_scale")
    aliases = {"embeddings": ("embedding", "radial_basis"),
               "interactions": tuple(f"interaction_{t}" for t in range(n_interactions))}
    return LayerGroups(g, aliases, ("composition_model",))
