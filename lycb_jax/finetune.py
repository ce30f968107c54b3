"""Fine-tuning CHGNet on new labelled data (DFT energies, forces, stresses, magmoms) with optax.

Conventions (everything is read through ``ase.io``, so one set of rules covers extxyz, ASE
databases, vasprun.xml and OUTCAR):

* energy: the structure's **total** energy in eV (ASE's ``energy``; pick ``free_energy`` with
  ``energy_key``); it is divided by the atom count, and the loss and metrics use eV/atom
  (reported as meV/atom), like CHGNet's trainer.
* forces: eV/A.
* stress: ASE gives eV/A^3 with ASE's sign (positive = tensile); it is multiplied by
  160.2177 to GPa and keeps that sign, which is the sign of :func:`lycb_jax.predict` and of
  CHGNet's stress output. (CHGNet's own ``StructureData`` takes VASP kBar and multiplies by
  -0.1; ASE already did the sign flip and unit change when it read the VASP file.)
* magmoms: muB, absolute values (CHGNet predicts |m|); absent labels are masked out.

Missing labels (no stress, no magmoms, NaN) are masked out of the loss and metrics, as in
CHGNet's ``CombinedLoss``.

Loss (CHGNet's ``CombinedLoss`` defaults): 1 * L(E/atom) + 1 * L(F components)
+ 0.1 * L(9 stress components, GPa) + 0.1 * L(|m|), L = MSE (default), Huber (delta 0.1) or
MAE, each term a mean over the valid entries of the batch.

Schedule: CHGNet's ``CosLR`` is ``CosineAnnealingLR(T_max=10*epochs, eta_min=0.01*lr)`` stepped
10 times per epoch, i.e. one cosine from lr to 0.01*lr over the whole run in 10*epochs stairs.
Here the same cosine is applied smoothly per optimiser step
(``optax.cosine_decay_schedule(lr, epochs*steps_per_epoch, alpha=0.01)``).

Freezing: parameters fall into named groups (:data:`GROUPS`, plus :data:`ALIASES`); frozen
groups get ``optax.set_to_zero`` inside ``optax.multi_transform`` and are carried over
unchanged, so they stay bit-identical. The default (:data:`DEFAULT_FREEZE`) is CHGNet's
``examples/fine_tuning.ipynb``: embeddings, basis expansions, the first three atom
convolutions, all bond and angle layers, and the composition model (AtomRef), leaving 54,082
trainable parameters (last atom conv, bond weights, site-wise magmom head, readout).

Batching: structures are padded to at most ``max_buckets`` atom counts and a fixed batch
size; each bucket has one graph capacity, so ``jit`` compiles once per bucket (train and eval).
By default one bucket on a GPU: one train program to compile instead of three (34 vs 48 s,
compiled side by side), at 0.65 instead of 0.50 s per epoch (H200, 300 structures of 60-180
atoms, benchmarks/results/bench_finetune_gpu50_h200*.json), so fewer compilations win for runs
below about 100 epochs; three on a CPU, where compiling is cheaper and time grows with padding.
On a GPU the programs are compiled with XLA's autotuning off (:func:`compiler_options`: 35
instead of 56 s for the train program, 5% slower steps, bench_compile_h200_autotune.json) and
use three-pass TF32 matrix products (:func:`matmul_precision`).
Atoms do not move while training, so every structure's crystal graph is built once, on the
device, when the data set is packed (as CHGNet's ``StructureData`` caches its graphs); the train
and eval programs take the graphs as inputs. The learning rate is an input of the train
program too (the schedule is evaluated on the host), so runs that differ only in learning
rate, schedule or number of epochs share compiled programs (and the persistent cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from lycb_jax.capacity import Capacity
from lycb_jax.capacity import bucket_size as _bucket
from lycb_jax.graph import Graph, build_graph
from lycb_jax.models import Model, checkpoint_dir, energy_forces_stress, load_model, save_checkpoint
from lycb_jax.predict import Batch, System, pack, predict, to_system
from lycb_jax.units import EV_A3_TO_GPA

# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class FinetuneConfig:
    """Hyperparameters (defaults: CHGNet's ``Trainer``/``CombinedLoss`` and its fine-tuning notebook).

    Units: learning rate per optimiser step; loss weights are dimensionless multipliers of
    losses in eV/atom, eV/A, GPa and muB.
    """

    parent: str = "chgnet-0.3.0"  # checkpoint name or folder to start from
    epochs: int = 5
    batch_size: int = 8
    learning_rate: float = 1e-3  # CHGNet Trainer default (its notebook uses 1e-2)
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float | None = None  # None: 0 for adam, 1e-2 for adamw (torch/CHGNet defaults)
    scheduler: str = "cos"  # "cos" (CHGNet CosLR) | "constant"
    decay_fraction: float = 0.01  # eta_min = decay_fraction * learning_rate
    criterion: str = "mse"  # "mse" | "huber" | "mae"
    huber_delta: float = 0.1
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.1
    magmom_weight: float = 0.1
    freeze: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_FREEZE))
    refit_composition: bool = False  # least-squares refit of atom_ref on the training split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0  # split and shuffling
    patience: int | None = None  # early stopping: epochs without a better validation loss
    restore_best: bool = True  # keep the parameters of the best validation epoch
    evaluate_initial: bool = True  # metrics of the starting model as epoch 0
    max_buckets: int | None = None  # distinct padded atom counts (compilations); None: 1 on GPU, 3 on CPU
    energy_key: str = "energy"  # ASE result to use: "energy" or "free_energy"

    @classmethod
    def from_file(cls, path: str | Path) -> "FinetuneConfig":
        """Read a JSON or YAML file (keys = field names)."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)} in {path}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON (or YAML if the name ends in .yaml/.yml)."""
        data = dataclasses.asdict(self)
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            Path(path).write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Dataset:
    """Labelled structures. energy: eV total [S]; forces: eV/A list of [n, 3]; stress: GPa [S, 3, 3]
    ASE sign; magmoms: muB list of [n] (|m|) or None. Missing labels are NaN / None."""

    systems: list[System]
    energy: np.ndarray
    forces: list[np.ndarray]
    stress: np.ndarray
    magmoms: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.systems)

    @classmethod
    def from_atoms(cls, images: Sequence, energy_key: str = "energy") -> "Dataset":
        """From ASE Atoms carrying results (a calculator, or ``info``/``arrays`` keys)."""
        from ase.stress import voigt_6_to_full_3x3_stress

        systems, energy, forces, stress, magmoms = [], [], [], [], []
        for atoms in images:
            res = dict(atoms.calc.results) if atoms.calc is not None else {}
            get = lambda k: res.get(k, atoms.info.get(k, atoms.arrays.get(k)))  # noqa: E731
            n = len(atoms)
            systems.append(to_system(atoms))
            e = get(energy_key)
            energy.append(np.nan if e is None else float(e))
            f = get("forces")
            forces.append(np.full((n, 3), np.nan) if f is None else np.asarray(f, float).reshape(n, 3))
            s = get("stress")
            if s is None:
                stress.append(np.full((3, 3), np.nan))
            else:
                s = np.asarray(s, float)
                stress.append((voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)) * EV_A3_TO_GPA)
            m = get("magmoms")
            magmoms.append(None if m is None else np.abs(np.asarray(m, float).reshape(n)))
        return cls(systems, np.asarray(energy, float), forces, np.asarray(stress, float).reshape(-1, 3, 3), magmoms)

    def subset(self, idx: Sequence[int]) -> "Dataset":
        idx = [int(i) for i in idx]
        return Dataset([self.systems[i] for i in idx], self.energy[idx], [self.forces[i] for i in idx],
                       self.stress[idx], [self.magmoms[i] for i in idx])

    def split(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0):
        """(train, val, test) by a seeded permutation; also returns the index lists."""
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        n_val, n_test = round(val_fraction * n), round(test_fraction * n)
        if n - n_val - n_test < 1:
            raise ValueError(f"{n} structures are too few for val {val_fraction} / test {test_fraction}")
        idx = {"val": sorted(perm[:n_val]), "test": sorted(perm[n_val:n_val + n_test]),
               "train": sorted(perm[n_val + n_test:])}
        return self.subset(idx["train"]), self.subset(idx["val"]), self.subset(idx["test"]), idx

    def sha256(self) -> str:
        """Hash of structures and labels (float64 bytes), independent of the file format."""
        h = hashlib.sha256()
        for i, s in enumerate(self.systems):
            m = self.magmoms[i]
            for a in (np.asarray(s.numbers, np.int64), s.positions, s.cell, self.energy[i], self.forces[i],
                      self.stress[i], np.zeros(0) if m is None else m):
                h.update(np.ascontiguousarray(a, np.int64 if a.dtype.kind in "iu" else np.float64).tobytes())
        return h.hexdigest()


