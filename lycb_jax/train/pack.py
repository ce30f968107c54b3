"""Padding a data set into fixed-shape batches, with every structure's crystal graph built once.

Structures are padded to at most ``max_buckets`` atom counts (:func:`choose_buckets`, from
:func:`lycb_jax.graph.capacity.bucket_size`) and a fixed batch size; each bucket has one graph capacity
(:func:`lycb_jax.graph.capacity.estimate`, at the model's cutoffs), so that one train and one eval
program are compiled per bucket. By default one bucket on a GPU: one train program to compile
instead of three (34 vs 48 s, compiled side by side), at 0.65 instead of 0.50 s per epoch (H200,
300 structures of 60-180 atoms, benchmarks/results/bench_finetune_gpu50_h200*.json), so fewer
compilations win for runs below about 100 epochs; three on a CPU, where compiling is cheaper and
time grows with padding.

Atoms do not move while training, so every structure's graph is built once, on the device, when
the data set is packed (as CHGNet's ``StructureData`` caches its graphs); the train and eval
programs take the graphs as inputs (``g_<Graph field>`` arrays of a batch).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

import jax
import numpy as np

from lycb_jax.graph.capacity import Capacity, bucket_size
from lycb_jax.graph import Graph, build_graph
from lycb_jax.models import Cutoffs
from lycb_jax.graph.batch import Batch, pack
from lycb_jax.train.data import Dataset

GRAPH_FIELDS = tuple(f.name for f in dataclasses.fields(Graph))


def bucket_limit(cfg) -> int:
    """``cfg.max_buckets`` (a :class:`~lycb_jax.train.config.FinetuneConfig`), or by default 1 on an
    accelerator and 3 on the CPU."""
    return cfg.max_buckets or (3 if jax.default_backend() == "cpu" else 1)


def choose_buckets(sizes: Sequence[int], max_buckets: int = 3) -> list[int]:
    """Padded atom counts: :func:`~lycb_jax.graph.capacity.bucket_size` sizes merged (least added padding
    first) down to ``max_buckets``."""
    counts: dict[int, int] = {}
    for n in sizes:
        counts[bucket_size(n)] = counts.get(bucket_size(n), 0) + 1
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


@functools.partial(jax.jit, static_argnums=3)
def batched_graphs(positions, cells, atom_mask, capacity: Capacity) -> Graph:
    """:func:`lycb_jax.graph.build_graph` of a batch [B, N, 3], [B, 3, 3] (Angstrom), [B, N] (one
    program per shape)."""
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


def batch_graph(batch: dict) -> Graph:
    """The batch's precomputed graphs (``g_<field>`` arrays [B, ...], see :func:`graph_arrays`)."""
    return Graph(**{k: batch[f"g_{k}"] for k in GRAPH_FIELDS})


def pack_dataset(ds: Dataset, buckets: Sequence[int], cutoffs: Cutoffs) -> list[PackedBucket]:
    """Pad every structure to the smallest bucket that fits and build its graph at the model's
    ``cutoffs`` (``model.cutoffs``, Angstrom); labels in loss units (eV/atom, eV/A, GPa, muB)."""
    out = []
    which = np.array([min(b for b in buckets if b >= len(s)) for s in ds.systems])
    for nb in sorted(set(which)):
        idx = np.flatnonzero(which == nb)
        p = pack([ds.systems[i] for i in idx], n_atoms=int(nb), n_systems=len(idx), cutoffs=tuple(cutoffs))
        arrays = dict(species=p.species, positions=p.positions.astype(np.float32),
                      cells=p.cells.astype(np.float32), atom_mask=p.atom_mask,
                      **_label_arrays(ds, idx, int(nb), p.counts), **graph_arrays(p))
        out.append(PackedBucket(int(nb), p.capacity, idx, arrays))
    return out


def _label_arrays(ds: Dataset, idx: np.ndarray, n_atoms: int, counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Labels of structures ``idx`` padded to ``n_atoms``: energy eV/atom [S], forces eV/A [S, N, 3],
    stress GPa [S, 3, 3], magmoms muB [S, N], their masks (False: missing), and weight 1 [S]."""
    S = len(idx)
    forces = np.zeros((S, n_atoms, 3), np.float32)
    magmom = np.zeros((S, n_atoms), np.float32)
    m_mask = np.zeros((S, n_atoms), bool)
    f_mask = np.zeros((S, n_atoms), bool)
    for k, i in enumerate(idx):
        n = len(ds.systems[i])
        forces[k, :n] = np.nan_to_num(ds.forces[i])
        f_mask[k, :n] = np.all(np.isfinite(ds.forces[i]), axis=1)
        if ds.magmoms[i] is not None:
            magmom[k, :n] = np.nan_to_num(ds.magmoms[i])
            m_mask[k, :n] = np.isfinite(ds.magmoms[i])
    n_at = np.array(counts, np.float32)
    return dict(energy=np.nan_to_num(ds.energy[idx] / n_at).astype(np.float32), e_mask=np.isfinite(ds.energy[idx]),
                forces=forces, f_mask=f_mask, stress=np.nan_to_num(ds.stress[idx]).astype(np.float32),
                s_mask=np.all(np.isfinite(ds.stress[idx]), axis=(1, 2)), magmom=magmom, m_mask=m_mask,
                weight=np.ones(S, np.float32))


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
