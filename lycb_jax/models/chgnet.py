"""CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023) as a Flax module implementing the model
interface of :mod:`lycb_jax.models.base`.

The layers follow ``chgnet.model`` 0.3.0 one to one; parameter names follow its state_dict
(``atom_conv_layers_0`` for ``atom_conv_layers.0``) so that layer groups can be frozen by
name. Bond features live on undirected bonds (the half edges of :mod:`lycb_jax.graph`).

Units: positions and cells in Angstrom, energies in eV, forces in eV/A, stress in GPa with
ASE's sign (positive = tensile), magnetic moments in Bohr magnetons.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lycb_jax.graph import Graph
from lycb_jax.io.structures import N_ELEMENTS
from lycb_jax.models.base import Cutoffs, LayerGroups, edge_vectors


@dataclasses.dataclass(frozen=True)
class CHGNetConfig:
    """Architecture hyperparameters (CHGNet 0.3.0 defaults)."""

    feature_dim: int = 64
    num_radial: int = 31
    num_angular: int = 31
    n_conv: int = 4
    hidden_dim: int = 64
    readout_hidden: tuple[int, ...] = (64, 64, 64)
    cutoff_coeff: int = 8
    atom_cutoff: float = 6.0  # Angstrom, atom graph
    bond_cutoff: float = 3.0  # Angstrom, bond graph (angles)
    gather_after_linear: bool = True  # computation order only (see GatedMLP); same parameters


def _polynomial_envelope(r_scaled: jax.Array, p: int) -> jax.Array:
    """GemNet envelope 1 + a x^p + b x^(p+1) + c x^(p+2) (zero for x >= 1), evaluated as
    (1 - x)^3 q(x) with q = sum_k C(k+2, 2) x^k: the same polynomial, but its value and
    derivative near x = 1 have no cancellation of terms of size ~100 in float32."""
    q = 0.0
    for k in reversed(range(p)):  # Horner
        q = q * r_scaled + (k + 1) * (k + 2) / 2
    return jnp.where(r_scaled < 1, (1 - r_scaled) ** 3 * q, 0.0)


class RadialBessel(nn.Module):
    """Smooth radial Bessel basis sqrt(2/rc) sin(f r/rc)/r * envelope, learnable frequencies f."""

    num_radial: int
    cutoff: float
    cutoff_coeff: int

    @nn.compact
    def __call__(self, r: jax.Array) -> jax.Array:
        freq = self.param("frequencies", lambda _: jnp.pi * jnp.arange(1, self.num_radial + 1, dtype=jnp.float32))
        r = r[:, None]
        out = (2.0 / self.cutoff) ** 0.5 * jnp.sin(freq * (r / self.cutoff)) / r
        return _polynomial_envelope(r / self.cutoff, self.cutoff_coeff) * out


class Fourier(nn.Module):
    """Fourier angle basis [1/sqrt2, sin(f theta), cos(f theta)] / sqrt(pi), learnable f."""

    order: int

    @nn.compact
    def __call__(self, theta: jax.Array) -> jax.Array:
        freq = self.param("frequencies", lambda _: jnp.arange(1, self.order + 1, dtype=jnp.float32))
        t = theta[:, None] * freq
        const = jnp.full((theta.shape[0], 1), 1 / np.sqrt(2.0), theta.dtype)
        return jnp.concatenate([const, jnp.sin(t), jnp.cos(t)], axis=1) / np.sqrt(np.pi)


def _layer_norm(name: str) -> nn.LayerNorm:
    # torch.nn.LayerNorm: eps 1e-5, two-pass variance
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class _DenseParams(nn.Module):
    """The kernel [in, out] and bias [out] of a Linear layer, returned rather than applied."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,))