def read_dataset(paths: str | Path | Sequence[str | Path], index: str = ":", format: str | None = None,
                 energy_key: str = "energy") -> Dataset:
    """Read labelled structures from extxyz, ASE db, vasprun.xml, OUTCAR, ... with ``ase.io.read``."""
    import ase.io

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    images = []
    for p in paths:
        got = ase.io.read(str(p), index=index, format=format)
        images.extend(got if isinstance(got, list) else [got])
    return Dataset.from_atoms(images, energy_key)


def bucket_limit(cfg: "FinetuneConfig") -> int:
    """``cfg.max_buckets``, or by default 1 on an accelerator and 3 on the CPU."""
    return cfg.max_buckets or (3 if jax.default_backend() == "cpu" else 1)


def compiler_options() -> dict | None:
    """XLA options for the fine-tuning programs: no autotuning on a GPU (see the module docstring)."""
    return {"xla_gpu_autotune_level": 0} if jax.default_backend() == "gpu" else None


def matmul_precision() -> str:
    """Matrix-product algorithm of the fine-tuning programs. On a GPU three TF32 passes
    (float32 accuracy: the same train loss to 7 digits as "highest"; forces within 4e-5 eV/A in
    benchmarks/profile_md.py), 22% faster train steps (H200, bench_compile_h200_prec_*.json);
    elsewhere, or when JAX_DEFAULT_MATMUL_PRECISION is set, the configured one."""
    if jax.default_backend() == "gpu" and "JAX_DEFAULT_MATMUL_PRECISION" not in os.environ:
        return "TF32_TF32_F32_X3"
    return jax.config.jax_default_matmul_precision or "default"


def choose_buckets(sizes: Sequence[int], max_buckets: int = 3) -> list[int]:
    """Padded atom counts: ``_bucket`` sizes merged (least added padding first) down to ``max_buckets``."""
    counts: dict[int, int] = {}
    for n in sizes:
        counts[_bucket(n)] = counts.get(_bucket(n), 0) + 1
    b = sorted(counts)
    while len(b) > max(1, max_buckets):
        cost = [counts[b[i]] * (b[i + 1] - b[i]) for i in range(len(b) - 1)]
        i = int(np.argmin(cost))
        counts[b[i + 1]] += counts.pop(b[i])
        b.pop(i)
    return b


@dataclasses.dataclass
class PackedBucket:
    """All structures of one padded size: host arrays [S, N, ...] (graphs under ``g_<field>``), one capacity."""

    n_atoms: int
    capacity: Capacity
    index: np.ndarray  # positions in the dataset
    arrays: dict[str, np.ndarray]


GRAPH_FIELDS = tuple(f.name for f in dataclasses.fields(Graph))


@functools.partial(jax.jit, static_argnums=3)
def batched_graphs(positions, cells, atom_mask, capacity: Capacity) -> Graph:
    """:func:`lycb_jax.graph.build_graph` of a batch [B, N, 3], [B, 3, 3], [B, N] (one program per shape)."""
    return jax.vmap(build_graph, in_axes=(0, 0, 0, None))(positions, cells, atom_mask, capacity)


def graph_arrays(p: Batch, chunk: int = 8) -> dict[str, np.ndarray]:
    """Crystal graphs of the packed structures (``g_<Graph field>`` host arrays [S, ...]), built on
    the device ``chunk`` structures at a time (one fixed shape: one compilation per bucket).
    Raises RuntimeError if a graph overflows ``p.capacity`` (the host count disagrees)."""
    s = len(p.counts)
    out: dict[str, list] = {k: [] for k in GRAPH_FIELDS}
    for start in range(0, s, chunk):
        sel = np.arange(start, start + chunk) % s  # the last chunk wraps around: fixed shape
        g = batched_graphs(p.positions[sel].astype(np.float32), p.cells[sel].astype(np.float32),
                            p.atom_mask[sel], p.capacity)
        for k in GRAPH_FIELDS:
            out[k].append(np.asarray(getattr(g, k)))
    arrays = {f"g_{k}": np.concatenate(v)[:s] for k, v in out.items()}
    if np.any(arrays["g_overflow"]):
        raise RuntimeError(f"graph capacity {p.capacity} exceeded for structure(s) "
                           f"{np.flatnonzero(arrays['g_overflow']).tolist()} of a bucket; please report this")
    return arrays


def pack_dataset(ds: Dataset, buckets: Sequence[int]) -> list[PackedBucket]:
    """Pad every structure to the smallest bucket that fits and build its graph; labels in loss
    units (eV/atom, eV/A, GPa, muB)."""
    out = []
    which = np.array([min(b for b in buckets if b >= len(s)) for s in ds.systems])
    for nb in sorted(set(which)):
        idx = np.flatnonzero(which == nb)
        p = pack([ds.systems[i] for i in idx], n_atoms=int(nb), n_systems=len(idx))
        S = len(idx)
        forces = np.zeros((S, nb, 3), np.float32)
        magmom = np.zeros((S, nb), np.float32)
        m_mask = np.zeros((S, nb), bool)
        f_mask = np.zeros((S, nb), bool)
        for k, i in enumerate(idx):
            n = len(ds.systems[i])
            forces[k, :n] = np.nan_to_num(ds.forces[i])
            f_mask[k, :n] = np.all(np.isfinite(ds.forces[i]), axis=1)
            if ds.magmoms[i] is not None:
                magmom[k, :n] = np.nan_to_num(ds.magmoms[i])
                m_mask[k, :n] = np.isfinite(ds.magmoms[i])
        n_at = np.array(p.counts, np.float32)
        arrays = dict(species=p.species, positions=p.positions.astype(np.float32),
                      cells=p.cells.astype(np.float32), atom_mask=p.atom_mask,
                      energy=np.nan_to_num(ds.energy[idx] / n_at).astype(np.float32),
                      e_mask=np.isfinite(ds.energy[idx]), forces=forces, f_mask=f_mask,
                      stress=np.nan_to_num(ds.stress[idx]).astype(np.float32),
                      s_mask=np.all(np.isfinite(ds.stress[idx]), axis=(1, 2)),
                      magmom=magmom, m_mask=m_mask, weight=np.ones(S, np.float32), **graph_arrays(p))
        out.append(PackedBucket(int(nb), p.capacity, idx, arrays))
    return out


def select_packed(packed: list[PackedBucket], index: Sequence[int]) -> list[PackedBucket]:
    """The structures of ``packed`` whose dataset positions are in ``index`` (a split), with the
    buckets' capacities kept, so that all splits share one compiled program per bucket."""
    out = []
    for pb in packed:
        sel = np.flatnonzero(np.isin(pb.index, index))
        if len(sel):
            out.append(PackedBucket(pb.n_atoms, pb.capacity, pb.index[sel], {k: v[sel] for k, v in pb.arrays.items()}))
    return out


def iter_batches(packed: list[PackedBucket], batch_size: int,
                 rng: np.random.Generator | None = None) -> Iterator[tuple[Capacity, dict]]:
    """Fixed-shape batches [batch_size, N_bucket]; the last batch of a bucket is filled with
    weight-0 copies. With ``rng`` the structures and the batch order are shuffled."""
    jobs = []
    for pb in packed:
        order = np.arange(len(pb.index)) if rng is None else rng.permutation(len(pb.index))
        for start in range(0, len(order), batch_size):
            jobs.append((pb, order[start:start + batch_size]))
    if rng is not None:
        jobs = [jobs[i] for i in rng.permutation(len(jobs))]
    for pb, sel in jobs:
        n_real = len(sel)
        sel = np.concatenate([sel, np.full(batch_size - n_real, sel[0])])
        batch = {k: v[sel] for k, v in pb.arrays.items()}
        batch["weight"][n_real:] = 0.0
        yield pb.capacity, batch


# ----------------------------------------------------------------------------- layer groups