class GatedMLP(nn.Module):
    """silu(LN(core(x))) * sigmoid(LN(gate(x))); core/gate are Linear-SiLU-Linear or one Linear.

    The input x is the row-wise concatenation of gathered pieces, ``[x_1[idx_1], x_2[idx_2], ...]``
    (``idx`` None: already one row per output row). With ``gather_after_linear`` the first Linear
    of core and gate is applied to each piece's table before the gather, W x = sum_k (W_k x_k)[idx_k]:
    the same numbers with matrix products over atoms or bonds instead of over edges or angles.
    """

    out_dim: int
    hidden_dim: int
    gather_after_linear: bool = True

    @nn.compact
    def __call__(self, pieces: list[tuple[jax.Array, jax.Array | None]]) -> jax.Array:
        width = self.hidden_dim or self.out_dim
        d_in = sum(x.shape[-1] for x, _ in pieces)
        kc, bc = _DenseParams(d_in, width, name="mlp_core_0")()
        kg, bg = _DenseParams(d_in, width, name="mlp_gate_0")()
        kernel, bias = jnp.concatenate([kc, kg], axis=1), jnp.concatenate([bc, bg])
        if self.gather_after_linear:
            y, off = bias, 0
            for x, idx in pieces:
                t = x @ kernel[off:off + x.shape[-1]]
                y = y + (t if idx is None else t[idx])
                off += x.shape[-1]
        else:
            y = jnp.concatenate([x if idx is None else x[idx] for x, idx in pieces], axis=1) @ kernel + bias
        core, gate = y[:, :width], y[:, width:]
        if self.hidden_dim:
            core = nn.Dense(self.out_dim, name="mlp_core_1")(nn.silu(core))
            gate = nn.Dense(self.out_dim, name="mlp_gate_1")(nn.silu(gate))
        return nn.silu(_layer_norm("bn1")(core)) * nn.sigmoid(_layer_norm("bn2")(gate))