def _groups() -> dict[str, tuple[str, ...]]:
    """Group name -> top-level parameter names (``atom_ref`` is the composition model)."""
    g = {"atom_embedding": ("atom_embedding",), "bond_embedding": ("bond_embedding",),
         "angle_embedding": ("angle_embedding",), "bond_basis_expansion": ("rbf_ag", "rbf_bg"),
         "angle_basis_expansion": ("fourier",), "bond_weights": ("bond_weights_ag", "bond_weights_bg")}
    for i in range(4):
        g[f"atom_conv_{i}"] = (f"atom_conv_layers_{i}_twoBody_atom", f"atom_conv_layers_{i}_mlp_out")
    for i in range(3):
        g[f"bond_conv_{i}"] = (f"bond_conv_layers_{i}_twoBody_bond", f"bond_conv_layers_{i}_mlp_out")
        g[f"angle_layer_{i}"] = (f"angle_layers_{i}_twoBody_bond",)  # angle_layer_2: output unused (as in CHGNet)
    g["site_wise"] = ("site_wise",)
    g["readout"] = ("readout_norm", "mlp_0", "mlp_1", "mlp_2", "mlp_3")
    g["composition_model"] = ("atom_ref",)
    return g


GROUPS: dict[str, tuple[str, ...]] = _groups()
ALIASES: dict[str, tuple[str, ...]] = {
    "embeddings": ("atom_embedding", "bond_embedding", "angle_embedding"),
    "basis_expansions": ("bond_basis_expansion", "angle_basis_expansion"),
    "atom_conv": tuple(f"atom_conv_{i}" for i in range(4)),
    "bond_conv": tuple(f"bond_conv_{i}" for i in range(3)),
    "angle_layers": tuple(f"angle_layer_{i}" for i in range(3)),
    **{f"interaction_{i}": (f"atom_conv_{i}", f"bond_conv_{i}", f"angle_layer_{i}") for i in range(3)},
    "interaction_3": ("atom_conv_3",),
}
DEFAULT_FREEZE: tuple[str, ...] = ("embeddings", "basis_expansions", "atom_conv_0", "atom_conv_1", "atom_conv_2",
                                   "bond_conv", "angle_layers", "composition_model")


def resolve_groups(names: Sequence[str]) -> list[str]:
    """Expand aliases; raise ValueError naming unknown groups."""
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in ALIASES:
            out.extend(ALIASES[name])
        elif name in GROUPS:
            out.append(name)
        else:
            raise ValueError(f"unknown layer group {name!r}; groups: {sorted(GROUPS)}, aliases: {sorted(ALIASES)}")
    return sorted(set(out))


def _group_of(path: tuple[str, ...]) -> str:
    top = path[0] if path[0] == "atom_ref" else path[1]
    for g, names in GROUPS.items():
        if top in names:
            return g
    raise KeyError(f"parameter {'/'.join(path)} is in no layer group")


def param_labels(params, freeze: Sequence[str]):
    """Pytree like ``params`` with "frozen" / "trainable" leaves."""
    frozen = set(resolve_groups(freeze))
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: "frozen" if _group_of(k) in frozen else "trainable" for k in flat})


def group_sizes(params) -> dict[str, int]:
    """Number of parameters per group."""
    sizes = dict.fromkeys(GROUPS, 0)
    for k, v in traverse_util.flatten_dict(params).items():
        sizes[_group_of(k)] += int(np.size(v))
    return sizes


# ----------------------------------------------------------------------------- loss, optimiser


def _term(pred, target, mask, cfg: FinetuneConfig):
    """Masked mean loss and error sums (|d|, d^2, count) of one target."""
    d = jnp.where(mask, pred - jnp.where(mask, target, 0.0), 0.0)
    if cfg.criterion == "mse":
        per = d * d
    elif cfg.criterion == "huber":
        per = optax.huber_loss(d, delta=cfg.huber_delta)
    elif cfg.criterion == "mae":
        per = jnp.abs(jnp.where(mask, d, 1.0))  # where: no NaN gradient at d = 0
    else:
        raise ValueError(f"criterion {cfg.criterion!r}: use mse, huber or mae")
    n = jnp.sum(mask)
    loss = jnp.sum(jnp.where(mask, per, 0.0)) / jnp.maximum(n, 1)
    return loss, jnp.stack([jnp.sum(jnp.abs(d)), jnp.sum(d * d), n.astype(d.dtype)])


def batch_graph(batch: dict) -> Graph:
    """The batch's precomputed graphs (``g_<field>`` arrays [B, ...], see :func:`graph_arrays`)."""
    return Graph(**{k: batch[f"g_{k}"] for k in GRAPH_FIELDS})


def batch_loss(module, params, batch: dict, cfg: FinetuneConfig):
    """Weighted loss of one padded batch and error sums {e, f, s, m: [sum|d|, sum d^2, count]}.

    Energy per atom (eV/atom), forces (eV/A), stress (GPa, 9 components), magmoms (muB), on
    the batch's precomputed graphs. Returns (loss, stats, predicted total energies [B] in eV)."""
    with jax.default_matmul_precision(matmul_precision()):
        e, f, s, m = jax.vmap(energy_forces_stress, in_axes=(None, None, 0, 0, 0, 0, 0))(
            module, params, batch["species"], batch["positions"], batch["cells"], batch["atom_mask"],
            batch_graph(batch))
    w = batch["weight"] > 0
    n_atoms = jnp.maximum(jnp.sum(batch["atom_mask"], axis=1), 1)
    atom_ok = w[:, None] & batch["atom_mask"]
    terms = {
        "e": _term(e / n_atoms, batch["energy"], w & batch["e_mask"], cfg),
        "f": _term(f, batch["forces"], (atom_ok & batch["f_mask"])[..., None] & jnp.ones(3, bool), cfg),
        "s": _term(s, batch["stress"], (w & batch["s_mask"])[:, None, None] & jnp.ones((3, 3), bool), cfg),
        "m": _term(m, batch["magmom"], atom_ok & batch["m_mask"], cfg),
    }
    weights = {"e": cfg.energy_weight, "f": cfg.force_weight, "s": cfg.stress_weight, "m": cfg.magmom_weight}
    loss = sum(weights[k] * terms[k][0] for k in terms)
    return loss, {k: v[1] for k, v in terms.items()}, e


def learning_rates(cfg: FinetuneConfig, steps_per_epoch: int) -> np.ndarray:
    """Learning rate of every optimiser step of the run (float32 [epochs * steps_per_epoch])."""
    n = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cos":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, n, alpha=cfg.decay_fraction)(jnp.arange(n))
    elif cfg.scheduler == "constant":
        lr = jnp.full(n, cfg.learning_rate)
    else:
        raise ValueError(f"scheduler {cfg.scheduler!r}: use cos or constant")
    return np.asarray(lr, np.float32)


def make_optimizer(cfg: FinetuneConfig, labels) -> optax.GradientTransformation:
    """Adam/AdamW at unit learning rate on trainable groups, ``set_to_zero`` on frozen ones; the
    train step scales the updates by -learning rate (:func:`learning_rates`), which is how
    ``optax.adam``/``adamw`` end (``scale_by_learning_rate``)."""
    if cfg.optimizer == "adam":
        wd = cfg.weight_decay or 0.0
        opt = optax.scale_by_adam() if wd == 0 else optax.chain(optax.add_decayed_weights(wd), optax.scale_by_adam())
    elif cfg.optimizer == "adamw":
        opt = optax.chain(optax.scale_by_adam(),
                          optax.add_decayed_weights(1e-2 if cfg.weight_decay is None else cfg.weight_decay))
    else:
        raise ValueError(f"optimizer {cfg.optimizer!r}: use adam or adamw")
    return optax.multi_transform({"trainable": opt, "frozen": optax.set_to_zero()}, labels)