class CHGNet(nn.Module):
    """CHGNet body: per-atom energies (eV, without the composition reference) and magmoms.

    ``__call__`` takes species (atomic numbers, 0 for padding) and edge vectors that the
    caller computed from positions and cells, so derivatives flow through the vectors.
    """

    config: CHGNetConfig = CHGNetConfig()

    @nn.compact  # 61 lines: CHGNet's forward pass in the order of the original, kept in one piece to compare
    def __call__(self, species: jax.Array, edge_vec: jax.Array, graph: Graph) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        dim = cfg.feature_dim
        n_atoms = species.shape[0]
        n_half = graph.edge_src.shape[0]
        mask = graph.edge_mask

        # ---- geometry (NaN-safe for padded edges: double where)
        d2 = jnp.sum(edge_vec * edge_vec, axis=-1)
        r = jnp.sqrt(jnp.where(mask, d2, 1.0))
        rbf_ag = RadialBessel(cfg.num_radial, cfg.atom_cutoff, cfg.cutoff_coeff, name="rbf_ag")(r)
        rbf_bg = RadialBessel(cfg.num_radial, cfg.bond_cutoff, cfg.cutoff_coeff, name="rbf_bg")(r)
        rbf_ag = jnp.where(mask[:, None], rbf_ag, 0.0)
        rbf_bg = jnp.where(mask[:, None], rbf_bg, 0.0)

        unit = edge_vec / r[:, None]
        unit_dir = jnp.concatenate([unit, -unit])  # directed edges: half, then reversed half
        amask = graph.angle_mask
        cos = jnp.sum(unit_dir[graph.angle_e1] * unit_dir[graph.angle_e2], axis=-1) * (1 - 1e-6)
        theta = jnp.arccos(jnp.where(amask, cos, 0.0))
        angle_basis = Fourier((cfg.num_angular - 1) // 2, name="fourier")(theta)

        # ---- embeddings
        h = nn.Embed(N_ELEMENTS, dim, name="atom_embedding")(jnp.clip(species - 1, 0, N_ELEMENTS - 1))
        b = nn.Dense(dim, use_bias=False, name="bond_embedding")(rbf_ag)
        w_ag = nn.Dense(dim, use_bias=False, name="bond_weights_ag")(rbf_ag)
        w_bg = nn.Dense(dim, use_bias=False, name="bond_weights_bg")(rbf_bg)
        a = nn.Dense(dim, use_bias=False, name="angle_embedding")(angle_basis)

        centre = jnp.concatenate([graph.edge_src, graph.edge_dst])  # directed edge -> centre atom
        nbr = jnp.concatenate([graph.edge_dst, graph.edge_src])
        und = jnp.concatenate([jnp.arange(n_half), jnp.arange(n_half)])  # directed -> undirected
        u1, u2 = und[graph.angle_e1], und[graph.angle_e2]
        a_centre = centre[graph.angle_e1]
        w_angle = w_bg[u1] * w_bg[u2] * amask[:, None]

        gal = cfg.gather_after_linear

        def atom_conv(i, h, b):
            msg = GatedMLP(dim, cfg.hidden_dim, gal, name=f"atom_conv_layers_{i}_twoBody_atom")(
                [(h, centre), (b, und), (h, nbr)])
            msg = msg * w_ag[und]
            agg = jax.ops.segment_sum(msg, centre, num_segments=n_atoms)
            return h + nn.Dense(dim, use_bias=False, name=f"atom_conv_layers_{i}_mlp_out")(agg)

        magmom = None
        for i in range(cfg.n_conv - 1):
            h = atom_conv(i, h, b)
            pieces = [(b, u1), (b, u2), (a, None), (h, a_centre)]
            msg = GatedMLP(dim, cfg.hidden_dim, gal, name=f"bond_conv_layers_{i}_twoBody_bond")(pieces) * w_angle
            agg = jax.ops.segment_sum(msg, u1, num_segments=n_half)
            b = b + nn.Dense(dim, use_bias=False, name=f"bond_conv_layers_{i}_mlp_out")(agg)
            a = a + GatedMLP(dim, 0, gal, name=f"angle_layers_{i}_twoBody_bond")([(b, u1), (b, u2), (a, None), (h, a_centre)])
            if i == cfg.n_conv - 2:
                magmom = jnp.abs(nn.Dense(1, name="site_wise")(h))[:, 0]
        h = atom_conv(cfg.n_conv - 1, h, b)
        h = _layer_norm("readout_norm")(h)
        for k, width in enumerate(cfg.readout_hidden):
            h = nn.silu(nn.Dense(width, name=f"mlp_{k}")(h))
        atom_energy = nn.Dense(1, name=f"mlp_{len(cfg.readout_hidden)}")(h)[:, 0]
        return atom_energy, magmom

    # ---- the model interface (lycb_jax.models.base.Potential)
    @property
    def cutoffs(self) -> Cutoffs:
        return Cutoffs(self.config.atom_cutoff, self.config.bond_cutoff)

    def energy(self, params, species, positions, cell, atom_mask, graph: Graph):
        """Total energy (eV, composition reference AtomRef included) and magmoms [N] (muB) of one system.

        ``params``: ``{"chgnet": <flax params>, "atom_ref": [94] eV per element}``."""
        vec = edge_vectors(positions, cell, graph)
        atom_e, magmom = self.apply({"params": params["chgnet"]}, species, vec, graph)
        ref = params["atom_ref"][jnp.clip(species - 1, 0, N_ELEMENTS - 1)]
        return jnp.sum(jnp.where(atom_mask, atom_e + ref, 0.0)), jnp.where(atom_mask, magmom, 0.0)

    def layer_groups(self) -> LayerGroups:
        return chgnet_layer_groups(self.config.n_conv)


def chgnet_layer_groups(n_conv: int = 4) -> LayerGroups:
    """CHGNet's parameter groups (top-level names under ``params["chgnet"]``; ``atom_ref`` is the
    composition model). Default frozen: CHGNet's ``examples/fine_tuning.ipynb`` (embeddings, basis
    expansions, all but the last atom convolution, all bond and angle layers, AtomRef)."""
    g = {"atom_embedding": ("atom_embedding",), "bond_embedding": ("bond_embedding",),
         "angle_embedding": ("angle_embedding",), "bond_basis_expansion": ("rbf_ag", "rbf_bg"),
         "angle_basis_expansion": ("fourier",), "bond_weights": ("bond_weights_ag", "bond_weights_bg")}
    for i in range(n_conv):
        g[f"atom_conv_{i}"] = (f"atom_conv_layers_{i}_twoBody_atom", f"atom_conv_layers_{i}_mlp_out")
    for i in range(n_conv - 1):
        g[f"bond_conv_{i}"] = (f"bond_conv_layers_{i}_twoBody_bond", f"bond_conv_layers_{i}_mlp_out")
        g[f"angle_layer_{i}"] = (f"angle_layers_{i}_twoBody_bond",)  # the last one's output is unused (as in CHGNet)
    g["site_wise"] = ("site_wise",)
    g["readout"] = ("readout_norm", "mlp_0", "mlp_1", "mlp_2", "mlp_3")
    g["composition_model"] = ("atom_ref",)
    last = n_conv - 1
    aliases = {
        "embeddings": ("atom_embedding", "bond_embedding", "angle_embedding"),
        "basis_expansions": ("bond_basis_expansion", "angle_basis_expansion"),
        "atom_conv": tuple(f"atom_conv_{i}" for i in range(n_conv)),
        "bond_conv": tuple(f"bond_conv_{i}" for i in range(last)),
        "angle_layers": tuple(f"angle_layer_{i}" for i in range(last)),
        **{f"interaction_{i}": (f"atom_conv_{i}", f"bond_conv_{i}", f"angle_layer_{i}") for i in range(last)},
        f"interaction_{last}": (f"atom_conv_{last}",),
    }
    frozen = ("embeddings", "basis_expansions", *(f"atom_conv_{i}" for i in range(last)), "bond_conv",
              "angle_layers", "composition_model")
    return LayerGroups(g, aliases, frozen)