def _make_steps(module, tx, labels, cfg: FinetuneConfig):
    """(train_step(params, opt_state, batch, learning_rate), eval_step(params, batch)), jitted."""
    def loss_aux(params, batch):
        loss, stats, _ = batch_loss(module, params, batch, cfg)
        return loss, stats

    def train_step(params, opt_state, batch, learning_rate):
        (loss, stats), grads = jax.value_and_grad(loss_aux, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        new = optax.apply_updates(params, jax.tree.map(lambda u: -learning_rate * u, updates))
        # frozen leaves are carried over as they are (bit-identical, and no dead compute)
        new = jax.tree.map(lambda lab, old, nw: old if lab == "frozen" else nw, labels, params, new)
        return new, opt_state, loss, stats

    donate = (0, 1) if jax.default_backend() != "cpu" else ()  # CPU cannot donate buffers
    return jax.jit(train_step, donate_argnums=donate), _eval_step(module, _loss_key(cfg))


LOSS_FIELDS = ("criterion", "huber_delta", "energy_weight", "force_weight", "stress_weight", "magmom_weight")


def _loss_key(cfg: FinetuneConfig) -> tuple:
    return tuple((k, getattr(cfg, k)) for k in LOSS_FIELDS)


@functools.lru_cache(maxsize=16)
def _eval_step(module, loss_key: tuple):
    """Jitted (loss, stats, energies) of a batch, cached per module and loss settings."""
    cfg = FinetuneConfig(**dict(loss_key))
    return jax.jit(lambda params, batch: batch_loss(module, params, batch, cfg), compiler_options=compiler_options())


def compile_programs(train_step, eval_step, params, opt_state, packs: dict, batch_size: int,
                     eval_splits: Sequence[str] = ("train", "val", "test")):
    """Ahead-of-time compile every bucket's train and eval program at once: ({capacity: train},
    {capacity: eval}).

    Tracing runs here one program after the other; the XLA compilations run in threads, which
    XLA does outside the GIL, so that the 2 x buckets programs build side by side instead of
    one per first batch of each bucket (the train step takes about a minute alone on an H100)."""
    jobs = {}
    for name, packed in packs.items():
        for pb in packed:
            cap, batch = next(iter_batches([pb], batch_size))
            if name == "train" and ("train", cap) not in jobs:
                jobs["train", cap] = train_step.lower(params, opt_state, batch, np.float32(0.0))
            if name in eval_splits and ("eval", cap) not in jobs:
                jobs["eval", cap] = eval_step.lower(params, batch)
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        done = dict(zip(jobs, pool.map(lambda lowered: lowered.compile(compiler_options()), jobs.values())))
    return ({cap: fn for (kind, cap), fn in done.items() if kind == "train"},
            {cap: fn for (kind, cap), fn in done.items() if kind == "eval"})


# ----------------------------------------------------------------------------- metrics


def _metrics(stats: dict, loss_sum: float, n_batches: int) -> dict:
    """MAE/RMSE from summed errors: energy meV/atom, force meV/A, stress GPa, magmom muB."""
    scale = {"e": ("energy", "meV/atom", 1e3), "f": ("force", "meV/A", 1e3), "s": ("stress", "GPa", 1.0),
             "m": ("magmom", "muB", 1.0)}
    out = {"loss": loss_sum / max(n_batches, 1)}
    for k, (name, unit, c) in scale.items():
        sa, ss, n = (float(x) for x in stats[k])
        if n > 0:
            out[f"{name}_mae_{unit}"] = c * sa / n
            out[f"{name}_rmse_{unit}"] = c * math.sqrt(ss / n)
    return out


def _accumulate(total: dict | None, stats) -> dict:
    stats = {k: np.asarray(v, np.float64) for k, v in stats.items()}
    return stats if total is None else {k: total[k] + stats[k] for k in total}


def predict_energies_packed(eval_step, params, packed: list[PackedBucket], batch_size: int, n: int) -> np.ndarray:
    """Predicted total energies (eV) of the packed structures, at their dataset positions in an
    array of length ``n`` (NaN elsewhere), from the already compiled eval programs
    (``eval_step(params, batch, capacity)``)."""
    out = np.full(n, np.nan)
    for pb in packed:
        for k, (cap, batch) in enumerate(iter_batches([pb], batch_size)):  # no rng: in pb.index order
            _, _, e = eval_step(params, batch, cap)
            sel = pb.index[k * batch_size:(k + 1) * batch_size]
            out[sel] = np.asarray(e, np.float64)[:len(sel)]
    return out


def evaluate_packed(eval_step, params, packed: list[PackedBucket], batch_size: int) -> dict:
    """Loss and metrics (:func:`_metrics`) over packed buckets; ``eval_step(params, batch, capacity)``."""
    total, loss_sum, nb = None, 0.0, 0
    for cap, batch in iter_batches(packed, batch_size):
        loss, stats, _ = eval_step(params, batch, cap)
        total, loss_sum, nb = _accumulate(total, stats), loss_sum + float(loss), nb + 1
    return _metrics(total, loss_sum, nb) if nb else {}


def evaluate(model: Model, ds: Dataset, config: FinetuneConfig | None = None) -> dict:
    """Loss and MAE/RMSE (meV/atom, meV/A, GPa, muB) of ``model`` on a dataset."""
    cfg = config or FinetuneConfig()
    eval_step = _eval_step(model.module, _loss_key(cfg))
    packed = pack_dataset(ds, choose_buckets([len(s) for s in ds.systems], bucket_limit(cfg)))
    return evaluate_packed(lambda p, batch, _cap: eval_step(p, batch), model.params, packed, cfg.batch_size)


# ----------------------------------------------------------------------------- composition refit


def refit_composition(model: Model, ds: Dataset, predicted: np.ndarray | None = None) -> tuple[Model, dict]:
    """Least-squares refit of ``atom_ref`` (eV per element) so that the mean energy per atom
    residual (labels minus model, eV/atom) is removed element-wise.

    Solves ``fractions @ delta = residual_per_atom`` for the elements present (minimum-norm
    solution when compositions are linearly dependent, e.g. fixed Li:Y ratio), adds ``delta`` to
    ``atom_ref``; other elements are untouched. ``predicted``: the model's total energies (eV) of
    ``ds`` if already known (else :func:`lycb_jax.predict` computes them). Returns the new model
    and the per-element shifts.
    """
    ok = np.isfinite(ds.energy)
    sub = ds.subset(np.flatnonzero(ok))
    if predicted is None:
        pred = np.array([p.energy for p in predict(model, sub.systems)])
    else:
        pred = np.asarray(predicted, np.float64)[ok]
    n = np.array([len(s) for s in sub.systems], float)
    resid = (sub.energy - pred) / n
    z = sorted({int(v) for s in sub.systems for v in s.numbers})
    frac = np.array([[np.sum(s.numbers == e) for e in z] for s in sub.systems], float) / n[:, None]
    delta, *_ = np.linalg.lstsq(frac, resid, rcond=None)
    ref = np.asarray(model.params["atom_ref"], np.float64).copy()
    ref[np.array(z) - 1] += delta
    params = dict(model.params, atom_ref=jnp.asarray(ref, jnp.float32))
    info = {"shift_eV": {int(e): float(d) for e, d in zip(z, delta)},
            "residual_mae_meV_per_atom_before": 1e3 * float(np.mean(np.abs(resid))),
            "residual_mae_meV_per_atom_after": 1e3 * float(np.mean(np.abs(resid - frac @ delta)))}
    return dataclasses.replace(model, params=params), info


# ----------------------------------------------------------------------------- training

TRAIN_STATE = "train_state.npz"  # in the output folder while training; removed once the checkpoint is written


def _save_train_state(path: Path, epoch: int, params, opt_state, best, rng, history, meta: dict) -> None:
    """Everything needed to continue after ``epoch`` (parameters, optimiser state, best epoch,
    shuffling RNG, history), written atomically (temporary file, then rename)."""
    arrays = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    arrays |= {f"o{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt_state))}
    arrays |= {f"b{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(best[2]))}
    info = dict(meta, epoch=epoch, best_loss=best[0], best_epoch=best[1], rng=rng.bit_generator.state,
                history=history)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{TRAIN_STATE}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, info=np.array(json.dumps(info, default=float)), **arrays)
    os.replace(tmp, path / TRAIN_STATE)


def _load_train_state(path: Path, params, opt_state, rng, meta: dict):
    """(epoch, params, opt_state, best, history) saved by :func:`_save_train_state`; sets ``rng``.
    Raises ValueError when the saved run used other data or hyperparameters."""
    with np.load(path / TRAIN_STATE) as z:
        info = json.loads(str(z["info"]))
        for key in meta:
            if info.get(key) != json.loads(json.dumps(meta[key], default=float)):
                raise ValueError(f"cannot resume from {path / TRAIN_STATE}: its {key} differs from this run's "
                                 f"({info.get(key)} vs {meta[key]}); use another --out or drop --resume")

        def restore(tree, prefix):
            leaves, treedef = jax.tree.flatten(tree)
            return jax.tree.unflatten(treedef, [jnp.asarray(z[f"{prefix}{i}"]) for i in range(len(leaves))])

        params_r, opt_r = restore(params, "p"), restore(opt_state, "o")
        best_params = jax.tree.map(np.array, restore(params, "b"))
    rng.bit_generator.state = info["rng"]
    return info["epoch"], params_r, opt_r, (info["best_loss"], info["best_epoch"], best_params), info["history"]



@dataclasses.dataclass
class FinetuneResult:
    """Fine-tuned model, per-epoch history, test metrics, checkpoint folder and split indices."""

    model: Model
    history: list[dict]
    test_metrics: dict
    path: Path | None
    split: dict


def _fmt(m: dict) -> str:
    keys = [("energy_mae_meV/atom", "E"), ("force_mae_meV/A", "F"), ("stress_mae_GPa", "S"), ("magmom_mae_muB", "M")]
    return " ".join(f"{short} {m[k]:.4g}" for k, short in keys if k in m)


def finetune(data: Dataset | str | Path | Sequence, config: FinetuneConfig | None = None,
             out: str | Path | None = None, verbose: bool = True, resume: bool = False,
             **overrides) -> FinetuneResult:
    """Fine-tune ``config.parent`` on ``data`` (a Dataset, file path(s) or ASE Atoms list).

    Splits by ``config.seed``, optionally refits the composition model on the training split,
    trains with frozen groups, evaluates every epoch (train metrics are running averages over
    the epoch's batches, as CHGNet reports them), stops early after ``patience`` epochs
    without a lower validation loss, evaluates the test split and writes a checkpoint folder to
    ``out`` (default ``checkpoints/<parent>-ft-<dataset sha[:8]>``; ``out=False``: none).
    ``overrides`` replace config fields (``finetune(path, epochs=10, freeze=["embeddings"])``).
    After every epoch the training state goes to ``<out>/train_state.npz``; ``resume=True``
    continues a killed run from it (same data and config), with the same result as an
    uninterrupted run.
    """
    cfg = dataclasses.replace(config or FinetuneConfig(), **overrides)
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, (str, Path)) or (isinstance(data, (list, tuple)) and isinstance(data[0], (str, Path))):
        ds = read_dataset(data, energy_key=cfg.energy_key)
    else:
        ds = Dataset.from_atoms(list(data), cfg.energy_key)
    train, val, test, split = ds.split(cfg.val_fraction, cfg.test_fraction, cfg.seed)
    parent = load_model(cfg.parent)
    model, refit_info = parent, None
    sha = ds.sha256()
    name = f"{Path(str(cfg.parent)).name}-ft-{sha[:8]}"
    path = None if out is False else (Path(out) if out else checkpoint_dir() / name)
    if resume and (path is None or not (path / TRAIN_STATE).exists()):
        raise FileNotFoundError(f"resume: no {TRAIN_STATE} in {path} (nothing to continue)")

    buckets = choose_buckets([len(s) for s in ds.systems], bucket_limit(cfg))
    packed = pack_dataset(ds, buckets)  # one graph capacity per bucket for every split
    packs = {name: select_packed(packed, split[name]) for name in ("train", "val", "test") if len(split[name])}
    steps_per_epoch = sum(math.ceil(len(pb.index) / cfg.batch_size) for pb in packs["train"])
    labels = param_labels(model.params, cfg.freeze)
    tx = make_optimizer(cfg, labels)
    lr = learning_rates(cfg, steps_per_epoch)
    train_step, eval_step = _make_steps(model.module, tx, labels, cfg)
    params = jax.tree.map(jnp.array, model.params)  # own copy (buffers are donated)
    opt_state = tx.init(params)
    if verbose:
        print(f"compiling the train and eval programs of buckets {buckets} atoms side by side "
              f"(about a minute each on an H100; a persistent compilation cache skips it next time)", flush=True)
    t_compile = time.perf_counter()
    initial = cfg.evaluate_initial and not resume  # a resumed run takes its history from the saved state
    eval_splits = ["val", "test"] + (["train"] if cfg.refit_composition or initial else [])
    train_progs, eval_progs = compile_programs(train_step, eval_step, params, opt_state, packs, cfg.batch_size,
                                               eval_splits)
    t_compile = time.perf_counter() - t_compile

    def run_eval(p, batch, cap):  # the compiled eval program of the batch's bucket
        return eval_progs[cap](p, batch)

    if cfg.refit_composition:  # the parent's energies from the compiled eval programs: no extra compilation
        energies = predict_energies_packed(run_eval, params, packs["train"], cfg.batch_size, len(ds))
        model, refit_info = refit_composition(model, train, energies[split["train"]])
        params["atom_ref"] = jnp.asarray(model.params["atom_ref"])  # frozen or not: Adam's moments start at 0
        if verbose:
            print(f"composition refit: {refit_info}")

    n_train = sum(int(np.size(v)) for v, lab in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
                  if lab == "trainable")
    if verbose:
        print(f"{len(train)}/{len(val)}/{len(test)} train/val/test structures, buckets {buckets} atoms, "
              f"batch {cfg.batch_size}, {steps_per_epoch} steps/epoch, {n_train:,} trainable parameters; "
              f"{len(train_progs) + len(eval_progs)} programs compiled in {t_compile:.1f} s")

    history = [{"epoch": 0, "compile_s": t_compile, **{f"{k}_{m}": v for k in ("train", "val") if k in packs and initial
                               for m, v in evaluate_packed(run_eval, params, packs[k], cfg.batch_size).items()}}]
    if verbose and initial:
        print(f"epoch 0: train {_fmt({k[6:]: v for k, v in history[0].items() if k.startswith('train_')})} | "
              f"val {_fmt({k[4:]: v for k, v in history[0].items() if k.startswith('val_')})}")
    best = (history[0].get("val_loss", np.inf), 0, jax.tree.map(np.array, params))  # host copies
    rng = np.random.default_rng(cfg.seed)
    state_meta = {"dataset_sha256": sha, "hyperparameters": dataclasses.asdict(cfg)}
    first_epoch, elapsed = 1, 0.0
    if resume:
        done, params, opt_state, best, history = _load_train_state(path, params, opt_state, rng, state_meta)
        first_epoch, elapsed = done + 1, history[-1].get("time_s", 0.0)
        if verbose:
            print(f"resumed after epoch {done} from {path / TRAIN_STATE}")
    from tqdm.auto import tqdm

    t0 = time.perf_counter() - elapsed
    epoch = first_epoch - 1
    if cfg.patience is not None and epoch - best[1] >= cfg.patience > 0:
        first_epoch = cfg.epochs + 1  # resumed after the epoch that stopped it early
    for epoch in range(first_epoch, cfg.epochs + 1):
        outs = []  # kept on device: no host sync per step (jax dispatches ahead)
        bar = tqdm(iter_batches(packs["train"], cfg.batch_size, rng), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=not verbose, leave=False)
        for step, (cap, batch) in enumerate(bar):
            params, opt_state, loss, stats = train_progs[cap](params, opt_state, batch,
                                                              lr[(epoch - 1) * steps_per_epoch + step])
            outs.append((loss, stats))
            if verbose and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4g}")
        total, loss_sum = None, 0.0
        for loss, stats in outs:
            loss_sum += float(loss)
            total = _accumulate(total, stats)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in _metrics(total, loss_sum, steps_per_epoch).items()}}
        if "val" in packs:
            row.update({f"val_{k}": v for k, v in evaluate_packed(run_eval, params, packs["val"], cfg.batch_size).items()})
        row["time_s"] = time.perf_counter() - t0  # s since training began, this epoch's validation included
        history.append(row)
        if not np.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training loss is {row['train_loss']} at epoch {epoch}")
        improved = row.get("val_loss", -np.inf) < best[0] or "val" not in packs
        if improved:
            best = (row.get("val_loss", np.nan), epoch, jax.tree.map(np.array, params))
        if verbose:
            val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
            tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.4g} {_fmt({k[6:]: v for k, v in row.items() if k.startswith('train_')})}"
                       f" | val loss {val.get('loss', np.nan):.4g} {_fmt(val)}{' *' if improved else ''}"
                       f" | {row['time_s']:.1f} s")
        if path is not None:
            _save_train_state(path, epoch, params, opt_state, best, rng, history, state_meta)
        if cfg.patience is not None and epoch - best[1] >= cfg.patience:
            if verbose:
                print(f"early stop: no better validation loss for {cfg.patience} epochs")
            break
    if cfg.restore_best:
        params = jax.tree.map(jnp.asarray, best[2])
    test_metrics = evaluate_packed(run_eval, params, packs["test"], cfg.batch_size) if "test" in packs else {}
    if verbose and test_metrics:
        print(f"test (epoch {best[1] if cfg.restore_best else epoch}): {_fmt(test_metrics)}")

    tuned = Model(model.module, params, name, dict(parent.metadata))
    if path is not None:
        manifest = {
            "parent_model": parent.name, "parent_source_sha256": parent.metadata.get("source_sha256"),
            "finetune": {
                "dataset_sha256": sha, "n_structures": len(ds), "split_sizes": {k: len(v) for k, v in split.items()},
                "split_seed": cfg.seed, "frozen_groups": resolve_groups(cfg.freeze), "trainable_parameters": n_train,
                "hyperparameters": dataclasses.asdict(cfg), "buckets": buckets, "composition_refit": refit_info,
                "best_epoch": best[1], "history": history, "test_metrics": test_metrics,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        save_checkpoint(path, tuned, manifest)
        (path / TRAIN_STATE).unlink(missing_ok=True)  # the run is complete
        if verbose:
            print(f"checkpoint: {path}")
    return FinetuneResult(tuned, history, test_metrics, path, {k: [int(i) for i in v] for k, v in split.items()})


# ----------------------------------------------------------------------------- CLI


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` subcommand to an argparse ``subparsers`` object (sets ``func``)."""
    p = subparsers.add_parser("finetune", help="fine-tune CHGNet on labelled structures (extxyz, ASE db, VASP)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="*", help="files readable by ase.io (extxyz, .db, vasprun.xml, OUTCAR)")
    p.add_argument("--config", help="JSON/YAML file with FinetuneConfig fields; flags below override it")
    p.add_argument("--out", help="checkpoint folder (default checkpoints/<parent>-ft-<sha>)")
    p.add_argument("--freeze", help="comma-separated layer groups/aliases to freeze ('' = none)")
    p.add_argument("--list-groups", action="store_true", help="print layer groups, aliases and sizes, then exit")
    p.add_argument("--save-config", help="write the resolved config to this file and exit")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--resume", action="store_true", help=f"continue a killed run from <out>/{TRAIN_STATE}")
    defaults = FinetuneConfig()
    for f in dataclasses.fields(FinetuneConfig):
        if f.name == "freeze":
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {default}")
        else:
            kind = {"patience": int, "weight_decay": float, "max_buckets": int}.get(f.name, type(default))
            choices = {"optimizer": ["adam", "adamw"], "scheduler": ["cos", "constant"],
                       "criterion": ["mse", "huber", "mae"]}.get(f.name)
            p.add_argument(flag, type=kind, default=None, choices=choices, help=f"default {default}")
    p.set_defaults(func=_cli_main)
    return p


def _cli_main(args) -> int:
    cfg = FinetuneConfig.from_file(args.config) if args.config else FinetuneConfig()
    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
            if f.name != "freeze" and getattr(args, f.name, None) is not None}
    if args.freeze is not None:
        over["freeze"] = [s for s in args.freeze.split(",") if s.strip()]
    cfg = dataclasses.replace(cfg, **over)
    if args.list_groups:
        sizes = group_sizes(load_model(cfg.parent).params)
        frozen = set(resolve_groups(cfg.freeze))
        for g, n in sizes.items():
            print(f"{g:24s} {n:8d}  {'frozen' if g in frozen else 'trainable'}")
        for a, gs in ALIASES.items():
            print(f"alias {a:18s} = {','.join(gs)}")
        return 0
    if args.save_config:
        cfg.save(args.save_config)
        return 0
    if not args.data:
        raise SystemExit("finetune: no data files given")
    finetune(args.data, cfg, out=args.out, verbose=not args.quiet, resume=args.resume)
    return 0
